"""TextClassifier on the real MiniLM weights, the shipped heads and alt-profanity-check."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from livesafe.analyzers.base import TextAnalyzer
from livesafe.analyzers.text import (
    GAME_CONTEXT_WEIGHT,
    TEXT_CATEGORIES,
    Calibrator,
    LinearHeads,
    TextClassifier,
    TextOptions,
    load_rules,
    match_rules,
    normalize,
)
from livesafe.events import Transcript

BENIGN_EVERYDAY = (
    "this boss fight is killing me",
    "thank you so much for the follow",
    "Okay chat, we are back in the game. Let's try this level one more time.",
)
COUNTER_SPEECH = (
    "we must stand against racism",
    "We will not tolerate racism or antisemitism against anyone in this chat.",
    "Calling immigrants animals is disgusting.",
    "Saying that Muslims are terrorists is a racist lie.",
    "I was called a slur today and it hurt.",
    "Police are investigating a hate crime against Jewish people in the city.",
    "The news reported a rise in attacks on Black people.",
)
#: Gaming and sports talk with violent words: none of these is a threat.
GAMING_IDIOMS = (
    "I'm going to kill him, he took my loot",
    "we destroyed them",
    "that boss killed me",
    "I'm gonna murder this whole lobby",
    "they absolutely slaughtered us in the second half",
    "shoot him, he's behind the wall",
)
#: Real threats, some with the same verbs: all must stay threats.
REAL_THREATS = (
    "I'm going to kill you.",
    "I know where you live. I am going to find you and kill you.",
    "I am going to kill him when I see him.",
    "I'm going to shoot up the school tomorrow.",
    "I'll slit your throat.",
    "I will find your family and hurt them.",
)


@pytest.fixture(scope="module")
def clf() -> TextClassifier:
    return TextClassifier()


@pytest.fixture(scope="module")
def scripts(demo_dir: Path) -> dict[str, list[str]]:
    streams = json.loads((demo_dir / "streams.json").read_text(encoding="utf-8"))
    return {name: [line["text"] for line in s["script"]] for name, s in streams.items()}


# --- rules and normalisation, no model needed -------------------------------------------------------


def test_normalize_expands_contractions_and_slang() -> None:
    assert normalize("I\u2019m  gonna   FIND you") == "i am going to find you"
    assert normalize("I'll kill u") == "i will kill you"
    assert normalize("i dont know") == "i don't know"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I will hurt you", {"threat"}),
        ("I would never hurt you", set()),
        ("I am not going to kill you", set()),
        ("Nobody is safe from me", {"threat"}),
        ("I know where you live", {"threat"}),
        ("go kill yourself", {"harassment"}),
        ("please don't kill yourself", set()),
        ("send $50 to my cash app and I will send back double", {"scam"}),
    ],
)
def test_rules_with_negation(text: str, expected: set[str]) -> None:
    hits = match_rules(normalize(text), load_rules())
    assert {h.category for h in hits} == expected


def test_overlapping_hits_count_once() -> None:
    hits = match_rules(normalize("I am going to find you and kill you"), load_rules())
    assert [(h.category, h.score) for h in hits] == [("threat", 0.9)]


def test_quoted_hit_counts_half() -> None:
    rules = load_rules()
    direct = match_rules(normalize("I will kill you"), rules)
    quoted = match_rules(normalize('he said "I will kill you" in the movie'), rules)
    assert direct and quoted
    assert max(h.score for h in quoted) == pytest.approx(max(h.score for h in direct) / 2)


def test_idiom_rules_count_less_in_a_game_context() -> None:
    rules = load_rules()
    plain = match_rules(normalize("I am going to kill him"), rules)
    gaming = match_rules(normalize("I am going to kill him, he took my loot"), rules)
    assert [h.score for h in plain] == [0.5]
    assert [h.score for h in gaming] == [pytest.approx(0.5 * GAME_CONTEXT_WEIGHT)]
    # Rules that are no idiom keep their weight in a game context.
    assert match_rules(normalize("I know where you live, gg"), rules)[0].score == 0.85


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Immigrants are animals.", {"hate"}),
        ("Saying that immigrants are animals is a racist lie.", set()),
        ("People who say Muslims are terrorists are wrong", set()),
        ("Immigrants are animals and that is a fact.", {"hate"}),
        ("You are a worthless idiot", {"harassment"}),
        ("Calling someone you are a worthless idiot is not okay", set()),
    ],
)
def test_condemned_hate_is_dropped(text: str, expected: set[str]) -> None:
    assert {h.category for h in match_rules(normalize(text), load_rules())} == expected


def test_calibrator() -> None:
    cal = Calibrator(np.array([0.1, 0.5, 0.9]), np.array([0.0, 0.2, 0.8]))
    assert cal(0.0) == 0.0 and cal(1.0) == 0.8
    assert cal(0.3) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="increase"):
        Calibrator(np.array([0.5, 0.1]), np.array([0.0, 0.2]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Calibrator(np.array([0.1, 0.5]), np.array([0.0, 1.2]))


def test_shipped_heads_carry_calibrators() -> None:
    heads = LinearHeads.load()
    assert set(heads.calibration) == {"hate", "self_harm"}
    section = heads.meta["calibration"]
    for cat in heads.categories:
        assert cat in section
        if cat not in heads.calibration:
            assert section[cat]["method"] == "none"
    for cat, cal in heads.calibration.items():
        assert section[cat]["method"] == "isotonic" and section[cat]["n"] > 50
        assert section[cat]["ece_after"] <= section[cat]["ece_before"]
        grid = np.linspace(0.0, 1.0, 101)
        assert np.all(np.diff([cal(float(g)) for g in grid]) >= 0)


def test_options_validated() -> None:
    with pytest.raises(ValueError, match="unknown categories"):
        TextOptions(extra_terms={"nonsense": ("x",)})
    with pytest.raises(ValueError, match="report_floor"):
        TextOptions(report_floor=2.0)


# --- the real models ----------------------------------------------------------------------------------


@pytest.mark.models
def test_implements_protocol(clf: TextClassifier) -> None:
    assert isinstance(clf, TextAnalyzer)
    assert clf.name == "text.minilm"
    assert set(TEXT_CATEGORIES) <= set(clf.categories)


@pytest.mark.models
def test_demo_threats_score_high(clf: TextClassifier, scripts: dict[str, list[str]]) -> None:
    threats = scripts["threat"][1:]
    assert len(threats) == 3
    # The speech model mis-hears slightly; the scores must not hinge on exact wording.
    variants = [
        *threats,
        "I will shoot you all. Nobody is saved from me.",
        "i know where u live im gonna find u",
    ]
    for text, scores in zip(variants, clf.scores_batch(variants), strict=True):
        assert scores["threat"] >= 0.8, (text, scores)


@pytest.mark.models
def test_benign_lines_score_low(clf: TextClassifier, scripts: dict[str, list[str]]) -> None:
    lines = [*scripts["benign"], *BENIGN_EVERYDAY]
    for text, scores in zip(lines, clf.scores_batch(lines), strict=True):
        assert max(scores.values()) < 0.3, (text, scores)


@pytest.mark.models
def test_counter_speech_is_not_hate(clf: TextClassifier) -> None:
    for text in COUNTER_SPEECH:
        assert clf.scores(text)["hate"] < 0.5, text


@pytest.mark.models
def test_gaming_idioms_are_not_threats(clf: TextClassifier) -> None:
    for text, scores in zip(GAMING_IDIOMS, clf.scores_batch(list(GAMING_IDIOMS)), strict=True):
        assert scores["threat"] < 0.4, (text, scores)


@pytest.mark.models
def test_real_threats_stay_threats(clf: TextClassifier) -> None:
    for text, scores in zip(REAL_THREATS, clf.scores_batch(list(REAL_THREATS)), strict=True):
        assert scores["threat"] >= 0.5, (text, scores)


@pytest.mark.models
def test_calibration_applies_to_the_policy_scores(clf: TextClassifier) -> None:
    raw = TextClassifier(TextOptions(calibrate=False), encoder=clf.encoder)
    text = "Muslims are animals and should all be deported."
    cal, unc = clf.scores(text), raw.scores(text)
    assert cal["hate"] == pytest.approx(clf.heads.calibration["hate"](unc["hate"]), abs=2e-4)
    assert cal["threat"] == unc["threat"]  # no calibrator: the raw combination
    assert cal["hate"] >= 0.5


@pytest.mark.models
def test_negated_threat_is_not_a_threat(clf: TextClassifier) -> None:
    assert clf.scores("I would never hurt you")["threat"] < 0.5


@pytest.mark.models
def test_categories_are_told_apart(clf: TextClassifier) -> None:
    cases = {
        "I want to kill myself, I can't go on": "self_harm",
        "send me nudes": "sexual_solicitation",
        "send 50 dollars to my cash app and I'll send you back 500": "scam",
        "what the fuck is this shit": "profanity",
        "you are a worthless idiot and everyone hates you": "harassment",
    }
    for text, scores in zip(cases, clf.scores_batch(list(cases)), strict=True):
        assert max(scores, key=lambda c: scores[c]) == cases[text], (text, scores)
        assert scores[cases[text]] >= 0.5, (text, scores)


@pytest.mark.models
def test_output_shape(clf: TextClassifier, scripts: dict[str, list[str]]) -> None:
    scores = clf.scores("hello")
    assert tuple(scores) == clf.categories
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in scores.values())
    assert clf.scores("") == dict.fromkeys(clf.categories, 0.0)
    assert clf.scores_batch([]) == []

    text = scripts["threat"][1]
    signals = clf.analyze(Transcript(stream_id="s1", media_ts=12.0, end_ts=16.39, text=text))
    by_cat = {s.category: s for s in signals}
    assert "threat" in by_cat
    sig = by_cat["threat"]
    assert (sig.stream_id, sig.media_ts, sig.end_ts, sig.analyzer) == ("s1", 12.0, 16.39, "text.minilm")
    assert sig.evidence["text"] == text
    assert "i know where you live" in sig.evidence["terms"]
    assert all(s.score >= clf.options.report_floor for s in signals)
    assert len(by_cat) == len(signals)


@pytest.mark.models
def test_deterministic_and_batch_equals_single(clf: TextClassifier, scripts: dict[str, list[str]]) -> None:
    lines = scripts["benign"] + scripts["threat"]
    batch = clf.scores_batch(lines)
    assert clf.scores_batch(lines) == batch
    for text, scores in zip(lines, batch, strict=True):
        single = clf.scores(text)
        assert single == pytest.approx(scores, abs=2e-4)


@pytest.mark.models
def test_thread_safe(clf: TextClassifier, scripts: dict[str, list[str]]) -> None:
    lines = (scripts["benign"] + scripts["threat"]) * 3
    expected = [clf.scores(t) for t in lines]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(clf.scores, lines))
    for e, g in zip(expected, got, strict=True):
        assert g == pytest.approx(e, abs=2e-4)


@pytest.mark.models
def test_policy_terms(clf: TextClassifier) -> None:
    text = "get free gems at my page, and bring your glock"
    options = TextOptions(extra_terms={"scam": ("free gems",), "weapons": ("Glock",)}, report_floor=0.05)
    custom = TextClassifier(options, encoder=clf.encoder)
    assert "weapons" in custom.categories and "weapons" not in clf.categories
    base, added = clf.scores(text), custom.scores(text)
    assert added["scam"] >= 0.8 > base["scam"]
    assert added["weapons"] >= 0.8
    assert custom.explain(text).terms("scam") == ["free gems"]
    signals = custom.analyze(Transcript(stream_id="s", media_ts=0.0, end_ts=2.0, text=text))
    weapons = [s for s in signals if s.category == "weapons"]
    assert weapons and weapons[0].evidence["terms"] == ["glock"]
    # A negated policy term does not count.
    assert custom.scores("there are no free gems here")["scam"] < 0.8
