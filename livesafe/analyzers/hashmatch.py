"""Known-bad media matching: PDQ perceptual hashes of sampled frames against hash lists.

`PDQ <https://github.com/facebook/ThreatExchange/tree/main/pdq>`_ is Meta's 256-bit perceptual image
hash, the one shared through ThreatExchange and matched by Hasher-Matcher-Actioner (HMA). Two images are
"the same" when the Hamming distance of their hashes is small: 31 bits or fewer is the threshold that
ThreatExchange and HMA use by default. Each hash comes with a quality in [0, 100]; frames below about 50
(flat, blank or nearly featureless) give unreliable hashes and are not matched.

Hash lists are files in one of two formats (see :class:`HashList`):

* plain text: one 64-hex-digit PDQ hash per line, optionally followed by ``,label``; blank lines and
  ``#`` comments are ignored;
* CSV with a header naming its columns, as exported by HMA or ThreatExchange tooling: the hash column is
  one of :data:`HASH_COLUMNS` (``signal_value``, ``hash``, ``pdq``...), an optional type column
  (:data:`TYPE_COLUMNS`, e.g. ``signal_type``) keeps only PDQ rows, and an optional id column
  (:data:`LABEL_COLUMNS`, e.g. ``id``) names each hash.

Hashes are compared as text the way ``Hash256::format()`` writes them (16-bit words from the highest
down, big-endian), which is exactly ``numpy.packbits`` of the bit vector ``pdqhash.compute`` returns.

Matching is brute force, vectorised with numpy: the frame hash is XORed against every listed hash packed
as four ``uint64`` words and the set bits counted with ``numpy.bitwise_count``: about 0.03 ms per
thousand listed hashes (0.2 ms for 10,000, 2 ms for 100,000 on a 2-core x86 VM), small beside hashing
the frame. Lists of millions of hashes would want an index (e.g. FAISS or multi-index hashing).

:class:`HashMatcher` is a :class:`~livesafe.analyzers.base.VisionAnalyzer`. For each category it emits at
most one signal per frame, for the nearest listed hash of that category within ``max_distance``, with

    score = 1 - 0.5 * distance / (max_distance + 1)

so an exact match scores 1.0 and a match at the threshold scores just above 0.5; the score falls
monotonically with the distance. Non-matching and low-quality frames emit nothing: a hash list is
evidence of presence only, never of absence.

Lists can be updated while the service runs: :meth:`HashMatcher.reload` re-reads the files whose
modification time or size changed and swaps the whole index in one assignment, so ``analyze`` calls
running in worker threads see either the old index or the new one, never a mix.
"""

from __future__ import annotations

import csv
import importlib
import io
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from livesafe.analyzers.base import AnalyzerCost, ModelUnavailableError
from livesafe.analyzers.vision import check_image
from livesafe.core.events import CATEGORIES, Signal, VideoSample

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "DEFAULT_MIN_QUALITY",
    "HASH_COLUMNS",
    "LABEL_COLUMNS",
    "TYPE_COLUMNS",
    "HashList",
    "HashListError",
    "HashMatcher",
    "Match",
    "hamming_distance",
    "pdq_hash",
]

#: ThreatExchange / HMA default PDQ match threshold, in bits of 256.
DEFAULT_MAX_DISTANCE = 31
#: Frames whose PDQ quality is below this are not matched (ThreatExchange's recommended floor).
DEFAULT_MIN_QUALITY = 50

#: Accepted names (case-insensitive) of the hash column of a CSV list, in order of preference.
HASH_COLUMNS: tuple[str, ...] = ("pdq", "pdq_hash", "signal_value", "hash", "hash_value", "indicator")
#: Accepted names of the signal-type column; when present, only rows whose type is in PDQ_TYPES are kept.
TYPE_COLUMNS: tuple[str, ...] = ("signal_type", "hash_type", "indicator_type", "type")
#: Type values (case-insensitive) that mean PDQ.
PDQ_TYPES: frozenset[str] = frozenset({"pdq", "hash_pdq", "pdq_hash", "pdqsignal"})
#: Accepted names of the column naming each hash (the ``match_id`` of a signal), in order of preference.
LABEL_COLUMNS: tuple[str, ...] = (
    "match_id",
    "label",
    "id",
    "signal_id",
    "content_id",
    "bank_content_id",
    "indicator_id",
    "descriptor_id",
)
#: Hash column names that hold only PDQ hashes, so need no type column.
_PDQ_ONLY_COLUMNS = frozenset({"pdq", "pdq_hash"})

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")

Packed = npt.NDArray[np.uint64]
"""Hashes packed as (n, 4) ``uint64`` words (byte order irrelevant: only XOR and popcount are used)."""


class HashListError(ValueError):
    """A hash list file cannot be read or parsed; the message names the file (and line)."""


def _load_pdqhash() -> Any:
    try:
        return importlib.import_module("pdqhash")
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelUnavailableError("package 'pdqhash' is not installed; pip install pdqhash") from exc


def pdq_hash(image: npt.NDArray[np.uint8]) -> tuple[str, int]:
    """The PDQ hash (64 lowercase hex digits, ``Hash256::format()`` order) and quality of an RGB image."""
    bits, quality = _load_pdqhash().compute(check_image(image))
    packed = np.packbits(np.asarray(bits, dtype=np.uint8))
    return packed.tobytes().hex(), int(quality)


def _pack(hashes: Sequence[str]) -> Packed:
    raw = b"".join(bytes.fromhex(h) for h in hashes)
    return np.frombuffer(raw, dtype=np.uint64).reshape(len(hashes), 4).copy()


def hamming_distance(a: str, b: str) -> int:
    """Hamming distance of two 64-hex-digit PDQ hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass(frozen=True, slots=True)
class Match:
    """The nearest listed hash to a frame's hash."""

    list_name: str
    category: str
    match_id: str
    distance: int


@dataclass(frozen=True, slots=True)
class _FileStamp:
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: Path) -> _FileStamp:
        st = path.stat()
        return cls(st.st_mtime_ns, st.st_size)


class HashList:
    """The PDQ hashes of one list file, with a label per hash, all reported under one ``category``.

    ``category`` is required and must be one of :data:`livesafe.core.events.CATEGORIES`: a list of known
    child-abuse imagery, terrorist content or non-consensual imagery maps to whichever category the
    deployment's policy should act on. ``name`` defaults to the file's stem.

    ``format`` is ``"text"``, ``"csv"`` or ``"auto"``: a ``.csv`` file is CSV; otherwise a file whose
    first non-comment line looks like a CSV header (not a hash, and several comma-separated columns or
    a lone hash column name) is CSV and any other file is plain text.
    Instances are immutable; :meth:`refreshed` gives a new one when the file changed.
    """

    __slots__ = ("_hashes", "_packed", "category", "format", "labels", "name", "path", "stamp")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        category: str,
        name: str | None = None,
        format: str = "auto",
    ) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}: expected one of {', '.join(CATEGORIES)}")
        if format not in ("auto", "text", "csv"):
            raise ValueError(f"format must be 'auto', 'text' or 'csv', got {format!r}")
        self.path = Path(path)
        self.category = category
        self.name = name if name is not None else self.path.stem
        self.format = format
        try:
            self.stamp = _FileStamp.of(self.path)
            text = self.path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise HashListError(f"{self.path}: cannot read hash list: {exc}") from exc
        hashes, labels = _parse(self.path, text, format)
        self._hashes: tuple[str, ...] = tuple(hashes)
        self.labels: tuple[str, ...] = tuple(labels)
        self._packed = _pack(self._hashes)

    @property
    def hashes(self) -> tuple[str, ...]:
        """The hashes, lowercase hex, in file order."""
        return self._hashes

    @property
    def packed(self) -> Packed:
        """The hashes as an (n, 4) ``uint64`` array (read-only view)."""
        view = self._packed.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return len(self._hashes)

    def __repr__(self) -> str:
        return (
            f"HashList(name={self.name!r}, category={self.category!r}, "
            f"hashes={len(self)}, path={str(self.path)!r})"
        )

    def changed(self) -> bool:
        """Whether the file's modification time or size differs from when it was read (or it is gone)."""
        try:
            return _FileStamp.of(self.path) != self.stamp
        except OSError:
            return True

    def refreshed(self) -> HashList:
        """This list if its file is unchanged, else the file read again (HashListError if unreadable)."""
        if not self.changed():
            return self
        return HashList(self.path, category=self.category, name=self.name, format=self.format)


def _parse(path: Path, text: str, format: str) -> tuple[list[str], list[str]]:
    if format == "auto":
        format = "csv" if path.suffix.lower() == ".csv" else _sniff(text)
    if format == "csv":
        return _parse_csv(path, text)
    return _parse_text(path, text)


def _sniff(text: str) -> str:
    for line in text.splitlines():
        content = line.split("#", 1)[0].strip()
        if content:
            first = content.split(",", 1)[0].strip().strip('"')
            if _HEX64.fullmatch(first):
                return "text"
            # a header: several columns, or a lone known hash column; else a plain list with a bad line
            return "csv" if "," in content or first.lower() in HASH_COLUMNS else "text"
    return "text"


def _check_hash(path: Path, lineno: int, value: str) -> str:
    value = value.strip()
    if not _HEX64.fullmatch(value):
        raise HashListError(f"{path}:{lineno}: not a PDQ hash (64 hex digits): {value[:80]!r}")
    return value.lower()


def _parse_text(path: Path, text: str) -> tuple[list[str], list[str]]:
    hashes: list[str] = []
    labels: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        value, _, label = content.partition(",")
        hashes.append(_check_hash(path, lineno, value))
        labels.append(label.strip() or f"{path.stem}:{lineno}")
    return hashes, labels


def _column(header: list[str], names: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _parse_csv(path: Path, text: str) -> tuple[list[str], list[str]]:
    reader = csv.reader(io.StringIO(text), strict=True)
    header: list[str] | None = None
    hash_col = type_col = label_col = None
    hashes: list[str] = []
    labels: list[str] = []
    try:
        for row in reader:
            if not any(f.strip() for f in row) or row[0].lstrip().startswith("#"):
                continue
            lineno = reader.line_num
            if header is None:
                header = row
                hash_col = _column(header, HASH_COLUMNS)
                if hash_col is None:
                    raise HashListError(
                        f"{path}: no PDQ hash column in the CSV header {header!r}; "
                        f"expected one of {', '.join(HASH_COLUMNS)}"
                    )
                pdq_only = header[hash_col].strip().lower() in _PDQ_ONLY_COLUMNS
                type_col = None if pdq_only else _column(header, TYPE_COLUMNS)
                label_col = _column(header, LABEL_COLUMNS)
                continue
            assert hash_col is not None
            if type_col is not None:
                kind = row[type_col].strip().lower() if type_col < len(row) else ""
                if kind not in PDQ_TYPES:
                    continue
            if hash_col >= len(row):
                raise HashListError(f"{path}:{lineno}: row has no {header[hash_col]!r} field")
            hashes.append(_check_hash(path, lineno, row[hash_col]))
            label = row[label_col].strip() if label_col is not None and label_col < len(row) else ""
            labels.append(label or f"{path.stem}:{lineno}")
    except csv.Error as exc:
        raise HashListError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from exc
    return hashes, labels


@dataclass(frozen=True, slots=True)
class _Index:
    """All hashes of all lists of one category, concatenated (immutable once built)."""

    category: str
    packed: Packed
    list_of: npt.NDArray[np.intp]
    row_of: npt.NDArray[np.intp]
    lists: tuple[HashList, ...]

    @classmethod
    def build(cls, category: str, lists: Sequence[HashList]) -> _Index:
        mine = tuple(hl for hl in lists if hl.category == category)
        sizes = [len(hl) for hl in mine]
        packed = np.concatenate([hl.packed for hl in mine]) if mine else np.zeros((0, 4), np.uint64)
        list_of = np.repeat(np.arange(len(mine), dtype=np.intp), sizes)
        row_of = np.concatenate([np.arange(n, dtype=np.intp) for n in sizes])
        return cls(category, packed, list_of, row_of, mine)

    def nearest(self, query: Packed) -> Match | None:
        if len(self.packed) == 0:
            return None
        distances = np.bitwise_count(np.bitwise_xor(self.packed, query)).sum(axis=1)
        best = int(np.argmin(distances))
        hl = self.lists[int(self.list_of[best])]
        return Match(hl.name, self.category, hl.labels[int(self.row_of[best])], int(distances[best]))


class HashMatcher:
    """A :class:`~livesafe.analyzers.base.VisionAnalyzer` matching frames against PDQ hash lists.

    ``analyze`` may run in several threads at once and concurrently with :meth:`reload`.
    """

    name = "vision.pdq"
    #: One frame on one thread: pdqhash on a 720p frame (~24 ms on a 2-core x86 VM; ~47 ms at 1080p)
    #: plus matching (~0.2 ms per 10,000 listed hashes).
    cost = AnalyzerCost(per_call_s=0.025)

    def __init__(
        self,
        lists: Sequence[HashList],
        max_distance: int = DEFAULT_MAX_DISTANCE,
        min_quality: int = DEFAULT_MIN_QUALITY,
    ) -> None:
        if not lists:
            raise ValueError("HashMatcher needs at least one HashList")
        if not 0 <= max_distance < 256:
            raise ValueError(f"max_distance must be in [0, 255], got {max_distance}")
        if not 0 <= min_quality <= 100:
            raise ValueError(f"min_quality must be in [0, 100], got {min_quality}")
        names = [hl.name for hl in lists]
        if len(set(names)) != len(names):
            raise ValueError(f"hash list names must be unique, got {names}")
        self.max_distance = max_distance
        self.min_quality = min_quality
        self.categories: tuple[str, ...] = tuple(sorted({hl.category for hl in lists}))
        _load_pdqhash()  # fail at construction, not on the first frame
        self._reload_lock = threading.Lock()
        self._state: tuple[tuple[HashList, ...], tuple[_Index, ...]] = self._build(tuple(lists))

    def _build(self, lists: tuple[HashList, ...]) -> tuple[tuple[HashList, ...], tuple[_Index, ...]]:
        return lists, tuple(_Index.build(c, lists) for c in self.categories)

    @property
    def lists(self) -> tuple[HashList, ...]:
        """The lists now in use."""
        return self._state[0]

    def __len__(self) -> int:
        """Number of hashes now in use, over all lists."""
        return sum(len(hl) for hl in self.lists)

    def reload(self) -> list[str]:
        """Re-read the lists whose files changed; return their names.

        All changed files are read first; if any cannot be read or parsed, HashListError is raised and
        the index in use is left as it was. Otherwise the new index replaces the old in one assignment.
        """
        with self._reload_lock:
            old = self.lists
            new = tuple(hl.refreshed() for hl in old)
            changed = [n.name for o, n in zip(old, new, strict=True) if n is not o]
            if changed:
                self._state = self._build(new)
            return changed

    def match(self, image: npt.NDArray[np.uint8]) -> tuple[list[Match], int, str]:
        """Matches within ``max_distance`` (nearest per category), the frame's quality and PDQ hash.

        A frame below ``min_quality`` has no matches.
        """
        digest, quality = pdq_hash(image)
        if quality < self.min_quality:
            return [], quality, digest
        query = _pack([digest])
        _, indexes = self._state  # one read: the whole of one index generation
        found = [m for idx in indexes if (m := idx.nearest(query)) is not None]
        return [m for m in found if m.distance <= self.max_distance], quality, digest

    def score(self, distance: int) -> float:
        """``1 - 0.5 * distance / (max_distance + 1)``: 1.0 for an exact match, above 0.5 within range."""
        return 1.0 - 0.5 * distance / (self.max_distance + 1)

    def analyze(self, sample: VideoSample) -> list[Signal]:
        """One signal per category with a listed hash within ``max_distance`` of the frame's hash."""
        matches, quality, digest = self.match(sample.image)
        return [
            Signal(
                stream_id=sample.stream_id,
                media_ts=sample.media_ts,
                category=m.category,
                score=self.score(m.distance),
                analyzer=self.name,
                end_ts=sample.media_ts,
                evidence={
                    "list": m.list_name,
                    "match_id": m.match_id,
                    "distance": m.distance,
                    "quality": quality,
                    "pdq": digest,
                    "frame": sample.index,
                },
            )
            for m in matches
        ]
