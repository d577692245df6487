"""Policies: YAML files validated into frozen dataclasses before anything runs.

A policy says which categories matter and how much (weights, evidence half-lives, noise floors), what
the intervention ladder looks like (tiers, thresholds with hysteresis, dwell, cooldowns, escalation to
humans) and how media is sampled and analysed. A file with any mistake is refused as a whole with the
file name, the key path and the reason for every problem found.

Every policy has a name and a content hash (over its validated content, so formatting and comments do
not change it); both travel with every intervention the policy causes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from livesafe.core.events import CATEGORIES, EFFECTS, TIER_KINDS
from livesafe.core.languages import check_language, check_translate, is_english_only

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
SPEECH_BACKENDS = ("faster-whisper", "openai-whisper")
#: The frame rate the motion (violence) analyzer is trained for and fed at (its own feed; see pipeline).
MOTION_FPS = 8.0


class PolicyError(ValueError):
    """A policy that cannot be used. ``problems`` holds one ``(key_path, reason)`` per mistake."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {path or '<root>'}: {reason}" for path, reason in problems]
        super().__init__("invalid policy\n  " + "\n  ".join(lines))


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    kind: str
    #: Risk at or above which the stream enters this tier.
    enter: float
    #: Risk below which the stream may leave this tier (hysteresis: exit < enter).
    exit: float
    effects: tuple[str, ...]
    message: str = ""
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Escalation:
    """When to ask a human: a category with ``escalate: true`` reaching ``min_tier``."""

    min_tier: str = "restrict"
    cooldown_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Ladder:
    tiers: tuple[Tier, ...]
    #: Minimum media seconds a stream stays in a tier before it may step down.
    min_dwell_s: float = 20.0
    #: The same tier is not issued again to a stream within this many media seconds (unless its last
    #: issue was lifted meanwhile: expired, risk fell or overturned).
    cooldown_s: float = 60.0
    escalation: Escalation = field(default_factory=Escalation)

    def index(self, name: str) -> int:
        for i, tier in enumerate(self.tiers):
            if tier.name == name:
                return i
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class CategoryPolicy:
    name: str
    #: Evidence added per signal is ``weight * score``.
    weight: float = 1.0
    #: Evidence halves every ``half_life_s`` media seconds without new signals.
    half_life_s: float = 30.0
    #: Signals scoring below this add no evidence (one noisy frame is not evidence).
    floor: float = 0.3
    #: Highest tier this category alone can reach (e.g. profanity never cuts).
    max_tier: str | None = None
    #: Per-tier overrides of the ladder's enter thresholds (lower = severe categories skip ahead).
    enter: Mapping[str, float] = field(default_factory=dict)
    #: Per-tier overrides of effects (e.g. nudity restrict -> blur).
    effects: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Ask a human to review when this category takes a stream to the escalation tier.
    escalate: bool = False


@dataclass(frozen=True, slots=True)
class SamplingPolicy:
    video_fps: float = 1.0
    #: Target length of audio windows sent to speech recognition (cut at quiet points, at most twice this).
    audio_window_s: float = 5.0
    #: Decode only video key frames (much cheaper; frames are sampled at key-frame times).
    keyframes_only: bool = False
    #: Cut audio into utterances with voice-activity detection; silence never reaches speech recognition.
    vad: bool = True
    #: Adaptive video rate on live streams: ``active_fps`` while risk is at least ``active_risk`` or
    #: rising, ``video_fps`` while there is speech, ``idle_fps`` after ``quiet_after_s`` of calm.
    adaptive: bool = True
    active_fps: float = 2.0
    idle_fps: float = 0.5
    active_risk: float = 0.15
    quiet_after_s: float = 15.0


@dataclass(frozen=True, slots=True)
class SpeechPolicy:
    enabled: bool = True
    backend: str = "faster-whisper"
    model: str = "tiny.en"
    language: str = "en"
    #: Hear non-English speech as Whisper's English translation, for the English text classifiers
    #: (multilingual models only). A policy file that leaves it out gets True with a multilingual model;
    #: here False, what policies stored before the key existed did.
    translate: bool = False


@dataclass(frozen=True, slots=True)
class HashListPolicy:
    """A known-bad PDQ hash list (ThreatExchange / HMA text or CSV export) and the category it means."""

    path: str
    category: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class AnalyzerPolicy:
    speech: SpeechPolicy = field(default_factory=SpeechPolicy)
    text: bool = True
    nudity: bool = True
    #: Violence from motion. It gets its own 8 fps feed (:data:`MOTION_FPS`) whatever ``sampling`` says:
    #: the stream is then decoded fully (``keyframes_only`` is ignored) and sampled at 8 fps, while the
    #: other vision analyzers still see ``sampling``'s rates.
    motion: bool = False
    #: On-screen text read with OCR (RapidOCR) and scored by the text classifier; off by default: a read
    #: costs ~0.2-0.5 s of one core and moving video changes enough to be re-read at every sample.
    ocr: bool = False
    #: NudeNet body-part detector for ``nudity`` (optional extra, AGPL-3.0: ``livesafe[nudenet]``).
    nudenet: bool = False
    #: Firearms and blades from an ImageNet classifier (EfficientNet-Lite0, optional extra:
    #: ``livesafe[weapons]``); off by default: a weapon on screen is not a violation on every platform
    #: (games, hunting, cooking), and its recall on real streams is unmeasured.
    weapons: bool = False
    #: Extra terms per category that the text classifier treats as strong evidence.
    extra_terms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Known-bad hash lists matched against sampled frames (re-read while running when they change).
    hash_lists: tuple[HashListPolicy, ...] = ()
    hash_max_distance: int = 31
    hash_min_quality: int = 50


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long the timeline keeps what it recorded (transcripts and frames are personal data).

    ``timeline_days``: a session's timeline (transcripts, signals, risk, decisions, acks, verdicts) is kept
    this many days after its last entry, and the policy content it refers to as long. ``evidence_days``:
    the thumbnails of frames that scored at or above their floor, this many days after the last one was
    stored (never longer than the timeline)."""

    timeline_days: float = 30.0
    evidence_days: float = 7.0

    @property
    def timeline_s(self) -> int:
        return max(1, round(self.timeline_days * 86400))

    @property
    def evidence_s(self) -> int:
        return max(1, round(min(self.evidence_days, self.timeline_days) * 86400))


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    description: str
    categories: Mapping[str, CategoryPolicy]
    ladder: Ladder
    sampling: SamplingPolicy = field(default_factory=SamplingPolicy)
    analyzers: AnalyzerPolicy = field(default_factory=AnalyzerPolicy)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    #: Content hash (filled in by the loader; excluded from the hash itself).
    hash: str = ""
    source: str = ""

    def category(self, name: str) -> CategoryPolicy | None:
        return self.categories.get(name)

    def enter_threshold(self, category: str, tier_index: int) -> float:
        tier = self.ladder.tiers[tier_index]
        cat = self.categories.get(category)
        if cat is not None and tier.name in cat.enter:
            return cat.enter[tier.name]
        return tier.enter

    def exit_threshold(self, category: str, tier_index: int) -> float:
        """Exit threshold, kept below the (possibly overridden) enter threshold by the ladder's gap."""
        tier = self.ladder.tiers[tier_index]
        enter = self.enter_threshold(category, tier_index)
        return min(tier.exit, enter - (tier.enter - tier.exit))

    def max_tier_index(self, category: str) -> int:
        cat = self.categories.get(category)
        if cat is None or cat.max_tier is None:
            return len(self.ladder.tiers) - 1
        return self.ladder.index(cat.max_tier)

    def effects_for(self, category: str, tier_index: int) -> tuple[str, ...]:
        tier = self.ladder.tiers[tier_index]
        cat = self.categories.get(category)
        if cat is not None and tier.name in cat.effects:
            return cat.effects[tier.name]
        return tier.effects


# --------------------------------------------------------------------------------------------------
# Validation


class _Reader:
    """Reads a YAML mapping while recording every problem with its key path."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems

    def fail(self, path: str, reason: str) -> None:
        self.problems.append((path, reason))

    def mapping(self, value: Any, path: str, allowed: set[str] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, got {type(value).__name__}")
            return {}
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {key!r}")
            elif allowed is not None and key not in allowed:
                self.fail(_join(path, key), f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return {k: v for k, v in value.items() if isinstance(k, str)}

    def number(
        self, data: Mapping[str, Any], key: str, path: str, default: float, lo: float, hi: float,
        *, lo_open: bool = False,
    ) -> float:
        if key not in data:
            return default
        value = data[key]
        where = _join(path, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(where, f"must be a number, got {value!r}")
            return default
        v = float(value)
        if v != v or v < lo or v > hi or (lo_open and v == lo):
            bracket = "(" if lo_open else "["
            self.fail(where, f"must be in {bracket}{lo}, {hi}], got {value!r}")
            return default
        return v

    def string(self, data: Mapping[str, Any], key: str, path: str, default: str,
               choices: tuple[str, ...] | None = None) -> str:
        if key not in data:
            return default
        value = data[key]
        where = _join(path, key)
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"must be a non-empty string, got {value!r}")
            return default
        if choices is not None and value not in choices:
            self.fail(where, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        if key not in data:
            return default
        value = data[key]
        if not isinstance(value, bool):
            self.fail(_join(path, key), f"must be true or false, got {value!r}")
            return default
        return value

    def strings(self, value: Any, path: str, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(path, f"must be a list of strings, got {value!r}")
            return ()
        if choices is not None:
            bad = [v for v in value if v not in choices]
            if bad:
                self.fail(path, f"unknown {', '.join(map(repr, bad))}; allowed: {', '.join(choices)}")
                return ()
        return tuple(value)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _parse_tiers(r: _Reader, raw: Any, path: str) -> tuple[Tier, ...]:
    if not isinstance(raw, list) or not raw:
        r.fail(path, "must be a non-empty list of tiers")
        return ()
    tiers: list[Tier] = []
    for i, item in enumerate(raw):
        where = _join(path, i)
        d = r.mapping(item, where, {"name", "kind", "enter", "exit", "effects", "message", "duration_s"})
        if not d:
            continue
        name = r.string(d, "name", where, "")
        if not name:
            r.fail(_join(where, "name"), "is required")
        kind = r.string(d, "kind", where, name if name in TIER_KINDS else "", TIER_KINDS)
        if not kind:
            r.fail(_join(where, "kind"), f"is required (one of {', '.join(TIER_KINDS)})")
        enter = r.number(d, "enter", where, -1.0, 0.0, 1.0, lo_open=True)
        if "enter" not in d:
            r.fail(_join(where, "enter"), "is required")
        exit_ = r.number(d, "exit", where, max(0.0, enter - 0.1), 0.0, 1.0)
        if "exit" in d and enter > 0 and exit_ >= enter:
            r.fail(_join(where, "exit"), f"must be below enter ({enter}) for hysteresis, got {exit_}")
        effects = r.strings(d.get("effects", [kind]), _join(where, "effects"), EFFECTS)
        message = r.string(d, "message", where, "")
        duration = r.number(d, "duration_s", where, 0.0, 0.0, 86400.0)
        tiers.append(Tier(name, kind, enter, exit_, effects, message, duration))
    names = [t.name for t in tiers]
    for name in {n for n in names if names.count(n) > 1}:
        r.fail(path, f"tier name {name!r} is used more than once")
    for prev, cur in itertools.pairwise(tiers):
        if cur.enter <= prev.enter:
            r.fail(path, f"enter thresholds must rise up the ladder: {cur.name} ({cur.enter}) "
                         f"<= {prev.name} ({prev.enter})")
    return tuple(tiers)


def _parse_ladder(r: _Reader, raw: Any) -> Ladder:
    d = r.mapping(raw, "ladder", {"tiers", "min_dwell_s", "cooldown_s", "escalation"})
    if "tiers" not in d:
        r.fail("ladder.tiers", "is required")
    tiers = _parse_tiers(r, d.get("tiers"), "ladder.tiers")
    esc_raw = r.mapping(d.get("escalation"), "ladder.escalation", {"min_tier", "cooldown_s"})
    names = tuple(t.name for t in tiers)
    escalation = Escalation(
        min_tier=r.string(
            esc_raw, "min_tier", "ladder.escalation", names[-1] if names else "", names or None
        ),
        cooldown_s=r.number(esc_raw, "cooldown_s", "ladder.escalation", 300.0, 0.0, 86400.0),
    )
    return Ladder(
        tiers=tiers,
        min_dwell_s=r.number(d, "min_dwell_s", "ladder", 20.0, 0.0, 86400.0),
        cooldown_s=r.number(d, "cooldown_s", "ladder", 60.0, 0.0, 86400.0),
        escalation=escalation,
    )


_CATEGORY_KEYS = {"weight", "half_life_s", "floor", "max_tier", "enter", "effects", "escalate"}


def _parse_category(r: _Reader, name: str, raw: Any, tier_names: tuple[str, ...]) -> CategoryPolicy:
    path = f"categories.{name}"
    d = r.mapping(raw, path, _CATEGORY_KEYS)
    enter: dict[str, float] = {}
    for tier, value in r.mapping(d.get("enter"), _join(path, "enter"), set(tier_names)).items():
        enter[tier] = r.number({tier: value}, tier, _join(path, "enter"), 0.5, 0.0, 1.0, lo_open=True)
    effects: dict[str, tuple[str, ...]] = {}
    for tier, value in r.mapping(d.get("effects"), _join(path, "effects"), set(tier_names)).items():
        effects[tier] = r.strings(value, _join(_join(path, "effects"), tier), EFFECTS)
    max_tier = r.string(d, "max_tier", path, "", tier_names or None) or None
    return CategoryPolicy(
        name=name,
        weight=r.number(d, "weight", path, 1.0, 0.0, 100.0),
        half_life_s=r.number(d, "half_life_s", path, 30.0, 0.0, 86400.0, lo_open=True),
        floor=r.number(d, "floor", path, 0.3, 0.0, 1.0),
        max_tier=max_tier,
        enter=enter,
        effects=effects,
        escalate=r.boolean(d, "escalate", path, False),
    )


def _parse_hash_lists(r: _Reader, raw: Any, base: Path) -> tuple[HashListPolicy, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.fail("analyzers.hash_lists", f"must be a list, got {type(raw).__name__}")
        return ()
    out = []
    for i, item in enumerate(raw):
        where = f"analyzers.hash_lists[{i}]"
        d = r.mapping(item, where, {"path", "category", "name"})
        path = r.string(d, "path", where, "")
        category = r.string(d, "category", where, "", CATEGORIES)
        if not path or not category:
            r.fail(where, "needs a path and a category")
            continue
        resolved = (base / path).resolve()
        if not resolved.is_file():
            r.fail(_join(where, "path"), f"no such file: {resolved}")
            continue
        out.append(HashListPolicy(str(resolved), category, r.string(d, "name", where, "")))
    return tuple(out)


def _parse_analyzers(r: _Reader, raw: Any, base: Path) -> AnalyzerPolicy:
    d = r.mapping(raw, "analyzers", {
        "speech", "text", "nudity", "motion", "extra_terms", "hash_lists", "hash_max_distance",
        "hash_min_quality", "ocr", "nudenet", "weapons",
    })
    s = r.mapping(
        d.get("speech"), "analyzers.speech", {"enabled", "backend", "model", "language", "translate"}
    )
    model = r.string(s, "model", "analyzers.speech", "tiny.en")
    speech = SpeechPolicy(
        enabled=r.boolean(s, "enabled", "analyzers.speech", True),
        backend=r.string(s, "backend", "analyzers.speech", "faster-whisper", SPEECH_BACKENDS),
        model=model,
        language=r.string(s, "language", "analyzers.speech", "en"),
        # The text classifiers are English: a multilingual model translates unless told not to.
        translate=r.boolean(s, "translate", "analyzers.speech", not is_english_only(model)),
    )
    # A language the model cannot transcribe (an English-only model with "de" or "auto", an unknown
    # code), or translation asked of an English-only model, is refused here, before anything runs.
    language_problem = check_language(speech.model, speech.language)
    if language_problem:
        r.fail("analyzers.speech.language", language_problem)
    translate_problem = check_translate(speech.model, speech.translate)
    if translate_problem:
        r.fail("analyzers.speech.translate", translate_problem)
    terms: dict[str, tuple[str, ...]] = {}
    for cat, value in r.mapping(d.get("extra_terms"), "analyzers.extra_terms", set(CATEGORIES)).items():
        terms[cat] = r.strings(value, f"analyzers.extra_terms.{cat}")
    return AnalyzerPolicy(
        speech=speech,
        text=r.boolean(d, "text", "analyzers", True),
        nudity=r.boolean(d, "nudity", "analyzers", True),
        motion=r.boolean(d, "motion", "analyzers", False),
        ocr=r.boolean(d, "ocr", "analyzers", False),
        nudenet=r.boolean(d, "nudenet", "analyzers", False),
        weapons=r.boolean(d, "weapons", "analyzers", False),
        extra_terms=terms,
        hash_lists=_parse_hash_lists(r, d.get("hash_lists"), base),
        hash_max_distance=int(r.number(d, "hash_max_distance", "analyzers", 31, 0, 256)),
        hash_min_quality=int(r.number(d, "hash_min_quality", "analyzers", 50, 0, 100)),
    )


def _parse_sampling(r: _Reader, raw: Any) -> SamplingPolicy:
    d = r.mapping(raw, "sampling", {
        "video_fps", "audio_window_s", "keyframes_only", "vad", "adaptive", "active_fps", "idle_fps",
        "active_risk", "quiet_after_s",
    })
    fps = r.number(d, "video_fps", "sampling", 1.0, 0.0, 60.0, lo_open=True)
    active = r.number(d, "active_fps", "sampling", max(fps, 2.0), 0.0, 60.0, lo_open=True)
    idle = r.number(d, "idle_fps", "sampling", min(fps, 0.5), 0.0, 60.0, lo_open=True)
    if not idle <= fps <= active:
        r.fail("sampling", f"need idle_fps <= video_fps <= active_fps, got {idle}, {fps}, {active}")
    return SamplingPolicy(
        video_fps=fps,
        audio_window_s=r.number(d, "audio_window_s", "sampling", 5.0, 1.0, 30.0),
        keyframes_only=r.boolean(d, "keyframes_only", "sampling", False),
        vad=r.boolean(d, "vad", "sampling", True),
        adaptive=r.boolean(d, "adaptive", "sampling", True),
        active_fps=active,
        idle_fps=idle,
        active_risk=r.number(d, "active_risk", "sampling", 0.15, 0.0, 1.0),
        quiet_after_s=r.number(d, "quiet_after_s", "sampling", 15.0, 0.0, 3600.0),
    )


def _parse_retention(r: _Reader, raw: Any) -> RetentionPolicy:
    d = r.mapping(raw, "retention", {"timeline_days", "evidence_days"})
    return RetentionPolicy(
        timeline_days=r.number(d, "timeline_days", "retention", 30.0, 0.0, 3650.0, lo_open=True),
        evidence_days=r.number(d, "evidence_days", "retention", 7.0, 0.0, 3650.0, lo_open=True),
    )


def parse_policy(data: Any, source: str = "<policy>", base: Path | None = None) -> Policy:
    """Validate already-parsed YAML/JSON data into a :class:`Policy`, or raise :class:`PolicyError`.

    Relative file paths in the policy (hash lists) are resolved against ``base`` (default: the cwd).
    """
    problems: list[tuple[str, str]] = []
    r = _Reader(problems)
    top = r.mapping(
        data, "", {"name", "description", "categories", "ladder", "sampling", "analyzers", "retention"}
    )
    if not top and not problems:
        r.fail("", "the policy is empty")
    name = r.string(top, "name", "", "")
    if "name" not in top:
        r.fail("name", "is required")
    ladder = _parse_ladder(r, top.get("ladder"))
    tier_names = tuple(t.name for t in ladder.tiers)
    raw_categories = r.mapping(top.get("categories"), "categories", set(CATEGORIES))
    if "categories" not in top:
        r.fail("categories", "is required")
    categories = {
        cat: _parse_category(r, cat, raw, tier_names) for cat, raw in raw_categories.items()
    }
    policy = Policy(
        name=name,
        description=r.string(top, "description", "", ""),
        categories=categories,
        ladder=ladder,
        sampling=_parse_sampling(r, top.get("sampling")),
        analyzers=_parse_analyzers(r, top.get("analyzers"), base or Path.cwd()),
        retention=_parse_retention(r, top.get("retention")),
        source=source,
    )
    if problems:
        raise PolicyError(source, problems)
    return dataclasses.replace(policy, hash=policy_hash(policy))


def policy_content(policy: Policy) -> dict[str, Any]:
    """The policy's validated content as JSON-ready data (what its hash is computed over): everything but
    its hash and the file it came from. :func:`policy_from_content` turns it back into the same policy."""
    content = dataclasses.asdict(policy)
    content.pop("hash", None)
    content.pop("source", None)
    if not policy.analyzers.speech.translate:
        # Left out when off, as in policies stored before the key existed: those still hash to the hash
        # they were stored under (and read back with translate off, as they ran).
        del content["analyzers"]["speech"]["translate"]
    return json.loads(json.dumps(content, default=list))  # type: ignore[no-any-return]


def policy_hash(policy: Policy) -> str:
    """sha256 (first 16 hex digits) of the policy's canonical JSON, without its hash and source."""
    canonical = json.dumps(policy_content(policy), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def policy_from_content(content: Mapping[str, Any], source: str = "<stored policy>") -> Policy:
    """The policy whose :func:`policy_content` is ``content`` (as stored beside a timeline), with its hash.

    ValueError naming the problem if ``content`` is not such data."""
    try:
        lad = content["ladder"]
        ladder = Ladder(
            tiers=tuple(Tier(**{**t, "effects": tuple(t["effects"])}) for t in lad["tiers"]),
            min_dwell_s=lad["min_dwell_s"],
            cooldown_s=lad["cooldown_s"],
            escalation=Escalation(**lad["escalation"]),
        )
        categories = {
            name: CategoryPolicy(**{**c, "effects": {k: tuple(v) for k, v in c["effects"].items()}})
            for name, c in content["categories"].items()
        }
        an = content["analyzers"]
        analyzers = AnalyzerPolicy(**{
            **an,
            "speech": SpeechPolicy(**an["speech"]),
            "extra_terms": {k: tuple(v) for k, v in an["extra_terms"].items()},
            "hash_lists": tuple(HashListPolicy(**h) for h in an["hash_lists"]),
        })
        policy = Policy(
            name=content["name"], description=content["description"], categories=categories, ladder=ladder,
            sampling=SamplingPolicy(**content["sampling"]), analyzers=analyzers,
            retention=RetentionPolicy(**content.get("retention", {})), source=source,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not the content of a policy: {type(exc).__name__}: {exc}") from exc
    return dataclasses.replace(policy, hash=policy_hash(policy))


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy file (the bundled default when ``path`` is None)."""
    p = Path(path) if path is not None else DEFAULT_POLICY_PATH
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(source, [("", f"cannot read file: {exc.strerror or exc}")]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise PolicyError(source, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from exc
    return parse_policy(data, source, p.resolve().parent)
