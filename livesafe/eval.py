"""``livesafe eval``: measure the text classifier and speech recognition on the shared data sets.

    python -m livesafe.eval [--data DIR] [--dataset NAME ...] [--limit N] [--json] [--policy FILE]

Reads ``../shared/data`` beside the checkout (or ``$LIVESAFE_SHARED_DATA``, or ``--data``); see its
``MANIFEST.md``. Text data sets are scored with :class:`~livesafe.analyzers.text.TextClassifier` (with the
policy's extra terms); an item counts as flagged for a category when its score is at or above that
category's ``floor`` in the policy (0.5 for a category the policy lacks). Per data set and category the
tool reports precision, recall, F1, accuracy and support (positives) at the floor, and how well the scores
are calibrated: the precision among items scoring >= 0.9 and >= 0.5 (``p@0.9``, ``p@0.5``, with how many
items that is) and the expected calibration error (``ece``: over 10 equal-width score bins, the
item-weighted mean gap between the mean score and the rate of positives). Speech clips are transcribed with
the packaged recognizer and scored by word error rate (WER) after normalisation.

Data sets (:data:`DATASETS`):

* ``davidson``: the held-out 20 % of Davidson et al. 2017 that ``scripts/train_text_heads.py`` does not
  train on (same tweet cleaning, same ``train_test_split(test_size=0.2, random_state=0, stratify=class)``);
  class 0 (hate) is ``hate``;
* ``ethos_binary``: the held-out 30 % of ETHOS binary (``train_test_split(test_size=0.3, random_state=0,
  stratify=label)``); the training script trains on part of the other 70 % and calibrates on the rest,
  never on these rows; ``isHate >= 0.5`` is ``hate``;
* ``ethos_violence``: the held-out half of the 433 hateful comments of ETHOS multi-label (a fixed split,
  ``train_test_split(test_size=0.5, random_state=0, stratify=label)``, see :func:`ethos_violence_split`);
  ``violence >= 0.5`` (inciting violence, 142 comments in all) is ``threat``, the rest (hateful without a
  call to violence) are negatives. The other half (:func:`ethos_violence_dev`) is the development half:
  the threat rules in ``text_patterns.yaml`` may be designed by reading it, never by reading the held-out
  half. The threat head never trains on ETHOS; every item is hateful, so this measures whether ``threat``
  separates calls to violence from other hate, not its false-alarm rate on ordinary talk;
* ``cssrs``: the held-out 20 % of C-SSRS Reddit users (the script's user split); a user is positive for
  ``self_harm`` when labelled Ideation, Behavior or Attempt (Supportive and Indicator are negatives, as in
  the script's evaluation), and scores the maximum of their posts' scores;
* ``functional``: the project's own functional tests of live-stream talk
  (``livesafe/analyzers/data/text_functional.yaml``, shipped with the package, in the spirit of HateCheck):
  short utterances labelled ``hate`` and ``threat``, each tagged with the functionality it tests (explicit
  derogation, dehumanisation, implicit hate, threats against a group, slurs, and hard negatives: gaming
  trash talk, counter-speech, quoting, victims' reports, neutral and positive identity mentions, reclaimed
  terms, untargeted swearing, negated hate). Besides the per-category figures, the accuracy per tag (an item
  is right when every labelled category is flagged as labelled). Evaluation only: nothing trains or
  calibrates on it;
* ``jigsaw_sample``: the labelled rows of detoxify's Jigsaw ``test.csv``: threat -> ``threat``, insult ->
  ``harassment``, obscene -> ``profanity``, identity_hate -> ``hate``;
* ``speech_refs``: ``audio/refs.tsv`` rows whose reference quality is good or medium, decoded with PyAV to
  16 kHz mono (a row with channel 0 or 1 takes that channel of a stereo file). WER normalisation
  lower-cases and strips punctuation only: numbers are not spelled out, so a reference "in eighteen
  thirteen" against "In 1813." counts as errors.
* ``fight_clips``: the held-out 25 % of ``video/fight_train`` (two-second CCTV clips, fight / noFight) that
  ``scripts/train_motion.py`` does not train on (both read :func:`livesafe.analyzers.motion.fight_split`);
  a fight clip is ``violence``. Each clip is sampled at 8 fps and fed to the motion analyzer as a stream;
  it scores the maximum of the signals emitted (0 when the clip is too short for a window), so "flagged"
  means the risk engine would have taken violence evidence from it at the policy's floor.

``--limit N`` keeps, per data set, a deterministic sample of N items (seed 0, in data order), for quick runs.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import os
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from livesafe.core.policy import Policy, PolicyError, load_policy

if TYPE_CHECKING:
    from livesafe.analyzers.base import SpeechRecognizer
    from livesafe.analyzers.text import TextClassifier

__all__ = [
    "DATASETS",
    "ClipSet",
    "DataNotFoundError",
    "Dataset",
    "SpeechClip",
    "TextSet",
    "default_data_dir",
    "ethos_violence_dev",
    "ethos_violence_split",
    "eval_clips",
    "eval_speech",
    "eval_text",
    "expected_calibration_error",
    "format_table",
    "main",
    "normalize_words",
    "run_eval",
    "wer",
]

ROOT = Path(__file__).resolve().parent.parent
#: Seed and held-out share of ``scripts/train_text_heads.py`` (its ``SEED`` and ``test_size``).
SPLIT_SEED = 0
TEST_SIZE = 0.2
#: Held-out share of ETHOS binary (the rest trains and calibrates the hate head).
ETHOS_TEST_SIZE = 0.3
#: Held-out share of ETHOS multi-label (``ethos_violence``); the other half is for designing rules.
ETHOS_VIOLENCE_TEST_SIZE = 0.5
#: C-SSRS user labels that count as at risk (the script's ``SELF_HARM_LABELS``).
SELF_HARM_LABELS = frozenset({"Ideation", "Behavior", "Attempt"})
#: Floor used for a category the policy does not list.
DEFAULT_FLOOR = 0.5
SAMPLE_RATE = 16000


class DataNotFoundError(FileNotFoundError):
    """The shared data directory (or a file of it) is missing."""


# --- data sets -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextSet:
    """Labelled text items. Each item is one or more texts; an item scores the maximum of its texts."""

    items: list[list[str]]
    #: Per category, one 0/1 label per item.
    labels: dict[str, list[int]]
    #: Optional functionality tag per item (``eval_text`` then reports the accuracy per tag).
    tags: list[str] | None = None

    def subset(self, keep: Sequence[int]) -> TextSet:
        return TextSet(
            [self.items[i] for i in keep],
            {c: [v[i] for i in keep] for c, v in self.labels.items()},
            None if self.tags is None else [self.tags[i] for i in keep],
        )

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class SpeechClip:
    """One reference transcript: ``path`` under ``audio/``, and ``channel`` (None: all, mixed to mono)."""

    path: str
    channel: int | None
    reference: str
    quality: str


@dataclass(frozen=True, slots=True)
class ClipSet:
    """Labelled video clips (absolute paths); per category, one 0/1 label per clip."""

    clips: list[Path]
    labels: dict[str, list[int]]

    def subset(self, keep: Sequence[int]) -> ClipSet:
        labels = {c: [v[i] for i in keep] for c, v in self.labels.items()}
        return ClipSet([self.clips[i] for i in keep], labels)

    def __len__(self) -> int:
        return len(self.clips)


Loaded = TextSet | list[SpeechClip] | ClipSet


@dataclass(frozen=True, slots=True)
class Dataset:
    """A registered data set: its ``loader`` reads it from the shared data directory."""

    name: str
    kind: Literal["text", "speech", "video"]
    loader: Callable[[Path], Loaded]


def _read_csv(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    if not path.is_file():
        raise DataNotFoundError(f"data file not found: {path}")
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def _single(texts: Sequence[str], labels: dict[str, list[int]]) -> TextSet:
    return TextSet([[t] for t in texts], labels)


# scripts/train_text_heads.py reads the data through the helpers below, so training and evaluation
# split it the same way (tests check the held-out sets agree).
_MENTION = re.compile(r"(?:\brt\b\s*)?@\w+:?", re.IGNORECASE)
_URL = re.compile(r"https?://\S+")
_ENTITY = re.compile(r"&#\d+;?")


def clean_tweet(text: str) -> str:
    """Davidson tweets as speech would read: no retweet markers, mentions, links or emoji codes."""
    text = _ENTITY.sub(" ", _URL.sub(" ", _MENTION.sub(" ", html.unescape(text))))
    return re.sub(r"\s+", " ", text.replace("!!!", "!")).strip(' "!:')


def read_davidson(data_dir: Path) -> tuple[list[str], list[int]]:
    """Every cleaned Davidson tweet (3 characters or more) and its class (0 hate, 1 offensive, 2 neither)."""
    rows = _read_csv(data_dir / "text/davidson/labeled_data.csv")
    texts = [clean_tweet(r["tweet"]) for r in rows]
    keep = [i for i, t in enumerate(texts) if len(t) >= 3]
    return [texts[i] for i in keep], [int(rows[i]["class"]) for i in keep]


def read_cssrs(data_dir: Path) -> tuple[list[list[str]], list[str]]:
    """Posts per C-SSRS user and the user's label."""
    rows = _read_csv(data_dir / "text/cssrs_reddit/500_Reddit_users_posts_labels.csv")
    users: list[list[str]] = []
    for r in rows:  # the Post column is a Python list literal, sometimes cut short
        body = r["Post"].strip().removeprefix("[").removesuffix("]")
        posts = [p.strip(" '\"") for p in re.split(r"""['"]\s*,\s*['"]""", body)]
        users.append([p for p in posts if len(p) >= 3])
    return users, [r["Label"] for r in rows]


def davidson_split(data_dir: Path) -> tuple[list[str], list[int]]:
    """The held-out tweets and their classes (the script's 20 % stratified split, seed 0)."""
    from sklearn.model_selection import train_test_split

    texts, classes = read_davidson(data_dir)
    _, d_test, _, c_test = train_test_split(
        texts, classes, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=classes
    )
    return list(d_test), [int(c) for c in c_test]


def cssrs_split(data_dir: Path) -> tuple[list[list[str]], list[str]]:
    """Posts and labels of the held-out users (the script's 20 % stratified user split, seed 0)."""
    from sklearn.model_selection import train_test_split

    users, labels = read_cssrs(data_dir)
    _, u_test = train_test_split(
        list(range(len(users))), test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=labels
    )
    return [users[u] for u in u_test], [labels[u] for u in u_test]


def read_ethos(data_dir: Path) -> tuple[list[str], list[int]]:
    """Every ETHOS binary comment and its label (1: ``isHate >= 0.5``)."""
    rows = _read_csv(data_dir / "text/ethos/Ethos_Dataset_Binary.csv", delimiter=";")
    return [r["comment"] for r in rows], [int(float(r["isHate"]) >= 0.5) for r in rows]


def ethos_split(data_dir: Path) -> tuple[list[str], list[int]]:
    """The held-out ETHOS comments and labels (30 % stratified, seed 0): the script never trains on them."""
    from sklearn.model_selection import train_test_split

    texts, labels = read_ethos(data_dir)
    _, e_test, _, y_test = train_test_split(
        texts, labels, test_size=ETHOS_TEST_SIZE, random_state=SPLIT_SEED, stratify=labels
    )
    return list(e_test), [int(y) for y in y_test]


def read_ethos_violence(data_dir: Path) -> tuple[list[str], list[int]]:
    """Every ETHOS multi-label (hateful) comment and its label (1: ``violence >= 0.5``)."""
    rows = _read_csv(data_dir / "text/ethos/Ethos_Dataset_Multi_Label.csv", delimiter=";")
    return [r["comment"] for r in rows], [int(float(r["violence"]) >= 0.5) for r in rows]


def _ethos_violence_halves(
    data_dir: Path,
) -> tuple[tuple[list[str], list[int]], tuple[list[str], list[int]]]:
    from sklearn.model_selection import train_test_split

    texts, labels = read_ethos_violence(data_dir)
    t_dev, t_test, y_dev, y_test = train_test_split(
        texts, labels, test_size=ETHOS_VIOLENCE_TEST_SIZE, random_state=SPLIT_SEED, stratify=labels
    )
    return (list(t_dev), [int(y) for y in y_dev]), (list(t_test), [int(y) for y in y_test])


def ethos_violence_split(data_dir: Path) -> tuple[list[str], list[int]]:
    """The held-out half of ETHOS multi-label (50 % stratified on ``violence >= 0.5``, seed 0): what
    ``ethos_violence`` measures. Rules are never designed by reading it."""
    return _ethos_violence_halves(data_dir)[1]


def ethos_violence_dev(data_dir: Path) -> tuple[list[str], list[int]]:
    """The development half of ETHOS multi-label (the complement of :func:`ethos_violence_split`): the
    comments that threat rules may be designed from."""
    return _ethos_violence_halves(data_dir)[0]


def load_davidson(data_dir: Path) -> TextSet:
    texts, classes = davidson_split(data_dir)
    return _single(texts, {"hate": [int(c == 0) for c in classes]})


def load_ethos_binary(data_dir: Path) -> TextSet:
    texts, labels = ethos_split(data_dir)
    return _single(texts, {"hate": labels})


def load_ethos_violence(data_dir: Path) -> TextSet:
    texts, labels = ethos_violence_split(data_dir)
    return _single(texts, {"threat": labels})


def load_cssrs(data_dir: Path) -> TextSet:
    users, labels = cssrs_split(data_dir)
    return TextSet(users, {"self_harm": [int(label in SELF_HARM_LABELS) for label in labels]})


#: Jigsaw label -> livesafe category.
JIGSAW_LABELS = (
    ("threat", "threat"),
    ("insult", "harassment"),
    ("obscene", "profanity"),
    ("identity_hate", "hate"),
)


def load_jigsaw_sample(data_dir: Path) -> TextSet:
    rows = _read_csv(data_dir / "text/jigsaw_detoxify_sample/test.csv")
    rows = [r for r in rows if r.get("toxic", "-1") not in ("-1", "")]  # -1: unlabelled test rows
    return _single(
        [r["comment_text"] for r in rows],
        {cat: [int(r[label] == "1") for r in rows] for label, cat in JIGSAW_LABELS},
    )


FUNCTIONAL_PATH = Path(__file__).resolve().parent / "analyzers" / "data" / "text_functional.yaml"


def load_functional(data_dir: Path, path: Path = FUNCTIONAL_PATH) -> TextSet:
    """The functional tests (shipped with the package; ``data_dir`` is not read)."""
    import yaml

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    texts: list[str] = []
    tags: list[str] = []
    rows: list[dict[str, int]] = []
    for tag, block in doc["functionalities"].items():
        defaults = {str(k): int(v) for k, v in block["labels"].items()}
        for case in block["cases"]:
            entry = {"text": case} if isinstance(case, str) else dict(case)
            texts.append(str(entry.pop("text")))
            rows.append({**defaults, **{str(k): int(v) for k, v in entry.items()}})
            tags.append(str(tag))
    categories = sorted({c for r in rows for c in r})
    return TextSet([[t] for t in texts], {c: [r.get(c, 0) for r in rows] for c in categories}, tags)


def load_speech_refs(data_dir: Path) -> list[SpeechClip]:
    rows = _read_csv(data_dir / "audio/refs.tsv", delimiter="\t")
    clips = []
    for r in rows:
        quality = r["reference_quality"].strip()
        if not quality.startswith(("good", "medium")):
            continue
        channel = r["channel"].strip()
        clips.append(
            SpeechClip(r["path"], int(channel) if channel.isdigit() else None, r["reference"], quality)
        )
    return clips


def load_fight_clips(data_dir: Path) -> ClipSet:
    """The held-out fight_train clips (the motion head's training script never sees them)."""
    from livesafe.analyzers.motion import fight_split, read_fight_clips

    folder = data_dir / "video" / "fight_train"
    if not folder.is_dir():
        raise DataNotFoundError(f"data folder not found: {folder}")
    clips, labels = read_fight_clips(folder)
    _, test = fight_split(folder)
    return ClipSet([clips[i] for i in test], {"violence": [labels[i] for i in test]})


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("davidson", "text", load_davidson),
        Dataset("ethos_binary", "text", load_ethos_binary),
        Dataset("ethos_violence", "text", load_ethos_violence),
        Dataset("cssrs", "text", load_cssrs),
        Dataset("jigsaw_sample", "text", load_jigsaw_sample),
        Dataset("functional", "text", load_functional),
        Dataset("speech_refs", "speech", load_speech_refs),
        Dataset("fight_clips", "video", load_fight_clips),
    )
}


# --- metrics ---------------------------------------------------------------------------------------


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


# --- running ---------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """``$LIVESAFE_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("LIVESAFE_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _sample(n: int, limit: int | None) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(SPLIT_SEED).sample(range(n), max(limit, 0)))


def decode_clip(path: Path, channel: int | None) -> npt.NDArray[np.float32]:
    """A file's first audio stream at 16 kHz float32: ``channel`` of it, or all channels mixed to mono."""
    import av

    layout = "mono" if channel is None else "stereo"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
    parts: list[npt.NDArray[np.float32]] = []
    with av.open(str(path)) as container:
        frames = [*container.decode(audio=0), None]
        for frame in frames:
            for out in resampler.resample(frame):
                planes = np.asarray(out.to_ndarray(), dtype=np.float32)  # (channels, samples)
                parts.append(planes[0 if channel is None else channel])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def eval_text(data: TextSet, policy: Policy, classifier: TextClassifier) -> dict[str, Any]:
    flat = [text for item in data.items for text in item]
    scores = classifier.scores_batch(flat) if flat else []
    categories: dict[str, Any] = {}
    correct: dict[str, list[bool]] = {}
    for cat, labels in data.labels.items():
        cat_policy = policy.category(cat)
        floor = cat_policy.floor if cat_policy is not None else DEFAULT_FLOOR
        item_scores, pos = [], 0
        for item in data.items:
            item_scores.append(max((scores[pos + k].get(cat, 0.0) for k in range(len(item))), default=0.0))
            pos += len(item)
        flagged = [s >= floor for s in item_scores]
        metrics = binary_metrics(labels, flagged)
        categories[cat] = {"floor": floor, **metrics, **calibration_metrics(labels, item_scores)}
        correct[cat] = [bool(y) == f for y, f in zip(labels, flagged, strict=True)]
    out: dict[str, Any] = {"kind": "text", "n": len(data), "texts": len(flat), "categories": categories}
    if data.tags is not None:
        out["tags"] = tag_accuracy(data.tags, correct)
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
    for name in names:
        loaded = DATASETS[name].loader(data_dir)
        if isinstance(loaded, TextSet):
            if classifier is None:
                from livesafe.analyzers.text import TextClassifier, TextOptions

                classifier = TextClassifier(TextOptions(extra_terms=dict(policy.analyzers.extra_terms)))
            results[name] = eval_text(loaded.subset(_sample(len(loaded), limit)), policy, classifier)
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


def format_table(result: dict[str, Any]) -> str:
    """The figures of :func:`run_eval` as plain-text tables."""
    lines = [f"policy {result['policy']}, data {result['data_dir']}, limit {result['limit']}"]
    text = {k: v for k, v in result["datasets"].items() if v["kind"] in ("text", "video")}
    if text:
        lines += [
            "",
            f"{'dataset':<15} {'category':<11} {'floor':>5} {'n':>6} {'support':>7} "
            f"{'precision':>9} {'recall':>6} {'f1':>6} {'accuracy':>8} "
            f"{'p@0.9 (n)':>12} {'p@0.5 (n)':>12} {'ece':>6}",
        ]

        def at(m: dict[str, Any], t: float) -> str:
            p = m.get(f"precision_at_{t}")
            return f"{'-' if p is None else f'{p:.3f}':>5} ({m.get(f'n_at_{t}', 0)})"

        for name, ds in text.items():
            for cat, m in ds["categories"].items():
                lines.append(
                    f"{name:<15} {cat:<11} {m['floor']:>5.2f} {m['n']:>6} {m['support']:>7} "
                    f"{m['precision']:>9.3f} {m['recall']:>6.3f} {m['f1']:>6.3f} {m['accuracy']:>8.3f} "
                    f"{at(m, 0.9):>12} {at(m, 0.5):>12} {m['ece']:>6.3f}"
                )
        for name, ds in text.items():
            if not ds.get("tags"):
                continue
            cats = list(ds["categories"])
            lines += ["", f"{name}: accuracy per functionality (right in every category; per category)"]
            lines.append(f"  {'tag':<26} {'n':>4} {'accuracy':>8} " + " ".join(f"{c:>8}" for c in cats))
            for tag, t in ds["tags"].items():
                lines.append(
                    f"  {tag:<26} {t['n']:>4} {t['accuracy']:>8.3f} "
                    + " ".join(f"{t[c]:>8.3f}" for c in cats)
                )
    for name, ds in result["datasets"].items():
        if ds["kind"] != "speech":
            continue
        lines += [
            "",
            f"{name}: {ds.get('model', '')} WER per clip (lower-cased, punctuation stripped; numbers not "
            "spelled out)",
        ]
        for clip in ds["clips"]:
            where = clip["path"] + (f" [ch {clip['channel']}]" if clip["channel"] is not None else "")
            lines.append(f"  {clip['wer']:>6.3f}  {where:<42} {clip['hypothesis']}")
        lines.append(
            f"  {ds['wer']:>6.3f}  overall ({ds['n']} clips, {sum(c['words'] for c in ds['clips'])} words)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="livesafe eval",
        description="Measure the text classifier and speech recognition on the shared data sets.",
    )
    ap.add_argument("--data", type=Path, default=None, help="shared data directory (default: %(default)s)")
    ap.add_argument("--dataset", action="append", choices=list(DATASETS), help="data set to run (repeatable)")
    ap.add_argument("--limit", type=int, default=None, help="at most N items per data set (a fixed sample)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--policy", type=Path, default=None, help="policy file (default: the bundled one)")
    ap.add_argument("--speech-model", default="tiny.en", help="Whisper tiny.en (default), base, or a dir")
    ap.add_argument(
        "--speech-language", default=None, help="language code or auto (default: en, or auto for base)"
    )
    ap.set_defaults(data=default_data_dir())
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    if args.speech_language is not None:
        from livesafe.core.languages import check_language

        problem = check_language(args.speech_model, args.speech_language)
        if problem:
            ap.error(problem)
    data_dir: Path = args.data
    if not data_dir.is_dir():
        print(
            f"livesafe eval: shared data directory not found: {data_dir} "
            "(pass --data DIR or set LIVESAFE_SHARED_DATA)",
            file=sys.stderr,
        )
        return 2
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(f"livesafe eval: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_eval(
            args.dataset, data_dir, policy, args.limit, args.speech_model, args.speech_language
        )
    except DataNotFoundError as exc:
        print(f"livesafe eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
