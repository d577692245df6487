"""Nudity from body-part detection with NudeNet (``nudenet``, an optional extra: AGPL-3.0).

NudeNet's detector (a YOLOv8n exported to ONNX, ``320n.onnx`` inside the wheel) finds faces and body
parts, exposed or covered, in one frame. **Licence:** the ``nudenet`` wheel's metadata says MIT but the
LICENSE files it ships are the GNU AGPL-3.0, so livesafe never imports it unless a policy turns it on
(``analyzers.nudenet: true``) and the package is not among livesafe's own dependencies: install it with
``pip install 'livesafe[nudenet]'`` and check what AGPL-3.0 asks of a network service first.

**Score mapping.** The frame's ``nudity`` score is the highest detection confidence weighted by class:

* exposed genitalia (female or male), exposed female breast, exposed buttocks, exposed anus: weight 1.0;
* covered genitalia, covered anus: 0.3 (a near miss, or underwear in a sexualised context);
* covered female breast, covered buttocks: 0.15 (swimwear and tight clothing are common and allowed);
* faces, feet, armpits, belly and male breast, exposed or not: 0 (they say a person is there, nothing
  more; they still appear in the evidence).

So one confident exposed-genitalia box scores near its confidence; a bikini scores at most 0.15; a face
alone scores 0. Like :mod:`livesafe.analyzers.vision`, every frame yields a signal (``report_floor=0``),
however low its score. The evidence lists the top few detections (label, confidence, box).

**Input.** Frames are given to :meth:`NudeDetector.detect` as arrays, never written to disk. NudeNet's
pre-processing swaps channels twice (``cvtColor(RGBA2BGR)``, then ``blobFromImage(swapRB=True)``), so the
model sees what ``detect(path)`` gives it only when handed a BGR array; frames are converted to BGR first,
which makes the results equal those of ``detect`` on the same image file. (Handed RGB, the model found
"exposed buttocks" at 0.30 on scikit-image's ``coffee.png``; in BGR, nothing.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from livesafe.analyzers.base import AnalyzerCost, ModelUnavailableError
from livesafe.analyzers.vision import check_image
from livesafe.core.events import Signal, VideoSample

__all__ = ["CLASS_WEIGHTS", "Detection", "NudeNetAnalyzer", "NudeNetOptions", "nudity_score"]

INSTALL_HINT = "pip install 'livesafe[nudenet]' (note: nudenet is licensed AGPL-3.0)"

#: Weight of each NudeNet class in the ``nudity`` score (classes not listed weigh 0); see the module docs.
CLASS_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "FEMALE_GENITALIA_EXPOSED": 1.0,
    "MALE_GENITALIA_EXPOSED": 1.0,
    "FEMALE_BREAST_EXPOSED": 1.0,
    "BUTTOCKS_EXPOSED": 1.0,
    "ANUS_EXPOSED": 1.0,
    "FEMALE_GENITALIA_COVERED": 0.3,
    "ANUS_COVERED": 0.3,
    "FEMALE_BREAST_COVERED": 0.15,
    "BUTTOCKS_COVERED": 0.15,
})
#: Detections listed in a signal's evidence (the highest weighted, then most confident).
EVIDENCE_DETECTIONS = 5


@dataclass(frozen=True, slots=True)
class Detection:
    """One NudeNet detection: class label, confidence and box (x, y, width, height) in frame pixels."""

    label: str
    confidence: float
    box: tuple[int, int, int, int]

    @property
    def weight(self) -> float:
        return CLASS_WEIGHTS.get(self.label, 0.0)


def nudity_score(detections: list[Detection]) -> float:
    """The ``nudity`` score of a frame's detections: max of confidence x class weight (0 if none)."""
    return max((min(1.0, d.confidence) * d.weight for d in detections), default=0.0)


@dataclass(frozen=True, slots=True)
class NudeNetOptions:
    """Options of :class:`NudeNetAnalyzer`."""

    #: ONNX Runtime intra-op threads; the default of 1 keeps it from competing with other analyzers.
    intra_op_threads: int = 1
    #: Emit a signal only when its score is at least this; 0.0 emits every frame.
    report_floor: float = 0.0

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {self.intra_op_threads}")
        if not 0.0 <= self.report_floor <= 1.0:
            raise ValueError(f"report_floor must be in [0, 1], got {self.report_floor}")


def _load_detector(threads: int) -> Any:
    try:
        import nudenet
        import onnxruntime
    except ImportError as exc:
        raise ModelUnavailableError(f"package 'nudenet' is not installed; {INSTALL_HINT}") from exc
    model = Path(nudenet.__file__).resolve().parent / "320n.onnx"
    if not model.is_file():
        raise ModelUnavailableError(f"nudenet: packaged weights {model} not found; {INSTALL_HINT}")
    try:
        detector = nudenet.NudeDetector(model_path=str(model))
        # NudeDetector opens its session with ONNX Runtime's defaults (every core); replace it with one
        # bounded to ``threads`` (same model, same input name).
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        detector.onnx_session = onnxruntime.InferenceSession(
            str(model), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except (OSError, RuntimeError, ValueError) as exc:  # onnxruntime raises RuntimeError subclasses
        raise ModelUnavailableError(f"nudenet: cannot load {model}: {exc}") from exc
    return detector


class NudeNetAnalyzer:
    """A :class:`~livesafe.analyzers.base.VisionAnalyzer` scoring ``nudity`` from NudeNet detections.

    Stateless; one ONNX Runtime session shared by all streams; ``analyze`` may be called from several
    threads (NudeNet's pre- and post-processing keep no state between calls).
    """

    name = "vision.nudenet"
    categories: tuple[str, ...] = ("nudity",)
    #: One frame on one thread, pre- and post-processing included: ~0.08 s measured on a 2-core x86 VM
    #: (shared) for 300x450 to 1280x720 frames (mean over the 30 1 fps samples of Big Buck Bunny 720p).
    cost = AnalyzerCost(per_call_s=0.08)

    def __init__(self, options: NudeNetOptions | None = None) -> None:
        self.options = options or NudeNetOptions()
        self._detector = _load_detector(self.options.intra_op_threads)

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """Detections in an RGB ``uint8`` (height, width, 3) frame, most confident first."""
        bgr = np.ascontiguousarray(check_image(image)[..., ::-1])
        raw: list[dict[str, Any]] = self._detector.detect(bgr)
        found: list[Detection] = []
        for d in raw:
            x, y, w, h = (int(v) for v in d["box"])
            found.append(Detection(str(d["class"]), round(float(d["score"]), 4), (x, y, w, h)))
        return sorted(found, key=lambda d: (-d.confidence, d.label))

    def analyze(self, sample: VideoSample) -> list[Signal]:
        """The ``nudity`` signal of one frame (an empty list if below ``report_floor``)."""
        detections = self.detect(sample.image)
        score = round(nudity_score(detections), 4)
        if score < self.options.report_floor:
            return []
        top = sorted(detections, key=lambda d: (-d.weight, -d.confidence, d.label))[:EVIDENCE_DETECTIONS]
        return [
            Signal(
                stream_id=sample.stream_id,
                media_ts=sample.media_ts,
                category="nudity",
                score=score,
                analyzer=self.name,
                end_ts=sample.media_ts,
                evidence={
                    "frame": sample.index,
                    "detections": [
                        {"label": d.label, "confidence": d.confidence, "box": list(d.box)} for d in top
                    ],
                },
            )
        ]
