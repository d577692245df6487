"""NudeNet (optional extra, AGPL-3.0): the real detector on real photos and generated frames."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from livesafe.analyzers.base import ModelUnavailableError
from livesafe.analyzers.nudenet import (
    CLASS_WEIGHTS,
    Detection,
    NudeNetAnalyzer,
    NudeNetOptions,
    nudity_score,
)
from livesafe.core.events import VideoSample
from livesafe.core.policy import AnalyzerPolicy, SpeechPolicy, load_policy

pytest.importorskip("nudenet", reason="optional extra: pip install 'livesafe[nudenet]' (AGPL-3.0)")


@pytest.fixture(scope="module")
def analyzer() -> NudeNetAnalyzer:
    return NudeNetAnalyzer()


def rgb(path: Path) -> npt.NDArray[np.uint8]:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def test_generated_frame_scores_zero_and_signal_shape(analyzer: NudeNetAnalyzer) -> None:
    x = np.linspace(0, 255, 320, dtype=np.float32)
    img = np.stack([np.tile(x, (240, 1))] * 3, axis=2).astype(np.uint8)
    [signal] = analyzer.analyze(VideoSample("s", 2.5, img, 7))
    assert (signal.category, signal.score, signal.analyzer) == ("nudity", 0.0, "vision.nudenet")
    assert signal.media_ts == signal.end_ts == 2.5
    assert signal.evidence["frame"] == 7 and signal.evidence["detections"] == []


@pytest.mark.shared_data
def test_benign_photos_score_low(analyzer: NudeNetAnalyzer, shared_data: Path) -> None:
    photos = sorted((shared_data / "images/skimage").iterdir())
    assert len(photos) >= 5
    for path in photos:
        [signal] = analyzer.analyze(VideoSample("s", 0.0, rgb(path)))
        assert signal.score < 0.2, (path.name, signal.evidence)


@pytest.mark.shared_data
def test_detector_really_runs_and_matches_nudenet_on_files(
    analyzer: NudeNetAnalyzer, shared_data: Path
) -> None:
    import nudenet

    path = shared_data / "images/skimage/astronaut.png"
    found = analyzer.detect(rgb(path))
    assert [d.label for d in found] == ["FACE_FEMALE"] and found[0].confidence > 0.5
    x, y, w, h = found[0].box
    assert 150 < x < 200 and 60 < y < 110 and 80 < w < 130 and 80 < h < 130  # her face, 512x512 photo
    # The array path gives what NudeNet gives for the same image file (see the module docs on BGR).
    upstream = nudenet.NudeDetector().detect(str(path))
    assert [(d["class"], d["box"]) for d in upstream] == [(d.label, list(d.box)) for d in found]
    assert upstream[0]["score"] == pytest.approx(found[0].confidence, abs=1e-3)
    # A face is evidence of a person, not of nudity: listed, but the score stays 0.
    [signal] = analyzer.analyze(VideoSample("s", 1.0, rgb(path), 3))
    assert signal.score == 0.0
    assert signal.evidence["detections"][0]["label"] == "FACE_FEMALE"


def test_score_mapping() -> None:
    def det(label: str, conf: float) -> Detection:
        return Detection(label, conf, (0, 0, 10, 10))

    assert nudity_score([]) == 0.0
    assert nudity_score([det("FACE_MALE", 0.99), det("FEET_EXPOSED", 0.9)]) == 0.0
    assert nudity_score([det("FEMALE_BREAST_EXPOSED", 0.8), det("FACE_FEMALE", 0.95)]) == 0.8
    assert nudity_score([det("BUTTOCKS_COVERED", 0.9)]) == pytest.approx(0.135)
    assert nudity_score([det("FEMALE_GENITALIA_COVERED", 0.9), det("ANUS_EXPOSED", 0.4)]) == 0.4
    exposed = {k for k, v in CLASS_WEIGHTS.items() if v == 1.0}
    assert exposed == {
        "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }


def test_refuses_bad_input(analyzer: NudeNetAnalyzer) -> None:
    with pytest.raises(ValueError, match="RGB"):
        analyzer.detect(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        analyzer.detect(np.zeros((64, 64, 3), dtype=np.float64))
    with pytest.raises(ValueError, match="too small"):
        analyzer.detect(np.zeros((8, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="numpy array"):
        analyzer.detect("astronaut.png")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="report_floor"):
        NudeNetOptions(report_floor=1.5)


def test_report_floor() -> None:
    quiet = NudeNetAnalyzer(NudeNetOptions(report_floor=0.5))
    assert quiet.analyze(VideoSample("s", 0.0, np.full((64, 64, 3), 128, np.uint8))) == []


def test_missing_package_names_the_extra_and_licence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)  # what an installation without the extra looks like
    with pytest.raises(ModelUnavailableError, match=r"livesafe\[nudenet\].*AGPL-3.0"):
        NudeNetAnalyzer()


def test_registry_loads_it_only_when_the_policy_says_so() -> None:
    from livesafe.analyzers.registry import load_analyzers

    base = load_policy()
    assert base.analyzers.nudenet is False
    only = AnalyzerPolicy(speech=SpeechPolicy(enabled=False), text=False, nudity=False, nudenet=True)
    vision, speech, text = load_analyzers(dataclasses.replace(base, analyzers=only))
    assert [type(a) for a in vision] == [NudeNetAnalyzer] and speech is None and text == []
    off = dataclasses.replace(only, nudenet=False)
    assert load_analyzers(dataclasses.replace(base, analyzers=off)) == ([], None, [])
