"""``livesafe bench capacity``: the verdict arithmetic (tables), the workload (the fallbacks without
../shared or espeak-ng too), and one short real run through the real service. Timings are never asserted:
whether a stream kept up depends on the machine."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from livesafe.bench import judge, workload
from livesafe.bench.capacity import parse_planned
from livesafe.bench.judge import Criteria, LevelResult, Poll
from livesafe.bench.speech import RATE, demo_speech, speech_track
from livesafe.bench.workload import WorkloadSpec, make_workload, playlist
from livesafe.cli import main


def _polls(lags: list[float | None], media_step: float = 1.0) -> list[Poll]:
    """One poll a second of stream ``s``; None: the stream is not listed (ended)."""
    return [Poll(float(t), {} if lag is None else {"s": {"lag_s": lag, "media_seconds": t * media_step}},
                 cpu_s=0.5 * t, rss=(500 + t) * judge.MB)
            for t, lag in enumerate(lags)]


@pytest.mark.parametrize(("lags", "kept_up"), [
    ([0.2] * 30, True),                                  # flat, small
    ([0.2 + (t % 3) * 0.5 for t in range(30)], True),    # jittering, not growing
    ([0.2] * 40 + [0.2 + 0.1 * t for t in range(20)], False),  # growing late (still < 3 s at the end)
    ([3.5] * 30, False),                                 # flat but too far behind
    ([0.2] * 29 + [None], False),                        # gone before the end
])
def test_a_stream_keeps_up_when_its_lag_is_small_and_not_growing(
    lags: list[float | None], kept_up: bool
) -> None:
    result = judge.judge_stream("s", _polls(lags), Criteria())
    assert result.kept_up is kept_up
    assert result.seen_live


def test_a_level_adds_up_cpu_media_and_memory() -> None:
    level = judge.judge_level(["s"], _polls([0.2] * 21), Criteria(warmup_s=5.0))
    assert level.kept_up == 1 and level.ok
    assert level.cpu_per_media_s == pytest.approx(0.5)  # 0.5 CPU s each second, 1 media s each second
    assert level.cores_used == pytest.approx(0.5)
    assert level.rss_growth_mb_per_min == pytest.approx(60.0)
    assert level.peak_rss_mb == pytest.approx(520.0)


def test_capacity_counts_levels_until_the_first_failure() -> None:
    def level(n: int, kept: int) -> LevelResult:
        return judge.judge_level([], [], error="") if n == 0 else LevelResult(
            n, kept, 10.0, None, None, None, None, None, None, None, 500.0 + 40 * n, None, None, None, None)

    levels = [level(1, 1), level(2, 2), level(4, 3), level(8, 8)]
    assert judge.capacity(levels) == 2
    assert judge.rss_per_extra_stream(levels) == {2: 40.0, 4: 40.0, 8: 40.0}


def test_the_services_planned_estimate_is_read_from_its_log() -> None:
    log = ("2026-12-02 12:10:26,523 INFO livesafe.service: capacity: about 0.267 CPU s per media second per "
           "stream (decode 0.080, vision.open_nsfw 0.020, faster-whisper/tiny.en 0.138), ~6 live streams on "
           "2 cores\n")
    planned = parse_planned(log)
    assert planned is not None
    assert (planned.per_stream_cpu_s, planned.streams, planned.cores) == (0.267, 6.0, 2)
    assert planned.parts["faster-whisper/tiny.en"] == 0.138
    assert parse_planned("nothing here") is None


def test_speech_fills_about_the_asked_fraction() -> None:
    utterances = [np.full(int(RATE * s), 0.3, dtype=np.float32) for s in (2.0, 3.5, 5.0)]
    track, speech_s = speech_track(utterances, 60.0, 0.7)
    assert len(track) == 60 * RATE
    assert 0.6 < speech_s / 60.0 < 0.75
    assert float(np.max(np.abs(track))) <= 1.0


def test_fallback_workload_without_shared_data_or_espeak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled demo's picture (upscaled) and voice, when ../shared and espeak-ng are missing."""
    monkeypatch.setattr(workload, "SHARED_VIDEO", tmp_path / "absent.webm")
    assert len(demo_speech().utterances) >= 2
    clip = make_workload(WorkloadSpec(seconds=4.0, espeak=False), tmp_path / "cache")
    assert clip.speech_source.startswith("demo:") and "benign.mp4" in clip.video_source
    assert 0.5 < clip.speech_fraction < 0.8
    assert make_workload(WorkloadSpec(seconds=4.0, espeak=False), tmp_path / "cache") == clip  # cached
    with av.open(str(clip.path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 1280, 720)
        assert video.average_rate == Fraction(30) and audio.codec_context.name == "aac"
        keys = [float(p.pts * p.time_base) for p in container.demux(video)
                if p.is_keyframe and p.pts is not None]
    assert keys[:2] == [0.0, 2.0]  # a GOP of 2 s
    listed = playlist(clip, tmp_path / "run", "s2", seconds=10.0, offset_s=3.0)
    lines = listed.read_text().splitlines()
    assert lines[:3] == ["ffconcat version 1.0", "file clip.mp4", "inpoint 2.000"]
    assert lines.count("file clip.mp4") == 3  # 2 s from the offset + 2 x 4 s >= 10 s
    with av.open(str(listed)) as container:  # FFmpeg plays the list as one stream
        assert container.streams.video and container.streams.audio


@pytest.mark.models
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU and memory are read from /proc")
def test_one_stream_through_the_real_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "capacity.json"
    code = main(["bench", "capacity", "--streams", "1", "--duration", "8", "--warmup", "2", "--clip-s", "8",
                 "--cache-dir", str(tmp_path / "cache"), "--work-dir", str(tmp_path / "work"),
                 "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["type"] == "capacity"
    assert set(report) >= {"machine", "workload", "options", "planned", "measured", "levels"}
    assert report["workload"]["width"] == 1280 and report["workload"]["fps"] == 30
    assert report["planned"] is not None and report["planned"]["per_stream_cpu_s"] > 0
    assert set(report["measured"]) >= {"streams_kept_up", "per_stream_cpu_s", "rss_per_extra_stream_mb"}
    [level] = report["levels"]
    assert level["streams"] == 1 and level["error"] == ""
    for key in ("kept_up", "cpu_per_media_s", "cores_used", "lag_p50_s", "lag_max_s", "final_lag_max_s",
                "peak_rss_mb", "final_rss_mb", "rss_growth_mb_per_min", "startup_s", "shutdown_s", "ok"):
        assert key in level
    [stream] = level["per_stream"]
    assert stream["stream_id"] == "bench-01"
    assert stream["seen_live"] and stream["running_at_end"]  # live from start to end, judged on its lag
    assert stream["media_seconds"] > 0 and level["peak_rss_mb"] > 0 and level["cpu_s"] > 0
    assert "kept up" in printed and "planned (service log)" in printed
