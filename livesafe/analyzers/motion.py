"""Violence detection from motion: camera-compensated motion descriptors and a gradient-boosted head.

Fights look like bursts of large, jerky, multi-directional motion in one part of the picture: limbs and
bodies moving against each other and reversing within fractions of a second. Ordinary video moves too,
but differently: the camera pans, zooms and shakes (everything moves together), the picture cuts to
another shot, people walk (each in one direction, steadily). This analyzer keeps, per stream, the last
small grayscale frame (160 px wide) sampled at :data:`REQUIRED_FPS` frames per media second and, for
each new frame, describes the motion since the previous one (:func:`pair_motion`):

* **camera motion** is estimated and removed first: a similarity transform (shift, zoom, rotation) fitted
  by robust (Cauchy-weighted) Gauss-Newton on the image gradients at 1/4 and 1/2 resolution, kept only
  when it explains the frame difference clearly better than no motion (otherwise a large moving object
  would be taken for the camera). The descriptors see the *residual* difference: what moved in the scene.
* **scene cuts** are found from the grey-level histogram change and the low-resolution correlation of
  the compensated frames; a pair across a cut is left out of its windows (a cut is not violence), and a
  window with more cuts than motion is scored 0.
* the residual difference gives energy statistics (mean, percentiles, moving pixels, a 4x4 grid, the
  motion centroid and spread, normal flow) and a coarse residual flow field (Lucas-Kanade per 20x20 px
  block), from which come the descriptors that separate fights from walking and camera motion: how
  incoherent the flow is in space (neighbouring blocks moving against each other, direction entropy,
  curl, divergence) and in time (blocks reversing direction, flow accelerating).
* the signed residual (half resolution) of consecutive pairs: whether the difference continues (a walker,
  a car) or reverses and changes (a limb swinging back), measured where the block flow cannot follow
  (motion too large or too fast for it, untextured bodies). With them, a street CCTV clip scored by a
  head trained without it has 10 windows of 156 at 0.6 or above instead of 35, at the same
  cross-validated accuracy on the fight clips (0.78 and 0.79 at floor 0.6).

All magnitudes are per nominal frame interval (1/8 s): a pair further apart (frames sampled from a 10 or
12 fps source alternate 0.1 / 0.2 s) is scaled down, so irregular sampling does not look like bursts.

Once a stream holds :data:`WINDOW_FRAMES` frames (two seconds), every ``emit_every_s`` it aggregates the
window's frame pairs into :data:`FEATURE_NAMES` (:func:`window_motion`) and scores them with gradient-boosted
trees trained by ``scripts/train_motion.py`` on the training part of the fight-detection-surv-dataset
(Akti et al. 2019: 2-second CCTV clips, fight / no fight) plus windows of benign videos (films,
animation, a CCTV street scene, the bundled benign demo) as negatives. The trees, the measured figures
and the list of videos used live in ``data/motion_head.json``. Each frame pair is described once (the
analyzer keeps the per-pair descriptors of the window), so the cost per media second is 8 pair
descriptions plus two window aggregations; the flow field's spatial statistics are computed with the pair.

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

**Limits** (figures in ``data/motion_head.json``). The floor 0.6 of the default policy is where the
5-fold cross-validated clip accuracy on the training clips peaks (0.78; 0.75 at 0.8). Held-out fight clips
at 0.6, reported once: accuracy 0.76 (42 of 55), precision 0.82, recall 0.67. A 2-second clip gives one
window, so "flagged" there means the risk engine takes evidence from it; the default policy acts only on
sustained windows (a window adds at most 0.12 of evidence, which halves in 10 s: a fight whose every
window scores 0.9 is warned after ~6 s and restricted after ~11.5 s; one whose every other window does,
after ~11 s and ~52 s). The synthetic demo streams and a test pattern stay below 0.6; the held-out Big
Buck Bunny excerpt has one window of 55 at 0.6 (no action). Real footage of people moving that the head
has not been trained on is still sometimes taken for a fight: scored by a head trained without it,
windows at 0.6 or above and what the default policy does: a Chaplin film 11 of 14 (warn, peak risk 0.56),
a CCTV street scene 10 of 156 (observe, 0.48), a handheld cycling clip 9 of 15 (observe, 0.42), an
animated trailer 5 of 19 (observe, 0.31); none is restricted. Close-up
gesturing (a webcam streamer) is not in the training data at all. A pair whose compensated frames
correlate badly is taken for a cut, so a large object moving fast in front of a featureless background can
be left out as one.

Everything is a pure function of the frames and their media times (no clock, no randomness), so replaying
a stream gives the same signals.
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

from livesafe.analyzers.base import AnalyzerCost, ModelUnavailableError
from livesafe.analyzers.motion_features import (
    FEATURE_NAMES,
    MAX_GAP_FACTOR,
    REQUIRED_FPS,
    WINDOW_FRAMES,
    FloatArray,
    PairMotion,
    WindowMotion,
    estimate_camera,
    pair_motion,
    to_small_gray,
    window_features,
    window_motion,
)
from livesafe.core.events import Signal, VideoSample

__all__ = [
    "FEATURE_NAMES",
    "REQUIRED_FPS",
    "WINDOW_FRAMES",
    "MotionHead",
    "MotionOptions",
    "MotionViolenceAnalyzer",
    "PairMotion",
    "WindowMotion",
    "estimate_camera",
    "load_head",
    "pair_motion",
    "sample_clip",
    "to_small_gray",
    "window_features",
    "window_motion",
]

# --- the head ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tree:
    feature: npt.NDArray[np.int64]
    threshold: FloatArray
    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    value: FloatArray

    def leaf_value(self, x: npt.NDArray[np.float32]) -> float:
        node = 0
        while self.left[node] >= 0:
            node = int(self.left[node] if x[self.feature[node]] <= self.threshold[node] else self.right[node])
        return float(self.value[node])


@dataclass(frozen=True, slots=True)
class MotionHead:
    """Gradient-boosted regression trees on :data:`FEATURE_NAMES` (log-loss, as scikit-learn's
    ``GradientBoostingClassifier``): probability = sigmoid(init + learning_rate * sum of leaf values).
    Features are compared in float32, as scikit-learn's trees compare them."""

    feature_names: tuple[str, ...]
    init: float
    learning_rate: float
    trees: tuple[_Tree, ...]
    fps: float
    window_frames: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def logit(self, features: FloatArray) -> float:
        x = np.asarray(features, dtype=np.float32)
        return self.init + self.learning_rate * math.fsum(t.leaf_value(x) for t in self.trees)

    def probability(self, features: FloatArray) -> float:
        """Probability of violence for one feature vector."""
        logit = self.logit(features)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MotionHead:
        names = tuple(str(n) for n in data["feature_names"])
        if names != FEATURE_NAMES:
            raise ModelUnavailableError(
                f"motion head features {names} do not match this code's {FEATURE_NAMES}"
            )
        if data.get("kind") != "gradient_boosting":
            raise ModelUnavailableError(f"motion head: unknown kind {data.get('kind')!r}")
        trees = []
        for k, raw in enumerate(data["trees"]):
            tree = _Tree(
                feature=np.asarray(raw["feature"], dtype=np.int64),
                threshold=np.asarray(raw["threshold"], dtype=np.float64),
                left=np.asarray(raw["left"], dtype=np.int64),
                right=np.asarray(raw["right"], dtype=np.int64),
                value=np.asarray(raw["value"], dtype=np.float64),
            )
            n = len(tree.value)
            parts = (tree.feature, tree.threshold, tree.left, tree.right)
            inner = tree.left >= 0
            if (
                n == 0
                or any(len(p) != n for p in parts)
                or np.any(tree.feature[inner] >= len(names))
                or np.any(tree.feature[inner] < 0)
                or np.any(tree.left[inner] >= n)
                or np.any(tree.right[inner] >= n)
                or np.any(tree.right[inner] < 0)
            ):
                raise ModelUnavailableError(f"motion head: tree {k} is malformed")
            trees.append(tree)
        return cls(
            feature_names=names,
            init=float(data["init"]),
            learning_rate=float(data["learning_rate"]),
            trees=tuple(trees),
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
    #: The window's frame pairs (at most window_frames - 1), their end stamps and frame indices.
    pairs: deque[PairMotion]
    stamps: deque[float]
    indices: deque[int]
    #: The latest frame kept (small grayscale), its stamp and index; None when the buffer is empty.
    last: npt.NDArray[np.uint8] | None = None
    last_ts: float = 0.0
    last_index: int = 0
    last_emit: float = -math.inf
    gaps: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class MotionViolenceAnalyzer:
    """A :class:`~livesafe.analyzers.base.VisionAnalyzer` scoring ``violence`` from motion.

    Stateful per stream: ``analyze`` describes the motion from the stream's previous frame to the sample
    (:func:`pair_motion`, kept for the last :data:`WINDOW_FRAMES` frames) and returns a signal once the
    window is full and ``emit_every_s`` has passed since the last one. Needs frames at :attr:`required_fps`,
    which it declares as ``sample_fps`` so that the pipeline feeds it at that rate; see the module docs.
    Thread-safe; ``forget`` drops a stream's buffer when the stream ends.
    """

    name = "vision.motion"
    categories: tuple[str, ...] = ("violence",)
    #: Per sample, averaged: the downscale (~0.3 ms from 640x360), one pair description (camera motion,
    #: residual, block flow and its statistics: ~2.5 ms) and, two windows a media second, the aggregation
    #: and the trees (~1.7 ms each). Measured on a 720p30 H.264 Big Buck Bunny fed at 8 fps (640x360 RGB, as
    #: ingest scales it): ~3.0 ms a call, ~23-30 ms a media second on one core. The whole stream costs
    #: ~50-80 ms a media second more with motion than without (CPU time, busy 2-core machine): this
    #: analyzer, decoding the frames 1 fps sampling lets ingest skip, and converting 8 frames a second.
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
        """Frames currently buffered for ``stream_id`` (the window's frames so far)."""
        with self._lock:
            state = self._streams.get(stream_id)
        if state is None or state.last is None:
            return 0
        return len(state.pairs) + 1

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
                n = self.window_frames - 1
                state = _StreamState(deque(maxlen=n), deque(maxlen=n + 1), deque(maxlen=n + 1))
                self._streams[stream_id] = state
                while len(self._streams) > self.options.max_streams:
                    self._streams.popitem(last=False)
            else:
                self._streams.move_to_end(stream_id)
            return state

    def analyze(self, sample: VideoSample) -> list[Signal]:
        """Add ``sample`` to its stream's window; a ``violence`` signal over the window when one is due."""
        period = 1.0 / self.required_fps
        state = self._state(sample.stream_id)
        with state.lock:
            ts = sample.media_ts
            if state.last is not None:
                dt = ts - state.last_ts
                if dt < 0:  # out of order or restarted media time: start over
                    self._clear(state)
                elif dt < 0.75 * period:  # denser than needed: skip
                    return []
                elif dt > MAX_GAP_FACTOR * period:
                    state.gaps += 1
                    self._clear(state)
            small = to_small_gray(sample.image)
            if state.last is not None and state.last.shape != small.shape:
                self._clear(state)
            if state.last is None:
                state.stamps.append(ts)
                state.indices.append(sample.index)
            else:
                # The one expensive step, done once per frame; the window reuses it while it lasts.
                state.pairs.append(pair_motion(state.last, small, ts - state.last_ts))
                state.stamps.append(ts)
                state.indices.append(sample.index)
            state.last, state.last_ts, state.last_index = small, ts, sample.index
            if len(state.pairs) < self.window_frames - 1:
                return []
            if ts - state.last_emit + 1e-9 < self.options.emit_every_s:
                return []
            state.last_emit = ts
            pairs = list(state.pairs)
            start = state.stamps[0]
            first_index = state.indices[0]
        window = window_motion(pairs)
        evidence: dict[str, Any] = {
            "window_s": round(ts - start, 3),
            "frames": self.window_frames,
            "first_frame": first_index,
            "scene_cuts": window.cuts,
            "camera_px": round(window.camera_speed, 3),
        }
        if window.features is None:
            # Mostly cuts (an edit, flashing): no motion to judge, and a cut is not violence.
            score = 0.0
        else:
            score = self.head.probability(window.features)
            key = dict(zip(FEATURE_NAMES, window.features, strict=True))
            evidence["features"] = {
                k: round(float(key[k]), 4)
                for k in ("energy_mean", "moving_mean", "flow_p90", "opposing", "rev_active", "res_corr")
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

    def score_frames(
        self, frames: Sequence[npt.NDArray[np.uint8]], stamps: Sequence[float] | None = None
    ) -> float:
        """Violence probability of one window of RGB frames sampled at ``required_fps`` (no state); 0 when
        scene cuts leave too little to judge."""
        feats = window_features(np.stack([to_small_gray(f) for f in frames]), stamps)
        return 0.0 if feats is None else self.head.probability(feats)

    @staticmethod
    def _clear(state: _StreamState) -> None:
        state.pairs.clear()
        state.stamps.clear()
        state.indices.clear()
        state.last = None
        state.last_emit = -math.inf
