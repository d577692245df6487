"""Ingest through real PyAV decoding of media generated in a temp dir (and shared data where present)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
import pytest

from livesafe.core.events import AudioChunk, MediaSample, VideoSample
from livesafe.ingest.av_source import AudioWindower, AVSource
from livesafe.ingest.source import IngestOptions, IngestStats, SampleChannel, SourceError
from tests.media import make_clip

#: The generated clips carry a tone, which voice-activity detection rightly drops: tests of windowing
#: and hand-off turn it off.
NO_VAD = IngestOptions(vad=False)


async def collect(source: AVSource, delay: float = 0.0) -> list[MediaSample]:
    out = []
    async for s in source.samples():
        out.append(s)
        if delay:
            await asyncio.sleep(delay)
    return out


async def test_samples_video_at_policy_rate_and_audio_16k_mono(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", 6.0)
    src = AVSource("s", str(clip), IngestOptions(video_fps=2.0, audio_window_s=2.0, vad=False))
    samples = await collect(src)
    video = [s for s in samples if isinstance(s, VideoSample)]
    audio = [s for s in samples if isinstance(s, AudioChunk)]
    assert [round(v.media_ts, 1) for v in video] == [i / 2 for i in range(12)]
    assert [v.index for v in video] == list(range(12))
    assert video[0].image.dtype == np.uint8 and video[0].image.shape == (120, 160, 3)
    assert all(a.sample_rate == 16000 and a.samples.dtype == np.float32 for a in audio)
    assert all(a.samples.ndim == 1 for a in audio)
    # Audio windows are contiguous in media time and cover the clip.
    for prev, cur in itertools.pairwise(audio):
        assert cur.media_ts == pytest.approx(prev.end_ts, abs=1e-3)
    assert audio[0].media_ts == pytest.approx(0.0, abs=0.05)
    assert audio[-1].end_ts == pytest.approx(6.0, abs=0.1)
    assert src.stats.frames_decoded == 60 and src.stats.frames_sampled == 12
    assert src.stats.video_dropped == 0 and src.stats.decode_errors == 0


async def test_large_frames_are_scaled_down(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "big.mp4", 1.0, audio=False, size=(1280, 720))
    samples = await collect(AVSource("s", str(clip), IngestOptions(max_width=320)))
    assert samples and all(s.image.shape == (180, 320, 3) for s in samples if isinstance(s, VideoSample))


async def test_keyframes_only_decodes_only_key_frames(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "k.mp4", 4.0, audio=False, fps=10, gop=10)
    full = AVSource("f", str(clip), IngestOptions(skip_decode=False))
    await collect(full)
    key = AVSource("k", str(clip), IngestOptions(keyframes_only=True))
    samples = await collect(key)
    assert full.stats.frames_decoded == 40
    assert key.stats.frames_decoded == 4
    assert [s.media_ts for s in samples] == [0.0, 1.0, 2.0, 3.0]


async def test_video_only_and_audio_only(tmp_path: Path) -> None:
    v = await collect(AVSource("v", str(make_clip(tmp_path / "v.mp4", 3.0, audio=False))))
    assert v and all(isinstance(s, VideoSample) for s in v)
    a = await collect(AVSource("a", str(make_clip(tmp_path / "a.wav", 3.0, video=False)), NO_VAD))
    assert a and all(isinstance(s, AudioChunk) for s in a)
    assert sum(s.duration for s in a if isinstance(s, AudioChunk)) == pytest.approx(3.0, abs=0.05)


async def test_missing_and_corrupt_sources_raise_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        await collect(AVSource("x", str(tmp_path / "missing.mp4")))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError):
        await collect(AVSource("x", str(junk)))


async def test_truncated_file_ends_cleanly_with_what_was_decodable(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "t.mkv", 4.0)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3])
    samples = await collect(AVSource("t", str(cut)))
    assert any(isinstance(s, VideoSample) for s in samples)


async def test_realtime_slow_consumer_drops_oldest_video_and_counts(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "r.mp4", 2.0, audio=False, fps=25)
    src = AVSource("r", str(clip), IngestOptions(video_fps=25.0, pacing="realtime", video_slots=2))
    samples = await collect(src, delay=0.3)
    video = [s for s in samples if isinstance(s, VideoSample)]
    assert src.stats.video_dropped > 0
    assert len(video) + src.stats.video_dropped == src.stats.frames_sampled
    # The newest frame wins: the last frame of the clip is never the one dropped.
    assert video[-1].media_ts == pytest.approx(1.96, abs=0.05)


async def test_fast_slow_consumer_loses_nothing(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "f.mp4", 1.0, audio=False, fps=25)
    src = AVSource("f", str(clip), IngestOptions(video_fps=25.0, pacing="fast", queue_size=2))
    samples = await collect(src, delay=0.01)
    assert len(samples) == 25 and src.stats.video_dropped == 0


async def test_consumer_leaving_early_stops_the_decoder(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "e.mp4", 5.0)
    src = AVSource("e", str(clip), IngestOptions(queue_size=1))
    async for _ in src.samples():
        break
    await src.aclose()
    assert src._thread is not None and not src._thread.is_alive()


async def test_live_channel_keeps_newest_video_and_audio_between_water_marks() -> None:
    stats = IngestStats()
    ch = SampleChannel(asyncio.get_running_loop(), 64, "realtime", stats,
                       video_slots=2, audio_high_s=10.0, audio_low_s=6.0)
    for i in range(10):
        ch.put(VideoSample("s", float(i), np.zeros((2, 2, 3), np.uint8)))
        assert len(ch) <= 2
    assert stats.video_dropped == 8
    for i in range(6):  # 2 s chunks: the 6th takes audio to 12 s > 10 s, cut back to <= 6 s
        ch.put(AudioChunk("s", 100.0 + 2 * i, np.zeros(32000, np.float32)))
    assert stats.audio_dropped == 3 and stats.audio_dropped_s == 6.0
    ch.finish()
    got = []
    while (item := await ch.get()) is not None:
        got.append(item.media_ts)
    assert got == [8.0, 9.0, 106.0, 108.0, 110.0]


async def test_channel_never_exceeds_capacity() -> None:
    stats = IngestStats()
    ch = SampleChannel(asyncio.get_running_loop(), 3, "realtime", stats, video_slots=3)
    for i in range(10):
        ch.put(VideoSample("s", float(i), np.zeros((2, 2, 3), np.uint8)))
        assert len(ch) <= 3
    ch.put(AudioChunk("s", 10.0, np.zeros(16, np.float32)))
    assert len(ch) == 3
    ch.finish()
    got = [await ch.get() for _ in range(3)]
    assert [g.media_ts for g in got if g is not None] == [8.0, 9.0, 10.0]
    assert stats.video_dropped == 8 and await ch.get() is None


def test_windower_cuts_in_pauses_and_hard_cuts_continuous_sound() -> None:
    rate = 16000
    burst = 0.3 * np.sin(2 * np.pi * 300 * np.arange(int(1.8 * rate)) / rate).astype(np.float32)
    pause = np.zeros(int(0.5 * rate), np.float32)
    speech = np.concatenate([burst, pause] * 6)  # 13.8 s: sound 1.8 s, pause 0.5 s
    w = AudioWindower("s", window_s=4.0)
    chunks = list(w.push(10.0, speech)) + list(w.flush())
    assert chunks[0].media_ts == 10.0
    for c in chunks[:-1]:
        # each cut falls in a pause: the last 0.2 s of every window is silent
        assert np.abs(c.samples[-int(0.2 * rate):]).max() == 0.0
        assert 2.0 <= c.duration <= 8.0
    assert sum(c.duration for c in chunks) == pytest.approx(len(speech) / rate)
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(20 * rate) / rate).astype(np.float32)
    hard = list(AudioWindower("s", window_s=4.0).push(0.0, tone))
    assert [round(c.duration, 2) for c in hard] == [8.0, 8.0]


async def test_shared_trailer_with_a_corrupt_audio_packet(shared_data: Path) -> None:
    src = AVSource("m", str(shared_data / "video/debian_opencv_doc/Megamind.avi"))
    samples = await collect(src)
    assert src.stats.decode_errors >= 1
    assert sum(isinstance(s, VideoSample) for s in samples) >= 10
    assert any(isinstance(s, AudioChunk) for s in samples)


async def test_http_url_source(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    make_clip(tmp_path / "web.mp4", 3.0)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    class Quiet(http.server.ThreadingHTTPServer):
        daemon_threads = True

    server = Quiet(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/web.mp4"
        samples = await collect(AVSource("web", url, NO_VAD))
    finally:
        server.shutdown()
        server.server_close()
    assert sum(isinstance(s, VideoSample) for s in samples) == 3
    assert any(isinstance(s, AudioChunk) for s in samples)


async def test_vad_hands_on_only_speech(demo_dir: Path) -> None:
    """The threat demo: speech at about 1, 12, 20 and 30 s; the silence between never leaves ingest."""
    src = AVSource("t", str(demo_dir / "threat.mp4"))
    chunks = [s for s in await collect(src) if isinstance(s, AudioChunk)]
    starts = [round(c.media_ts) for c in chunks]
    assert len(chunks) >= 4
    for spoken in (1, 12, 20, 30):
        assert any(abs(s - spoken) <= 1 for s in starts), (spoken, starts)
    voiced = sum(c.duration for c in chunks)
    assert voiced == pytest.approx(src.stats.voiced_seconds)
    assert 10.0 < voiced < 0.6 * src.stats.audio_seconds


def test_vad_ignores_tone_and_silence() -> None:
    from livesafe.ingest.vad import VadSegmenter

    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(5 * rate) / rate).astype(np.float32)
    seg = VadSegmenter("s")
    chunks = list(seg.push(0.0, np.concatenate([np.zeros(rate, np.float32), tone]))) + list(seg.flush())
    assert chunks == [] and seg.voiced_seconds == 0.0
    assert seg.dropped_seconds == pytest.approx(6.0, abs=0.05)
