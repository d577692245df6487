"""Undoing the spelling tricks people use to slip past filters, before the text classifier reads a text.

``k1ll 4ll mu5lims``, ``k i l l  t h e m``, ``immigrantsarevermin``, ``muslms``, ``transgnder``: a model
reading word pieces and rules matching words both miss these. :class:`Deobfuscator` rewrites a lower-cased
text token by token, conservatively (a token it cannot improve stays as it was):

* **leetspeak**: a token mixing letters with ``0 1 3 4 5 7 @ $ !`` is read with those as letters (``0``->o,
  ``1``->i, ``3``->e, ``4``->a, ``5``->s, ``7``->t, ``@``->a, ``$``->s, ``!``->i) when that gives a known word
  (or known words run together); numbers (``2024``, ``5pm``, ``1v1``) are left alone;
* **spaced letters**: three or more single letters in a row (``k i l l``, ``k.i.l.l``) are joined, and split
  into known words if they are several;
* **words run together**: a token of 8 or more letters that is not a word is split into known words when
  it splits exactly (no letter changed) and one of them is a *key term*;
* **one letter off**: a token of 4 or more letters that is not a word, one edit (a letter dropped, added,
  changed, or two swapped) from a key term, becomes that term (the most common one if several).

Known words: SymSpell's English frequency dictionary (82,765 words, shipped in ``symspellpy``, MIT).
Key terms: :data:`KEY_TERMS` (violent verbs, dehumanising words, groups, slurs) and the words of the
classifier's group, identity-term and slur patterns (``data/text_patterns.yaml``), so only the words that
decide a category are produced by a correction, never a streamer's slang or a game's name corrected into
something else; a policy's own terms are never changed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from livesafe.analyzers.base import ModelUnavailableError

#: Words a correction may produce besides those of the patterns: groups, slurs and violent or
#: dehumanising words that the patterns spell with regex pieces the extraction cannot read whole.
KEY_TERMS: tuple[str, ...] = (
    "kill", "murder", "shoot", "stab", "strangle", "slaughter", "behead", "execute", "torture", "burn",
    "lynch", "hang", "gas", "exterminate", "eradicate", "eliminate", "massacre", "rape", "bomb", "attack",
    "beat", "hurt", "hate", "despise", "abhor", "loathe", "detest", "disgusting", "vermin", "rats",
    "cockroaches", "parasites", "animals", "savages", "subhuman", "filth", "scum", "trash", "garbage",
    "plague", "disease", "cancer", "pigs", "apes", "monkeys", "dogs", "women", "woman", "girls", "men",
    "gays", "gay", "lesbians", "lesbian", "trans", "transgender", "muslims", "muslim", "jews", "jewish",
    "immigrants", "immigrant", "migrants", "refugees", "foreigners", "blacks", "black", "disabled",
    "retarded", "retards", "cripples", "homosexuals", "queers", "faggots", "niggers", "kikes", "spics",
    "trannies", "dykes", "chinks", "wetbacks", "people",
)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "!": "i"})
_LEET_CHARS = frozenset("013457@$!")
_TOKEN = re.compile(r"\S+")
_EDGE = re.compile(r"^([^\w@$]*)(.*?)([^\w@$!]*)$")
_SINGLE = re.compile(r"^[a-z]$")
_SPACED_DOTS = re.compile(r"\b(?:[a-z][.\-_*]){2,}[a-z]\b")
#: Run-together tokens shorter than this are left alone (too many short words split by chance).
MIN_GLUED = 8
#: Typos are corrected in tokens at least this long (a short token has too many neighbours).
MIN_TYPO = 4


def pattern_words(patterns: Iterable[str], min_len: int = 4) -> set[str]:
    """The plain words (runs of ``min_len``+ letters) that regex ``patterns`` spell out."""
    words: set[str] = set()
    for pattern in patterns:
        cleaned = re.sub(r"\\[bswdSWD]|\(\?[:!=<]*|[?*+{}\d,]", " ", pattern)
        words.update(w for w in re.findall(r"[a-z]+", cleaned) if len(w) >= min_len)
    return words


class Deobfuscator:
    """Token-by-token repair of obfuscated spellings (see the module docs). Thread-safe after loading."""

    def __init__(self, key_terms: Iterable[str] = (), keep: Iterable[str] = ()) -> None:
        """``key_terms``: words corrections may produce besides :data:`KEY_TERMS` (the words of the
        classifier's group, identity and slur patterns); ``keep``: words never changed (a policy's own
        terms, e.g. a brand)."""
        try:
            import symspellpy
            from symspellpy import SymSpell
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ModelUnavailableError("package 'symspellpy' is not installed") from exc
        self._spell = SymSpell(max_dictionary_edit_distance=1, prefix_length=7)
        dictionary = Path(symspellpy.__file__).parent / "frequency_dictionary_en_82_765.txt"
        if not self._spell.load_dictionary(str(dictionary), term_index=0, count_index=1):
            raise ModelUnavailableError(f"symspellpy's dictionary {dictionary} could not be read")
        kept = {w for t in keep for w in t.lower().split()}
        self.words: frozenset[str] = frozenset(self._spell.words) | kept
        # Pattern words are regex pieces too ("nigg", "trann"): only whole dictionary words count.
        self.key_terms: frozenset[str] = frozenset(KEY_TERMS) | {
            t for t in key_terms if t.isalpha() and t in self._spell.words}
        self._keys = SymSpellIndex(self.key_terms, self._spell.words)
        self._lock = threading.Lock()

    def known(self, word: str) -> bool:
        return word in self.words or word in self.key_terms

    def __call__(self, text: str) -> str:
        """``text`` (lower-case) with obfuscated tokens repaired; unchanged where nothing applies."""
        text = _SPACED_DOTS.sub(lambda m: re.sub(r"[.\-_*]", " ", m.group(0)), text)
        tokens = text.split(" ")
        out: list[str] = []
        i = 0
        while i < len(tokens):
            j = i
            while j < len(tokens) and _SINGLE.match(tokens[j]):
                j += 1
            if j - i >= 3:  # spaced letters: k i l l
                out.append(self._spaced(tokens[i:j]))
                i = j
                continue
            out.append(self._token(tokens[i]))
            i += 1
        return " ".join(out)

    def _spaced(self, letters: list[str]) -> str:
        """Single letters in a row, joined when they spell a word (or words with a key term among them)."""
        joined = "".join(letters)
        if self.known(joined) and len(joined) >= 3:
            return joined
        split = self._segment(joined)
        return split if split is not None else " ".join(letters)  # "u r a ...": chat shorthand, kept

    def _token(self, token: str) -> str:
        m = _EDGE.match(token)
        if m is None or not m.group(2):
            return token
        lead, core, trail = m.groups()
        if self.known(core) or not core:
            return token
        fixed = self._repair(core)
        return lead + fixed + trail if fixed is not None else token

    def _repair(self, core: str) -> str | None:
        if any(c in _LEET_CHARS for c in core) and any(c.isalpha() for c in core):
            if core.isdigit() or re.fullmatch(r"\d+(?:st|nd|rd|th|s|pm|am|k|v\d+|x\d*|d|h|m)?", core):
                return None
            plain = core.translate(_LEET)
            if not plain.isalpha():
                return None
            if self.known(plain):
                return plain
            return self._segment(plain) or self._typo(plain)
        if not core.isalpha():
            return None
        typo = self._typo(core)  # one letter off a key term first: "imigrants" is not "i migrants"
        if typo is not None or len(core) < MIN_GLUED:
            return typo
        return self._segment(core)

    def _segment(self, letters: str) -> str | None:
        """``letters`` split exactly into known words, one of them a key term (else None)."""
        with self._lock:  # SymSpell's segmentation keeps per-call state
            result = self._spell.word_segmentation(letters, max_edit_distance=0)
        words = result.corrected_string.split()
        if len(words) < 2 or "".join(words) != letters:
            return None
        if not all(self.known(w) and (len(w) > 1 or w in ("a", "i")) for w in words):
            return None
        if not any(w in self.key_terms for w in words):
            return None
        return " ".join(words)

    def _typo(self, word: str) -> str | None:
        if len(word) < MIN_TYPO:
            return None
        return self._keys.closest(word)


class SymSpellIndex:
    """Nearest key term within one edit (Damerau: drop, add, change, swap), by deletes (SymSpell's trick)."""

    def __init__(self, terms: Iterable[str], counts: Mapping[str, int] | None = None) -> None:
        """``counts``: how common each term is; of several terms one edit away, the most common wins."""
        self._counts = counts or {}
        self._by_delete: dict[str, set[str]] = {}
        for term in terms:
            for variant in {term, *_deletes(term)}:
                self._by_delete.setdefault(variant, set()).add(term)

    def closest(self, word: str) -> str | None:
        found: set[str] = set()
        for variant in {word, *_deletes(word)}:
            found |= self._by_delete.get(variant, set())
        close = sorted((t for t in found if t != word and _damerau1(word, t)),
                       key=lambda t: (-self._counts.get(t, 0), t))
        return close[0] if close else None


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _damerau1(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are exactly one edit apart (insert, delete, substitute, adjacent swap)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))
