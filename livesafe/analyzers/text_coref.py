"""Group pronouns resolved to the group they refer to, before the text classifier reads a text.

Hate is often said in two steps: "I met some Jews yesterday. They are all greedy rats." The second
sentence, read alone, names nobody, so neither the hate rules (which always name a group) nor the
target-aware weighing of the hate head (``text.NO_TARGET_WEIGHT``) can see who "they" are.
:class:`GroupReferences` rewrites a normalised text sentence by sentence: a sentence that names a group
(the ``GROUP`` macro of ``data/text_patterns.yaml``: "muslims", "the immigrants", "gay people", a slur...)
makes that group the current referent, and in a later sentence that names none, the plural pronouns
``they``, ``them``, ``these people``, ``those people``, ``such people`` become the group, and ``their``
its possessive. The last group named is carried out of the text, so that a stream's next utterance can
continue the reference (``TextClassifier.analyze`` remembers it for ``text.TARGET_MEMORY_S`` of media).

It is deliberately simple: the nearest preceding group wins, there is no gender or number agreement
beyond plural pronouns, and a sentence that names a group itself is left as it is. Resolution only ever
supplies a referent; a kind sentence about a group stays kind ("Muslims live next door. They are
lovely." reads "muslims are lovely").
"""

from __future__ import annotations

import re

__all__ = ["GroupReferences"]

#: Plural pronouns that refer to a group named before (possessive ``their`` handled apart).
_PRONOUN = re.compile(r"\b(?:they|them|these people|those people|such people|their)\b")
#: A sentence: text up to and including its end mark(s).
_SENTENCE = re.compile(r"[^.!?;]+[.!?;]*|[.!?;]+")
#: Leading words of a group mention that do not belong in the referent ("all the", "these", "some").
_DETERMINER = re.compile(
    r"^(?:(?:all the|all of the|all|the|these|those|that|this|every|each|any|some|a|an|one|more|most|no|"
    r"next|first|last|single|other|few|damn|fucking|dirty|filthy|stinking|local|little|old|young)\s+)+"
)


class _Substitute:
    """A pronoun match replaced by ``group`` (``their``: its possessive)."""

    def __init__(self, group: str) -> None:
        self.group = group

    def __call__(self, match: re.Match[str]) -> str:
        return f"{self.group}'s" if match.group(0) == "their" else self.group


class GroupReferences:
    """Resolves plural pronouns to the group named last (see the module docs).

    ``group`` matches a group mention in normalised text (the expanded ``GROUP`` macro).
    """

    def __init__(self, group: re.Pattern[str]) -> None:
        self._group = group

    def referent(self, normalized: str) -> str | None:
        """The last group the text names, without its determiners; None if it names none."""
        last = None
        for m in self._group.finditer(normalized):
            phrase = _DETERMINER.sub("", m.group(0).strip())
            if phrase:
                last = phrase
        return last

    def resolve(self, normalized: str, before: str | None = None) -> tuple[str, str | None]:
        """``normalized`` with group pronouns replaced by their referent, and the referent after it.

        ``before``: the group named last before this text (e.g. by the stream's previous utterance).
        """
        text, current, _own = self.resolve_named(normalized, before)
        return text, current

    def resolve_named(
        self, normalized: str, before: str | None = None
    ) -> tuple[str, str | None, str | None]:
        """:meth:`resolve`, and the last group the text itself names (:meth:`referent` of it), found in
        the same pass."""
        current, own = before, None
        out: list[str] = []
        for m in _SENTENCE.finditer(normalized):
            sentence = m.group(0)
            named = self.referent(sentence)
            if named is not None:
                current = own = named
            elif current is not None and _PRONOUN.search(sentence):
                sentence = _PRONOUN.sub(_Substitute(current), sentence)
            out.append(sentence)
        return "".join(out), current, own
