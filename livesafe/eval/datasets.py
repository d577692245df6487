"""Readers of the labelled text and speech data sets that ``livesafe eval`` measures.

Each ``load_*`` reads one data set from the shared data directory (see :mod:`livesafe.eval.registry` for
what each one is). ``scripts/train_text_heads.py`` reads the same files through the ``read_*`` helpers and
splits them with the same seeds and held-out shares, so the evaluation sets are exactly the rows it never
trains on.
"""

from __future__ import annotations

import csv
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ETHOS_TEST_SIZE",
    "ETHOS_VIOLENCE_TEST_SIZE",
    "FUNCTIONAL_PATH",
    "JIGSAW_LABELS",
    "SELF_HARM_LABELS",
    "SPLIT_SEED",
    "TEST_SIZE",
    "DataNotFoundError",
    "SpeechClip",
    "TextSet",
    "clean_tweet",
    "cssrs_split",
    "davidson_split",
    "ethos_split",
    "ethos_violence_dev",
    "ethos_violence_split",
    "load_cssrs",
    "load_davidson",
    "load_ethos_binary",
    "load_ethos_violence",
    "load_functional",
    "load_jigsaw_sample",
    "load_speech_refs",
    "read_cssrs",
    "read_davidson",
    "read_ethos",
    "read_ethos_violence",
]


#: Seed and held-out share of ``scripts/train_text_heads.py`` (its ``SEED`` and ``test_size``).
SPLIT_SEED = 0
TEST_SIZE = 0.2
#: Held-out share of ETHOS binary (the rest trains and calibrates the hate head).
ETHOS_TEST_SIZE = 0.3
#: Held-out share of ETHOS multi-label (``ethos_violence``); the other half is for designing rules.
ETHOS_VIOLENCE_TEST_SIZE = 0.5
#: C-SSRS user labels that count as at risk (the script's ``SELF_HARM_LABELS``).
SELF_HARM_LABELS = frozenset({"Ideation", "Behavior", "Attempt"})


class DataNotFoundError(FileNotFoundError):
    """The shared data directory (or a file of it) is missing."""


@dataclass(frozen=True, slots=True)
class TextSet:
    """Labelled text items. Each item is one or more texts; an item scores the maximum of its texts."""

    items: list[list[str]]
    #: Per category, one 0/1 label per item.
    labels: dict[str, list[int]]
    #: Optional functionality tag per item (``eval_text`` then reports the accuracy per tag).
    tags: list[str] | None = None
    #: Labels that are not classifier categories: label -> categories; an item is flagged for such a label
    #: when any of those categories is flagged at its floor (``heldout_suite``: hateful = hate or threat).
    any_of: dict[str, tuple[str, ...]] | None = None

    def subset(self, keep: Sequence[int]) -> TextSet:
        return TextSet(
            [self.items[i] for i in keep],
            {c: [v[i] for i in keep] for c, v in self.labels.items()},
            None if self.tags is None else [self.tags[i] for i in keep],
            self.any_of,
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


FUNCTIONAL_PATH = Path(__file__).resolve().parents[1] / "analyzers" / "data" / "text_functional.yaml"


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
