"""The stream worker's live mode: video and audio analysed in their own lanes of one task group.

The analyzers here are small real classes implementing the analyzer protocols (one deliberately slow,
as a big speech model on a busy machine is); the media, PyAV decoding and the core are real.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from livesafe.analyzers.base import AnalyzerCost
from livesafe.analyzers.registry import Analyzers
from livesafe.core.events import AudioChunk, Event, Signal, Transcript, VideoSample, Word
from livesafe.core.monitor import Monitor
from livesafe.core.policy import load_policy
from livesafe.ingest.av_source import AVSource
from livesafe.ingest.source import IngestOptions
from livesafe.pipeline import StreamWorker, _Lane, unheard
from tests.media import make_clip


class SlowSpeech:
    name = "slow-speech"
    cost = AnalyzerCost(per_call_s=2.0)

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, chunk: AudioChunk) -> list[Transcript]:
        self.calls += 1
        time.sleep(2.0)
        return []


class Brightness:
    name = "brightness"
    categories: tuple[str, ...] = ("nudity",)
    cost = AnalyzerCost(per_call_s=0.0)

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []  # (media_ts, wall time)

    def analyze(self, sample: VideoSample) -> list[Signal]:
        self.seen.append((sample.media_ts, time.monotonic()))
        score = float(np.mean(sample.image)) / 255
        return [Signal(sample.stream_id, sample.media_ts, "nudity", score, self.name)]


async def test_slow_speech_does_not_hold_up_vision_and_drops_are_counted(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "live.mp4", 6.0)
    vision, speech = Brightness(), SlowSpeech()
    options = IngestOptions(video_fps=2.0, audio_window_s=1.0, vad=False, pacing="realtime")
    source = AVSource("s", str(clip), options)
    events: list[Event] = []

    async def sink(event: Event) -> None:
        events.append(event)

    worker = StreamWorker(source, Analyzers(vision=[vision], speech=speech), Monitor(load_policy()), sink,
                          lanes=True)
    started = time.monotonic()
    summary = await worker.run()
    assert summary.error == ""
    # Vision kept up with real time while every transcription took two seconds.
    lags = [wall - started - media_ts for media_ts, wall in vision.seen]
    assert len(vision.seen) >= 10 and max(lags) < 1.5, lags
    assert speech.calls >= 2 and any(isinstance(e, Signal) for e in events)


async def test_a_full_lane_drops_its_oldest_item() -> None:
    lane = _Lane[int](3)
    assert [lane.put(i) for i in range(5)] == [[], [], [], [0], [1]]
    lane.close()
    assert [await lane.get() for _ in range(4)] == [2, 3, 4, None]


async def test_a_failing_source_ends_the_lanes_with_its_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    worker = StreamWorker(AVSource("j", str(junk), IngestOptions(pacing="realtime")), Analyzers(),
                          Monitor(load_policy()), _discard, lanes=True)
    summary = await worker.run()
    assert "junk.mp4" in summary.error


async def _discard(event: Event) -> None:
    return None


def test_unheard_drops_words_already_transcribed() -> None:
    words = (Word(9.0, 9.4, "I"), Word(9.4, 9.9, "will"), Word(10.1, 10.6, "find"), Word(10.6, 11.0, "you"))
    t = Transcript("s", 9.0, 11.0, "I will find you", words=words)
    assert unheard(t, 8.0) is t
    kept = unheard(t, 10.0)
    assert kept is not None and kept.text == "find you" and kept.media_ts == 10.1 and kept.words == words[2:]
    assert unheard(t, 11.5) is None
    bare = Transcript("s", 9.0, 11.0, "no words")
    assert unheard(bare, 10.0) is bare and unheard(bare, 11.0) is None


def test_vad_overlaps_long_utterances(demo_dir: Path) -> None:
    import av

    from livesafe.ingest.vad import VadOptions, VadSegmenter

    with av.open(str(demo_dir / "threat.mp4")) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                              for f in resampler.resample(frame)])
    seg = VadSegmenter("t", VadOptions(max_utterance_s=1.5, overlap_s=0.5))
    chunks = list(seg.push(0.0, pcm)) + list(seg.flush())
    overlapping = [(a, b) for a, b in itertools.pairwise(chunks) if b.media_ts < a.end_ts - 1e-6]
    assert overlapping, "long utterances were not cut with overlap"
    for a, b in overlapping:
        assert a.end_ts - b.media_ts == pytest.approx(0.5, abs=0.04)
    total = sum(c.duration for c in chunks)
    assert seg.voiced_seconds == pytest.approx(total - sum(a.end_ts - b.media_ts for a, b in overlapping))
