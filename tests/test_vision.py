"""NudityAnalyzer on real Open-NSFW weights: benign photos and demo frames score low."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from livesafe.analyzers.base import VisionAnalyzer
from livesafe.analyzers.vision import NudityAnalyzer, VisionOptions
from livesafe.core.events import VideoSample

pytestmark = pytest.mark.models

#: Yahoo's guidance: below 0.2 is safe.
SAFE = 0.2


@pytest.fixture(scope="module")
def analyzer() -> NudityAnalyzer:
    return NudityAnalyzer()


@pytest.fixture(scope="module")
def demo_frames(demo_dir: Path) -> list[np.ndarray]:
    """Every 20th frame (2 s apart at 10 fps) of the benign demo stream, decoded with PyAV."""
    frames: list[np.ndarray] = []
    with av.open(str(demo_dir / "benign.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 20 == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
    assert len(frames) >= 10
    return frames


def _sample(image: np.ndarray, index: int = 0) -> VideoSample:
    return VideoSample(stream_id="s1", media_ts=index * 2.0, image=image, index=index)


def test_implements_protocol(analyzer: NudityAnalyzer) -> None:
    assert isinstance(analyzer, VisionAnalyzer)
    assert analyzer.categories == ("nudity",)


def test_demo_frames_score_low_and_signal_shape(
    analyzer: NudityAnalyzer, demo_frames: list[np.ndarray]
) -> None:
    samples = [_sample(frame, i) for i, frame in enumerate(demo_frames)]
    results = analyzer.analyze_batch(samples)
    assert len(results) == len(samples)
    for sample, signals in zip(samples, results, strict=True):
        assert len(signals) == 1  # always emitted with the default floor of 0
        sig = signals[0]
        assert sig.category == "nudity" and sig.analyzer == "vision.open_nsfw"
        assert sig.stream_id == "s1" and sig.media_ts == sample.media_ts == sig.end_ts
        assert sig.evidence == {"frame": sample.index}
        assert 0.0 <= sig.score < SAFE


@pytest.mark.shared_data
def test_skimage_photos_score_low(analyzer: NudityAnalyzer, shared_data: Path) -> None:
    paths = sorted((shared_data / "images" / "skimage").iterdir())
    assert len(paths) >= 5
    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB")))
    scores = analyzer.score_images(images)
    assert all(0.0 <= s < SAFE for s in scores), dict(zip([p.name for p in paths], scores, strict=True))


def test_batch_equals_single(analyzer: NudityAnalyzer, demo_frames: list[np.ndarray]) -> None:
    samples = [_sample(frame, i) for i, frame in enumerate(demo_frames[:4])]
    batch = analyzer.analyze_batch(samples)
    single = [analyzer.analyze(s) for s in samples]
    for b, s in zip(batch, single, strict=True):
        assert b[0].score == pytest.approx(s[0].score, abs=1e-5)
    assert analyzer.analyze_batch([]) == []


def test_report_floor_filters(demo_frames: list[np.ndarray]) -> None:
    quiet = NudityAnalyzer(VisionOptions(report_floor=0.5))
    assert quiet.analyze(_sample(demo_frames[0])) == []


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((240, 320), dtype=np.uint8), "shape"),
        (np.zeros((240, 320, 4), dtype=np.uint8), "shape"),
        (np.zeros((3, 240, 320), dtype=np.uint8), "shape"),
        (np.zeros((240, 320, 3), dtype=np.float32), "uint8"),
        (np.zeros((4, 4, 3), dtype=np.uint8), "too small"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_nonsense_input_raises_value_error(analyzer: NudityAnalyzer, image: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyzer.score_images([image])  # type: ignore[list-item]


def test_options_validated() -> None:
    with pytest.raises(ValueError, match="report_floor"):
        VisionOptions(report_floor=1.5)
