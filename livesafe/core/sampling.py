"""Which video samples go to which analyzer, and how fast a live stream is sampled (pure, media time).

Video feeds: a vision analyzer may declare the rate it needs (``sample_fps``, e.g. motion's 8 fps). The
source then samples at the highest rate any enabled analyzer needs (decoding every frame), and
:class:`VideoFeeds` gives each analyzer only the samples its own schedule makes due, in media time: the
others still see about the stream's normal (adaptive) rate. The schedule depends on sample timestamps
only, so a replay of a file gives every analyzer the same samples as the first run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from livesafe.core.policy import SamplingPolicy


class Named(Protocol):
    """Anything with a name (an analyzer); ``sample_fps`` is read as an optional attribute."""

    @property
    def name(self) -> str: ...


A = TypeVar("A", bound=Named)


def sample_fps(analyzer: Named) -> float | None:
    """The frame rate ``analyzer`` declares it needs (its optional ``sample_fps`` attribute), or None.

    An optional attribute rather than a protocol member, so analyzers that take the stream's rate need
    not declare anything. The pipeline samples a stream at the highest rate any of its analyzers needs
    and gives each analyzer only the samples its own schedule, in media time, makes due.
    """
    value = getattr(analyzer, "sample_fps", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{analyzer.name}: sample_fps must be a positive number or None, got {value!r}")
    return float(value)


class AdaptiveRate:
    """Chooses a stream's video sampling rate from its risk and speech, in media time (pure).

    Sample faster while risk is at least ``active_risk`` or rising, at the base rate while someone is
    speaking, and slower once the stream has been calm and silent for ``quiet_after_s``.
    """

    def __init__(self, sampling: SamplingPolicy) -> None:
        self.sampling = sampling
        self._last_risk = 0.0
        self._last_speech: float | None = None
        self._last_active: float | None = None

    def speech(self, media_ts: float) -> None:
        self._last_speech = media_ts if self._last_speech is None else max(self._last_speech, media_ts)

    def fps(self, media_ts: float, overall_risk: float) -> float:
        s = self.sampling
        rising = overall_risk > self._last_risk + 1e-9
        self._last_risk = overall_risk
        if overall_risk >= s.active_risk or rising:
            self._last_active = media_ts
            return s.active_fps
        recent = [t for t in (self._last_speech, self._last_active) if t is not None]
        if recent and media_ts - max(recent) < s.quiet_after_s:
            return s.video_fps
        return s.idle_fps if media_ts >= s.quiet_after_s else s.video_fps


#: Tolerance of feed schedules (seconds of media time): sample timestamps are rounded to microseconds.
_FEED_EPS = 1e-3


class VideoFeeds(Generic[A]):
    """Which vision analyzers each video sample goes to: one schedule per analyzer, in media time (pure).

    An analyzer that declares ``sample_fps`` gets a sample whenever its own period has elapsed since the
    last one it got; the others follow the stream's base rate (:meth:`set_base_fps`, adaptive on live
    streams). The source must sample at :attr:`source_fps` (at least every rate asked for). The rule is the
    sampler's (next due = max(previous due + period, sample time)), so an analyzer whose rate equals the
    source's gets every sample. Without any declared rate every analyzer gets every sample, as the source
    samples at the base rate itself. Media time going backwards (a restarted source) restarts the schedules.
    """

    def __init__(self, analyzers: Sequence[A], base_fps: float) -> None:
        if base_fps <= 0:
            raise ValueError(f"base fps must be > 0, got {base_fps}")
        self.analyzers = list(analyzers)
        self._own: list[float | None] = [sample_fps(a) for a in self.analyzers]
        self._base = base_fps
        self._next = [0.0] * len(self.analyzers)
        self._last: list[float | None] = [None] * len(self.analyzers)
        self._last_ts: float | None = None

    @property
    def dense(self) -> bool:
        """Whether some analyzer declares its own rate (the source then samples for it, decoding fully)."""
        return any(f is not None for f in self._own)

    @property
    def dense_fps(self) -> float:
        """The highest rate an analyzer declares (0 without any)."""
        return max((f for f in self._own if f is not None), default=0.0)

    @property
    def base_fps(self) -> float:
        return self._base

    @property
    def source_fps(self) -> float:
        """The rate the source has to sample at: the base rate or the highest declared one."""
        return max(self._base, self.dense_fps)

    def fps(self, i: int) -> float:
        """The rate analyzer ``i`` is fed at."""
        own = self._own[i]
        return self._base if own is None else own

    def set_base_fps(self, fps: float) -> None:
        """Change the base rate. Analyzers following it get their next sample no later than one new period
        after their last one, so a faster rate takes effect at once."""
        if fps <= 0:
            raise ValueError(f"base fps must be > 0, got {fps}")
        self._base = fps
        for i, own in enumerate(self._own):
            last = self._last[i]
            if own is None and last is not None:
                self._next[i] = min(self._next[i], last + 1.0 / fps)

    def due(self, media_ts: float) -> list[A]:
        """The analyzers a sample at ``media_ts`` goes to (in their configured order); advances schedules."""
        if not self.dense:
            return list(self.analyzers)
        if self._last_ts is not None and media_ts < self._last_ts - _FEED_EPS:
            self._next = [0.0] * len(self.analyzers)
            self._last = [None] * len(self.analyzers)
        self._last_ts = media_ts
        out = []
        for i, analyzer in enumerate(self.analyzers):
            if media_ts + _FEED_EPS >= self._next[i]:
                self._next[i] = max(self._next[i] + 1.0 / self.fps(i), media_ts)
                self._last[i] = media_ts
                out.append(analyzer)
        return out
