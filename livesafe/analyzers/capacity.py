"""Capacity planning from the costs analyzers declare.

Every analyzer declares an :class:`~livesafe.analyzers.base.AnalyzerCost`: CPU seconds per call and per
media second. With the policy's sampling rates this gives the CPU one stream needs per second of media,
and so how many live streams a machine can follow in real time. The service logs the estimate when it
starts, warns when a new stream takes the machine past it, and reports it in its metrics; ``make bench``
prints it beside the measured figure.

Assumptions (options of :func:`estimate`): a stream has speech about half of the time
(``voiced_fraction``), one utterance every four seconds reaches the text classifier
(``utterances_per_s``), and the machine is planned to ``target_utilisation`` of its cores, leaving room
for decoding, the event loop and bursts. Decoding itself is not an analyzer; it gets a flat allowance
measured on 720p30 H.264 with a 2 s GOP (``make bench``): ~0.015 CPU s per media second decoding key
frames only, ~0.03 decoding what 1 fps sampling needs (the default: ``ingest.av_source.DecodeSkipper``),
~0.08 decoding every frame (always when an analyzer such as motion has its own dense feed).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from livesafe.analyzers.base import AnalyzerCost
from livesafe.core.sampling import sample_fps

if TYPE_CHECKING:
    from livesafe.analyzers.registry import Analyzers
    from livesafe.core.policy import SamplingPolicy

__all__ = ["LoadEstimate", "estimate"]

#: CPU seconds per media second to decode 720p30 H.264: every frame, what 1 fps sampling needs, key frames.
FULL_DECODE_S = 0.08
SAMPLED_DECODE_S = 0.03
KEYFRAME_DECODE_S = 0.015


@dataclass(frozen=True, slots=True)
class LoadEstimate:
    """CPU seconds per media second of one stream, per analyzer, at the base and the active video rate."""

    parts: dict[str, float]
    per_stream_s: float
    per_stream_active_s: float
    cores: int
    target_utilisation: float
    #: How many streams the machine can follow in real time at the base rate (planned utilisation).
    streams: float = field(init=False)

    def __post_init__(self) -> None:
        budget = self.cores * self.target_utilisation
        object.__setattr__(self, "streams", budget / self.per_stream_s if self.per_stream_s > 0 else 0.0)

    def over(self, running: int) -> bool:
        """True when ``running`` streams need more CPU than planned."""
        return running * self.per_stream_s > self.cores * self.target_utilisation

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_stream_cpu_s": round(self.per_stream_s, 4),
            "per_stream_active_cpu_s": round(self.per_stream_active_s, 4),
            "parts": {k: round(v, 4) for k, v in self.parts.items()},
            "cores": self.cores,
            "target_utilisation": self.target_utilisation,
            "streams": round(self.streams, 1),
        }


def _load(cost: AnalyzerCost, calls_per_s: float, media_fraction: float = 1.0) -> float:
    return cost.per_call_s * calls_per_s + cost.per_media_s * media_fraction


def _vision(analyzers: Iterable[Any], fps: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for analyzer in analyzers:
        own = sample_fps(analyzer)  # analyzers with their own feed
        out[analyzer.name] = _load(analyzer.cost, own if own else fps)
    return out


def estimate(
    sampling: SamplingPolicy,
    analyzers: Analyzers,
    *,
    cores: int | None = None,
    voiced_fraction: float = 0.5,
    utterances_per_s: float = 0.25,
    target_utilisation: float = 0.75,
    decode_s_per_s: float | None = None,
) -> LoadEstimate:
    """The planned CPU load of one stream under ``sampling`` with ``analyzers`` (see the module docs)."""
    if not 0.0 <= voiced_fraction <= 1.0:
        raise ValueError(f"voiced_fraction must be in [0, 1], got {voiced_fraction}")
    if not 0.0 < target_utilisation <= 1.0:
        raise ValueError(f"target_utilisation must be in (0, 1], got {target_utilisation}")
    cores = cores or os.cpu_count() or 1
    if decode_s_per_s is None:
        if any(sample_fps(a) for a in analyzers.vision):
            decode_s_per_s = FULL_DECODE_S
        else:
            decode_s_per_s = KEYFRAME_DECODE_S if sampling.keyframes_only else SAMPLED_DECODE_S
    parts = {"decode": decode_s_per_s, **_vision(analyzers.vision, sampling.video_fps)}
    if analyzers.speech is not None:
        parts[analyzers.speech.name] = _load(analyzers.speech.cost, utterances_per_s, voiced_fraction)
    for text in analyzers.text:
        parts[text.name] = _load(text.cost, utterances_per_s)
    active_fps = max(sampling.video_fps, sampling.active_fps if sampling.adaptive else sampling.video_fps)
    active = dict(parts, **_vision(analyzers.vision, active_fps))
    return LoadEstimate(
        parts=parts,
        per_stream_s=sum(parts.values()),
        per_stream_active_s=sum(active.values()),
        cores=cores,
        target_utilisation=target_utilisation,
    )
