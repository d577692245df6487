"""Violence detection from motion: cheap frame-difference descriptors and a logistic-regression head.

Fights on CCTV footage look like bursts of large, jerky, spatially concentrated motion. This analyzer
keeps, per stream, a short ring buffer of small grayscale frames (160 px wide) sampled at
:data:`REQUIRED_FPS` frames per media second, and once it holds a full window (:data:`WINDOW_FRAMES`
frames, two seconds) it computes about twenty motion descriptors (frame-difference energy statistics
and their variation over time, the spread of motion over a 4x4 grid, the motion centroid's speed, a
normal-flow magnitude estimate) and scores them with a logistic regression trained by
``scripts/train_motion.py`` on the fight-detection-surv-dataset (Akti et al. 2019: 2-second CCTV clips,
fight / no fight). The fitted parameters and the measured figures live in ``data/motion_head.json``.

**Frame rate.** The descriptors are differences of frames 1/8 s apart; they mean nothing at livesafe's
default sampling of 1 to 2 fps (two frames a second apart differ everywhere the scene changes). The
analyzer therefore declares ``sample_fps`` = :data:`REQUIRED_FPS` (see
:func:`livesafe.analyzers.base.sample_fps`): the pipeline samples a stream with motion enabled at 8 fps
(decoding every frame) and gives this analyzer its own 8 fps feed, while the other vision analyzers keep
seeing the stream's normal (adaptive) rate. Frames closer together than 8 fps are skipped, and a gap of
more than :data:`MAX_GAP_FACTOR` sampling periods (a frame dropped under load, a seek) empties the buffer,
so a too sparse feed never yields a meaningless signal. :attr:`MotionViolenceAnalyzer.starved` tells
whether a stream's frames arrive too sparsely.

**Data split.** The labelled clips and their one split into training and held-out clips are read by
:mod:`livesafe.eval.video` (:func:`~livesafe.eval.video.fight_split`): ``scripts/train_motion.py`` fits
the shipped head on its training part and ``livesafe eval``'s ``fight_clips`` data set is its held-out part.

Signals are emitted every ``emit_every_s`` media seconds once the window is full; the score is the
model's probability (logistic regression on standardised features, trained with balanced classes).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from livesafe.analyzers.base import AnalyzerCost, ModelUnavailableError
from livesafe.core.events import Signal, VideoSample

__all__ = [
    "FEATURE_NAMES",
    "REQUIRED_FPS",
    "WINDOW_FRAMES",
    "MotionHead",
    "MotionOptions",
    "MotionViolenceAnalyzer",
    "load_head",
    "sample_clip",
    "to_small_gray",
    "window_features",
]

#: Frames per media second the descriptors are computed at (and the head was trained at).
REQUIRED_FPS = 8.0
#: Frames in one window: two seconds at :data:`REQUIRED_FPS`.
WINDOW_FRAMES = 16
#: Width frames are scaled to before the descriptors (grayscale; the height keeps the aspect ratio).
SMALL_WIDTH = 160
#: A gap longer than this many sampling periods between two kept frames empties the buffer.
MAX_GAP_FACTOR = 2.5
#: A pixel "moves" when its absolute difference exceeds this (0..255).
MOVE_THRESHOLD = 25
#: Coarse grid for the spatial spread of motion.
GRID = 4
#: Normal flow is only measured where the spatial gradient exceeds this (0..255 per pixel).
GRAD_THRESHOLD = 12.0

FEATURE_NAMES: tuple[str, ...] = (
    "energy_mean",  # mean |diff| over pixels, averaged over the window's frame pairs
    "energy_std_t",  # standard deviation over time of the per-pair mean |diff|
    "energy_max_t",  # largest per-pair mean |diff|
    "pixel_std_mean",  # spatial standard deviation of |diff|, averaged over pairs
    "p90_mean",  # 90th percentile of |diff|, averaged over pairs
    "p99_mean",  # 99th percentile of |diff|, averaged over pairs
    "p99_max",  # largest 99th percentile over pairs
    "moving_mean",  # fraction of moving pixels, averaged over pairs
    "moving_std_t",  # its standard deviation over time
    "moving_max_t",  # its largest value
    "energy_cv_t",  # energy_std_t / energy_mean
    "jerk",  # mean |change of per-pair energy| between consecutive pairs / energy_mean
    "accel_mean",  # mean |f[t] - 2 f[t-1] + f[t-2]|: second temporal difference
    "grid_entropy",  # normalised entropy of the motion energy over a 4x4 grid (1 = spread evenly)
    "grid_active",  # fraction of grid cells whose energy exceeds the frame mean
    "grid_peak",  # energy of the busiest cell / mean cell energy
    "grid_cv_t",  # mean over cells of (std over time / mean) of the cell energy
    "centroid_speed",  # mean displacement of the motion centroid between pairs (fraction of width)
    "spread",  # weighted spatial standard deviation of motion around its centroid (fraction of width)
    "nflow_mean",  # mean normal-flow magnitude |dI/dt| / |grad I| where the gradient is strong (px/frame)
    "nflow_p90",  # its 90th percentile
)


def to_small_gray(image: npt.NDArray[np.uint8], width: int = SMALL_WIDTH) -> npt.NDArray[np.uint8]:
    """An RGB ``uint8`` (height, width, 3) frame as a grayscale ``uint8`` frame ``width`` pixels wide."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (height, width, 3), got {image.dtype} {image.shape}")
    h, w = int(image.shape[0]), int(image.shape[1])
    if min(h, w) < 16:
        raise ValueError(f"image of shape {image.shape} is too small: both sides must be >= 16")
    height = max(8, round(h * width / w))
    gray = Image.fromarray(image, "RGB").convert("L")
    if (w, h) != (width, height):
        gray = gray.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(gray, dtype=np.uint8)


def window_features(frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """The :data:`FEATURE_NAMES` descriptors of a window of grayscale frames (T, height, width), T >= 3."""
    if frames.ndim != 3 or frames.shape[0] < 3:
        raise ValueError(f"expected at least 3 grayscale frames (T, height, width), got shape {frames.shape}")
    f = frames.astype(np.float32)
    n, h, w = f.shape
    d = np.abs(f[1:] - f[:-1])  # (n-1, h, w)
    pairs = n - 1
    flat = d.reshape(pairs, -1)
    eps = 1e-6

    energy = flat.mean(axis=1)
    pix_std = flat.std(axis=1)
    p90, p99 = np.percentile(flat, [90.0, 99.0], axis=1)
    moving = (flat > MOVE_THRESHOLD).mean(axis=1)
    e_mean = float(energy.mean())
    e_std = float(energy.std())
    jerk = float(np.abs(np.diff(energy)).mean()) / (e_mean + eps) if pairs > 1 else 0.0
    accel = float(np.abs(f[2:] - 2.0 * f[1:-1] + f[:-2]).mean())

    # Spatial spread over a coarse grid (cells cover the frame; edge rows/columns left over are dropped).
    gh, gw = h // GRID, w // GRID
    cells = d[:, : gh * GRID, : gw * GRID].reshape(pairs, GRID, gh, GRID, gw).mean(axis=(2, 4))
    cells = cells.reshape(pairs, GRID * GRID)
    total = cells.mean(axis=0)  # (cells,)
    prob = total / (total.sum() + eps)
    entropy = float(-(prob * np.log(prob + 1e-12)).sum() / math.log(GRID * GRID))
    active = float((cells > cells.mean(axis=1, keepdims=True)).mean())
    peak = float(total.max() / (total.mean() + eps))
    grid_cv = float((cells.std(axis=0) / (total + 1.0)).mean())

    # Motion centroid and spread (weights: |diff| above the moving threshold).
    wts = np.where(d > MOVE_THRESHOLD, d, 0.0).astype(np.float32)
    mass = wts.sum(axis=(1, 2)) + eps
    ys = np.arange(h, dtype=np.float32)[None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, :]
    cy = (wts * ys).sum(axis=(1, 2)) / mass
    cx = (wts * xs).sum(axis=(1, 2)) / mass
    var = (wts * ((ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2)).sum(axis=(1, 2)) / mass
    has = mass > 1.0
    spread = float(np.sqrt(var[has]).mean() / w) if has.any() else 0.0
    both = has[1:] & has[:-1]
    steps = np.hypot(np.diff(cx), np.diff(cy))
    centroid_speed = float(steps[both].mean() / w) if both.any() else 0.0

    # Normal flow: temporal derivative over spatial gradient magnitude, where the gradient is strong.
    mid = 0.5 * (f[1:] + f[:-1])
    gy = np.zeros_like(mid)
    gx = np.zeros_like(mid)
    gy[:, 1:-1, :] = 0.5 * (mid[:, 2:, :] - mid[:, :-2, :])
    gx[:, :, 1:-1] = 0.5 * (mid[:, :, 2:] - mid[:, :, :-2])
    grad = np.hypot(gx, gy)
    strong = grad > GRAD_THRESHOLD
    if strong.any():
        nflow = np.minimum(d[strong] / grad[strong], 8.0)
        nflow_mean = float(nflow.mean())
        nflow_p90 = float(np.percentile(nflow, 90.0))
    else:
        nflow_mean = nflow_p90 = 0.0

    values = [
        e_mean,
        e_std,
        float(energy.max()),
        float(pix_std.mean()),
        float(p90.mean()),
        float(p99.mean()),
        float(p99.max()),
        float(moving.mean()),
        float(moving.std()),
        float(moving.max()),
        e_std / (e_mean + eps),
        jerk,
        accel,
        entropy,
        active,
        peak,
        grid_cv,
        centroid_speed,
        spread,
        nflow_mean,
        nflow_p90,
    ]
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class MotionHead:
    """A logistic regression on ``log1p``-transformed, standardised :data:`FEATURE_NAMES` features."""

    feature_names: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    coef: npt.NDArray[np.float64]
    intercept: float
    fps: float
    window_frames: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def probability(self, features: npt.NDArray[np.float64]) -> float:
        """Probability of violence for one feature vector."""
        z = (np.log1p(np.maximum(features, 0.0)) - self.mean) / self.scale
        logit = float(z @ self.coef) + self.intercept
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MotionHead:
        names = tuple(str(n) for n in data["feature_names"])
        if names != FEATURE_NAMES:
            raise ModelUnavailableError(
                f"motion head features {names} do not match this code's {FEATURE_NAMES}"
            )
        arrays = [np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
        if any(a.shape != (len(names),) for a in arrays):
            raise ModelUnavailableError("motion head: mean, scale and coef must have one value per feature")
        return cls(
            feature_names=names,
            mean=arrays[0],
            scale=arrays[1],
            coef=arrays[2],
            intercept=float(data["intercept"]),
            fps=float(data["fps"]),
            window_frames=int(data["window_frames"]),
            metadata=dict(data.get("metadata", {})),
        )


def load_head(path: Path | None = None) -> MotionHead:
    """The packaged head (``livesafe/analyzers/data/motion_head.json``) or the one at ``path``."""
    try:
        if path is None:
            text = resources.files("livesafe.analyzers").joinpath("data/motion_head.json").read_text("utf-8")
        else:
            text = path.read_text("utf-8")
        return MotionHead.from_dict(json.loads(text))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailableError(f"livesafe motion head cannot be loaded: {exc}") from exc


def sample_clip(
    path: Path, fps: float = REQUIRED_FPS, max_width: int = 640
) -> list[tuple[float, npt.NDArray[np.uint8]]]:
    """Decode a video file with PyAV, sampled as livesafe's ingest does: (media_ts, RGB frame) pairs."""
    import av

    out: list[tuple[float, npt.NDArray[np.uint8]]] = []
    next_ts = 0.0
    start: float | None = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                continue
            ts = float(frame.pts * frame.time_base)
            if start is None:
                start = ts
            ts -= start
            if ts + 1e-6 < next_ts:
                continue
            next_ts = max(next_ts + 1.0 / fps, ts)
            width, height = frame.width, frame.height
            if width > max_width:
                height = max(2, round(height * max_width / width / 2) * 2)
                width = max_width
            rgb = np.asarray(frame.to_ndarray(format="rgb24", width=width, height=height), dtype=np.uint8)
            out.append((round(ts, 6), rgb))
    return out


@dataclass(frozen=True, slots=True)
class MotionOptions:
    """Options of :class:`MotionViolenceAnalyzer`."""

    #: Emit a signal at most every this many media seconds once a stream's window is full.
    emit_every_s: float = 0.5
    #: Streams whose buffers are kept at once; the least recently fed is dropped beyond this.
    max_streams: int = 256

    def __post_init__(self) -> None:
        if self.emit_every_s < 0:
            raise ValueError(f"emit_every_s must be >= 0, got {self.emit_every_s}")
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {self.max_streams}")


@dataclass(slots=True)
class _StreamState:
    frames: deque[npt.NDArray[np.uint8]]
    stamps: deque[float]
    indices: deque[int]
    last_emit: float = -math.inf
    gaps: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class MotionViolenceAnalyzer:
    """A :class:`~livesafe.analyzers.base.VisionAnalyzer` scoring ``violence`` from motion.

    Stateful per stream: ``analyze`` appends the sample to the stream's ring buffer (at most
    :data:`WINDOW_FRAMES` small grayscale frames) and returns a signal once the window is full and
    ``emit_every_s`` has passed since the last one. Needs frames at :attr:`required_fps`, which it declares
    as ``sample_fps`` so that the pipeline feeds it at that rate; see the module docs. Thread-safe;
    ``forget`` drops a stream's buffer when the stream ends.
    """

    name = "vision.motion"
    categories: tuple[str, ...] = ("violence",)
    #: Per sample, averaged: the downscale (~0.6 ms from 640x360) plus, two windows a media second, the
    #: descriptors (~8-10 ms each): measured ~2.9 ms a call, ~23-25 ms a media second at 8 calls a second.
    cost = AnalyzerCost(per_call_s=0.003)

    def __init__(self, options: MotionOptions | None = None, head: MotionHead | None = None) -> None:
        self.options = options or MotionOptions()
        self.head = head or load_head()
        self.required_fps: float = self.head.fps
        #: The rate the pipeline feeds this analyzer at, whatever the stream's own sampling rate.
        self.sample_fps: float | None = self.head.fps
        self.window_frames: int = self.head.window_frames
        self._streams: OrderedDict[str, _StreamState] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def window_s(self) -> float:
        return self.window_frames / self.required_fps

    def forget(self, stream_id: str) -> None:
        """Drop the buffer of ``stream_id`` (a no-op if it has none)."""
        with self._lock:
            self._streams.pop(stream_id, None)

    def buffered(self, stream_id: str) -> int:
        """Frames currently buffered for ``stream_id``."""
        with self._lock:
            state = self._streams.get(stream_id)
        return 0 if state is None else len(state.frames)

    def stream_ids(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def starved(self, stream_id: str) -> bool:
        """Whether ``stream_id``'s frames came too far apart at least twice (sampled below required_fps)."""
        with self._lock:
            state = self._streams.get(stream_id)
        return state is not None and state.gaps >= 2

    def _state(self, stream_id: str) -> _StreamState:
        with self._lock:
            state = self._streams.get(stream_id)
            if state is None:
                n = self.window_frames
                state = _StreamState(deque(maxlen=n), deque(maxlen=n), deque(maxlen=n))
                self._streams[stream_id] = state
                while len(self._streams) > self.options.max_streams:
                    self._streams.popitem(last=False)
            else:
                self._streams.move_to_end(stream_id)
            return state

    def analyze(self, sample: VideoSample) -> list[Signal]:
        """Buffer ``sample``; a ``violence`` signal covering the last window when one is due."""
        period = 1.0 / self.required_fps
        state = self._state(sample.stream_id)
        with state.lock:
            ts = sample.media_ts
            if state.stamps:
                dt = ts - state.stamps[-1]
                if dt < 0:  # out of order or restarted media time: start over
                    self._clear(state)
                elif dt < 0.75 * period:  # denser than needed: skip
                    return []
                elif dt > MAX_GAP_FACTOR * period:
                    state.gaps += 1
                    self._clear(state)
            small = to_small_gray(sample.image)
            if state.frames and state.frames[-1].shape != small.shape:
                self._clear(state)
            state.frames.append(small)
            state.stamps.append(ts)
            state.indices.append(sample.index)
            if len(state.frames) < self.window_frames:
                return []
            if ts - state.last_emit + 1e-9 < self.options.emit_every_s:
                return []
            state.last_emit = ts
            window = np.stack(list(state.frames))
            start = state.stamps[0]
            first_index = state.indices[0]
        feats = window_features(window)
        score = self.head.probability(feats)
        key = {n: round(float(v), 4) for n, v in zip(FEATURE_NAMES, feats, strict=True)}
        evidence = {
            "window_s": round(ts - start, 3),
            "frames": self.window_frames,
            "first_frame": first_index,
            "features": {
                k: key[k] for k in ("energy_mean", "moving_mean", "jerk", "nflow_mean", "grid_peak")
            },
        }
        return [
            Signal(
                stream_id=sample.stream_id,
                media_ts=start,
                category="violence",
                score=min(1.0, max(0.0, score)),
                analyzer=self.name,
                end_ts=ts,
                evidence=evidence,
            )
        ]

    def score_frames(self, frames: Sequence[npt.NDArray[np.uint8]]) -> float:
        """Violence probability of one window of RGB frames sampled at ``required_fps`` (no state)."""
        return self.head.probability(window_features(np.stack([to_small_gray(f) for f in frames])))

    @staticmethod
    def _clear(state: _StreamState) -> None:
        state.frames.clear()
        state.stamps.clear()
        state.indices.clear()
        state.last_emit = -math.inf
