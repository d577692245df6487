"""Risk: evidence per stream and category, accumulated and decayed over media time. Pure: no I/O, no clock.

Each signal at or above its category's ``floor`` adds ``weight * score`` of evidence. Evidence halves every
``half_life_s`` media seconds. A category's risk is ``1 - exp(-evidence)``: it lies in [0, 1), one weak
signal moves it a little, and repeated or persistent evidence drives it towards 1. Signals that arrive
out of media order (speech is transcribed later than frames are scored) are decayed forward to the
stream's clock, so the result depends only on the sequence fed in, which is what makes replay exact.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from livesafe.core.events import Signal
from livesafe.core.policy import CategoryPolicy, Policy

#: How many recent contributing signals each category keeps as evidence for explanations.
RECENT_SIGNALS = 8


@dataclass(frozen=True, slots=True)
class SignalRef:
    """What an intervention cites of a signal."""

    signal_id: str
    media_ts: float
    end_ts: float
    score: float
    analyzer: str
    excerpt: str
    #: A reference to the frame the finding came from (``thumbnail`` or ``frame`` evidence), if any.
    thumbnail: str = ""


@dataclass(slots=True)
class _Evidence:
    value: float = 0.0
    ts: float = 0.0
    recent: deque[SignalRef] = field(default_factory=lambda: deque(maxlen=RECENT_SIGNALS))


def level_of(evidence: float) -> float:
    """Risk in [0, 1) from non-negative evidence."""
    return -math.expm1(-evidence)


def evidence_for(level: float) -> float:
    """Inverse of :func:`level_of`: the evidence at which risk equals ``level`` (< 1)."""
    return -math.log1p(-level)


class StreamRisk:
    """Evidence for every category of one stream."""

    def __init__(self, policy: Policy, stream_id: str) -> None:
        self.policy = policy
        self.stream_id = stream_id
        #: The latest media time seen on this stream.
        self.clock = 0.0
        self._evidence: dict[str, _Evidence] = {}

    def advance(self, media_ts: float) -> None:
        self.clock = max(self.clock, media_ts)

    def add(self, signal: Signal) -> bool:
        """Account for a signal; returns True when it added evidence."""
        self.advance(signal.media_ts)
        cat = self.policy.category(signal.category)
        if cat is None or signal.score < cat.floor or cat.weight == 0.0 or signal.score <= 0.0:
            return False
        ev = self._evidence.setdefault(signal.category, _Evidence(ts=self.clock))
        now = self.clock
        current = _decayed(ev, cat, now)
        added = cat.weight * min(signal.score, 1.0)
        if signal.media_ts < now:
            added *= _decay_factor(cat, now - signal.media_ts)
        ev.value = current + added
        ev.ts = now
        end = signal.end_ts if signal.end_ts is not None else signal.media_ts
        excerpt = str(signal.evidence.get("text", ""))[:200]
        ev.recent.append(SignalRef(
            signal.signal_id, signal.media_ts, end, signal.score, signal.analyzer, excerpt,
            thumbnail_ref(signal),
        ))
        return True

    def evidence(self, category: str, at: float | None = None) -> float:
        ev = self._evidence.get(category)
        cat = self.policy.category(category)
        if ev is None or cat is None:
            return 0.0
        return _decayed(ev, cat, self.clock if at is None else at)

    def level(self, category: str, at: float | None = None) -> float:
        return level_of(self.evidence(category, at))

    def levels(self, at: float | None = None) -> dict[str, float]:
        """Risk of every category that has evidence, in policy order (deterministic)."""
        return {name: self.level(name, at) for name in self.policy.categories if name in self._evidence}

    def overall(self, at: float | None = None) -> float:
        return max(self.levels(at).values(), default=0.0)

    def recent(self, category: str) -> tuple[SignalRef, ...]:
        ev = self._evidence.get(category)
        return tuple(ev.recent) if ev is not None else ()

    def time_below(self, category: str, level: float) -> float:
        """The earliest media time at which ``category``'s risk is below ``level`` with no new evidence."""
        ev = self._evidence.get(category)
        cat = self.policy.category(category)
        if ev is None or cat is None or level <= 0.0:
            return self.clock if ev is None else math.inf
        target = evidence_for(level)
        if ev.value < target:
            return ev.ts
        return ev.ts + cat.half_life_s * math.log2(ev.value / target)


def thumbnail_ref(signal: Signal) -> str:
    """``evidence["thumbnail"]`` if an analyzer stored a frame, else ``frame:<index>`` of a video finding."""
    thumbnail = signal.evidence.get("thumbnail")
    if isinstance(thumbnail, str) and thumbnail:
        return thumbnail[:500]
    frame = signal.evidence.get("frame")
    if isinstance(frame, int) and not isinstance(frame, bool):
        return f"frame:{frame}"
    return ""


def _decay_factor(cat: CategoryPolicy, dt: float) -> float:
    return float(0.5 ** (max(dt, 0.0) / cat.half_life_s))


def _decayed(ev: _Evidence, cat: CategoryPolicy, at: float) -> float:
    return ev.value * _decay_factor(cat, at - ev.ts)
