"""Motion descriptors for violence detection: camera motion removed, scene cuts found, frame pairs and
two-second windows described (pure functions of the frames; :mod:`livesafe.analyzers.motion` scores them).

See :mod:`livesafe.analyzers.motion` for what the descriptors are for and how they were chosen.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

#: Frames per media second the descriptors are computed at (and the head was trained at).
REQUIRED_FPS = 8.0
#: Frames in one window: two seconds at :data:`REQUIRED_FPS`.
WINDOW_FRAMES = 16
#: Width frames are scaled to before the descriptors (grayscale; the height keeps the aspect ratio).
SMALL_WIDTH = 160
#: A gap longer than this many sampling periods between two kept frames empties the buffer.
MAX_GAP_FACTOR = 2.5
#: A pixel "moves" when its absolute residual difference exceeds this (0..255, per nominal interval).
MOVE_THRESHOLD = 25.0
#: Coarse grid for the spatial spread of motion.
GRID = 4
#: Normal flow is only measured where the spatial gradient exceeds this (0..255 per pixel).
GRAD_THRESHOLD = 12.0
#: Side of the residual-flow blocks, in pixels at half resolution (20 px of the 160 px frame).
FLOW_BLOCK = 10
#: A block's flow is trusted when the smaller eigenvalue of its structure tensor, per pixel, exceeds this.
FLOW_MIN_EIGEN = 2.0
#: A block "moves" when its residual flow exceeds this (px per nominal interval).
FLOW_ACTIVE = 0.5
#: The camera model is kept only when its robust residual cost is below this share of no motion's.
CAMERA_GAIN = 0.8
#: A pair is a scene cut when the grey-level histograms differ by more than this (total variation) ...
CUT_HISTOGRAM = 0.25
#: ... or the compensated frames correlate less than this at 1/4 resolution.
CUT_CORRELATION = 0.3
#: A pixel of the half-resolution signed residual "moves" when its magnitude exceeds this (0..255).
RESIDUAL_MOVE = 12.0
_EPS = 1e-6

FEATURE_NAMES: tuple[str, ...] = (
    # Residual (camera-compensated) difference energy, per pair then over the window.
    "energy_mean",  # mean |residual| over pixels, averaged over the window's pairs
    "energy_std_t",  # its standard deviation over time
    "energy_max_t",  # its largest value
    "pixel_std_mean",  # spatial standard deviation of |residual|, averaged over pairs
    "p90_mean",  # 90th percentile of |residual|, averaged over pairs
    "p99_mean",  # 99th percentile, averaged over pairs
    "p99_max",  # largest 99th percentile over pairs
    "moving_mean",  # fraction of moving pixels, averaged over pairs
    "moving_std_t",  # its standard deviation over time
    "moving_max_t",  # its largest value
    "energy_cv_t",  # energy_std_t / energy_mean
    "jerk",  # mean |change of energy| between consecutive pairs / energy_mean
    "grid_entropy",  # normalised entropy of the energy over a 4x4 grid (1 = spread evenly)
    "grid_active",  # fraction of grid cells whose energy exceeds the frame mean
    "grid_peak",  # energy of the busiest cell / mean cell energy
    "grid_cv_t",  # mean over cells of (std over time / mean) of the cell energy
    "centroid_speed",  # mean displacement of the motion centroid between pairs (fraction of width)
    "spread",  # weighted spatial standard deviation of motion around its centroid (fraction of width)
    "nflow_mean",  # mean normal-flow magnitude |dI/dt| / |grad I| where the gradient is strong (px)
    "nflow_p90",  # its 90th percentile
    # Residual block flow (Lucas-Kanade per block, px per nominal interval).
    "flow_mean",  # mean block flow magnitude over trusted blocks, averaged over pairs
    "flow_p90",  # its 90th percentile, averaged over pairs
    "flow_max",  # largest 90th percentile over pairs
    "flow_active",  # fraction of trusted blocks moving
    "flow_disp",  # 1 - |sum of moving flows| / sum of their magnitudes: 0 = all one way
    "flow_accel",  # mean |flow change| of a block between consecutive pairs
    "flow_reversal",  # blocks moving both times but in opposite directions, per trusted block
    "dir_entropy",  # normalised entropy of moving flow directions (8 bins, magnitude-weighted)
    "rev_active",  # share of blocks moving both times that reversed direction
    "block_burst",  # mean over active blocks of (std over time / mean) of the flow magnitude
    "block_peak_t",  # mean over active blocks of (max over time / mean) of the flow magnitude
    "div_mean",  # mean |divergence| of the block flow field
    "curl_mean",  # mean |curl| of the block flow field
    "flow_conc",  # share of the flow magnitude in the three busiest blocks
    "opposing",  # share of neighbouring moving blocks that move against each other
    "opp_amount",  # sum over opposing neighbours of the smaller magnitude, per block
    "rev_amount",  # mean over blocks of sqrt(max(0, -f_t . f_t-1)): reversing motion, with its size
    "incoh_amount",  # (sum of magnitudes - |vector sum|) per block: motion not explained by one direction
    "opp_max",  # largest opp_amount over the window's pairs
    "tinc_amount",  # per block, sum of magnitudes over time - |sum of flows over time|, per block and pair
    "tinc_ratio",  # the same over the sum of magnitudes: 0 = every block kept its direction
    "tinc_max",  # the largest block's temporal incoherence, per pair
    # Signed residual difference (half resolution) of consecutive pairs, over the pixels moving in either:
    # a limb swinging back reverses its difference, a walker or a car continues it. Robust where the block
    # flow is not: motion too large or too fast for Lucas-Kanade, untextured bodies.
    "res_corr",  # mean correlation of consecutive residuals (1 = motion continues, < 0 = it reverses)
    "res_corr_min",  # its smallest value over the window
    "res_change",  # mean sum |r2 - r1| / (sum |r1| + sum |r2|): how much the difference itself changes
    "res_net",  # mean sum |r1 + r2| / (sum |r1| + sum |r2|): what two steps add up to, per unit of motion
    "res_net_min",  # its smallest value over the window
    "res_tinc",  # 1 - |sum of residuals over the window| / sum of |residuals|, where pixels moved
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


# --- per frame pair ---------------------------------------------------------------------------------------


def _down2(x: F32) -> F32:
    """Half resolution by 2x2 means (an odd last row or column is dropped)."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return 0.25 * (x[0:h:2, 0:w:2] + x[1:h:2, 0:w:2] + x[0:h:2, 1:w:2] + x[1:h:2, 1:w:2])


def _grads(x: F32) -> tuple[F32, F32]:
    """Central differences (zero on the border): d/dx, d/dy."""
    gy = np.zeros_like(x)
    gx = np.zeros_like(x)
    gy[1:-1] = 0.5 * (x[2:] - x[:-2])
    gx[:, 1:-1] = 0.5 * (x[:, 2:] - x[:, :-2])
    return gx, gy


@functools.lru_cache(maxsize=64)
def _centred_grid(h: int, w: int) -> tuple[F32, F32]:
    """Pixel coordinates relative to the frame centre (read-only)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xp, yp = xs - np.float32((w - 1) / 2), ys - np.float32((h - 1) / 2)
    xp.setflags(write=False)
    yp.setflags(write=False)
    return xp, yp


def _warp(a: F32, theta: FloatArray | Sequence[float]) -> tuple[F32, BoolArray]:
    """``a`` sampled at ``p - u(p)`` (bilinear), u the similarity ``(tx, ty, s, r)`` about the centre:
    ``u = (tx + s x - r y, ty + r x + s y)``. Also the mask of pixels whose source lies inside ``a``."""
    h, w = a.shape
    tx, ty, s, r = (float(v) for v in theta)
    xp, yp = _centred_grid(h, w)
    sx = xp * np.float32(1 - s) + yp * np.float32(r) + np.float32((w - 1) / 2 - tx)
    sy = yp * np.float32(1 - s) - xp * np.float32(r) + np.float32((h - 1) / 2 - ty)
    valid = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    np.clip(sx, 0, w - 1.001, out=sx)
    np.clip(sy, 0, h - 1.001, out=sy)
    x0 = sx.astype(np.int32)
    y0 = sy.astype(np.int32)
    fx = sx - x0
    fy = sy - y0
    flat = a.ravel()
    i = y0 * w + x0
    top = flat[i] + fx * (flat[i + 1] - flat[i])
    bottom = flat[i + w] + fx * (flat[i + w + 1] - flat[i + w])
    return (top + fy * (bottom - top)).astype(np.float32), valid


def _robust_cost(residual: F32, mask: BoolArray | None = None) -> float:
    """Mean Cauchy cost ``log(1 + (r / 8)^2)`` of a residual image (over ``mask``)."""
    r = residual if mask is None else residual[mask]
    if r.size == 0:
        return math.inf
    return float(np.mean(np.log1p((r / 8.0) ** 2)))


def estimate_camera(prev: F32, cur: F32) -> FloatArray:
    """The camera's motion from ``prev`` to ``cur`` as a similarity ``(tx, ty, s, r)`` in pixels of the
    given frames (``cur(p) ~ prev(p - u(p))``, see :func:`_warp`): robust Gauss-Newton (Cauchy weights
    scaled by the residual's median) at 1/4 resolution (two steps) then 1/2 resolution (three steps),
    gradients averaged over both frames. Not yet checked against no motion (:func:`pair_motion` does)."""
    a1, b1 = _down2(prev), _down2(cur)
    a2, b2 = _down2(a1), _down2(b1)
    theta = np.zeros(4)
    for level, pa, pb, steps in ((2, a2, b2, 2), (1, a1, b1, 3)):
        scale = 2.0**level
        h, w = pa.shape
        if h < 4 or w < 4:
            continue
        xg, yg = _centred_grid(h, w)
        xp, yp = xg.ravel(), yg.ravel()
        gbx, gby = _grads(pb)
        inner = np.zeros((h, w), dtype=bool)
        inner[1:-1, 1:-1] = True
        for _ in range(steps):
            th = theta.copy()
            th[:2] /= scale
            if np.any(th):
                aw, valid = _warp(pa, th)
            else:
                aw, valid = pa, np.ones((h, w), dtype=bool)
            gax, gay = _grads(aw)
            gx = (0.5 * (gax + gbx)).ravel()
            gy = (0.5 * (gay + gby)).ravel()
            it = (pb - aw).ravel()
            use = (valid & inner).ravel()
            if int(use.sum()) < 16:
                break
            c = max(3.0, 1.4826 * float(np.median(np.abs(it[use]))))
            weights = (use / (1.0 + (it / (2.0 * c)) ** 2)).astype(np.float32)
            jac = np.stack([gx, gy, gx * xp + gy * yp, gy * xp - gx * yp], axis=1)
            jw = jac * weights[:, None]
            hess = (jac.T @ jw).astype(np.float64)
            grad = (jw.T @ it).astype(np.float64)
            damping = 1e-2 * float(np.trace(hess)) / 4 + 1e-3
            step = -np.linalg.solve(hess + damping * np.eye(4), grad)
            step[:2] *= scale
            theta = theta + step
            theta[2:] = np.clip(theta[2:], -0.15, 0.15)
            theta[:2] = np.clip(theta[:2], -24.0, 24.0)
    return theta


def _histogram_change(a: F32, b: F32) -> float:
    """Total variation distance between the 32-bin grey-level histograms of two frames (0..1)."""
    ha = np.bincount((a.ravel() / 8).astype(np.int32), minlength=32)[:32] / a.size
    hb = np.bincount((b.ravel() / 8).astype(np.int32), minlength=32)[:32] / b.size
    return 0.5 * float(np.abs(ha - hb).sum())


def _block_flow(a: F32, b: F32) -> tuple[FloatArray, BoolArray]:
    """Lucas-Kanade translation per :data:`FLOW_BLOCK` block at half resolution: (rows, cols, 2) flow in
    full-resolution pixels (zero where the block has too little texture to tell) and the trusted mask."""
    a2, b2 = _down2(a), _down2(b)
    h, w = a2.shape
    n = FLOW_BLOCK
    rows, cols = h // n, w // n
    if rows == 0 or cols == 0:
        return np.zeros((max(rows, 1), max(cols, 1), 2)), np.zeros((max(rows, 1), max(cols, 1)), dtype=bool)
    gx, gy = _grads(0.5 * (a2 + b2))
    it = b2 - a2

    def block_sum(x: F32) -> FloatArray:
        return np.asarray(x[: rows * n, : cols * n].reshape(rows, n, cols, n).sum(axis=(1, 3)), np.float64)

    sxx, sxy, syy = block_sum(gx * gx), block_sum(gx * gy), block_sum(gy * gy)
    sxt, syt = block_sum(gx * it), block_sum(gy * it)
    det = sxx * syy - sxy * sxy
    tr = sxx + syy
    min_eigen = 0.5 * (tr - np.sqrt(np.maximum(tr * tr - 4 * det, 0.0)))
    ok = min_eigen / (n * n) > FLOW_MIN_EIGEN
    safe = np.where(ok, det, 1.0)
    u = np.where(ok, -(syy * sxt - sxy * syt) / safe, 0.0)
    v = np.where(ok, -(sxx * syt - sxy * sxt) / safe, 0.0)
    flow = np.clip(np.stack([u, v], axis=-1) * 2.0, -8.0, 8.0)
    return flow, ok


@dataclass(frozen=True, slots=True)
class FlowField:
    """Spatial statistics of one pair's block flow (see :data:`FEATURE_NAMES`)."""

    dir_entropy: float
    concentration: float
    divergence: float
    curl: float
    opposing: float
    opp_amount: float
    incoherence: float


def _neighbour_pairs(grid: npt.NDArray[Any]) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    """Horizontally then vertically adjacent cells of a (rows, cols, ...) grid."""
    return [(grid[:, :-1], grid[:, 1:]), (grid[:-1, :], grid[1:, :])]


def _flow_field(f: FloatArray, flow_ok: BoolArray) -> FlowField:
    """Directions, neighbours moving against each other, curl and divergence of a block flow field."""
    mag = np.hypot(f[..., 0], f[..., 1]) * flow_ok
    active = mag > FLOW_ACTIVE
    entropy = concentration = 0.0
    if active.sum() >= 2:
        angle = np.arctan2(f[..., 1], f[..., 0])[active]
        bins = ((angle + np.pi) / (2 * np.pi) * 8).astype(np.int64) % 8
        hist = np.bincount(bins, weights=mag[active], minlength=8)
        share = hist / hist.sum()
        entropy = float(-(share * np.log(share + 1e-12)).sum() / math.log(8))
        ranked = np.sort(mag.ravel())[::-1]
        concentration = float(ranked[:3].sum() / (ranked.sum() + _EPS))
    n_pairs = n_opposed = 0
    amount = 0.0
    for (fa, fb), (ma, mb), (aa, ab) in zip(
        _neighbour_pairs(f), _neighbour_pairs(mag), _neighbour_pairs(active), strict=True
    ):
        dot = (fa * fb).sum(axis=-1)
        both = aa & ab
        n_pairs += int(both.sum())
        n_opposed += int((both & (dot < 0)).sum())
        amount += float(np.where(dot < 0, np.minimum(ma, mb), 0.0).sum())
    divergence = curl = 0.0
    if f.shape[0] > 1 and f.shape[1] > 1:
        fx, fy = f[..., 0], f[..., 1]
        dux, dvy = np.diff(fx, axis=1)[:-1], np.diff(fy, axis=0)[:, :-1]
        duy, dvx = np.diff(fx, axis=0)[:, :-1], np.diff(fy, axis=1)[:-1]
        divergence = float(np.abs(dux + dvy).mean())
        curl = float(np.abs(dvx - duy).mean())
    return FlowField(
        dir_entropy=entropy,
        concentration=concentration,
        divergence=divergence,
        curl=curl,
        opposing=n_opposed / max(1, n_pairs),
        opp_amount=amount / mag.size,
        incoherence=float(mag.sum() - np.hypot(*f.reshape(-1, 2).sum(axis=0))) / mag.size,
    )


@dataclass(frozen=True, slots=True)
class PairMotion:
    """What moved between two consecutive frames, magnitudes per nominal interval (1/8 s)."""

    energy: float
    pix_std: float
    p90: float
    p99: float
    moving: float
    #: Mean residual per cell of a GRID x GRID grid, row-major.
    cells: FloatArray
    #: Motion centroid (fraction of the width, from the centre), total weight and spread.
    cx: float
    cy: float
    mass: float
    spread: float
    nflow_mean: float
    nflow_p90: float
    #: Residual block flow (rows, cols, 2), zero where not trusted, and the trusted mask.
    flow: FloatArray
    flow_ok: BoolArray
    flow_mean: float
    flow_p90: float
    flow_active: float
    flow_disp: float
    #: The flow field's spatial statistics (:func:`_flow_field`), computed once per pair.
    field: FlowField
    #: Signed residual difference at half resolution (per nominal interval, zero outside the frame).
    residual: F32
    #: Camera motion removed (tx, ty px; s, r relative), zero when no camera motion was kept.
    camera: tuple[float, float, float, float]
    histogram_change: float
    correlation: float
    #: Whether the pair spans a scene cut (left out of windows).
    cut: bool


def pair_motion(
    prev: npt.NDArray[np.uint8], cur: npt.NDArray[np.uint8], dt: float = 1.0 / REQUIRED_FPS
) -> PairMotion:
    """Describe the motion from ``prev`` to ``cur`` (small grayscale frames, ``dt`` media seconds apart)."""
    if prev.shape != cur.shape or prev.ndim != 2:
        raise ValueError(f"expected two grayscale frames of one shape, got {prev.shape} and {cur.shape}")
    a = prev.astype(np.float32)
    b = cur.astype(np.float32)
    h, w = a.shape
    # Per nominal interval: a pair twice as far apart moves about twice as much.
    ratio = float(np.clip((1.0 / REQUIRED_FPS) / max(dt, 1e-3), 0.5, 2.0))

    theta = estimate_camera(a, b)
    no_motion = _robust_cost(b - a)
    displacement = abs(theta[0]) + abs(theta[1]) + (abs(theta[2]) + abs(theta[3])) * w / 2
    aw, valid = a, np.ones((h, w), dtype=bool)
    kept = False
    if displacement > 0.25:
        warped, inside = _warp(a, theta)
        if inside.mean() > 0.5 and _robust_cost(b - warped, inside) < CAMERA_GAIN * no_motion:
            aw, valid, kept = warped, inside, True
    if not kept:
        theta = np.zeros(4)

    signed = (b - aw) * np.float32(ratio)
    signed[~valid] = 0.0
    d = np.abs(signed)
    dv = d[valid]
    energy = float(dv.mean())
    pix_std = float(dv.std())
    p90, p99 = (float(v) for v in np.percentile(dv, [90.0, 99.0]))
    moving = float((dv > MOVE_THRESHOLD).mean())
    gh, gw = h // GRID, w // GRID
    cells = np.asarray(
        d[: gh * GRID, : gw * GRID].reshape(GRID, gh, GRID, gw).mean(axis=(1, 3)).ravel(), np.float64
    )
    weights = np.where(d > MOVE_THRESHOLD, d, 0.0)
    mass = float(weights.sum())
    cx = cy = var = 0.0
    if mass > 1.0:
        xp, yp = _centred_grid(h, w)
        cx = float((weights * xp).sum() / mass)
        cy = float((weights * yp).sum() / mass)
        var = float((weights * ((xp - cx) ** 2 + (yp - cy) ** 2)).sum() / mass)
    gx, gy = _grads(0.5 * (aw + b))
    grad = np.hypot(gx, gy)
    strong = (grad > GRAD_THRESHOLD) & valid
    nflow_mean = nflow_p90 = 0.0
    if strong.any():
        nflow = np.minimum(d[strong] / grad[strong], 8.0)
        nflow_mean = float(nflow.mean())
        nflow_p90 = float(np.percentile(nflow, 90.0))

    filled = np.where(valid, aw, b)
    q_a, q_b = _down2(_down2(filled)), _down2(_down2(b))
    q_a = q_a - q_a.mean()
    q_b = q_b - q_b.mean()
    correlation = float((q_a * q_b).sum() / (math.sqrt(float((q_a * q_a).sum() * (q_b * q_b).sum())) + _EPS))
    histogram_change = _histogram_change(a, b)

    flow, ok = _block_flow(filled, b)
    flow = flow * ratio
    mag = np.hypot(flow[..., 0], flow[..., 1])[ok]
    flow_mean = flow_p90 = flow_active = flow_disp = 0.0
    if mag.size:
        flow_mean = float(mag.mean())
        flow_p90 = float(np.percentile(mag, 90.0))
        active = mag > FLOW_ACTIVE
        flow_active = float(active.mean())
        if active.sum() >= 2:
            moving_flows = flow[ok][active]
            total = float(np.hypot(moving_flows[:, 0], moving_flows[:, 1]).sum())
            flow_disp = 1.0 - float(np.hypot(*moving_flows.sum(axis=0))) / (total + _EPS)
    return PairMotion(
        energy=energy,
        pix_std=pix_std,
        p90=p90,
        p99=p99,
        moving=moving,
        cells=cells,
        cx=cx / w,
        cy=cy / w,
        mass=mass,
        spread=math.sqrt(var) / w,
        nflow_mean=nflow_mean,
        nflow_p90=nflow_p90,
        flow=flow,
        flow_ok=ok,
        flow_mean=flow_mean,
        flow_p90=flow_p90,
        flow_active=flow_active,
        flow_disp=flow_disp,
        field=_flow_field(flow, ok),
        residual=_down2(signed),
        camera=(
            float(theta[0]) * ratio,
            float(theta[1]) * ratio,
            float(theta[2]) * ratio,
            float(theta[3]) * ratio,
        ),
        histogram_change=histogram_change,
        correlation=correlation,
        cut=histogram_change > CUT_HISTOGRAM or correlation < CUT_CORRELATION,
    )


# --- per window -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowMotion:
    """A window's :data:`FEATURE_NAMES` (None when scene cuts leave too few pairs) and its cut count."""

    features: FloatArray | None
    cuts: int
    #: Mean camera speed removed over the window (px per nominal interval), for evidence.
    camera_speed: float


def _residual_features(
    valid: Sequence[PairMotion], trans: Sequence[tuple[PairMotion, PairMotion]]
) -> list[float]:
    """The ``res_*`` features of a window: its non-cut pairs and the transitions between them."""
    corr: list[float] = []
    change: list[float] = []
    net: list[float] = []
    for a, b in trans:
        ra, rb = a.residual, b.residual
        moved = (np.abs(ra) > RESIDUAL_MOVE) | (np.abs(rb) > RESIDUAL_MOVE)
        if int(moved.sum()) < 10:
            corr.append(0.0)
            change.append(0.0)
            net.append(1.0)
            continue
        x, y = ra[moved], rb[moved]
        corr.append(float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + _EPS)))
        size = np.abs(x).sum() + np.abs(y).sum()
        change.append(float(np.abs(y - x).sum() / size))
        net.append(float(np.abs(x + y).sum() / size))
    stack = np.stack([p.residual for p in valid])
    path = np.abs(stack).sum(axis=0)
    total = np.abs(stack.sum(axis=0))
    moved = path > RESIDUAL_MOVE * len(valid) * 0.5
    tinc = float(1 - total[moved].sum() / (path[moved].sum() + _EPS)) if moved.any() else 0.0
    return [
        float(np.mean(corr)) if corr else 0.0,
        float(np.min(corr)) if corr else 0.0,
        float(np.mean(change)) if change else 0.0,
        float(np.mean(net)) if net else 1.0,
        float(np.min(net)) if net else 1.0,
        tinc,
    ]


def window_motion(pairs: Sequence[PairMotion]) -> WindowMotion:
    """Aggregate the pairs of one window into :data:`FEATURE_NAMES`.

    Pairs across a scene cut are left out, and so are the transitions (pair to next pair) that touch
    one; with fewer than half the pairs (or fewer than two) left, there are no features.
    """
    keep = [i for i, p in enumerate(pairs) if not p.cut]
    cuts = len(pairs) - len(keep)
    camera = [math.hypot(p.camera[0], p.camera[1]) for p in pairs if not p.cut]
    camera_speed = float(np.mean(camera)) if camera else 0.0
    if len(keep) < max(2, len(pairs) // 2):
        return WindowMotion(None, cuts, camera_speed)
    valid = [pairs[i] for i in keep]
    trans = [(pairs[i], pairs[i + 1]) for i in keep if i + 1 < len(pairs) and not pairs[i + 1].cut]

    def col(name: str) -> FloatArray:
        return np.asarray([getattr(p, name) for p in valid], dtype=np.float64)

    energy, moving = col("energy"), col("moving")
    e_mean, e_std = float(energy.mean()), float(energy.std())
    jerk = float(np.mean([abs(b.energy - a.energy) for a, b in trans])) / (e_mean + _EPS) if trans else 0.0
    cells = np.stack([p.cells for p in valid])
    total = cells.mean(axis=0)
    prob = total / (total.sum() + _EPS)
    grid_entropy = float(-(prob * np.log(prob + 1e-12)).sum() / math.log(prob.size))
    grid_active = float((cells > cells.mean(axis=1, keepdims=True)).mean())
    grid_peak = float(total.max() / (total.mean() + _EPS))
    grid_cv = float((cells.std(axis=0) / (total + 1.0)).mean())
    both_mass = [(a, b) for a, b in trans if a.mass > 1 and b.mass > 1]
    centroid_speed = (
        float(np.mean([math.hypot(b.cx - a.cx, b.cy - a.cy) for a, b in both_mass])) if both_mass else 0.0
    )
    spreads = [p.spread for p in valid if p.mass > 1]
    spread = float(np.mean(spreads)) if spreads else 0.0

    # Flow over time: change, reversals (of blocks trusted in both pairs).
    accel: list[float] = []
    reversal: list[float] = []
    rev_share: list[float] = []
    rev_amount: list[float] = []
    for a, b in trans:
        ok = a.flow_ok & b.flow_ok
        dot_all = (a.flow * b.flow).sum(axis=-1)
        rev_amount.append(float(np.sqrt(np.maximum(0.0, -dot_all)).mean()))
        if ok.any():
            fa, fb = a.flow[ok], b.flow[ok]
            accel.append(float(np.hypot(*(fb - fa).T).mean()))
            both = (np.hypot(*fa.T) > FLOW_ACTIVE) & (np.hypot(*fb.T) > FLOW_ACTIVE)
            opposite = (fa * fb).sum(axis=1) < 0
            reversal.append(float(opposite[both].sum() / max(1, int(ok.sum()))))
            rev_share.append(float(opposite[both].mean()) if both.any() else 0.0)
        else:
            rev_share.append(0.0)

    # Flow in space, per pair (computed once per pair): directions, neighbours moving against each other.
    fields = [p.field for p in valid]

    def fcol(name: str) -> FloatArray:
        return np.asarray([getattr(f, name) for f in fields], dtype=np.float64)

    opp_amount = fcol("opp_amount")

    # Flow of each block over the window: bursts, and motion that does not add up to one direction.
    flows = np.stack([p.flow for p in valid])  # (T, rows, cols, 2), zero where untrusted
    mags = np.hypot(flows[..., 0], flows[..., 1])
    mean_block = mags.mean(axis=0)
    busy = mean_block > 0.3
    block_burst = float((mags.std(axis=0)[busy] / (mean_block[busy] + _EPS)).mean()) if busy.any() else 0.0
    block_peak = float((mags.max(axis=0)[busy] / (mean_block[busy] + _EPS)).mean()) if busy.any() else 0.0
    n_t = len(valid)
    path = mags.sum(axis=0)
    net = np.hypot(*np.moveaxis(flows.sum(axis=0), -1, 0))
    t_incoherence = path - net

    flow_p90 = col("flow_p90")
    values = [
        e_mean,
        e_std,
        float(energy.max()),
        float(col("pix_std").mean()),
        float(col("p90").mean()),
        float(col("p99").mean()),
        float(col("p99").max()),
        float(moving.mean()),
        float(moving.std()),
        float(moving.max()),
        e_std / (e_mean + _EPS),
        jerk,
        grid_entropy,
        grid_active,
        grid_peak,
        grid_cv,
        centroid_speed,
        spread,
        float(col("nflow_mean").mean()),
        float(col("nflow_p90").mean()),
        float(col("flow_mean").mean()),
        float(flow_p90.mean()),
        float(flow_p90.max()),
        float(col("flow_active").mean()),
        float(col("flow_disp").mean()),
        float(np.mean(accel)) if accel else 0.0,
        float(np.mean(reversal)) if reversal else 0.0,
        float(np.mean(fcol("dir_entropy"))),
        float(np.mean(rev_share)) if rev_share else 0.0,
        block_burst,
        block_peak,
        float(np.mean(fcol("divergence"))),
        float(np.mean(fcol("curl"))),
        float(np.mean(fcol("concentration"))),
        float(np.mean(fcol("opposing"))),
        float(np.mean(opp_amount)),
        float(np.mean(rev_amount)) if rev_amount else 0.0,
        float(np.mean(fcol("incoherence"))),
        float(np.max(opp_amount)),
        float(t_incoherence.mean() / n_t),
        float(t_incoherence.sum() / (path.sum() + 1.0 * n_t)),
        float(t_incoherence.max() / n_t),
        *_residual_features(valid, trans),
    ]
    return WindowMotion(np.asarray(values, dtype=np.float64), cuts, camera_speed)


def frame_pairs(
    frames: npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]], stamps: Sequence[float] | None = None
) -> list[PairMotion]:
    """:func:`pair_motion` of every consecutive pair of small grayscale frames (``stamps``: their media
    times; without them the frames are taken to be 1/:data:`REQUIRED_FPS` apart)."""
    n = len(frames)
    if stamps is not None and len(stamps) != n:
        raise ValueError(f"{n} frames but {len(stamps)} stamps")
    step = 1.0 / REQUIRED_FPS
    return [
        pair_motion(frames[i - 1], frames[i], step if stamps is None else stamps[i] - stamps[i - 1])
        for i in range(1, n)
    ]


def window_features(
    frames: npt.NDArray[np.uint8], stamps: Sequence[float] | None = None
) -> FloatArray | None:
    """The :data:`FEATURE_NAMES` descriptors of a window of grayscale frames (T, height, width), T >= 3,
    or None when scene cuts leave too few pairs. The same values as the analyzer computes incrementally."""
    if frames.ndim != 3 or frames.shape[0] < 3:
        raise ValueError(f"expected at least 3 grayscale frames (T, height, width), got shape {frames.shape}")
    return window_motion(frame_pairs(frames, stamps)).features
