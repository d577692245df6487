"""Adaptive video sampling: the pure rate decision, and a source that changes rate while running."""

from __future__ import annotations

import itertools
from pathlib import Path

from livesafe.core.events import VideoSample
from livesafe.core.policy import load_policy
from livesafe.core.sampling import AdaptiveRate
from livesafe.ingest.av_source import AVSource
from livesafe.ingest.source import IngestOptions
from tests.media import make_clip

SAMPLING = load_policy().sampling


def test_rate_follows_risk_and_speech() -> None:
    rate = AdaptiveRate(SAMPLING)
    assert rate.fps(1.0, 0.0) == SAMPLING.video_fps  # start at the base rate
    assert rate.fps(20.0, 0.0) == SAMPLING.idle_fps  # calm and silent
    rate.speech(21.0)
    assert rate.fps(22.0, 0.0) == SAMPLING.video_fps  # someone speaks
    assert rate.fps(23.0, 0.05) == SAMPLING.active_fps  # risk rising, even if low
    assert rate.fps(24.0, 0.05) == SAMPLING.video_fps  # steady low risk, recent activity
    assert rate.fps(25.0, 0.5) == SAMPLING.active_fps  # high risk
    assert rate.fps(26.0, 0.4) == SAMPLING.active_fps  # still above active_risk while falling
    assert rate.fps(30.0, 0.1) == SAMPLING.video_fps  # below active_risk, activity was recent
    assert rate.fps(26.0 + SAMPLING.quiet_after_s, 0.1) == SAMPLING.idle_fps


async def test_source_changes_rate_mid_stream(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", 8.0, audio=False, fps=20)
    src = AVSource("s", str(clip), IngestOptions(video_fps=1.0, queue_size=1))
    times = []
    async for sample in src.samples():
        assert isinstance(sample, VideoSample)
        times.append(sample.media_ts)
        if sample.media_ts >= 3.0 and src.stats.video_fps == 1.0:
            src.set_video_fps(4.0)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    assert gaps[0] == 1.0 and gaps[-1] == 0.25
    assert src.stats.video_fps == 4.0
