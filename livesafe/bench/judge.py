"""The arithmetic of a capacity level (pure: polls in, verdicts out; no I/O, no clock).

A stream *kept up* when it was still running at the end, its lag behind live (from ``GET /v1/streams``:
``lag_s``, how far ingest is behind live, plus ``speech_lag_s``, how long the oldest audio waiting for
speech recognition has waited) was below ``max_lag_s`` at the last poll, and it was not growing: the least-
squares line through its lag over the last third of the run rises by less than ``max_growth_s``. (A lag that
grows steadily from the start fails the first test long before the second; the second catches a stream that
starts falling behind late in the run. A short run cannot see slow growth: that is what a soak is for.)
CPU per media
second counts the service's whole process tree (the embedded Redis included) from the end of the warm-up to
the last poll, divided by the media seconds all streams analysed in that window. Memory growth is the
least-squares slope of the tree's resident memory over the second half of the run (a short run's figure
still includes models warming up; a soak's is the one to read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Criteria:
    max_lag_s: float = 3.0
    max_growth_s: float = 1.0
    #: Polls before this (seconds after the streams started) count for lag but not for CPU and memory
    #: growth: models' first calls are slower.
    warmup_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Poll:
    """One poll: seconds since the streams started, ``GET /v1/streams`` by stream id, the process tree."""

    t: float
    streams: Mapping[str, Mapping[str, Any]]
    cpu_s: float | None = None
    rss: int | None = None
    root_peak_rss: int | None = None
    #: How long the API took to answer (an event loop that is too busy answers late), None if it failed.
    api_s: float | None = None


@dataclass(frozen=True, slots=True)
class StreamResult:
    stream_id: str
    seen_live: bool
    running_at_end: bool
    final_lag_s: float | None
    growth_s: float | None
    media_seconds: float
    kept_up: bool
    video_dropped: int = 0
    audio_dropped_s: float = 0.0
    voiced_s: float = 0.0
    transcripts: int = 0
    #: Why it ended early, where the service said.
    ended: str = ""


@dataclass(frozen=True, slots=True)
class LevelResult:
    streams: int
    kept_up: int
    duration_s: float
    cpu_s: float | None
    #: CPU seconds per media second per stream (the tree's CPU over the media seconds analysed).
    cpu_per_media_s: float | None
    #: Cores busy on average (the tree's CPU over wall time).
    cores_used: float | None
    lag_p50_s: float | None
    lag_max_s: float | None
    final_lag_max_s: float | None
    peak_rss_mb: float | None
    final_rss_mb: float | None
    #: The service process's own peak (VmHWM), without Redis.
    service_peak_rss_mb: float | None
    rss_growth_mb_per_min: float | None
    api_p50_ms: float | None
    api_max_ms: float | None
    startup_s: float = 0.0
    shutdown_s: float = 0.0
    #: Polls the API did not answer (within 10 s): a sign of an event loop too busy.
    api_failures: int = 0
    error: str = ""
    per_stream: list[StreamResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.kept_up == self.streams

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        rounded: dict[str, Any] = _rounded(data)
        return rounded


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, nearest rank), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def rise(points: Sequence[tuple[float, float]]) -> float | None:
    """How much the least-squares line through ``(t, y)`` rises from the first point's t to the last's."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    slope = sum((t - mt) * (y - my) for t, y in points) / var
    return slope * (points[-1][0] - points[0][0])


def judge_stream(stream_id: str, polls: Sequence[Poll], criteria: Criteria, ended: str = "") -> StreamResult:
    seen = [(p.t, p.streams[stream_id]) for p in polls if stream_id in p.streams]
    # A stream's lag: how far ingest is behind live plus how far speech recognition is behind ingest
    # (video analysis keeps only the newest samples, and counts what it drops).
    lags = [(t, float(s["lag_s"]) + float(s.get("speech_lag_s") or 0.0))
            for t, s in seen if s.get("lag_s") is not None]
    running = bool(polls) and stream_id in polls[-1].streams
    last = seen[-1][1] if seen else {}
    final_lag = lags[-1][1] if running and lags else None
    end_t = polls[-1].t if polls else 0.0
    third = [(t, lag) for t, lag in lags if t >= end_t * 2 / 3]
    growth = rise(third)
    kept = (running and final_lag is not None and final_lag < criteria.max_lag_s
            and growth is not None and growth < criteria.max_growth_s)
    ingest = last.get("ingest") or {}
    return StreamResult(
        stream_id=stream_id,
        seen_live=any(float(s.get("media_seconds") or 0) > 0 for _, s in seen),
        running_at_end=running,
        final_lag_s=final_lag,
        growth_s=growth,
        media_seconds=float(last.get("media_seconds") or 0.0),
        kept_up=kept,
        video_dropped=int(ingest.get("video_dropped", 0)),
        audio_dropped_s=float(ingest.get("audio_dropped_s", 0.0)),
        voiced_s=float(ingest.get("voiced_seconds", 0.0)),
        transcripts=int(last.get("transcripts") or 0),
        ended="" if running else ended,
    )


def _media(poll: Poll, ids: Sequence[str]) -> float:
    return sum(float(poll.streams[i].get("media_seconds") or 0.0) for i in ids if i in poll.streams)


def judge_level(
    ids: Sequence[str], polls: Sequence[Poll], criteria: Criteria = Criteria(), *,
    ended: Mapping[str, str] | None = None, startup_s: float = 0.0, shutdown_s: float = 0.0,
    api_failures: int = 0, error: str = "",
) -> LevelResult:
    """A level's verdict from its polls (``ended``: why streams ended early, by stream id)."""
    per_stream = [judge_stream(i, polls, criteria, (ended or {}).get(i, "")) for i in ids]
    steady = [p for p in polls if p.t >= criteria.warmup_s]
    cpu_polls = [p for p in steady if p.cpu_s is not None]
    cpu = per_media = cores = None
    if len(cpu_polls) >= 2:
        first, last = cpu_polls[0], cpu_polls[-1]
        cpu = (last.cpu_s or 0.0) - (first.cpu_s or 0.0)
        # Media analysed in the window, by streams running at both ends of it.
        both = [i for i in ids if i in first.streams and i in last.streams]
        media = _media(last, both) - _media(first, both)
        per_media = cpu / media if media > 0 else None
        cores = cpu / (last.t - first.t) if last.t > first.t else None
    lags = [float(s["lag_s"]) + float(s.get("speech_lag_s") or 0.0)
            for p in polls for s in p.streams.values() if s.get("lag_s") is not None]
    finals = [r.final_lag_s for r in per_stream if r.final_lag_s is not None]
    rss = [p.rss for p in polls if p.rss is not None]
    end_t = polls[-1].t if polls else 0.0
    late = [(p.t / 60, p.rss / MB) for p in steady if p.rss is not None and p.t >= end_t / 2]
    growth = rise(late)
    span_min = late[-1][0] - late[0][0] if len(late) >= 2 else 0.0
    api = [p.api_s * 1000 for p in polls if p.api_s is not None]
    peaks = [p.root_peak_rss for p in polls if p.root_peak_rss]
    return LevelResult(
        streams=len(ids),
        kept_up=sum(r.kept_up for r in per_stream),
        duration_s=polls[-1].t if polls else 0.0,
        cpu_s=cpu,
        cpu_per_media_s=per_media,
        cores_used=cores,
        lag_p50_s=percentile(lags, 50),
        lag_max_s=max(lags) if lags else None,
        final_lag_max_s=max(finals) if finals else None,
        peak_rss_mb=max(rss) / MB if rss else None,
        final_rss_mb=rss[-1] / MB if rss else None,
        service_peak_rss_mb=max(peaks) / MB if peaks else None,
        rss_growth_mb_per_min=growth / span_min if growth is not None and span_min > 0 else None,
        api_p50_ms=percentile(api, 50),
        api_max_ms=max(api) if api else None,
        startup_s=startup_s,
        shutdown_s=shutdown_s,
        api_failures=api_failures,
        error=error,
        per_stream=per_stream,
    )


def rss_per_extra_stream(levels: Sequence[LevelResult]) -> dict[int, float]:
    """Final resident memory each stream beyond the smallest level's adds, by level (MB per stream)."""
    measured = [lv for lv in levels if lv.final_rss_mb is not None and not lv.error]
    if not measured:
        return {}
    base = min(measured, key=lambda lv: lv.streams)
    assert base.final_rss_mb is not None
    return {lv.streams: (lv.final_rss_mb - base.final_rss_mb) / (lv.streams - base.streams)
            for lv in measured if lv.streams > base.streams and lv.final_rss_mb is not None}


def capacity(levels: Sequence[LevelResult]) -> int:
    """The most streams kept up, counting levels in order until the first that failed."""
    best = 0
    for level in levels:
        if not level.ok:
            break
        best = max(best, level.streams)
    return best
