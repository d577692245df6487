"""TextClassifier on the real MiniLM weights, the shipped heads and alt-profanity-check."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from livesafe.analyzers.base import TextAnalyzer
from livesafe.analyzers.text import (
    DATA_DIR,
    GAME_CONTEXT_WEIGHT,
    NO_TARGET_WEIGHT,
    REJECTED_WEIGHT,
    REPORTED_WEIGHT,
    TARGET_MEMORY_S,
    TEXT_CATEGORIES,
    Calibrator,
    LinearHeads,
    TextClassifier,
    TextOptions,
    hate_context_weight,
    load_macro,
    load_rules,
    load_targets,
    match_rules,
    normalize,
)
from livesafe.analyzers.text_coref import GroupReferences
from livesafe.core.events import Transcript
from livesafe.core.policy import load_policy
from livesafe.eval.datasets import load_functional

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


#: Functional cases (text_functional.yaml) that the scorer before target awareness got wrong at the hate
#: floor (0.2): gaming talk and counter-speech at 0.29-0.46, implicit hate at 0.13.
GAMING_BELOW_FLOOR = (
    "gg we destroyed them, ez",
    "we destroyed them",
    "they are trash at this game, uninstall",
    "we slaughtered them in the last game",
    "get good, you are so bad at this",
)
COUNTER_BELOW_FLOOR = (
    "calling immigrants animals is disgusting",
    "saying jews control the media is an antisemitic conspiracy theory",
    "people who call gay people a disease are the real problem",
    "racism against black people has no place in this chat",
    "it is wrong to say that muslims are terrorists",
)
NEGATED_BELOW_FLOOR = (
    "not all muslims are terrorists, obviously",
    "jews do not control the media, that is a myth",
    "nobody here thinks black people are inferior",
)
IMPLICIT_AT_FLOOR = (
    "jews control the media",
    "immigrants are replacing us",
    "muslims should not be allowed in this country",
    "you can never trust a muslim",
    "every muslim is a terrorist waiting to happen",
)


@pytest.fixture(scope="module")
def hate_floor() -> float:
    cat = load_policy().category("hate")
    assert cat is not None
    return cat.floor


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


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("gg we destroyed them, ez", NO_TARGET_WEIGHT),
        ("fuck this game", NO_TARGET_WEIGHT),
        ("i will shoot you in the face", NO_TARGET_WEIGHT),
        ("immigrants are lazy", 1.0),
        ("the spics ruined this neighbourhood", 1.0),  # a slur is a target
        ("my cousin is gay", 1.0),
        ("gay people are not a disease", REJECTED_WEIGHT),
        ("calling immigrants animals is disgusting", REJECTED_WEIGHT),
        ("racism has no place in this chat", REJECTED_WEIGHT),
        # a frame, but the only verdict is the hateful claim itself
        ("people who think gay people are disgusting are right", 1.0),
        ("someone in chat wrote that immigrants are animals", REPORTED_WEIGHT),
        ("refugees are nothing but leeches", 1.0),  # "nothing but" is no negation
    ],
)
def test_hate_context_weight(text: str, weight: float) -> None:
    assert hate_context_weight(normalize(text), load_rules(), load_targets()) == pytest.approx(weight)


def test_functional_cases_are_not_training_seeds() -> None:
    """The functional tests are evaluation only: none of them is also a seed sentence."""
    doc = yaml.safe_load((DATA_DIR / "text_seeds.yaml").read_text(encoding="utf-8"))
    seeds = {normalize(t) for t in doc["benign"]}
    for cat in doc["categories"].values():
        seeds |= {normalize(t) for t in (*cat["positive"], *cat.get("negative", []))}
    for group in doc["templates"]["groups"]:
        for kind in ("hate", "benign"):
            seeds |= {normalize(t.format(group=group)) for t in doc["templates"][kind]}
    functional = {normalize(item[0]) for item in load_functional(DATA_DIR).items}
    assert not functional & seeds


def test_heads_calibrated_with_the_current_context_weights() -> None:
    """The hate calibrator is fitted on the weighed evidence: changing a weight means retraining."""
    section = LinearHeads.load().meta["calibration"]["hate"]
    assert section["context_weights"] == {
        "no_target": NO_TARGET_WEIGHT,
        "rejected": REJECTED_WEIGHT,
        "reported": REPORTED_WEIGHT,
    }


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
@pytest.mark.parametrize("text", GAMING_BELOW_FLOOR)
def test_gaming_trash_talk_is_below_the_hate_floor(clf: TextClassifier, hate_floor: float, text: str) -> None:
    assert clf.scores(text)["hate"] < hate_floor


@pytest.mark.models
@pytest.mark.parametrize("text", COUNTER_BELOW_FLOOR + NEGATED_BELOW_FLOOR)
def test_counter_speech_and_negated_hate_are_below_the_hate_floor(
    clf: TextClassifier, hate_floor: float, text: str
) -> None:
    assert clf.scores(text)["hate"] < hate_floor


@pytest.mark.models
@pytest.mark.parametrize("text", IMPLICIT_AT_FLOOR)
def test_implicit_hate_reaches_the_hate_floor(clf: TextClassifier, hate_floor: float, text: str) -> None:
    assert clf.scores(text)["hate"] >= hate_floor


@pytest.mark.models
def test_functional_tags_hold(clf: TextClassifier, hate_floor: float) -> None:
    """Per functionality, the share of cases right at the hate floor stays where it was measured."""
    data = load_functional(DATA_DIR)
    assert data.tags is not None
    scores = clf.scores_batch([item[0] for item in data.items])
    right: dict[str, list[bool]] = {}
    for tag, label, s in zip(data.tags, data.labels["hate"], scores, strict=True):
        right.setdefault(tag, []).append(bool(label) == (s["hate"] >= hate_floor))
    accuracy = {tag: sum(ok) / len(ok) for tag, ok in right.items()}
    assert sum(map(sum, right.values())) / len(data) >= 0.9, accuracy
    for tag in ("gaming_trash_talk", "profanity_untargeted", "threat_person", "dehumanisation"):
        assert accuracy[tag] == 1.0, (tag, accuracy)
    assert min(accuracy.values()) >= 0.6, accuracy


@pytest.mark.models
def test_analyze_batch_equals_analyze(clf: TextClassifier, scripts: dict[str, list[str]]) -> None:
    lines = [*scripts["threat"], *scripts["benign"], *IMPLICIT_AT_FLOOR, *GAMING_BELOW_FLOOR, ""]
    transcripts = [
        Transcript(stream_id=f"s{k % 3}", media_ts=float(k), end_ts=k + 1.5, text=text)
        for k, text in enumerate(lines)
    ]
    # Two fresh classifiers: analyze remembers each stream's last group mention, fed in the same order.
    batched, one_by_one = (TextClassifier(encoder=clf.encoder) for _ in range(2))
    batch = batched.analyze_batch(transcripts)
    assert len(batch) == len(transcripts)
    for transcript, signals in zip(transcripts, batch, strict=True):
        single = one_by_one.analyze(transcript)
        assert [(s.stream_id, s.media_ts, s.end_ts, s.category, s.evidence) for s in signals] == [
            (s.stream_id, s.media_ts, s.end_ts, s.category, s.evidence) for s in single
        ]
        assert [s.score for s in signals] == pytest.approx([s.score for s in single], abs=2e-4)
    assert clf.analyze_batch([]) == []


@pytest.mark.models
def test_a_pronoun_right_after_a_group_mention_refers_to_it(clf: TextClassifier, hate_floor: float) -> None:
    """Speech comes an utterance at a time: "They should all be deported." right after "Immigrants are
    animals." is about immigrants; the same words on their own name no group."""
    text = "They should all be deported."
    memory = TextClassifier(encoder=clf.encoder)

    def hate(stream: str, at: float, said: str) -> float:
        signals = memory.analyze(Transcript(stream_id=stream, media_ts=at, end_ts=at + 1.5, text=said))
        return max((s.score for s in signals if s.category == "hate"), default=0.0)

    assert clf.scores(text)["hate"] < hate_floor  # no memory in scores()
    assert hate("a", 0.0, text) < hate_floor
    assert hate("a", 5.0, "Immigrants are animals.") >= hate_floor
    assert hate("a", 8.0, text) >= hate_floor
    assert hate("b", 8.0, text) < hate_floor  # another stream
    assert hate("a", 8.0 + TARGET_MEMORY_S + 5.0, text) < hate_floor  # long after
    hate("a", 40.0, "the immigrants are arriving")
    memory.forget("a")
    assert hate("a", 41.0, text) < hate_floor
    assert hate("c", 0.0, "gg we destroyed them, ez") < hate_floor


def test_group_pronouns_resolve_to_the_group_named_last() -> None:
    refs = GroupReferences(load_macro("GROUP"))
    assert refs.resolve("i met some jews yesterday. they are all greedy rats.") == (
        "i met some jews yesterday. jews are all greedy rats.", "jews")
    # The referent comes from before the text, and a later mention replaces it.
    assert refs.resolve("these people should leave.", "refugees") == ("refugees should leave.", "refugees")
    text, last = refs.resolve("muslims are lovely. gay people too. they were so kind to me.")
    assert text.endswith("gay people were so kind to me.") and last == "gay people"
    # Possessive, and nothing to resolve without a referent.
    assert refs.resolve("their culture is backwards.", "refugees")[0] == "refugees's culture is backwards."
    untouched = "they took my loot. they are so bad."
    assert refs.resolve(untouched) == (untouched, None)


@pytest.mark.models
def test_a_hateful_claim_about_they_in_the_same_text_is_hate(clf: TextClassifier, hate_floor: float) -> None:
    assert clf.scores("I met some Jews yesterday. They are all greedy rats.")["hate"] >= hate_floor
    assert clf.scores("They are all greedy rats, the whole enemy team.")["hate"] < hate_floor
    assert clf.scores("My gay neighbours got married. They looked so happy.")["hate"] < hate_floor


@pytest.mark.models
def test_a_slur_aimed_at_someone_is_hate_but_its_mention_or_reclaiming_is_not(
    clf: TextClassifier, hate_floor: float
) -> None:
    for text in ("go home, wetback", "spics like you ruin everything", "he is such a tranny freak"):
        assert clf.scores(text)["hate"] >= hate_floor, text
    for text in ("i am a proud dyke and i will not apologise", "my nigga just got promoted!",
                 "someone in chat called me a tranny and i reported them"):
        assert clf.scores(text)["hate"] < hate_floor, text


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


# --- calls to violence against groups (threat rules designed on the ETHOS development half only) -----

#: Incitement written for these tests (not from ETHOS): each must reach the threat floor.
INCITEMENT = (
    "those refugees should all be shot",
    "kill them all, every last one of those migrants",
    "someone should put a bullet in every one of those people",
    "muslims deserve to die",
    "gay people must be wiped off the face of the earth",
    "exterminate the jews",
    "let's go lynch them tonight",
)
#: Game talk and counter-speech with the same verbs: each must stay below the threat floor.
VIOLENT_WORDS_NOT_THREATS = (
    "kill them all, the zombies are spawning",
    "let's kill them before they respawn",
    "someone should kill that sniper on the roof",
    "the other team deserves to die in overtime lol",
    "we beat the mexicans 3-1 in the final match",
    "kill them with kindness",
    "murder hornets should be exterminated",
    "people should never be shot for protesting",
    "saying immigrants should be shot is disgusting",
    "he said they should all be killed, and I reported him",
)


@pytest.fixture(scope="module")
def threat_floor() -> float:
    cat = load_policy().category("threat")
    assert cat is not None
    return cat.floor


@pytest.mark.models
@pytest.mark.parametrize("text", INCITEMENT)
def test_calls_to_violence_reach_the_threat_floor(
    clf: TextClassifier, threat_floor: float, text: str
) -> None:
    assert clf.scores(text)["threat"] >= threat_floor


@pytest.mark.models
@pytest.mark.parametrize("text", VIOLENT_WORDS_NOT_THREATS)
def test_game_talk_and_counter_speech_stay_below_the_threat_floor(
    clf: TextClassifier, threat_floor: float, text: str
) -> None:
    assert clf.scores(text)["threat"] < threat_floor


def test_condemned_threat_is_dropped() -> None:
    rules = load_rules()
    assert "threat" in {h.category for h in match_rules(normalize("immigrants should be shot"), rules)}
    condemned = normalize("saying immigrants should be shot is disgusting")
    assert "threat" not in {h.category for h in match_rules(condemned, rules)}
