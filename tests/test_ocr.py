"""On-screen text: the real RapidOCR models on frames with text drawn in a real TrueType font."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw, ImageFont

from livesafe.analyzers.motion import sample_clip
from livesafe.analyzers.ocr import OcrAnalyzer, OcrLine, OcrOptions, frame_change, reading_order, thumbnail
from livesafe.analyzers.text import TextClassifier
from livesafe.core.events import Signal, VideoSample

BENIGN = "Welcome to my cooking stream"
THREAT = "I am going to kill you tonight"
#: Categories a threatening line must raise, at the default policy's floor.
FLOOR = 0.4
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans Bold where Debian's fonts-dejavu is installed, else Pillow's bundled TrueType font."""
    if DEJAVU.is_file():
        return ImageFont.truetype(str(DEJAVU), size)
    return ImageFont.load_default(size=size)


def draw_frame(
    lines: list[str], size: tuple[int, int] = (960, 540), shift: int = 0
) -> npt.NDArray[np.uint8]:
    """A textured frame (a gradient, a disc at ``shift``) with ``lines`` in a caption bar at the bottom."""
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    base = np.stack([0.6 * x + 0 * y, 0.3 * y + 0 * x + 40, 150 + 0 * x + 0 * y], axis=2)
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse((60 + shift, 60, 260 + shift, 260), fill=(220, 180, 40))
    f = font(34)
    top = h - 60 * len(lines) - 20
    if lines:
        d.rectangle((0, top - 10, w, h), fill=(10, 10, 10))
    for i, text in enumerate(lines):
        d.text((30, top + 60 * i), text, font=f, fill=(255, 255, 255))
    return np.asarray(img, dtype=np.uint8)


def sample(image: npt.NDArray[np.uint8], index: int = 0, stream: str = "s1") -> VideoSample:
    return VideoSample(stream, float(index), image, index)


def by_category(signals: list[Signal]) -> dict[str, float]:
    return {s.category: s.score for s in signals}


@pytest.fixture(scope="module")
def classifier() -> TextClassifier:
    return TextClassifier()


@pytest.fixture
def ocr(classifier: TextClassifier) -> OcrAnalyzer:
    return OcrAnalyzer(classifier)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An H.264 MP4, 10 fps: 3 s of a benign caption, then 3 s of a threatening one, over a still scene."""
    path = tmp_path_factory.mktemp("ocr") / "captions.mp4"
    frames = [draw_frame([BENIGN])] * 30 + [draw_frame([THREAT])] * 30
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 960, 540, "yuv420p"
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    return path


def test_reads_burnt_in_captions_once_and_flags_only_the_threat(ocr: OcrAnalyzer, clip: Path) -> None:
    samples = [VideoSample("clip", ts, im, i) for i, (ts, im) in enumerate(sample_clip(clip, fps=1.0))]
    assert len(samples) == 6
    out: dict[int, list[Signal]] = {}
    texts: list[str] = []
    for s in samples:
        out[s.index] = ocr.analyze(s)
        texts.append(ocr.last_text("clip"))
    assert texts == [BENIGN.lower()] * 3 + [THREAT.lower()] * 3
    # One read per caption: the decoded frames of a still scene differ only by coding noise.
    assert ocr.stream_reads("clip") == 2
    assert all(not out[i] for i in (1, 2, 4, 5))
    benign, threat = out[0], out[3]
    assert all(s.score < FLOOR for s in benign), benign  # nothing the default policy would count
    assert threat[0].evidence["text"].lower() == THREAT.lower()
    assert all(s.analyzer == "ocr.text" and s.media_ts == 3.0 for s in threat)
    assert by_category(threat).get("threat", 0.0) >= FLOOR, threat
    ev = threat[0].evidence
    assert ev["frame"] == 3 and ev["lines"] == 1 and ev["confidence"]["min"] >= 0.8
    width, height = ev["size"]  # the sample's size: sample_clip scales the 960x540 clip to 640 wide
    x, y, w, h = ev["boxes"][0]["box"]
    assert (width, height) == (640, 360)
    assert 0 <= x < 40 and 0.8 * height < y < height and w > width / 3 and 10 < h < 60


def test_unchanged_frame_is_not_read_again(ocr: OcrAnalyzer) -> None:
    img = draw_frame([THREAT])
    first = ocr.analyze(sample(img, 0))
    assert by_category(first)["threat"] >= FLOOR
    for i in range(1, 5):
        assert ocr.analyze(sample(img.copy(), i)) == []
    assert ocr.stream_reads("s1") == 1
    assert ocr.reads == 1


def test_same_text_on_a_changed_frame_is_read_but_not_reported_again(ocr: OcrAnalyzer) -> None:
    assert ocr.analyze(sample(draw_frame([THREAT]), 0))
    moved = draw_frame([THREAT], shift=300)  # the picture changed, the caption did not
    assert frame_change(thumbnail(draw_frame([THREAT])), thumbnail(moved)) > ocr.options.change_threshold
    assert ocr.analyze(sample(moved, 1)) == []
    assert ocr.stream_reads("s1") == 2
    # New text is read; a frame without text resets, so text coming back is reported again.
    ocr.analyze(sample(draw_frame([BENIGN], shift=300), 2))
    assert ocr.last_text("s1") == BENIGN.lower()
    assert ocr.analyze(sample(draw_frame([], shift=300), 3)) == []
    assert ocr.last_text("s1") == ""
    assert by_category(ocr.analyze(sample(draw_frame([THREAT], shift=300), 4)))["threat"] >= FLOOR
    assert ocr.stream_reads("s1") == 5


def test_reading_order_and_several_lines(ocr: OcrAnalyzer) -> None:
    lines = ocr.read(draw_frame([BENIGN, THREAT]))
    assert [ln.text.lower() for ln in lines] == [BENIGN.lower(), THREAT.lower()]
    signals = ocr.analyze(sample(draw_frame([BENIGN, THREAT])))
    assert signals[0].evidence["text"].lower() == f"{BENIGN}\n{THREAT}".lower()
    assert by_category(signals)["threat"] >= FLOOR  # the benign line does not dilute the threat
    # Same row, left to right, whatever order the detector listed them in.
    a, b, c = OcrLine("b", 0.9, (300, 12, 50, 20)), OcrLine("a", 0.9, (10, 10, 50, 20)), OcrLine(
        "c", 0.9, (10, 60, 50, 20)
    )
    assert [ln.text for ln in reading_order([c, a, b])] == ["a", "b", "c"]


def test_forget_and_streams_are_independent(ocr: OcrAnalyzer) -> None:
    img = draw_frame([THREAT])
    assert ocr.analyze(sample(img, 0, "a"))
    assert ocr.analyze(sample(img, 0, "b"))  # another stream has its own state
    assert ocr.analyze(sample(img, 1, "a")) == []
    assert sorted(ocr.stream_ids()) == ["a", "b"]
    ocr.forget("a")
    ocr.forget("never-seen")
    assert ocr.stream_reads("a") == 0 and ocr.stream_ids() == ["b"]
    assert by_category(ocr.analyze(sample(img, 2, "a")))["threat"] >= FLOOR
    assert ocr.stream_reads("a") == 1


def test_numbers_and_low_text_are_not_scored(ocr: OcrAnalyzer) -> None:
    assert ocr.analyze(sample(draw_frame(["00:12:45;07   1280 x 720"]))) == []
    assert ocr.analyze(sample(draw_frame([], shift=200), 1)) == []
    assert ocr.stream_reads("s1") == 2


def test_refuses_bad_frames_and_options(ocr: OcrAnalyzer) -> None:
    with pytest.raises(ValueError, match="RGB"):
        ocr.analyze(sample(np.zeros((64, 64), dtype=np.uint8)))
    with pytest.raises(ValueError, match="uint8"):
        ocr.read(np.zeros((64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="min_confidence"):
        OcrOptions(min_confidence=2.0)
    with pytest.raises(ValueError, match="intra_op_threads"):
        OcrOptions(intra_op_threads=0)


_NO_NETWORK = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _NO_NETWORK and event in ("socket.connect", "socket.getaddrinfo"):
        raise AssertionError(f"network access during OCR: {event} {args!r}")


@pytest.fixture
def no_network() -> Iterator[None]:
    global _NO_NETWORK
    if _audit not in _HOOKED:
        sys.addaudithook(_audit)  # audit hooks cannot be removed: this one is off unless the flag is set
        _HOOKED.append(_audit)
    _NO_NETWORK = True
    try:
        yield
    finally:
        _NO_NETWORK = False


_HOOKED: list[Any] = []


def test_loads_packaged_weights_without_network(classifier: TextClassifier, no_network: None) -> None:
    ocr = OcrAnalyzer(classifier, OcrOptions(intra_op_threads=1))
    assert ocr.read(draw_frame([BENIGN]))[0].text.lower() == BENIGN.lower()


@pytest.mark.shared_data
def test_static_caption_over_moving_video_is_reported_once(ocr: OcrAnalyzer, shared_data: Path) -> None:
    """Big Buck Bunny changes at every 1 fps sample, so every sample is read, but a caption burnt over it
    is reported once."""
    frames = sample_clip(shared_data / "video/moviepy/big_buck_bunny_0_30.webm", fps=1.0, max_width=960)
    frames = frames[10:16]  # the film itself, after the opening titles
    signals: list[Signal] = []
    for i, (ts, im) in enumerate(frames):
        img = Image.fromarray(im, "RGB")
        d = ImageDraw.Draw(img)
        d.rectangle((0, img.height - 70, img.width, img.height), fill=(0, 0, 0))
        d.text((20, img.height - 60), THREAT, font=font(34), fill=(255, 255, 255))
        signals += ocr.analyze(VideoSample("bbb", ts, np.asarray(img, dtype=np.uint8), i))
    assert ocr.stream_reads("bbb") == len(frames)
    threat = [s for s in signals if s.category == "threat"]
    assert len(threat) == 1 and threat[0].score >= FLOOR
    assert THREAT.lower() in threat[0].evidence["text"].lower()


def test_policy_key_and_registry(tmp_path: Path) -> None:
    import dataclasses

    from livesafe.analyzers.registry import load_analyzers
    from livesafe.core.policy import AnalyzerPolicy, SpeechPolicy, load_policy

    default = load_policy()
    assert default.analyzers.ocr is False
    text = (Path(__file__).resolve().parent.parent / "configs/default.yaml").read_text("utf-8")
    assert "\n  ocr: false\n" in text
    on = tmp_path / "ocr.yaml"
    on.write_text(text.replace("\n  ocr: false\n", "\n  ocr: true\n"), "utf-8")
    assert load_policy(on).analyzers.ocr is True
    # OCR without speech still gets a text classifier; it is not used as a transcript analyzer then.
    only = AnalyzerPolicy(speech=SpeechPolicy(enabled=False), nudity=False, ocr=True)
    vision, speech, texts = load_analyzers(dataclasses.replace(default, analyzers=only))
    assert [type(a) for a in vision] == [OcrAnalyzer] and speech is None and texts == []
    assert isinstance(vision[0], OcrAnalyzer) and isinstance(vision[0].classifier, TextClassifier)
