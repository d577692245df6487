"""Train the motion violence head (``livesafe/analyzers/data/motion_head.json``).

Data: ``../shared/data/video/fight_train/{fight,noFight}/*.mp4`` (fight-detection-surv-dataset, Akti et
al. 2019, MIT repo), read in place and never copied. Each clip is decoded with PyAV, sampled at
``REQUIRED_FPS`` as livesafe's ingest samples, and cut into windows of ``WINDOW_FRAMES`` frames every
``--stride`` frames; a clip's score is the mean probability of its windows.

Evaluation is by clip, never by window: a stratified held-out split and stratified 5-fold cross-validation
over all clips. The split is :func:`livesafe.eval.video.fight_split` (25 % held out, seed 0), the
same helper ``livesafe eval --dataset fight_clips`` reads, so the evaluation set is exactly the clips this
script does not train on. The shipped head is the one fitted on the training part of the split, so the
held-out figures describe exactly the shipped parameters and the held-out clips (listed in its metadata)
stay unseen for tests.

    .venv/bin/python scripts/train_motion.py [--data DIR] [--out FILE] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livesafe.analyzers.motion import (  # noqa: E402
    FEATURE_NAMES,
    REQUIRED_FPS,
    WINDOW_FRAMES,
    sample_clip,
    to_small_gray,
    window_features,
)
from livesafe.eval.video import SPLIT_SEED, SPLIT_TEST_SIZE, fight_split, read_fight_clips  # noqa: E402

FloatArray = npt.NDArray[np.float64]


def clip_windows(path: Path, fps: float, window: int, stride: int) -> FloatArray:
    """Feature vectors of every window of one clip (at least one: short clips use all their frames)."""
    frames = np.stack([to_small_gray(rgb) for _, rgb in sample_clip(path, fps)])
    if len(frames) < window:
        return window_features(frames)[None, :]
    starts = range(0, len(frames) - window + 1, stride)
    return np.stack([window_features(frames[s : s + window]) for s in starts])


def transform(x: FloatArray) -> FloatArray:
    return np.log1p(np.maximum(x, 0.0))


class Head:
    def __init__(self, c: float, seed: int) -> None:
        self.model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
        self.mean = np.zeros(0)
        self.scale = np.ones(0)

    def fit(self, feats: list[FloatArray], labels: npt.NDArray[np.int64]) -> Head:
        x = transform(np.concatenate(feats))
        y = np.concatenate([np.full(len(f), lab) for f, lab in zip(feats, labels, strict=True)])
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0) + 1e-9
        self.model.fit((x - self.mean) / self.scale, y)
        return self

    def clip_proba(self, feats: list[FloatArray]) -> FloatArray:
        out = [self.model.predict_proba((transform(f) - self.mean) / self.scale)[:, 1].mean() for f in feats]
        return np.asarray(out, dtype=np.float64)


def metrics(y: npt.NDArray[np.int64], p: FloatArray) -> dict[str, float]:
    pred = (p >= 0.5).astype(np.int64)
    return {
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "precision": round(float(precision_score(y, pred, zero_division=0)), 4),
        "recall": round(float(recall_score(y, pred, zero_division=0)), 4),
        "f1": round(float(f1_score(y, pred, zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "video" / "fight_train")
    ap.add_argument("--out", type=Path, default=ROOT / "livesafe" / "analyzers" / "data" / "motion_head.json")
    ap.add_argument(
        "--fps", type=float, default=REQUIRED_FPS, help="sampling rate (the head is shipped at 8)"
    )
    ap.add_argument("--stride", type=int, default=4, help="frames between training windows of one clip")
    ap.add_argument("--c", type=float, default=0.3, help="inverse L2 regularisation strength")
    ap.add_argument("--seed", type=int, default=SPLIT_SEED, help="seed of the split and the model")
    ap.add_argument("--test-size", type=float, default=SPLIT_TEST_SIZE)
    ap.add_argument("--dry-run", action="store_true", help="evaluate only; do not write --out")
    args = ap.parse_args(argv)

    clips, labels_list = read_fight_clips(args.data)
    if not clips:
        print(f"no clips under {args.data}", file=sys.stderr)
        return 2
    labels = np.asarray(labels_list, dtype=np.int64)

    t0 = time.perf_counter()
    feats = [clip_windows(p, args.fps, WINDOW_FRAMES, args.stride) for p in clips]
    n_windows = sum(len(f) for f in feats)
    print(f"{len(clips)} clips, {n_windows} windows, features in {time.perf_counter() - t0:.1f} s")

    # Feature cost of one full window, timed on real frames.
    frames = np.stack([to_small_gray(rgb) for _, rgb in sample_clip(clips[0], args.fps)[:WINDOW_FRAMES]])
    times = []
    for _ in range(30):
        t = time.perf_counter()
        window_features(frames)
        times.append(time.perf_counter() - t)
    cost_ms = round(1000 * statistics.median(times), 2)
    print(f"window features: median {cost_ms} ms for {frames.shape} on one thread")

    idx = np.arange(len(clips))
    train_idx, test_idx = fight_split(args.data, args.test_size, args.seed)
    tr, te = np.asarray(train_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)
    head = Head(args.c, args.seed).fit([feats[i] for i in tr], labels[tr])
    held_out = metrics(labels[te], head.clip_proba([feats[i] for i in te]))
    print(f"held-out ({len(te)} clips): {held_out}")

    folds: list[dict[str, float]] = []
    skf = StratifiedKFold(n_splits=5, shuffle=True, random_state=args.seed)
    oof = np.zeros(len(clips))
    for ftr, fte in skf.split(idx, labels):
        h = Head(args.c, args.seed).fit([feats[i] for i in ftr], labels[ftr])
        p = h.clip_proba([feats[i] for i in fte])
        oof[fte] = p
        folds.append(metrics(labels[fte], p))
    cv = {k: round(statistics.mean(f[k] for f in folds), 4) for k in folds[0]}
    cv_std = {k: round(statistics.stdev(f[k] for f in folds), 4) for k in folds[0]}
    print(f"5-fold CV mean: {cv}\n5-fold CV std:  {cv_std}")

    final = head
    coef = final.model.coef_[0]
    top = sorted(zip(FEATURE_NAMES, coef, strict=True), key=lambda kv: -abs(kv[1]))[:6]
    print("largest coefficients:", ", ".join(f"{n} {c:+.2f}" for n, c in top))
    metadata: dict[str, Any] = {
        "model": "logistic regression (L2, class_weight=balanced) on log1p features, standardised",
        "C": args.c,
        "data": "fight-detection-surv-dataset (Akti et al. 2019), fight_train/{fight,noFight}, MIT repo",
        "clips": {"fight": int(labels.sum()), "noFight": int((1 - labels).sum())},
        "windows": n_windows,
        "window_stride_frames": args.stride,
        "seed": args.seed,
        "clip_score": "mean window probability; threshold 0.5",
        "held_out": {"test_clips": len(te), "test_names": sorted(clips[i].name for i in te), **held_out},
        "cv5_mean": cv,
        "cv5_std": cv_std,
        "feature_ms_per_window": cost_ms,
        "feature_frame_shape": list(frames.shape),
        "trained_on": f"the {len(tr)} training clips of the held-out split",
    }
    head_json = {
        "feature_names": list(FEATURE_NAMES),
        "mean": [round(float(v), 6) for v in final.mean],
        "scale": [round(float(v), 6) for v in final.scale],
        "coef": [round(float(v), 6) for v in coef],
        "intercept": round(float(final.model.intercept_[0]), 6),
        "fps": args.fps,
        "window_frames": WINDOW_FRAMES,
        "metadata": metadata,
    }
    if not args.dry_run:
        args.out.write_text(json.dumps(head_json, indent=1) + "\n", "utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
