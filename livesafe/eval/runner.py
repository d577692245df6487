"""Running ``livesafe eval``: score the registered data sets and collect the figures.

Text data sets are scored with :class:`~livesafe.analyzers.text.TextClassifier` (with the policy's extra
terms); an item counts as flagged for a category when its score is at or above that category's ``floor``
in the policy (0.5 for a category the policy lacks). Per data set and category the figures are precision,
recall, F1, accuracy and support (positives) at the floor, and how well the scores are calibrated: the
precision among items scoring >= 0.9 and >= 0.5 (``p@0.9``, ``p@0.5``, with how many items that is) and the
expected calibration error (``ece``: over 10 equal-width score bins, the item-weighted mean gap between the
mean score and the rate of positives); see :mod:`livesafe.eval.metrics`. Speech clips are transcribed with
the packaged recognizer and scored by word error rate (WER) after normalisation. Fight clips are fed to the
motion analyzer as streams. Spoken sentences (``multilingual_speech``) are synthesised, translated and
scored as :mod:`livesafe.eval.spoken` says.

A text data set may label something that is not a classifier category (:attr:`TextSet.any_of`,
``heldout_suite``'s ``hateful``): an item is flagged for it when any of its categories is flagged at that
category's floor; it is reported with precision, recall, F1, accuracy, and the accuracy on the positive and
on the negative part (``accuracy_positive``, ``accuracy_negative``), without calibration figures.

``limit`` keeps, per data set, a deterministic sample of N items (seed 0, in data order), for quick runs.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livesafe.core.policy import Policy
from livesafe.eval.audio import decode_clip
from livesafe.eval.datasets import SPLIT_SEED, DataNotFoundError, SpeechClip, TextSet
from livesafe.eval.metrics import (
    binary_metrics,
    calibration_metrics,
    edit_distance,
    normalize_words,
    part_accuracy,
    tag_accuracy,
)
from livesafe.eval.registry import DATASETS
from livesafe.eval.spoken import SpokenSet, eval_spoken
from livesafe.eval.video import ClipSet

if TYPE_CHECKING:
    from livesafe.analyzers.base import SpeechRecognizer
    from livesafe.analyzers.text import TextClassifier

__all__ = [
    "DEFAULT_FLOOR",
    "SAMPLE_RATE",
    "decode_clip",
    "default_data_dir",
    "eval_clips",
    "eval_speech",
    "eval_text",
    "run_eval",
]


ROOT = Path(__file__).resolve().parents[2]
#: Floor used for a category the policy does not list.
DEFAULT_FLOOR = 0.5
SAMPLE_RATE = 16000


def default_data_dir() -> Path:
    """``$LIVESAFE_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("LIVESAFE_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _sample(n: int, limit: int | None) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(SPLIT_SEED).sample(range(n), max(limit, 0)))


def _floor(policy: Policy, category: str) -> float:
    cat_policy = policy.category(category)
    return cat_policy.floor if cat_policy is not None else DEFAULT_FLOOR


def eval_text(data: TextSet, policy: Policy, classifier: TextClassifier) -> dict[str, Any]:
    """Figures per category of ``data.labels``; per ``data.any_of`` label (flagged when any of its
    categories is flagged at its floor) binary figures and the accuracy on its positive and negative parts
    (no calibration: it has no score of its own); and with tags, the accuracy per tag."""
    flat = [text for item in data.items for text in item]
    scores = classifier.scores_batch(flat) if flat else []

    def item_scores(cat: str) -> list[float]:
        out, pos = [], 0
        for item in data.items:
            out.append(max((scores[pos + k].get(cat, 0.0) for k in range(len(item))), default=0.0))
            pos += len(item)
        return out

    any_of = data.any_of or {}
    categories: dict[str, Any] = {}
    derived: dict[str, Any] = {}
    correct: dict[str, list[bool]] = {}
    for cat, labels in data.labels.items():
        if cat in any_of:
            parts = any_of[cat]
            floors = {c: _floor(policy, c) for c in parts}
            part_flags = {c: [s >= floors[c] for s in item_scores(c)] for c in parts}
            flagged = [any(fs) for fs in zip(*part_flags.values(), strict=True)]
            derived[cat] = {
                "of": list(parts),
                "floors": floors,
                **binary_metrics(labels, flagged),
                **part_accuracy(labels, flagged),
                "flagged_by": {c: sum(fs) for c, fs in part_flags.items()},
            }
        else:
            floor = _floor(policy, cat)
            cat_scores = item_scores(cat)
            flagged = [s >= floor for s in cat_scores]
            metrics = binary_metrics(labels, flagged)
            categories[cat] = {"floor": floor, **metrics, **calibration_metrics(labels, cat_scores)}
        correct[cat] = [bool(y) == f for y, f in zip(labels, flagged, strict=True)]
    out: dict[str, Any] = {"kind": "text", "n": len(data), "texts": len(flat), "categories": categories}
    if derived:
        out["any_of"] = derived
    if data.tags is not None:
        out["tags"] = tag_accuracy(data.tags, correct)
    return out


def eval_speech(clips: Sequence[SpeechClip], data_dir: Path, recognizer: SpeechRecognizer) -> dict[str, Any]:
    from livesafe.core.events import AudioChunk

    out, errors, words = [], 0, 0
    for k, clip in enumerate(clips):
        path = data_dir / "audio" / clip.path
        if not path.is_file():
            raise DataNotFoundError(f"audio clip not found: {path}")
        samples = decode_clip(path, clip.channel)
        # One stream per clip: with language "auto" each clip's language is detected on its own.
        transcripts = recognizer.transcribe(AudioChunk(f"eval-{k}", 0.0, samples, SAMPLE_RATE))
        hypothesis = " ".join(t.text.strip() for t in transcripts)
        ref = normalize_words(clip.reference)
        distance = edit_distance(ref, normalize_words(hypothesis))
        errors, words = errors + distance, words + len(ref)
        out.append(
            {
                "path": clip.path,
                "channel": clip.channel,
                "reference": clip.reference,
                "hypothesis": hypothesis,
                "language": transcripts[0].language if transcripts else None,
                "words": len(ref),
                "errors": distance,
                "wer": round(distance / len(ref), 4) if ref else 0.0,
            }
        )
    return {
        "kind": "speech",
        "model": recognizer.name,
        "n": len(out),
        "clips": out,
        "wer": round(errors / words, 4) if words else 0.0,
    }


def eval_clips(data: ClipSet, policy: Policy) -> dict[str, Any]:
    """Each clip as a fresh stream of the motion analyzer (8 fps samples), scoring its highest signal."""
    from livesafe.analyzers.motion import MotionViolenceAnalyzer, sample_clip
    from livesafe.core.events import VideoSample

    analyzer = MotionViolenceAnalyzer()
    scores: list[float] = []
    for k, path in enumerate(data.clips):
        stream_id = f"eval-{k}"
        signals = []
        for index, (ts, rgb) in enumerate(sample_clip(path, analyzer.required_fps)):
            signals += analyzer.analyze(VideoSample(stream_id, ts, rgb, index))
        analyzer.forget(stream_id)
        scores.append(max((s.score for s in signals if s.category == "violence"), default=0.0))
    categories: dict[str, Any] = {}
    for cat, labels in data.labels.items():
        cat_policy = policy.category(cat)
        floor = cat_policy.floor if cat_policy is not None else DEFAULT_FLOOR
        metrics = binary_metrics(labels, [s >= floor for s in scores])
        categories[cat] = {"floor": floor, **metrics, **calibration_metrics(labels, scores)}
    return {"kind": "video", "n": len(data), "analyzer": analyzer.name, "categories": categories}


def run_eval(
    datasets: list[str] | None,
    data_dir: Path,
    policy: Policy,
    limit: int | None,
    speech_model: str = "tiny.en",
    speech_language: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``datasets`` (all when None) from ``data_dir``; a JSON-ready dict of the figures.

    Speech runs Whisper ``speech_model`` (``tiny.en`` or ``base``, see ``livesafe.analyzers.whisper_models``)
    in ``speech_language`` (default: ``en`` for an English-only model, ``auto`` for a multilingual one).
    ``multilingual_speech`` runs ``base`` unless ``speech_model`` is multilingual, each clip in its own
    language, or detected with ``speech_language`` ``auto``.

    Raises :class:`DataNotFoundError` when ``data_dir`` or a file of a data set is missing, and KeyError
    for an unknown data set name.
    """
    if not data_dir.is_dir():
        raise DataNotFoundError(f"shared data directory not found: {data_dir}")
    names = list(DATASETS) if datasets is None else list(dict.fromkeys(datasets))
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise KeyError(f"unknown data sets {unknown}; known: {list(DATASETS)}")
    classifier: TextClassifier | None = None
    recognizer: SpeechRecognizer | None = None
    results: dict[str, Any] = {}
    def text_classifier() -> TextClassifier:
        nonlocal classifier
        if classifier is None:
            from livesafe.analyzers.text import TextClassifier, TextOptions

            classifier = TextClassifier(TextOptions(extra_terms=dict(policy.analyzers.extra_terms)))
        return classifier

    for name in names:
        loaded = DATASETS[name].loader(data_dir)
        if isinstance(loaded, TextSet):
            results[name] = eval_text(loaded.subset(_sample(len(loaded), limit)), policy, text_classifier())
        elif isinstance(loaded, SpokenSet):
            results[name] = eval_spoken(
                loaded.subset(_sample(len(loaded), limit)), policy, text_classifier(), speech_model,
                speech_language,
            )
        elif isinstance(loaded, ClipSet):
            results[name] = eval_clips(loaded.subset(_sample(len(loaded), limit)), policy)
        else:
            if recognizer is None:
                from livesafe.analyzers.speech import SpeechOptions, load_recognizer
                from livesafe.core.languages import AUTO, is_english_only

                language = speech_language or ("en" if is_english_only(speech_model) else AUTO)
                recognizer = load_recognizer(SpeechOptions(model=speech_model, language=language))
            clips = [loaded[i] for i in _sample(len(loaded), limit)]
            results[name] = eval_speech(clips, data_dir, recognizer)
    return {
        "data_dir": str(data_dir),
        "policy": policy.name,
        "policy_hash": policy.hash,
        "limit": limit,
        "datasets": results,
    }
