"""Train the text classifier's logistic heads and measure the classifier on held-out data.

    .venv/bin/python scripts/train_text_heads.py [--shared-data ../shared/data] [--no-eval]

Writes ``livesafe/analyzers/data/text_heads.json``: one logistic-regression head per category on MiniLM
embeddings (coefficients as JSON, no pickles), with what it was trained on and its held-out figures.

Training data, all reproducible (fixed seeds, deterministic solvers):

* ``livesafe/analyzers/data/text_seeds.yaml``: sentences written for this project, for every head;
* Davidson et al. 2017 (MIT), 80 % stratified split, for ``hate``: class 0 (hate) against classes 1
  (offensive) and 2 (neither), so the head learns that swearing alone is not hate; its class 2 tweets
  are also generic negatives for the other heads;
* C-SSRS Reddit (Gaur et al. 2019, CC BY), 80 % of users, for ``self_harm``: posts of users labelled
  Ideation/Behavior/Attempt against posts of Supportive users (user-level labels, so noisy per post).

Evaluation, on data the heads never saw: Davidson's other 20 %, ETHOS binary (GPL-3.0: used only to
measure, never to train), C-SSRS's other 20 % of users (a user counts as at risk when any of their posts
scores >= 0.5), and the Jigsaw sample from detoxify's tests (Apache-2.0). Embeddings are cached under
``.livesafe/cache/text_train`` (``--cache-dir``), so reruns take seconds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livesafe.analyzers.text import (  # noqa: E402
    HEADS_PATH,
    MiniLMEncoder,
    TextClassifier,
    normalize,
)
from livesafe.eval import SPLIT_SEED, TEST_SIZE, read_cssrs, read_davidson  # noqa: E402

SEEDS_PATH = ROOT / "livesafe" / "analyzers" / "data" / "text_seeds.yaml"
HEAD_CATEGORIES = ("hate", "harassment", "threat", "self_harm", "sexual_solicitation", "scam")
#: Share of each source in a head's total training weight (classes balanced within a source).
SOURCE_SHARE = {"seeds": 1.0, "davidson": 1.0, "cssrs": 0.35, "generic": 0.3}
#: Share of the positives in each source's weight (below 0.5 keeps the heads' prior low).
POSITIVE_SHARE = 0.3
#: Inverse regularisation strength of the logistic heads.
C_VALUE = 4.0
SELF_HARM_LABELS = {"Ideation", "Behavior", "Attempt"}
#: Jigsaw sample labels measured against our categories.
JIGSAW_LABELS = (
    ("threat", "threat"),
    ("insult", "harassment"),
    ("identity_hate", "hate"),
    ("obscene", "profanity"),
)


@dataclass
class Samples:
    """Training texts of one head, with labels and the source each came from."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def add(self, texts: Sequence[str], label: int, source: str) -> None:
        self.texts.extend(texts)
        self.labels.extend([label] * len(texts))
        self.sources.extend([source] * len(texts))


# --- data ----------------------------------------------------------------------------------------


def seed_texts(doc: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """Positives and hard negatives per category, and benign texts, with the identity templates filled."""
    cats: dict[str, Any] = doc["categories"]
    positives = {c: list(cats[c]["positive"]) for c in HEAD_CATEGORIES}
    negatives = {c: list(cats[c].get("negative", [])) for c in HEAD_CATEGORIES}
    benign = list(doc["benign"])
    tmpl = doc.get("templates") or {}
    for group in tmpl.get("groups", []):
        positives["hate"] += [t.format(group=group) for t in tmpl.get("hate", [])]
        benign += [t.format(group=group) for t in tmpl.get("benign", [])]
    return positives, negatives, benign


def seed_samples(path: Path = SEEDS_PATH) -> dict[str, Samples]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    positives, negatives, benign = seed_texts(doc)
    out: dict[str, Samples] = {}
    for cat in HEAD_CATEGORIES:
        s = Samples()
        s.add(positives[cat], 1, "seeds")
        s.add(negatives[cat], 0, "seeds")
        s.add(benign, 0, "seeds")
        overlaps = set(doc["overlaps"].get(cat, []))
        own = set(positives[cat])
        for other in HEAD_CATEGORIES:
            if other != cat and other not in overlaps:
                s.add([t for t in positives[other] if t not in own], 0, "seeds")
        out[cat] = s
    return out


def ethos(shared: Path) -> tuple[list[str], list[int]]:
    with (shared / "text/ethos/Ethos_Dataset_Binary.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    return [r["comment"] for r in rows], [int(float(r["isHate"]) >= 0.5) for r in rows]


def jigsaw(shared: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for name in ("train.csv", "test.csv"):
        path = shared / "text/jigsaw_detoxify_sample" / name
        if path.is_file():
            with path.open(encoding="utf-8") as f:
                rows.extend(r for r in csv.DictReader(f) if r.get("toxic", "-1") not in ("-1", ""))
    return rows


# --- training ------------------------------------------------------------------------------------


class CachedEncoder:
    """MiniLM embeddings with an on-disk cache keyed by the SHA-1 of each text (reruns take seconds)."""

    dim = MiniLMEncoder.dim

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / "minilm_embeddings.npz"
        self.encoder = MiniLMEncoder()
        self.table: dict[str, npt.NDArray[np.float32]] = {}
        if self.path.is_file():
            with np.load(self.path) as z:
                self.table = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        keys = [self._key(t) for t in texts]
        missing = list({k: t for k, t in zip(keys, texts, strict=True) if k not in self.table}.items())
        if missing:
            started = time.perf_counter()
            vectors = self.encoder.encode([t for _, t in missing])
            self.table.update(zip([k for k, _ in missing], vectors, strict=True))
            print(f"  embedded {len(missing)} texts in {time.perf_counter() - started:.1f}s", flush=True)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(self.path, keys=np.array(list(self.table)), vectors=np.stack(list(self.table.values())))
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.table[k] for k in keys]).astype(np.float32)

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embeddings of ``texts`` normalised as the classifier normalises them."""
        return self.encode([normalize(t) for t in texts])


def sample_weights(labels: npt.NDArray[np.int_], sources: Sequence[str]) -> npt.NDArray[np.float64]:
    """Each source's weight set by ``SOURCE_SHARE``, split between its classes by ``POSITIVE_SHARE``."""
    src = np.asarray(sources)
    w = np.zeros(len(labels), dtype=np.float64)
    for s in sorted(set(sources)):
        for k in (0, 1):
            mask = (src == s) & (labels == k)
            if mask.any():
                share = POSITIVE_SHARE if k == 1 else 1.0 - POSITIVE_SHARE
                w[mask] = SOURCE_SHARE[s] * share / mask.sum()
    scaled: npt.NDArray[np.float64] = w * (len(labels) / float(w.sum()))
    return scaled


def fit_head(x: npt.NDArray[np.float32], samples: Samples) -> tuple[npt.NDArray[np.float64], float]:
    y = np.asarray(samples.labels)
    model = LogisticRegression(C=C_VALUE, max_iter=5000, tol=1e-6)
    model.fit(x.astype(np.float64), y, sample_weight=sample_weights(y, samples.sources))
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def prf(y_true: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> dict[str, float | None]:
    """Precision/recall/F1 at ``threshold``, plus threshold-free ROC AUC and average precision."""
    y_pred = (np.asarray(scores) >= threshold).astype(int)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="binary", zero_division=0)
    both = 0 < sum(y_true) < len(y_true)
    return {
        "precision": round(float(p), 3),
        "recall": round(float(r), 3),
        "f1": round(float(f), 3),
        "roc_auc": round(float(roc_auc_score(y_true, scores)), 3) if both else None,
        "average_precision": round(float(average_precision_score(y_true, scores)), 3)
        if both
        else float("nan"),
        "n": len(y_true),
        "positives": int(np.sum(y_true)),
    }


@dataclass
class Splits:
    """The shared data, split once (seed 0) into what trains the heads and what measures them."""

    d_train: list[str]
    c_train: list[int]
    d_test: list[str]
    c_test: list[int]
    users: list[list[str]]
    labels: list[str]
    u_train: list[int]
    u_test: list[int]

    @classmethod
    def load(cls, shared: Path) -> Splits:
        d_texts, d_classes = read_davidson(shared)
        d_train, d_test, c_train, c_test = train_test_split(
            d_texts, d_classes, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=d_classes
        )
        users, labels = read_cssrs(shared)
        u_train, u_test = train_test_split(
            list(range(len(users))), test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=labels
        )
        return cls(d_train, c_train, d_test, c_test, users, labels, u_train, u_test)


def training_samples(data: Splits) -> dict[str, Samples]:
    heads = seed_samples()
    pairs = list(zip(data.d_train, data.c_train, strict=True))
    heads["hate"].add([t for t, c in pairs if c == 0], 1, "davidson")
    heads["hate"].add([t for t, c in pairs if c != 0], 0, "davidson")
    neither = [t for t, c in pairs if c == 2]
    for cat in HEAD_CATEGORIES:
        if cat != "hate":
            heads[cat].add(neither, 0, "generic")
    for u in data.u_train:
        if data.labels[u] in SELF_HARM_LABELS:
            heads["self_harm"].add(data.users[u], 1, "cssrs")
        elif data.labels[u] == "Supportive":
            heads["self_harm"].add(data.users[u], 0, "cssrs")
    return heads


def count(s: Samples) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for label, src in zip(s.labels, s.sources, strict=True):
        entry = out.setdefault(src, {"positive": 0, "negative": 0})
        entry["positive" if label else "negative"] += 1
    return dict(sorted(out.items()))


def train(heads: dict[str, Samples], encode: CachedEncoder) -> dict[str, Any]:
    weights, bias, counts = [], [], {}
    for cat in HEAD_CATEGORIES:
        s = heads[cat]
        print(f"training {cat}: {len(s.texts)} texts, {sum(s.labels)} positive", flush=True)
        coef, intercept = fit_head(encode(s.texts), s)
        weights.append([float(f"{v:.6g}") for v in coef])
        bias.append(float(f"{intercept:.6g}"))
        counts[cat] = count(s)
    return {
        "version": 1,
        "encoder": MiniLMEncoder.name,
        "dim": MiniLMEncoder.dim,
        "categories": list(HEAD_CATEGORIES),
        "training": {
            "script": "scripts/train_text_heads.py",
            "model": f"sklearn LogisticRegression(C={C_VALUE})",
            "positive_share": POSITIVE_SHARE,
            "source_share": SOURCE_SHARE,
            "seeds_sha256": hashlib.sha256(SEEDS_PATH.read_bytes()).hexdigest(),
            "sources": {
                "seeds": "livesafe/analyzers/data/text_seeds.yaml (Apache-2.0, this project)",
                "davidson": "t-davidson/hate-speech-and-offensive-language (MIT), 80% split, seed 0",
                "generic": "Davidson class 2 (neither) of that 80% split, negatives of the other heads",
                "cssrs": "Gaur et al. 2019 C-SSRS Reddit (CC BY), 80% of users, seed 0",
            },
            "counts": counts,
        },
        "weights": weights,
        "bias": bias,
    }


def evaluate(clf: TextClassifier, data: Splits, shared: Path) -> dict[str, Any]:
    """Held-out precision/recall/F1 of the whole classifier (model and rules) at threshold 0.5."""

    def scored(name: str, texts: Sequence[str]) -> list[dict[str, float]]:
        started = time.perf_counter()
        out = clf.scores_batch(texts)
        print(f"  scored {name}: {len(texts)} texts in {time.perf_counter() - started:.1f}s", flush=True)
        return out

    figures: dict[str, Any] = {"threshold": 0.5}
    dav = scored("davidson held-out", data.d_test)
    figures["davidson_hate_heldout"] = prf([int(c == 0) for c in data.c_test], [x["hate"] for x in dav])
    e_texts, e_labels = ethos(shared)
    eth = scored("ethos binary", e_texts)
    figures["ethos_binary_hate"] = prf(e_labels, [x["hate"] for x in eth])
    flat = [(u, p) for u in data.u_test for p in data.users[u]]
    posts = scored("cssrs held-out posts", [p for _, p in flat])
    user_max = dict.fromkeys(data.u_test, 0.0)
    for (u, _), x in zip(flat, posts, strict=True):
        user_max[u] = max(user_max[u], x["self_harm"])
    figures["cssrs_self_harm_heldout_users"] = prf(
        [int(data.labels[u] in SELF_HARM_LABELS) for u in data.u_test], [user_max[u] for u in data.u_test]
    )
    rows = jigsaw(shared)
    if rows:
        jig = scored("jigsaw sample", [r["comment_text"] for r in rows])
        for label, cat in JIGSAW_LABELS:
            figures[f"jigsaw_{label}_as_{cat}"] = prf(
                [int(r[label] == "1") for r in rows], [x[cat] for x in jig]
            )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".livesafe" / "cache" / "text_train")
    ap.add_argument("--out", type=Path, default=HEADS_PATH)
    ap.add_argument("--no-eval", action="store_true", help="train only; skip the held-out evaluation")
    args = ap.parse_args(argv)
    encode = CachedEncoder(args.cache_dir)
    print("loading data", flush=True)
    data = Splits.load(args.shared_data)
    doc = train(training_samples(data), encode)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    if args.no_eval:
        return 0
    doc["evaluation"] = evaluate(TextClassifier(heads_path=args.out, encoder=encode), data, args.shared_data)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(doc["evaluation"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
