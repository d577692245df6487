"""The motion violence analyzer: packaged head, deterministic features, real clips, buffers, fps handling."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from livesafe.analyzers.base import VisionAnalyzer
from livesafe.analyzers.motion import (
    FEATURE_NAMES,
    REQUIRED_FPS,
    WINDOW_FRAMES,
    MotionOptions,
    MotionViolenceAnalyzer,
    load_head,
    sample_clip,
    to_small_gray,
    window_features,
)
from livesafe.core.events import Signal, VideoSample
from livesafe.core.policy import MOTION_FPS, load_policy
from livesafe.eval import main
from livesafe.eval.runner import run_eval
from livesafe.eval.video import fight_split, load_fight_clips, read_fight_clips


@pytest.fixture(scope="module")
def analyzer() -> MotionViolenceAnalyzer:
    return MotionViolenceAnalyzer()


def fight_dir(shared_data: Path) -> Path:
    return shared_data / "video" / "fight_train"


def feed(
    an: MotionViolenceAnalyzer, stream_id: str, frames: list[tuple[float, npt.NDArray[np.uint8]]]
) -> list[Signal]:
    out: list[Signal] = []
    for i, (ts, rgb) in enumerate(frames):
        out += an.analyze(VideoSample(stream_id, ts, rgb, i))
    return out


def synthetic(n: int, fps: float, moving: bool, seed: int = 0) -> list[tuple[float, npt.NDArray[np.uint8]]]:
    """A textured 320x240 scene; ``moving`` adds a bright block jumping about, else only sensor noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    frames = []
    for i in range(n):
        img = base.astype(np.int16) + rng.integers(-2, 3, size=base.shape, dtype=np.int16)
        if moving:
            y, x = rng.integers(0, 180), rng.integers(0, 260)
            img[y : y + 60, x : x + 60] = 255
        frames.append((round(i / fps, 6), np.clip(img, 0, 255).astype(np.uint8)))
    return frames


def test_head_loads_and_declares_its_fps() -> None:
    head = load_head()
    assert head.feature_names == FEATURE_NAMES
    assert head.fps == REQUIRED_FPS and head.window_frames == WINDOW_FRAMES
    meta = head.metadata
    for part in ("held_out", "cv5_mean"):
        assert set(meta[part]) >= {"accuracy", "precision", "recall", "f1", "roc_auc"}
    an = MotionViolenceAnalyzer(head=head)
    assert isinstance(an, VisionAnalyzer)
    assert an.required_fps == 8.0 and an.window_s == 2.0
    assert an.sample_fps == MOTION_FPS  # the pipeline gives it its own 8 fps feed
    assert an.categories == ("violence",) and an.name == "vision.motion"


@pytest.mark.shared_data
def test_features_are_deterministic_and_cheap(shared_data: Path) -> None:
    path = fight_dir(shared_data) / "fight" / "fi001.mp4"
    a = np.stack([to_small_gray(rgb) for _, rgb in sample_clip(path)[:WINDOW_FRAMES]])
    b = np.stack([to_small_gray(rgb) for _, rgb in sample_clip(path)[:WINDOW_FRAMES]])
    assert a.shape[0] == WINDOW_FRAMES and a.shape[2] == 160
    fa, fb = window_features(a), window_features(b)
    assert fa.shape == (len(FEATURE_NAMES),) and np.all(np.isfinite(fa))
    np.testing.assert_array_equal(fa, fb)
    t = time.perf_counter()
    for _ in range(5):
        window_features(a)
    # Measured ~8 ms; the bound leaves room for a loaded CI machine.
    assert (time.perf_counter() - t) / 5 < 0.1


@pytest.mark.shared_data
def test_held_out_fights_score_higher(shared_data: Path, analyzer: MotionViolenceAnalyzer) -> None:
    names = list(analyzer.head.metadata["held_out"]["test_names"])
    fights = [n for n in names if n.startswith("fi")][:5]
    calm = [n for n in names if n.startswith("nofi")][:5]
    means: dict[str, float] = {}
    for name in fights + calm:
        folder = "fight" if name in fights else "noFight"
        signals = feed(analyzer, name, sample_clip(fight_dir(shared_data) / folder / name))
        analyzer.forget(name)
        assert signals, name
        assert all(s.category == "violence" and s.analyzer == "vision.motion" for s in signals)
        assert all(0.0 <= s.score <= 1.0 and set(s.evidence) >= {"window_s", "features"} for s in signals)
        means[name] = float(np.mean([s.score for s in signals]))
    fight_mean = float(np.mean([means[n] for n in fights]))
    calm_mean = float(np.mean([means[n] for n in calm]))
    assert fight_mean > calm_mean + 0.1, means


def test_static_video_scores_low(analyzer: MotionViolenceAnalyzer) -> None:
    signals = feed(analyzer, "static", synthetic(24, REQUIRED_FPS, moving=False))
    assert signals
    assert max(s.score for s in signals) < 0.3
    moving = feed(analyzer, "moving", synthetic(24, REQUIRED_FPS, moving=True))
    assert min(s.score for s in moving) > max(s.score for s in signals)


def test_signal_span_and_cadence() -> None:
    an = MotionViolenceAnalyzer(MotionOptions(emit_every_s=1.0))
    signals = feed(an, "s", synthetic(40, REQUIRED_FPS, moving=True))
    # Full at frame 15 (1.875 s), then every second: 1.875, 2.875, 3.875, 4.875.
    assert [s.end_ts for s in signals] == [1.875, 2.875, 3.875, 4.875]
    assert all(s.end_ts is not None and s.end_ts - s.media_ts == pytest.approx(1.875) for s in signals)


def test_buffers_stay_bounded_and_forget() -> None:
    an = MotionViolenceAnalyzer(MotionOptions(max_streams=3))
    frames = synthetic(60, REQUIRED_FPS, moving=True)
    feed(an, "a", frames)
    assert an.buffered("a") == WINDOW_FRAMES
    for sid in ("b", "c", "d"):
        feed(an, sid, frames[:3])
    assert an.stream_ids() == ["b", "c", "d"]  # "a", least recently fed, was dropped
    an.forget("c")
    an.forget("nope")
    assert an.stream_ids() == ["b", "d"] and an.buffered("c") == 0


def test_too_low_fps_never_emits() -> None:
    an = MotionViolenceAnalyzer()
    # A feed at 1-2 fps (the pipeline feeds it 8 fps; a caller of its own might not): every gap empties
    # the buffer, nothing is emitted.
    assert feed(an, "slow", synthetic(40, 2.0, moving=True)) == []
    assert an.starved("slow") and an.buffered("slow") == 1
    # Denser than needed (25 fps) is thinned to 8 fps and works.
    signals = feed(an, "fast", synthetic(75, 25.0, moving=True))
    assert signals and not an.starved("fast")
    # Media time going backwards starts the window over.
    assert an.analyze(VideoSample("fast", 0.0, synthetic(1, 25.0, moving=True)[0][1])) == []
    assert an.buffered("fast") == 1


def test_thread_safe_per_stream_state() -> None:
    frames = synthetic(32, REQUIRED_FPS, moving=True)
    reference = [s.score for s in feed(MotionViolenceAnalyzer(), "ref", frames)]
    an = MotionViolenceAnalyzer()
    results: dict[str, list[float]] = {}

    def run(sid: str) -> None:
        results[sid] = [s.score for s in feed(an, sid, frames)]

    threads = [threading.Thread(target=run, args=(f"s{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(scores == reference for scores in results.values())


def test_rejects_bad_images(analyzer: MotionViolenceAnalyzer) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        analyzer.analyze(VideoSample("bad", 0.0, np.zeros((32, 32), dtype=np.uint8)))


# --- the shared split and the fight_clips evaluation ----------------------------------------------------

#: ``livesafe eval --dataset fight_clips`` with the default policy (violence floor 0.6), as reported.
FIGHT_CLIPS_FIGURES = {"precision": 0.7895, "recall": 0.5556, "f1": 0.6522, "accuracy": 0.7091, "support": 27}


@pytest.mark.shared_data
def test_training_and_eval_share_one_split(shared_data: Path, analyzer: MotionViolenceAnalyzer) -> None:
    folder = fight_dir(shared_data)
    clips, labels = read_fight_clips(folder)
    assert len(clips) == 220 and sum(labels) == 110
    train, test = fight_split(folder)
    assert fight_split(folder) == (train, test)  # deterministic
    assert not set(train) & set(test) and len(train) + len(test) == len(clips)
    # The shipped head lists the clips it was not trained on: exactly the eval data set.
    held_out = sorted(clips[i].name for i in test)
    assert held_out == analyzer.head.metadata["held_out"]["test_names"]
    data = load_fight_clips(shared_data)
    assert sorted(p.name for p in data.clips) == held_out
    assert data.labels["violence"] == [int(p.name.startswith("fi")) for p in data.clips]


@pytest.mark.shared_data
def test_eval_fight_clips_gives_the_reported_figures(shared_data: Path) -> None:
    result = run_eval(["fight_clips"], shared_data, load_policy(), None)
    ds = result["datasets"]["fight_clips"]
    assert ds["kind"] == "video" and ds["n"] == 55 and ds["analyzer"] == "vision.motion"
    m = ds["categories"]["violence"]
    assert m["floor"] == load_policy().category("violence").floor  # type: ignore[union-attr]
    assert {k: m[k] for k in FIGHT_CLIPS_FIGURES} == FIGHT_CLIPS_FIGURES


@pytest.mark.shared_data
def test_eval_fight_clips_cli_smoke(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(shared_data), "--dataset", "fight_clips", "--limit", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["datasets"]["fight_clips"]["categories"]["violence"]
    assert out["limit"] == 6 and m["n"] == 6
    assert set(m) >= {"precision", "recall", "f1", "accuracy", "support", "floor"}
    assert main(["--data", str(shared_data), "--dataset", "fight_clips", "--limit", "3"]) == 0
    table = capsys.readouterr().out
    assert "fight_clips" in table and "violence" in table
