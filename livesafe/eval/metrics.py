"""The figures ``livesafe eval`` reports: precision, recall, F1 and accuracy at a floor, calibration
(precision at score thresholds, expected calibration error), accuracy per functionality tag, and the word
error rate of transcripts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATION_THRESHOLDS",
    "ECE_BINS",
    "binary_metrics",
    "calibration_metrics",
    "edit_distance",
    "expected_calibration_error",
    "normalize_words",
    "part_accuracy",
    "tag_accuracy",
    "wer",
]


def binary_metrics(labels: Sequence[int], flagged: Sequence[bool]) -> dict[str, float | int]:
    """Precision, recall, F1 and accuracy of ``flagged`` against 0/1 ``labels`` (0 where undefined)."""
    tp = sum(1 for y, f in zip(labels, flagged, strict=True) if y and f)
    fp = sum(1 for y, f in zip(labels, flagged, strict=True) if not y and f)
    fn = sum(1 for y, f in zip(labels, flagged, strict=True) if y and not f)
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "accuracy": round((n - fp - fn) / n, 4) if n else 0.0,
        "support": sum(1 for y in labels if y),
        "n": n,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def part_accuracy(labels: Sequence[int], flagged: Sequence[bool]) -> dict[str, float | int]:
    """Accuracy on the positive part (items labelled 1: the recall) and on the negative part (items labelled
    0: the share not flagged), with the size of each part (accuracy 0 for an empty part)."""
    pos = [f for y, f in zip(labels, flagged, strict=True) if y]
    neg = [f for y, f in zip(labels, flagged, strict=True) if not y]
    return {
        "accuracy_positive": round(sum(pos) / len(pos), 4) if pos else 0.0,
        "n_positive": len(pos),
        "accuracy_negative": round(sum(not f for f in neg) / len(neg), 4) if neg else 0.0,
        "n_negative": len(neg),
    }


#: Score thresholds whose precision ``eval_text`` reports (a calibrated 0.9 should mean ~90 % precision).
CALIBRATION_THRESHOLDS = (0.9, 0.5)
ECE_BINS = 10


def expected_calibration_error(labels: Sequence[int], scores: Sequence[float], bins: int = ECE_BINS) -> float:
    """Item-weighted mean of ``|mean score - rate of positives|`` over ``bins`` equal-width score bins."""
    if not labels:
        return 0.0
    y = np.asarray(labels, dtype=np.float64)
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    which = np.minimum((s * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += float(mask.sum()) * abs(float(s[mask].mean()) - float(y[mask].mean()))
    return total / len(y)


def calibration_metrics(labels: Sequence[int], scores: Sequence[float]) -> dict[str, float | int | None]:
    """Precision among items scoring at or above each of ``CALIBRATION_THRESHOLDS`` (None where no item
    does), how many items that is, and the expected calibration error."""
    out: dict[str, float | int | None] = {}
    for t in CALIBRATION_THRESHOLDS:
        hits = [y for y, s in zip(labels, scores, strict=True) if s >= t]
        out[f"precision_at_{t}"] = round(sum(hits) / len(hits), 4) if hits else None
        out[f"n_at_{t}"] = len(hits)
    out["ece"] = round(expected_calibration_error(labels, scores), 4)
    return out


def tag_accuracy(tags: Sequence[str], correct: dict[str, list[bool]]) -> dict[str, dict[str, Any]]:
    """Per functionality tag (in first-seen order): its items, the share of them right in every category,
    and the share right per category."""
    out: dict[str, dict[str, Any]] = {}
    for tag in dict.fromkeys(tags):
        idx = [i for i, t in enumerate(tags) if t == tag]
        every = [all(ok[i] for ok in correct.values()) for i in idx]
        out[tag] = {
            "n": len(idx),
            "accuracy": round(sum(every) / len(idx), 4),
            **{cat: round(sum(ok[i] for i in idx) / len(idx), 4) for cat, ok in correct.items()},
        }
    return out


_APOSTROPHE = re.compile(r"['\u2019]")
_NON_WORD = re.compile(r"[^\w\s]|_")


def normalize_words(text: str) -> list[str]:
    """Words for WER: lower-cased, apostrophes dropped, other punctuation as spaces. Numbers stay as is."""
    return _NON_WORD.sub(" ", _APOSTROPHE.sub("", text.lower())).split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Word-level Levenshtein distance (substitutions, insertions and deletions)."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` after :func:`normalize_words` (may exceed 1 with insertions)."""
    ref = normalize_words(reference)
    if not ref:
        return 0.0 if not normalize_words(hypothesis) else 1.0
    return edit_distance(ref, normalize_words(hypothesis)) / len(ref)
