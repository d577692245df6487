"""The held-out functional test suite (``livesafe.eval.suite``): its size, coverage, determinism and
separation from the development and training data. It never asserts the classifier's accuracy: that is a
measurement (``livesafe eval --dataset heldout_suite``), not a property."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from livesafe.core.policy import Policy, load_policy
from livesafe.eval.cli import format_table
from livesafe.eval.datasets import TextSet
from livesafe.eval.registry import DATASETS
from livesafe.eval.runner import eval_text
from livesafe.eval.suite import (
    HATEFUL_CATEGORIES,
    LABEL,
    SUITE_PATH,
    SuiteCase,
    generate,
    load_heldout_suite,
    perturb,
)

ROOT = Path(__file__).resolve().parent.parent
ANALYZER_DATA = ROOT / "livesafe" / "analyzers" / "data"

HATEFUL = (
    "derogation", "dehumanisation", "implicit_derogation", "threat_direct", "threat_normative", "slur",
    "profanity_hate", "pronoun_reference", "question", "opinion",
    "spelling_swap", "spelling_drop", "spelling_spaced", "spelling_nospace", "spelling_leet",
)  # fmt: skip
NOT_HATEFUL = (
    "negated_hate", "group_neutral", "group_positive", "counter_speech", "abuse_object", "abuse_individual",
    "abuse_nonprotected_group", "profanity_nonhateful", "slur_nonhateful", "trash_talk",
)  # fmt: skip
#: Functionalities whose templates are filled with every protected group.
PER_GROUP = tuple(f for f in (*HATEFUL, *NOT_HATEFUL) if f not in {
    "abuse_object", "abuse_individual", "abuse_nonprotected_group", "profanity_nonhateful", "slur_nonhateful",
    "trash_talk"})  # fmt: skip


@pytest.fixture(scope="module")
def cases() -> list[SuiteCase]:
    return generate()


def _key(text: str) -> str:
    """Lower-cased words, punctuation and spacing ignored: two texts with the same key are the same case."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower().replace("'", "")))


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _sentences(path: Path) -> set[str]:
    """Every string of a YAML file, templates filled with each of its ``groups`` where it has them."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    groups = [str(g) for g in doc.get("templates", {}).get("groups", [])]
    out: set[str] = set()
    for s in _strings(doc):
        out |= {s.format(group=g) for g in groups} if "{group}" in s else {s}
    return out


def test_size_and_balance(cases: list[SuiteCase]) -> None:
    assert len(cases) >= 2000
    share = sum(c.hateful for c in cases) / len(cases)
    assert 0.62 <= share <= 0.72  # near 2/3 hateful, as such suites are


def test_every_functionality_present(cases: list[SuiteCase]) -> None:
    counts = Counter(c.functionality for c in cases)
    assert set(counts) == {*HATEFUL, *NOT_HATEFUL}
    for name in (*HATEFUL, *NOT_HATEFUL):
        assert counts[name] >= 40, name
    for c in cases:
        assert c.hateful == (c.functionality in HATEFUL), c
        assert c.text and c.text == c.text.strip()


def test_protected_groups_covered(cases: list[SuiteCase]) -> None:
    doc = yaml.safe_load(SUITE_PATH.read_text(encoding="utf-8"))
    groups = set(doc["groups"])
    assert len(groups) >= 7
    assert {c.target for c in cases if c.target is not None} == groups
    for name in PER_GROUP:
        assert {c.target for c in cases if c.functionality == name} == groups, name
    for name in ("abuse_object", "abuse_individual", "abuse_nonprotected_group", "trash_talk"):
        assert all(c.target is None for c in cases if c.functionality == name)


def test_deterministic(cases: list[SuiteCase]) -> None:
    assert generate() == cases
    assert load_heldout_suite(ROOT).items[0] == [cases[0].text]


def test_no_duplicate_texts(cases: list[SuiteCase]) -> None:
    texts = [c.text for c in cases]
    assert len(set(texts)) == len(texts)
    keys = Counter(_key(t) for t in texts)  # not even apart from case, punctuation and spacing
    assert not {k for k, n in keys.items() if n > 1}


def test_held_apart_from_development_and_training_data(cases: list[SuiteCase]) -> None:
    suite = {_key(c.text) for c in cases}
    functional = {_key(s) for s in _sentences(ANALYZER_DATA / "text_functional.yaml")}
    seeds = {_key(s) for s in _sentences(ANALYZER_DATA / "text_seeds.yaml")}
    assert len(functional) > 200 and len(seeds) > 200
    assert not suite & functional
    assert not suite & seeds


def test_training_script_does_not_reference_the_suite() -> None:
    source = (ROOT / "scripts" / "train_text_heads.py").read_text(encoding="utf-8")
    for needle in ("heldout_suite", "eval.suite", "eval/suite", "eval import suite", "suite.py"):
        assert needle not in source, needle


@pytest.mark.parametrize(
    ("marked", "kind", "expected"),
    [
        ("Jews are [disgusting]", "swap", "Jews are disgutsing"),
        ("I will [shoot] them", "swap", "I will sohot them"),
        ("they are [vermin]", "drop", "they are verin"),
        ("I [hate] trans people", "spaced", "I h a t e trans people"),
        ("kill all the [trans people]", "spaced", "kill all the t r a n s people"),
        ("women are [disgusting]", "nospace", "womenaredisgusting"),
        ("[Black people] are vermin", "leet", "Bl4ck p30pl3 are vermin"),
    ],
)
def test_perturb(marked: str, kind: str, expected: str) -> None:
    assert perturb(marked, kind) == expected


def test_perturb_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one"):
        perturb("no span here", "swap")
    with pytest.raises(ValueError, match="unknown"):
        perturb("a [span]", "rot13")
    with pytest.raises(ValueError, match="swap"):
        perturb("a [aaa] b", "swap")


def test_spelling_variants_differ_from_their_bases(cases: list[SuiteCase]) -> None:
    doc = yaml.safe_load(SUITE_PATH.read_text(encoding="utf-8"))
    bases = {
        _key(b.replace("[", "").replace("]", "").format(group=g["group"], one=g["one"]))
        for b in doc["perturbation_bases"] for g in doc["groups"].values()
    }  # fmt: skip
    for c in cases:
        if c.functionality.startswith("spelling_"):
            assert _key(c.text) not in bases, c.text


def test_registered_as_text_dataset(tmp_path: Path) -> None:
    assert DATASETS["heldout_suite"].kind == "text"
    data = DATASETS["heldout_suite"].loader(tmp_path)  # shipped: the data directory is not read
    assert isinstance(data, TextSet) and data.tags is not None
    assert list(data.labels) == [LABEL] and data.any_of == {LABEL: HATEFUL_CATEGORIES}
    assert len(data) == len(data.tags) == len(data.labels[LABEL]) >= 2000
    sub = data.subset([0, len(data) - 1])
    assert sub.any_of == data.any_of and sub.tags == [data.tags[0], data.tags[-1]]


class _StubClassifier:
    """Fixed scores by text: enough to check what counts as right, without the model."""

    def __init__(self, scores: dict[str, dict[str, float]]) -> None:
        self.scores = scores

    def scores_batch(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [self.scores[t] for t in texts]


def test_right_means_hate_or_threat_flagged_at_the_floor(tmp_path: Path) -> None:
    policy: Policy = load_policy()
    hate, threat = policy.categories["hate"].floor, policy.categories["threat"].floor
    data = load_heldout_suite(tmp_path)
    assert data.tags is not None
    first = {t: data.tags.index(t) for t in ("derogation", "threat_direct", "slur", "negated_hate",
                                             "trash_talk", "counter_speech")}  # fmt: skip
    sub = data.subset(list(first.values()))
    texts = [item[0] for item in sub.items]
    scores = [
        {"hate": hate, "threat": 0.0},  # derogation: hate at its floor -> hateful, right
        {"hate": 0.0, "threat": threat},  # threat_direct: threat alone is enough -> right
        {"hate": hate - 0.01, "threat": threat - 0.01},  # slur: both below -> not hateful, wrong
        {"hate": 0.0, "threat": 0.0},  # negated_hate: nothing flagged -> right
        {"hate": 0.0, "threat": threat + 0.1},  # trash_talk: threat flagged -> hateful, wrong
        {"hate": 0.1, "threat": 0.0, "profanity": 0.99},  # counter_speech: other categories do not count
    ]
    classifier: Any = _StubClassifier(dict(zip(texts, scores, strict=True)))
    result = eval_text(sub, policy, classifier)
    assert result["categories"] == {}
    m = result["any_of"][LABEL]
    assert m["floors"] == {"hate": hate, "threat": threat}
    assert (m["n"], m["tp"], m["fp"], m["fn"]) == (6, 2, 1, 1)
    assert (m["accuracy"], m["accuracy_positive"], m["n_positive"]) == (round(4 / 6, 4), round(2 / 3, 4), 3)
    assert (m["accuracy_negative"], m["n_negative"]) == (round(2 / 3, 4), 3)
    assert m["flagged_by"] == {"hate": 1, "threat": 2}
    assert {t: v["accuracy"] for t, v in result["tags"].items()} == {
        "derogation": 1.0, "threat_direct": 1.0, "slur": 0.0, "negated_hate": 1.0, "trash_talk": 0.0,
        "counter_speech": 1.0}  # fmt: skip
    table = format_table({"policy": "p", "data_dir": "d", "limit": None, "datasets": {"suite": result}})
    assert "hateful = hate >= " in table and "overall accuracy 0.667" in table
    assert "hateful part 0.667 (n 3)" in table and "not hateful part 0.667 (n 3)" in table
    assert "accuracy per functionality" in table and "trash_talk" in table
