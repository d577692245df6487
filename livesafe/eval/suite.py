"""The held-out functional test suite of the text classifier (``livesafe eval --dataset heldout_suite``).

HELD OUT: the suite is NEVER used for training, calibration or rule tuning. ``scripts/train_text_heads.py``
does not read it, and the rules of ``livesafe/analyzers/data/text_patterns.yaml`` must not be designed by
reading its cases or its results; the development set for that is
``livesafe/analyzers/data/text_functional.yaml``. ``tests/test_suite.py`` checks that the training script
does not name this module or its data, and that no case is also a development case or a seed sentence.

The suite is written by the livesafe contributors from our own templates (``data/heldout_suite.yaml``), in
the spirit of HateCheck-style functional testing but with none of its text or templates. :func:`generate`
expands the templates deterministically (a fixed order, no randomness) into :class:`SuiteCase` items: the
text, whether it is hateful, its functionality and the protected group it targets (None where none is).

Spelling variations (``perturb``) change the ``[marked]`` span of each of the ``perturbation_bases``, after
the group is filled in; a span of several words has only its first word changed by ``swap``, ``drop`` and
``spaced``:

* ``swap``: two adjacent characters swapped, at the middle of the word (``disgusting`` -> ``disgutsing``;
  the nearest differing pair when the middle two are the same letter);
* ``drop``: the middle character dropped (``vermin`` -> ``verin``);
* ``spaced``: a space between every two letters (``hate`` -> ``h a t e``);
* ``nospace``: every space of the sentence removed (``Jewsaredisgusting``);
* ``leet``: ``a e i o s t`` written ``4 3 1 0 5 7`` in every word of the span (``vermin`` -> ``v3rm1n``).

What counts as right (:func:`load_heldout_suite`): an item is predicted hateful when the classifier flags
``hate`` or ``threat`` at the policy's floor for that category (what a platform acts on); it is right when
that prediction equals its label.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livesafe.eval.datasets import TextSet

__all__ = [
    "HATEFUL_CATEGORIES",
    "LABEL",
    "PERTURBATIONS",
    "SUITE_PATH",
    "SuiteCase",
    "generate",
    "load_heldout_suite",
    "perturb",
]

SUITE_PATH = Path(__file__).resolve().parent / "data" / "heldout_suite.yaml"
#: The suite's one label, and the classifier categories whose flag (at the policy floor) predicts it.
LABEL = "hateful"
HATEFUL_CATEGORIES = ("hate", "threat")
#: Template fields filled from a group (``slur`` iterates over the group's slurs).
GROUP_FIELDS = frozenset({"group", "one", "a_one", "place", "slur"})
PERTURBATIONS = ("swap", "drop", "spaced", "nospace", "leet")

_MARK = re.compile(r"\[([^\[\]]+)\]")
_LEET = str.maketrans({"a": "4", "A": "4", "e": "3", "E": "3", "i": "1", "I": "1", "o": "0", "O": "0",
                       "s": "5", "S": "5", "t": "7", "T": "7"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class SuiteCase:
    """One case of the suite: ``target`` is the key of the protected group it is about (None: none)."""

    text: str
    hateful: bool
    functionality: str
    target: str | None


def _swap(word: str) -> str:
    n = len(word)
    middle = n // 2
    # Positions i (swapping i and i + 1), nearest the middle first; never the first character.
    for i in sorted(range(1, n - 1), key=lambda k: (abs(k - middle), k)):
        if word[i] != word[i + 1]:
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    raise ValueError(f"cannot swap two different adjacent characters of {word!r}")


def _drop(word: str) -> str:
    if len(word) < 3:
        raise ValueError(f"too short to drop a character: {word!r}")
    i = len(word) // 2
    return word[:i] + word[i + 1 :]


def _first_word(span: str, change: Any) -> str:
    first, sep, rest = span.partition(" ")
    return str(change(first)) + sep + rest


def perturb(marked: str, kind: str) -> str:
    """``marked`` (a sentence with one ``[span]``) with the span changed by ``kind`` (see the module doc);
    the brackets are removed."""
    found = _MARK.findall(marked)
    if len(found) != 1:
        raise ValueError(f"expected exactly one [marked] span: {marked!r}")
    span = found[0]
    if kind == "swap":
        changed = _first_word(span, _swap)
    elif kind == "drop":
        changed = _first_word(span, _drop)
    elif kind == "spaced":
        changed = _first_word(span, " ".join)
    elif kind == "leet":
        changed = span.translate(_LEET)
    elif kind == "nospace":
        return re.sub(r"\s+", "", marked.replace(f"[{span}]", span))
    else:
        raise ValueError(f"unknown perturbation {kind!r}; known: {PERTURBATIONS}")
    if changed == span:
        raise ValueError(f"{kind} leaves {span!r} unchanged")
    return marked.replace(f"[{span}]", changed)


def _capitalize(text: str) -> str:
    """Upper-case the first letter when the text starts with a letter (after leading punctuation)."""
    for i, ch in enumerate(text):
        if ch.isalnum():
            return text[:i] + ch.upper() + text[i + 1 :] if ch.isalpha() else text
    return text


def _fields(template: str) -> list[str]:
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    return list(dict.fromkeys(names))


def _expand(
    template: str, groups: Mapping[str, Mapping[str, Any]], slots: Mapping[str, list[str]]
) -> Iterator[tuple[str, str | None]]:
    """Every filling of ``template``, in a fixed order: groups (then their slurs), then slot values."""
    fields = _fields(template)
    unknown = [f for f in fields if f not in GROUP_FIELDS and f not in slots]
    if unknown:
        raise ValueError(f"unknown template fields {unknown} in {template!r}")
    slot_names = [f for f in fields if f in slots]
    slot_values = list(itertools.product(*(slots[s] for s in slot_names)))
    group_items: list[tuple[str | None, Mapping[str, Any]]] = (
        list(groups.items()) if GROUP_FIELDS.intersection(fields) else [(None, {})]
    )
    for key, group in group_items:
        plain: dict[str, str] = {f: str(group[f]) for f in ("group", "one", "a_one", "place") if f in fields}
        slurs: list[str | None] = [str(s) for s in group["slur"]] if "slur" in fields else [None]
        for slur in slurs:
            for values in slot_values:
                filled: dict[str, str] = {**plain, **dict(zip(slot_names, values, strict=True))}
                if slur is not None:
                    filled["slur"] = slur
                yield template.format(**filled), key


def generate(path: Path = SUITE_PATH) -> list[SuiteCase]:
    """Every case of the suite at ``path``, in a fixed order (functionalities as listed, then templates,
    groups and slot values as listed). Deterministic: two calls return equal lists."""
    import yaml

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    groups: dict[str, dict[str, Any]] = doc["groups"]
    cases: list[SuiteCase] = []
    for name, spec in doc["functionalities"].items():
        hateful = bool(spec["hateful"])
        if "variant_of" in spec:
            for template in doc[spec["variant_of"]]:
                for marked, target in _expand(template, groups, {}):
                    text = _capitalize(perturb(marked, spec["perturb"]))
                    cases.append(SuiteCase(text, hateful, str(name), target))
        elif "templates" in spec:
            slots = {str(k): [str(v) for v in vs] for k, vs in spec.get("slots", {}).items()}
            for template in spec["templates"]:
                for text, target in _expand(template, groups, slots):
                    cases.append(SuiteCase(_capitalize(text), hateful, str(name), target))
        else:
            for case in spec["cases"]:
                entry = {"text": case} if isinstance(case, str) else dict(case)
                target = entry.get("target")
                if target is not None and target not in groups:
                    raise ValueError(f"unknown target {target!r} in {name}")
                cases.append(SuiteCase(str(entry["text"]), hateful, str(name), target))
    return cases


def load_heldout_suite(data_dir: Path, path: Path = SUITE_PATH) -> TextSet:
    """The suite as a :class:`TextSet` (shipped with the package; ``data_dir`` is not read): one label,
    ``hateful``, tagged with the functionality. ``hateful`` is not a classifier category: an item is
    predicted hateful when ``hate`` or ``threat`` is flagged at its policy floor (``TextSet.any_of``)."""
    cases = generate(path)
    return TextSet(
        [[c.text] for c in cases],
        {LABEL: [int(c.hateful) for c in cases]},
        [c.functionality for c in cases],
        {LABEL: HATEFUL_CATEGORIES},
    )
