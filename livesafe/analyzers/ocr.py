"""On-screen text: RapidOCR (PP-OCRv6 detection + recognition, ONNX) read through the text classifier.

Text burnt into a stream (overlays, captions, a sign held up to the camera) is read with ``rapidocr``
(Apache-2.0). Its PP-OCRv6 "small" detection and recognition weights ship inside the wheel; this module
passes their paths explicitly, so rapidocr never tries to download a model, and runs them on ONNX
Runtime's CPU provider with :attr:`OcrOptions.intra_op_threads` threads (1 by default, like
:mod:`livesafe.analyzers.vision`). The text-line orientation classifier is not used: overlays are upright.

**When OCR runs (the change rule).** OCR costs a few hundred milliseconds a frame on one core, so it runs
only when the frame changed. Each frame is reduced to a grayscale thumbnail :data:`THUMB_WIDTH` pixels
wide, cut into :data:`CELL` x :data:`CELL` pixel cells; the frame is read when some cell's mean absolute
difference from the same cell of the *last frame read* exceeds :attr:`OcrOptions.change_threshold`
(0..255), or when the stream has no frame read yet. Comparing with the last frame read (not the previous
frame) means slow drift still adds up to a read. Unchanged frames are skipped altogether, with no
periodic re-read: a static overlay is read once. Comparing cells, not the whole frame, lets a caption
that changes in a small region trigger a read.

**What is emitted.** Recognised lines scoring at least :attr:`OcrOptions.min_confidence` and holding at
least :attr:`OcrOptions.min_letters` letters (so timecodes, scores and stray marks read as "2" never reach
the text model, which gives numbers-only text a ``scam`` score near 0.6) are put in reading
order (top to bottom, left to right within a row) and scored by the shared
:class:`~livesafe.analyzers.text.TextClassifier`, each line as its own sentence so one threatening line is
not diluted by the rest of the screen. One ``Signal`` per category scoring at least
:attr:`OcrOptions.report_floor` comes out, with the text (truncated), matched terms, a summary of the
boxes and confidences and the frame index as evidence. Text nearly identical to the last text read on the
stream (``difflib`` ratio >= :attr:`OcrOptions.same_text_ratio` after normalisation, so OCR jitter of a
letter does not count) is not scored or emitted again; a frame read with no text resets it, so text that
comes back later is reported again.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from livesafe.analyzers.base import AnalyzerCost, ModelUnavailableError
from livesafe.analyzers.motion import to_small_gray
from livesafe.analyzers.text import EXCERPT_CHARS, TextClassifier
from livesafe.analyzers.vision import check_image
from livesafe.core.events import Signal, VideoSample

__all__ = ["CELL", "THUMB_WIDTH", "OcrAnalyzer", "OcrLine", "OcrOptions", "frame_change", "thumbnail"]

#: Width of the grayscale thumbnail the change rule compares (height keeps the aspect ratio).
THUMB_WIDTH = 128
#: Side of the square cells of the thumbnail compared by the change rule, in thumbnail pixels.
CELL = 16
#: Packaged weights inside the ``rapidocr`` wheel (``rapidocr/models/``).
DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
#: Boxes listed in a signal's evidence (the most confident ones).
EVIDENCE_BOXES = 5

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class OcrOptions:
    """Options of :class:`OcrAnalyzer`."""

    #: ONNX Runtime intra-op threads of the detection and recognition sessions.
    intra_op_threads: int = 1
    #: A frame is read when some thumbnail cell's mean absolute difference (0..255) from the last frame
    #: read exceeds this (see the module docs). 0 reads every frame.
    change_threshold: float = 12.0
    #: Recognised lines below this confidence are dropped (clean overlay text reads at 0.95 or more;
    #: stray marks in the picture come out as one or two characters near 0.7).
    min_confidence: float = 0.8
    #: Lines with fewer letters than this (timecodes, scores, counters) are not scored.
    min_letters: int = 3
    #: Longest frame side given to text detection; larger frames are scaled down (720p -> 960x540).
    max_side: int = 960
    #: Emit a category's signal only when its text score is at least this.
    report_floor: float = 0.05
    #: Two texts whose normalised ``difflib`` ratio is at least this are the same text (not re-emitted).
    same_text_ratio: float = 0.9
    #: Streams whose state is kept at once; the least recently seen is dropped beyond this.
    max_streams: int = 256

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {self.intra_op_threads}")
        if not 0.0 <= self.change_threshold <= 255.0:
            raise ValueError(f"change_threshold must be in [0, 255], got {self.change_threshold}")
        for name in ("min_confidence", "report_floor", "same_text_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.min_letters < 0:
            raise ValueError(f"min_letters must be >= 0, got {self.min_letters}")
        if self.max_side < 64:
            raise ValueError(f"max_side must be >= 64, got {self.max_side}")
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {self.max_streams}")


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One recognised text line: its text, confidence and axis-aligned box (x, y, width, height)."""

    text: str
    confidence: float
    box: tuple[int, int, int, int]


def thumbnail(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The grayscale thumbnail the change rule compares (:data:`THUMB_WIDTH` pixels wide)."""
    return to_small_gray(check_image(image), THUMB_WIDTH)


def frame_change(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """Largest mean absolute difference (0..255) over :data:`CELL`-pixel cells of two thumbnails.

    Thumbnails of different shapes (the stream's resolution changed) differ by 255.
    """
    if a.shape != b.shape:
        return 255.0
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.float32)
    h, w = d.shape
    rows, cols = -(-h // CELL), -(-w // CELL)
    padded = np.zeros((rows * CELL, cols * CELL), dtype=np.float32)
    padded[:h, :w] = d
    sums = padded.reshape(rows, CELL, cols, CELL).sum(axis=(1, 3))
    counts = np.zeros_like(padded)
    counts[:h, :w] = 1.0
    sizes = counts.reshape(rows, CELL, cols, CELL).sum(axis=(1, 3))
    return float((sums / sizes).max())


def _letters(text: str) -> int:
    return sum(c.isalpha() for c in text)


def _normalize(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def reading_order(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Lines top to bottom; lines whose vertical centres are within half a line height form one row,
    read left to right."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3] / 2, ln.box[0])):
        centre = line.box[1] + line.box[3] / 2
        if rows:
            last = rows[-1][0]
            if abs(centre - (last.box[1] + last.box[3] / 2)) <= max(line.box[3], last.box[3]) / 2:
                rows[-1].append(line)
                continue
        rows.append([line])
    return [ln for row in rows for ln in sorted(row, key=lambda ln: ln.box[0])]


def _as_sentences(lines: Sequence[OcrLine]) -> str:
    """Lines joined so the text classifier scores each as its own sentence."""
    parts = [ln.text.strip() for ln in lines if ln.text.strip()]
    return " ".join(p if p[-1] in ".!?;" else p + "." for p in parts)


@dataclass(slots=True)
class _StreamState:
    thumb: npt.NDArray[np.uint8] | None = None
    text: str = ""
    reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class OcrAnalyzer:
    """A :class:`~livesafe.analyzers.base.VisionAnalyzer` reading on-screen text (see the module docs).

    Stateful per stream; ``forget`` drops a stream's state when it ends. Thread-safe: calls for different
    streams may come from several threads, the OCR engine itself runs one frame at a time.
    """

    name = "ocr.text"
    #: One OCR read on one thread of a 1280x720 frame (PP-OCRv6 small at 960 px, 1 intra-op thread) plus
    #: text scoring: 0.18 s on an idle core of a 2-core x86 VM, median 0.68 s while other jobs shared it
    #: (Big Buck Bunny 720p at 1 fps). Frames the change rule skips cost a few ms (the thumbnail). Moving
    #: video is read at almost every 1 fps sample (29 of 30 on Big Buck Bunny), so the planned cost is
    #: one read per sample (the worst case); a static scene costs one read in all.
    cost = AnalyzerCost(per_call_s=0.35)

    def __init__(self, classifier: TextClassifier, options: OcrOptions | None = None) -> None:
        self.options = options or OcrOptions()
        self.classifier = classifier
        self.categories: tuple[str, ...] = tuple(classifier.categories)
        self._engine = _load_engine(self.options)
        self._engine_lock = threading.Lock()
        self._streams: OrderedDict[str, _StreamState] = OrderedDict()
        self._lock = threading.Lock()
        #: OCR reads done, all streams together (frames skipped by the change rule are not counted).
        self.reads = 0

    # -- state --------------------------------------------------------------------------------------

    def forget(self, stream_id: str) -> None:
        """Drop the state of ``stream_id`` (a no-op if it has none)."""
        with self._lock:
            self._streams.pop(stream_id, None)

    def stream_reads(self, stream_id: str) -> int:
        """OCR reads done on ``stream_id`` since it was first seen (0 after :meth:`forget`)."""
        with self._lock:
            state = self._streams.get(stream_id)
        return 0 if state is None else state.reads

    def last_text(self, stream_id: str) -> str:
        """The text last read on ``stream_id`` (normalised: lower case, single spaces; "" if none)."""
        with self._lock:
            state = self._streams.get(stream_id)
        return "" if state is None else state.text

    def stream_ids(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def _state(self, stream_id: str) -> _StreamState:
        with self._lock:
            state = self._streams.get(stream_id)
            if state is None:
                state = self._streams[stream_id] = _StreamState()
                while len(self._streams) > self.options.max_streams:
                    self._streams.popitem(last=False)
            else:
                self._streams.move_to_end(stream_id)
            return state

    # -- reading ------------------------------------------------------------------------------------

    def read(self, image: npt.NDArray[np.uint8]) -> list[OcrLine]:
        """Text lines of an RGB ``uint8`` (height, width, 3) frame at or above ``min_confidence``, in
        reading order. Runs OCR every time (no change rule)."""
        bgr = np.ascontiguousarray(check_image(image)[..., ::-1])
        with self._engine_lock:
            result = self._engine(bgr)
        txts: Sequence[str] = getattr(result, "txts", None) or ()
        scores: Sequence[float] = getattr(result, "scores", None) or ()
        boxes: Any = getattr(result, "boxes", None)
        lines: list[OcrLine] = []
        for i, (text, score) in enumerate(zip(txts, scores, strict=True)):
            text = str(text).strip()
            if float(score) < self.options.min_confidence or _letters(text) < self.options.min_letters:
                continue
            pts = np.asarray(boxes[i], dtype=np.float64).reshape(-1, 2)
            x0, y0 = (float(v) for v in pts.min(axis=0))
            x1, y1 = (float(v) for v in pts.max(axis=0))
            box = (round(x0), round(y0), round(x1 - x0), round(y1 - y0))
            lines.append(OcrLine(text, round(float(score), 4), box))
        return reading_order(lines)

    def analyze(self, sample: VideoSample) -> list[Signal]:
        """Signals of the text on ``sample``'s frame when the frame changed and its text is new."""
        thumb = thumbnail(sample.image)
        state = self._state(sample.stream_id)
        with state.lock:
            if state.thumb is not None and frame_change(state.thumb, thumb) <= self.options.change_threshold:
                return []
            state.thumb = thumb
            state.reads += 1
            lines = self.read(sample.image)
            with self._lock:
                self.reads += 1
            text = "\n".join(ln.text for ln in lines)
            key = _normalize(text)
            if not key:
                state.text = ""
                return []
            if state.text and difflib.SequenceMatcher(None, state.text, key).ratio() >= (
                self.options.same_text_ratio
            ):
                return []
            state.text = key
        return self._signals(sample, lines, text)

    def _signals(self, sample: VideoSample, lines: list[OcrLine], text: str) -> list[Signal]:
        result = self.classifier.explain(_as_sentences(lines))
        confidences = [ln.confidence for ln in lines]
        top = sorted(lines, key=lambda ln: -ln.confidence)[:EVIDENCE_BOXES]
        common: dict[str, Any] = {
            "text": text[:EXCERPT_CHARS],
            "lines": len(lines),
            "confidence": {"min": min(confidences), "mean": round(sum(confidences) / len(lines), 4)},
            "boxes": [{"box": list(ln.box), "confidence": ln.confidence, "text": ln.text[:80]} for ln in top],
            "frame": sample.index,
            "size": [sample.width, sample.height],
        }
        return result.signals(
            stream_id=sample.stream_id, media_ts=sample.media_ts, end_ts=sample.media_ts,
            analyzer=self.name, report_floor=self.options.report_floor, evidence=common,
        )


def _load_engine(options: OcrOptions) -> Any:
    """A RapidOCR engine on the packaged PP-OCRv6 weights, models loaded now (not on the first frame)."""
    try:
        import rapidocr
        from rapidocr import RapidOCR
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelUnavailableError("package 'rapidocr' is not installed; pip install rapidocr") from exc
    models = Path(rapidocr.__file__).resolve().parent / "models"
    det, rec = models / DET_MODEL, models / REC_MODEL
    for path in (det, rec):
        if not path.is_file():
            raise ModelUnavailableError(f"rapidocr: packaged weights {path} not found; reinstall rapidocr")
    threads = options.intra_op_threads
    params = {
        "Global.use_cls": False,
        "Global.log_level": "error",
        "Det.model_path": str(det),
        "Det.limit_type": "max",
        "Det.limit_side_len": options.max_side,
        "Rec.model_path": str(rec),
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }
    try:
        engine: Any = RapidOCR(params=params)
        # Load both sessions now (rapidocr loads them on first use), so a broken install fails here and
        # the first frame is not slow.
        engine._load_det_model()
        engine._load_rec_model()
    except (OSError, ValueError, RuntimeError, AttributeError) as exc:
        raise ModelUnavailableError(f"rapidocr: cannot load the PP-OCRv6 models: {exc}") from exc
    return engine
