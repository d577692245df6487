"""Typed events that flow through livesafe.

Every event is a frozen dataclass carrying ``stream_id`` and a media timestamp (seconds since the
start of that stream's media, never wall-clock time). Media events (``VideoSample``, ``AudioChunk``)
carry numpy payloads and are never serialised; the others round-trip through :func:`to_dict` and
:func:`from_dict` so they can sit in Redis Streams, go over websockets and be replayed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import numpy as np
import numpy.typing as npt

#: The categories livesafe knows about. A policy may only configure these.
CATEGORIES: tuple[str, ...] = (
    "nudity",
    "sexual",
    "violence",
    "weapons",
    "self_harm",
    "hate",
    "harassment",
    "threat",
    "sexual_solicitation",
    "scam",
    "profanity",
)

#: Tier kinds of the intervention ladder, lowest first. ``escalate`` is not a tier: it runs beside one.
TIER_KINDS: tuple[str, ...] = ("observe", "warn", "restrict", "cut")
#: Actions whose effects stay in force until they expire or are lifted.
LIFTABLE_ACTIONS: tuple[str, ...] = ("warn", "restrict", "cut")
#: Why an intervention stopped being in force.
LIFT_REASONS: tuple[str, ...] = ("expired", "risk_fell", "overturned")

#: Concrete effects a backend may be asked to apply.
EFFECTS: tuple[str, ...] = (
    "observe",
    "notice",
    "age_gate",
    "remove_from_recommendations",
    "blur",
    "mute",
    "cut",
    "human_review",
)


@dataclass(frozen=True, slots=True)
class VideoSample:
    """One sampled video frame, RGB ``uint8`` of shape (height, width, 3)."""

    stream_id: str
    media_ts: float
    image: npt.NDArray[np.uint8] = field(repr=False, compare=False)
    #: Index of this sample within its stream (0, 1, 2, ...).
    index: int = 0

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A span of mono float32 audio in [-1, 1] at ``sample_rate`` Hz, starting at ``media_ts``."""

    stream_id: str
    media_ts: float
    samples: npt.NDArray[np.float32] = field(repr=False, compare=False)
    sample_rate: int = 16000

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)

    @property
    def end_ts(self) -> float:
        return self.media_ts + self.duration


MediaSample: TypeAlias = VideoSample | AudioChunk


@dataclass(frozen=True, slots=True)
class Word:
    """A word with its media time span, as given by the speech model's word timestamps."""

    start: float
    end: float
    word: str
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class Transcript:
    """One utterance of recognised speech; ``media_ts``/``end_ts`` are stream media times.

    ``text`` is what the text classifiers score. With speech translation on, speech in another language
    than English is heard as Whisper's English translation: ``translated`` is then True, ``language``
    still names the spoken language, ``words`` are the English words, and ``original`` holds what was
    said, transcribed in that language ("" when that decode kept nothing)."""

    type: ClassVar[str] = "transcript"

    stream_id: str
    media_ts: float
    end_ts: float
    text: str
    #: The spoken language (the one decoded in, configured or detected).
    language: str = "en"
    words: tuple[Word, ...] = ()
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    model: str = ""
    #: ``text`` is an English translation of speech in ``language`` (records before translation: False).
    translated: bool = False
    #: With ``translated``: the transcript in the spoken language.
    original: str = ""


@dataclass(frozen=True, slots=True)
class Signal:
    """An analyzer finding: ``score`` in [0, 1] that ``category`` is present at ``media_ts``."""

    type: ClassVar[str] = "signal"

    stream_id: str
    media_ts: float
    category: str
    score: float
    analyzer: str
    #: End of the media span the finding covers (equal to ``media_ts`` for a single frame).
    end_ts: float | None = None
    #: Free-form, JSON-serialisable evidence: the transcript excerpt, matched terms, frame index...
    evidence: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def signal_id(self) -> str:
        """A deterministic id: the same finding in a replay has the same id."""
        return make_id("sig", self.stream_id, self.analyzer, self.category, f"{self.media_ts:.3f}")


@dataclass(frozen=True, slots=True)
class RiskUpdate:
    """The risk of one category of one stream after a signal or a tick, and the stream's overall risk."""

    type: ClassVar[str] = "risk"

    stream_id: str
    media_ts: float
    category: str
    level: float
    overall: float
    tier: str


@dataclass(frozen=True, slots=True)
class Intervention:
    """A decision of the ladder: what the backend should do to a stream, and why."""

    type: ClassVar[str] = "intervention"

    stream_id: str
    media_ts: float
    #: Idempotency key: deterministic from stream, sequence number and policy hash.
    intervention_id: str
    #: Per-stream sequence number, 1, 2, 3... in decision order.
    seq: int
    #: ``observe``, ``warn``, ``restrict``, ``cut`` or ``escalate``.
    action: str
    #: Name of the ladder tier (``escalate`` for a human-review request).
    tier: str
    #: Position of the tier on the ladder (0 = observe); escalate carries the tier it ran beside.
    tier_level: int
    category: str
    #: The category risk that triggered the decision.
    score: float
    #: Concrete effects for the backend, e.g. ``("age_gate", "blur")``.
    effects: tuple[str, ...]
    reason: str
    policy: str
    policy_hash: str
    #: The rule that fired and its thresholds, e.g. ``{"rule": "tier.enter", "enter": 0.55, ...}``.
    rule: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: Ids of the signals that carried the evidence, most recent last.
    signal_ids: tuple[str, ...] = ()
    #: Media time range covered by the evidence.
    evidence_start: float = 0.0
    evidence_end: float = 0.0
    #: A short excerpt of the evidence (transcript text), if any.
    excerpt: str = ""
    #: Text of an on-screen notice (``warn``).
    message: str = ""
    #: How long a restriction lasts, in media seconds (0 = until lifted).
    duration_s: float = 0.0
    #: A reference to a frame of the evidence (as the analyzer gave it, e.g. ``frame:42``), if any.
    thumbnail: str = ""
    #: The broadcast (session) of the stream this decision belongs to: every start of a stream id is a new
    #: session, so ids and sequence numbers never collide with those of an earlier broadcast.
    session: str = ""

    @property
    def expires_at(self) -> float | None:
        """Media time at which the effects end by themselves (None: until lifted)."""
        return self.media_ts + self.duration_s if self.duration_s > 0 else None

    @property
    def liftable(self) -> bool:
        """Whether the backend applies effects that stay until expiry or an ``intervention.lifted``
        (``warn``, ``restrict``, ``cut``; not ``observe``, board only, nor ``escalate``, a review request)."""
        return self.action in LIFTABLE_ACTIONS


@dataclass(frozen=True, slots=True)
class InterventionLifted:
    """An intervention's effects are over: the backend should undo them.

    ``reason`` is ``expired`` (its ``duration_s`` ran out), ``risk_fell`` (the ladder stepped below its
    tier) or ``overturned`` (a reviewer's verdict). Lifts share the per-stream sequence of interventions.
    """

    type: ClassVar[str] = "intervention.lifted"

    stream_id: str
    media_ts: float
    #: Idempotency key of this lift (deterministic from the lifted intervention's id).
    lift_id: str
    #: The intervention whose effects end.
    intervention_id: str
    seq: int
    reason: str
    #: What is lifted, copied from the intervention: its action, tier, category and effects.
    action: str
    tier: str
    category: str
    effects: tuple[str, ...]
    policy: str
    policy_hash: str
    #: A human-readable explanation.
    detail: str = ""
    #: For ``overturned``: who decided, and their note.
    reviewer: str = ""
    note: str = ""
    #: The session of the lifted intervention.
    session: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """The backend's answer to an intervention: ``ack`` (received) or ``nack`` (refused, with reason)."""

    type: ClassVar[str] = "ack"

    stream_id: str
    media_ts: float
    #: The intervention acknowledged, or the one whose lift (``lift_id``) is acknowledged.
    intervention_id: str
    #: ``ack``, ``nack`` or ``applied`` (what the backend did: ``effects``, ``reason`` as its detail).
    status: str = "ack"
    backend: str = ""
    reason: str = ""
    #: Set when the acknowledged message was an ``intervention.lifted``.
    lift_id: str = ""
    effects: tuple[str, ...] = ()
    #: The session of the acknowledged intervention ("" when it is no longer known).
    session: str = ""


@dataclass(frozen=True, slots=True)
class ReviewVerdict:
    """A human reviewer's verdict on an intervention: ``uphold`` or ``overturn`` (which lifts it)."""

    type: ClassVar[str] = "review"

    stream_id: str
    media_ts: float
    intervention_id: str
    verdict: str
    reviewer: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class StreamState:
    """A stream's monitoring state changed: ``live``, ``degraded``, ``lost``, ``ended``, ``stopped``,
    ``failed`` (with the reason in ``detail``)."""

    type: ClassVar[str] = "stream.state"

    stream_id: str
    media_ts: float
    state: str
    detail: str = ""
    #: The session (broadcast) of the stream ("" before one started).
    session: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """The stream's media clock reached ``media_ts`` without a signal (an input of the core like a signal:
    decayed risk may step the ladder down, a restriction may expire)."""

    type: ClassVar[str] = "tick"

    stream_id: str
    media_ts: float


Event: TypeAlias = (
    Transcript | Signal | Tick | RiskUpdate | Intervention | InterventionLifted | Ack | ReviewVerdict
    | StreamState
)
#: What the outbox delivers to backends, each acknowledged by its key (:func:`delivery_key`).
Deliverable: TypeAlias = Intervention | InterventionLifted

_EVENT_TYPES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        Transcript, Signal, Tick, RiskUpdate, Intervention, InterventionLifted, Ack, ReviewVerdict,
        StreamState,
    )
}


def delivery_key(message: Deliverable) -> str:
    """The idempotency key a backend acknowledges: ``intervention_id`` or ``lift_id``."""
    return message.lift_id if isinstance(message, InterventionLifted) else message.intervention_id


def make_id(prefix: str, *parts: str) -> str:
    """A short deterministic id from its parts."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:20]
    return f"{prefix}_{digest}"


def _jsonable(value: Any, precise: bool = False) -> Any:
    if isinstance(value, float):
        return value if precise else round(value, 6)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, precise) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v, precise) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), precise) for f in dataclasses.fields(value)}
    if isinstance(value, np.generic):
        return _jsonable(value.item(), precise)
    return value


def to_dict(event: Event, *, precise: bool = False) -> dict[str, Any]:
    """A JSON-ready dict of an event with its ``type``; floats rounded to microseconds, or kept exactly
    with ``precise`` (what the timeline records: :func:`from_dict` then gives back the very same floats, so
    a replay feeds the core exactly what it saw live)."""
    out: dict[str, Any] = {"type": event.type}
    for f in dataclasses.fields(event):
        out[f.name] = _jsonable(getattr(event, f.name), precise)
    if isinstance(event, Signal):
        out["signal_id"] = event.signal_id
    elif isinstance(event, Intervention):
        out["expires_at"] = _jsonable(event.expires_at, precise)
    return out


class EventFormatError(ValueError):
    """A serialised event that cannot be turned back into an event; the message says why."""


def from_dict(data: Mapping[str, Any]) -> Event:
    """Rebuild an event from :func:`to_dict` output; raises :class:`EventFormatError` naming the problem."""
    kind = data.get("type")
    cls = _EVENT_TYPES.get(str(kind))
    if cls is None:
        raise EventFormatError(f"unknown event type {kind!r}; expected one of {sorted(_EVENT_TYPES)}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in ("type", "signal_id") or (cls is Intervention and name == "expires_at"):
            continue
        if name not in names:
            raise EventFormatError(f"{kind}: unknown field {name!r}")
        if name == "words":
            value = tuple(Word(**w) for w in value)
        elif name in ("signal_ids", "effects"):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise EventFormatError(f"{kind}: {exc}") from exc
