"""Decoding only what sampling needs (``av_source.DecodeSkipper``): the same samples, fewer frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livesafe.core.events import MediaSample, VideoSample
from livesafe.ingest.av_source import AVSource, DecodeSkipper
from livesafe.ingest.source import IngestOptions
from tests.media import make_clip

FRAME = 1 / 30


def test_skips_to_the_next_key_frame_only_once_key_frames_are_regular() -> None:
    skip = DecodeSkipper(FRAME)
    # Key frames every 2 s: after three equal intervals the next one is expected at 8.0.
    for key in (0.0, 2.0, 4.0):
        assert not skip.skip_packet(key, True, next_due=key)
        assert skip.next_key() is None
        assert not skip.skip_packet(key + 0.5, False, next_due=key + 1.0)
    assert not skip.skip_packet(6.0, True, next_due=6.0)
    assert skip.next_key() == pytest.approx(8.0)
    assert not skip.skip_packet(6.5, False, next_due=7.0)  # a sample due before the key frame
    assert skip.skip_packet(7.2, False, next_due=8.0)  # due at the key frame: skip to it
    assert skip.skip_packet(7.9, False, next_due=8.0)
    # A key frame ends the skipping, however late it comes.
    assert not skip.skip_packet(8.1, True, next_due=8.0)
    assert not skip.skip_packet(8.2, False, next_due=8.0)
    assert skip.skipped_packets == 2


def test_irregular_key_frames_are_never_skipped_to() -> None:
    skip = DecodeSkipper(FRAME)
    for key in (0.0, 2.0, 3.8, 5.7, 7.6):  # scene-cut GOPs
        skip.skip_packet(key, True, next_due=key)
    assert skip.next_key() is None
    assert not skip.skip_packet(8.0, False, next_due=20.0)


def test_non_reference_frames_are_skipped_only_before_the_next_sample() -> None:
    skip = DecodeSkipper(FRAME)
    assert skip.skip_frame(0.5, next_due=1.0, fps=1.0) == "NONREF"
    assert skip.skip_frame(1.0, next_due=1.0, fps=1.0) == "DEFAULT"
    assert skip.skip_frame(1.5, next_due=1.0, fps=1.0) == "DEFAULT"
    assert skip.skip_frame(None, next_due=1.0, fps=1.0) == "DEFAULT"
    assert skip.skip_frame(0.5, next_due=1.0, fps=8.0) == "DEFAULT"  # dense sampling: not worth it


async def _video(path: Path, **options: object) -> tuple[list[VideoSample], AVSource]:
    source = AVSource("s", str(path), IngestOptions(vad=False, **options))  # type: ignore[arg-type]
    samples: list[MediaSample] = [s async for s in source.samples()]
    return [s for s in samples if isinstance(s, VideoSample)], source


@pytest.mark.parametrize("fps", [0.5, 1.0, 2.0])
async def test_the_same_frames_are_sampled_as_with_full_decoding(tmp_path: Path, fps: float) -> None:
    clip = make_clip(tmp_path / "gop.mp4", 12.0, fps=30, audio=False, size=(320, 240), gop=30)
    skipped, fast = await _video(clip, video_fps=fps)
    full, slow = await _video(clip, video_fps=fps, skip_decode=False)
    assert [s.media_ts for s in skipped] == [s.media_ts for s in full]
    assert len(full) == round(12.0 * fps)
    for a, b in zip(skipped, full, strict=True):
        assert np.array_equal(a.image, b.image)
    assert slow.stats.frames_decoded == 360 and slow.stats.packets_skipped == 0
    assert fast.stats.frames_decoded < slow.stats.frames_decoded
    if fps <= 1.0:  # samples at most every GOP's middle: whole runs of packets are never decoded
        assert fast.stats.packets_skipped > 0


async def test_the_demo_streams_sample_the_same_frames(demo_dir: Path) -> None:
    for name in ("threat.mp4", "benign.mp4"):
        for fps in (0.5, 1.0, 2.0):
            skipped, _ = await _video(demo_dir / name, video_fps=fps)
            full, _ = await _video(demo_dir / name, video_fps=fps, skip_decode=False)
            assert [s.media_ts for s in skipped] == [s.media_ts for s in full], (name, fps)
