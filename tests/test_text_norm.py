"""Repair of obfuscated spellings before the text classifier (real dictionary, no model)."""

from __future__ import annotations

import pytest

from livesafe.analyzers.text_norm import Deobfuscator, pattern_words


@pytest.fixture(scope="module")
def fix() -> Deobfuscator:
    return Deobfuscator(keep=["Glock"])


@pytest.mark.parametrize(("text", "expected"), [
    ("k1ll 4ll mu5lims", "kill all muslims"),  # leetspeak
    ("i'm g0nna sh00t every j3w", "i'm gonna shoot every jew"),
    ("k i l l them all", "kill them all"),  # spaced letters
    ("k.i.l.l all gays", "kill all gays"),
    ("i h a t e j e w s", "i hate jews"),
    ("immigrantsarevermin", "immigrants are vermin"),  # run together
    ("muslms are the worst", "muslims are the worst"),  # a letter dropped
    ("i hate transgnder ppl", "i hate transgender ppl"),
    ("the d1sabled should be gassed", "the disabled should be gassed"),
    ("imigrants", "immigrants"),
    ("wmoen are trash", "women are trash"),  # two letters swapped
])
def test_obfuscated_spellings_are_repaired(fix: Deobfuscator, text: str, expected: str) -> None:
    assert fix(text) == expected


@pytest.mark.parametrize("text", [
    "gg ez noob", "see you at 5pm in 2024", "1v1 me bro", "fortnite is fun", "u r a loser", "a b c",
    "what a fantastic game lol", "go team!", "bring your glock", "top 10 plays of the week",
    "my k/d is 3.5", "lmaooo", "poggers", "the 90s were great", "ur so bad at this",
])
def test_ordinary_chat_is_left_alone(fix: Deobfuscator, text: str) -> None:
    assert fix(text) == text


def test_pattern_words_reads_the_words_of_regexes() -> None:
    words = pattern_words([r"\b(?:muslims?|jews?|black (?:people|folks?))\b", r"\bkill\s+{YOU}"])
    assert {"muslims", "people", "folks", "kill"} <= words and "you" not in words  # 4 letters or more
