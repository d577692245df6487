"""Per-analyzer video feeds: motion on its own 8 fps feed beside the stream's normal (adaptive) rate.

The schedule (:class:`~livesafe.core.sampling.VideoFeeds`) is pure and tested on timestamps; the worker is
tested end to end on media PyAV generates, with the real analyzers the policy loads (Open-NSFW and the motion
head), real decoding and the real core.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from livesafe.analyzers.base import AnalyzerCost, VisionAnalyzer
from livesafe.analyzers.motion import MotionViolenceAnalyzer
from livesafe.analyzers.registry import Analyzers
from livesafe.core.events import Event, Signal, VideoSample
from livesafe.core.monitor import Monitor
from livesafe.core.policy import DEFAULT_POLICY_PATH, MOTION_FPS, Policy, load_policy, parse_policy
from livesafe.core.sampling import VideoFeeds, sample_fps
from livesafe.ingest.av_source import AVSource
from livesafe.ingest.source import IngestOptions, KeyframeControl, ingest_options
from livesafe.pipeline import StreamWorker
from tests.media import make_clip


class Recorder:
    """A vision analyzer that keeps the media times it is given; ``sample_fps`` as asked."""

    categories: tuple[str, ...] = ("nudity",)
    cost = AnalyzerCost(per_call_s=0.0)

    def __init__(self, name: str, fps: float | None = None) -> None:
        self.name = name
        self.sample_fps = fps
        self.seen: list[float] = []

    def analyze(self, sample: VideoSample) -> list[Signal]:
        self.seen.append(sample.media_ts)
        return []


def sampler_times(seconds: float, frame_fps: float, fps: float) -> list[float]:
    """The media times :class:`~livesafe.ingest.av_source.FrameSampler` picks from a ``frame_fps`` stream."""
    out, next_ts = [], 0.0
    for i in range(int(seconds * frame_fps)):
        ts = i / frame_fps
        if ts + 1e-6 >= next_ts:
            next_ts = max(next_ts + 1.0 / fps, ts)
            out.append(round(ts, 6))
    return out


def dispatch(feeds: VideoFeeds[Recorder], times: list[float]) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {a.name: [] for a in feeds.analyzers}
    for ts in times:
        for analyzer in feeds.due(ts):
            got[analyzer.name].append(ts)
    return got


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


@pytest.mark.parametrize("frame_fps", [25.0, 30.0, 29.97, 60.0])
def test_dense_feed_gets_every_sample_and_the_others_the_base_rate(frame_fps: float) -> None:
    motion, nudity = Recorder("motion", 8.0), Recorder("nudity")
    feeds = VideoFeeds([nudity, motion], base_fps=1.0)
    assert feeds.dense and feeds.source_fps == 8.0 and feeds.dense_fps == 8.0
    times = sampler_times(20.0, frame_fps, feeds.source_fps)
    got = dispatch(feeds, times)
    assert got["motion"] == times  # the source samples at motion's rate: motion gets all of it
    assert rate(got["motion"]) == pytest.approx(8.0, abs=0.15)
    assert len(got["nudity"]) == 20 and rate(got["nudity"]) == pytest.approx(1.0, abs=0.02)
    # Deterministic: the same timestamps give the same feeds.
    again = VideoFeeds([Recorder("nudity"), Recorder("motion", 8.0)], base_fps=1.0)
    assert dispatch(again, times) == got


def test_without_a_declared_rate_every_analyzer_gets_every_sample() -> None:
    a, b = Recorder("a"), Recorder("b")
    feeds = VideoFeeds([a, b], base_fps=1.0)
    assert not feeds.dense and feeds.source_fps == 1.0
    times = [0.0, 0.1, 0.2, 5.0, 4.0]  # whatever the source gives, as before feeds existed
    assert dispatch(feeds, times) == {"a": times, "b": times}


def test_base_rate_changes_apply_at_once_and_time_going_back_restarts() -> None:
    feeds = VideoFeeds([Recorder("base"), Recorder("dense", 8.0)], base_fps=0.5)
    times = [i / 8 for i in range(8 * 6)]
    got = dispatch(feeds, times[:17])  # 0 .. 2.0 s at 0.5 fps: 0.0 and 2.0
    assert got["base"] == [0.0, 2.0]
    feeds.set_base_fps(2.0)  # risk rose: next base sample half a second after the last, not 2 s
    assert feeds.source_fps == 8.0
    got = dispatch(feeds, times[17:])
    assert got["base"][:3] == [2.5, 3.0, 3.5]
    assert [a.name for a in feeds.due(1.0)] == ["base", "dense"]  # media time went back: start over
    with pytest.raises(ValueError, match="> 0"):
        feeds.set_base_fps(0.0)


def test_a_higher_base_rate_than_any_feed_drives_the_source() -> None:
    feeds = VideoFeeds([Recorder("base"), Recorder("dense", 8.0)], base_fps=10.0)
    assert feeds.source_fps == 10.0 and feeds.fps(0) == 10.0 and feeds.fps(1) == 8.0
    got = dispatch(feeds, sampler_times(10.0, 30.0, 10.0))
    assert rate(got["base"]) == pytest.approx(10.0, abs=0.2)
    assert rate(got["dense"]) == pytest.approx(8.0, abs=0.7)  # every 4th of 30 fps frames: 7.5-10 fps


def test_sample_fps_is_optional_and_checked() -> None:
    assert sample_fps(Recorder("x")) is None and sample_fps(Recorder("x", 8)) == 8.0
    assert sample_fps(MotionViolenceAnalyzer()) == MOTION_FPS
    assert isinstance(Recorder("x"), VisionAnalyzer)
    for bad in (0.0, -1.0, True, "8"):
        analyzer = Recorder("bad")
        analyzer.sample_fps = bad  # type: ignore[assignment]  # deliberately wrong
        with pytest.raises(ValueError, match="sample_fps"):
            sample_fps(analyzer)


def test_policy_enables_motion_at_the_normal_rate() -> None:
    """The old rule (motion refused below 8 fps sampling) is gone: motion has its own feed."""
    raw = yaml.safe_load(DEFAULT_POLICY_PATH.read_text("utf-8"))
    raw["analyzers"]["motion"] = True
    policy = parse_policy(raw)
    assert policy.analyzers.motion
    assert policy.sampling.idle_fps < policy.sampling.video_fps < policy.sampling.active_fps < MOTION_FPS


# --- end to end ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def motion_policy() -> Policy:
    """The default policy with nudity and motion on, speech and text off, and key frames only asked for."""
    base = load_policy()
    return dataclasses.replace(
        base,
        sampling=dataclasses.replace(base.sampling, keyframes_only=True),
        analyzers=dataclasses.replace(
            base.analyzers, motion=True, nudity=True, text=False,
            speech=dataclasses.replace(base.analyzers.speech, enabled=False),
        ),
    )


@pytest.fixture(scope="module")
def loaded(motion_policy: Policy) -> Analyzers:
    return Analyzers.load(motion_policy)


async def run_file(
    path: Path, policy: Policy, analyzers: Analyzers
) -> tuple[list[Event], AVSource, dict[str, int]]:
    source = AVSource("feeds", str(path), ingest_options(policy.sampling, "fast"))
    events: list[Event] = []

    async def sink(event: Event) -> None:
        events.append(event)

    summary = await StreamWorker(source, analyzers, Monitor(policy), sink).run()
    assert summary.error == ""
    return events, source, dict(summary.vision_samples)


async def test_motion_gets_8_fps_and_nudity_1_fps_deterministically(
    tmp_path: Path, motion_policy: Policy, loaded: Analyzers
) -> None:
    assert [a.name for a in loaded.vision] == ["vision.open_nsfw", "vision.motion"]
    seconds = 6.0
    clip = make_clip(tmp_path / "feeds.mp4", seconds, audio=False, fps=25, size=(320, 240), gop=50)
    events, source, fed = await run_file(clip, motion_policy, loaded)
    # Key frames only was asked for, but motion needs every frame: the whole stream was decoded.
    assert isinstance(source, KeyframeControl)
    assert source.stats.frames_decoded == int(seconds * 25)
    assert source.stats.video_fps == MOTION_FPS
    assert fed["vision.motion"] == source.stats.frames_sampled
    assert fed["vision.motion"] / seconds == pytest.approx(8.0, abs=0.5)
    assert fed["vision.open_nsfw"] == pytest.approx(seconds * motion_policy.sampling.video_fps, abs=1)
    signals = [e for e in events if isinstance(e, Signal)]
    assert {s.analyzer for s in signals} == {"vision.open_nsfw", "vision.motion"}
    assert sum(s.analyzer == "vision.open_nsfw" for s in signals) == fed["vision.open_nsfw"]
    # Once its 2 s window is full, motion emits every 0.5 s: ~ (6 - 1.875) / 0.5 + 1 signals.
    assert 8 <= sum(s.analyzer == "vision.motion" for s in signals) <= 10
    # A second run of the same file gives the same feeds and the same timeline.
    again, _, fed_again = await run_file(clip, motion_policy, loaded)
    assert fed_again == fed
    assert again == events


async def test_without_motion_keyframes_only_still_applies(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "k.mp4", 4.0, audio=False, fps=25, gop=25)
    policy = load_policy()
    nudity = Recorder("vision.rec")
    source = AVSource("k", str(clip), IngestOptions(video_fps=1.0, keyframes_only=True, vad=False))

    async def sink(event: Event) -> None:
        pass

    summary = await StreamWorker(source, Analyzers(vision=[nudity]), Monitor(policy), sink).run()
    assert source.stats.frames_decoded == 4  # one key frame a second
    assert summary.vision_samples == {"vision.rec": 4} and nudity.seen == [0.0, 1.0, 2.0, 3.0]


async def test_live_lanes_feed_motion_without_gaps(tmp_path: Path) -> None:
    """Live mode (realtime pacing, lanes, adaptive rate): motion still gets ~8 fps; no video sample lost."""
    clip = make_clip(tmp_path / "live.mp4", 3.0, audio=False, fps=25, size=(320, 240))
    motion, base = Recorder("motion", 8.0), Recorder("base")
    policy = load_policy()
    source = AVSource("live", str(clip), ingest_options(policy.sampling, "realtime"))

    async def sink(event: Event) -> None:
        pass

    worker = StreamWorker(source, Analyzers(vision=[base, motion]), Monitor(policy), sink, adaptive=True,
                          lanes=True)
    summary = await worker.run()
    assert summary.ingest["video_dropped"] == 0
    assert len(motion.seen) == summary.ingest["frames_sampled"] and rate(motion.seen) > 7.5
    assert 2 <= len(base.seen) <= 4
    assert np.all(np.diff(motion.seen) > 0)
