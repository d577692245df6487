"""Several utterances in one Whisper window: the encoder's 30 s pass shared instead of repeated.

Whisper pads every input to a 30 s window, so its encoder (most of the compute on a small CPU) costs the
same for a 3 s utterance as for 28 s of speech. :func:`pack` lays utterances (of any streams, decoded in
the same language) end to end in windows of at most ``max_s`` seconds, with ``gap_s`` of silence between
them, so that one decode transcribes them all; :func:`split` hands each utterance back the segments and
words that fall in its own span, in its own time. Measured with tiny.en on one thread (8 espeak
utterances of ~3.4 s): 0.150 CPU s per second of speech one by one, 0.058 packed four to a window.

A word goes to the utterance whose span holds the middle of the word; one in a gap goes to the nearer
utterance if it is within ``GAP_SLACK_S`` of it (word times are approximate), and is dropped otherwise:
Whisper writes words into silence only when it hallucinates. A segment is cut at utterance boundaries;
each piece keeps the segment's decoding scores (no-speech probability, log-probability, compression
ratio), so the hallucination guards judge it as they would the whole segment. Pure functions, no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from livesafe.core.events import Word

__all__ = ["GAP_SLACK_S", "Pack", "pack", "split"]

#: How far into a gap a word may start or end and still belong to the utterance beside it.
GAP_SLACK_S = 0.3


@dataclass(frozen=True, slots=True)
class Pack:
    """One window: the samples of several utterances with silence between, and where each one lies."""

    samples: npt.NDArray[np.float32]
    #: Per utterance in the window: its index in the packed input, and its start and end (seconds).
    spans: tuple[tuple[int, float, float], ...]


def pack(
    utterances: Sequence[npt.NDArray[np.float32]], *, rate: int, max_s: float, gap_s: float
) -> list[Pack]:
    """Windows of consecutive utterances (in order), each at most ``max_s`` long with its gaps; an
    utterance longer than ``max_s`` gets a window of its own."""
    gap = np.zeros(round(gap_s * rate), dtype=np.float32)
    packs: list[Pack] = []
    parts: list[npt.NDArray[np.float32]] = []
    spans: list[tuple[int, float, float]] = []
    at = 0.0

    def close() -> None:
        nonlocal parts, spans, at
        if spans:
            packs.append(Pack(np.concatenate(parts[:-1]), tuple(spans)))  # without the trailing gap
        parts, spans, at = [], [], 0.0

    for i, samples in enumerate(utterances):
        length = len(samples) / rate
        if spans and at + length > max_s:
            close()
        spans.append((i, at, at + length))
        parts += [samples, gap]
        at += length + gap_s
    close()
    return packs


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of a decoded segment that belongs to one utterance (times from the start of the window)."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...]


def _owner(start: float, end: float, spans: Sequence[tuple[int, float, float]]) -> int | None:
    """The position in ``spans`` of the utterance a word or segment at ``start``-``end`` belongs to."""
    middle = (start + end) / 2
    best, distance = None, GAP_SLACK_S
    for k, (_, lo, hi) in enumerate(spans):
        if lo <= middle <= hi:
            return k
        d = lo - middle if middle < lo else middle - hi
        if d <= distance:
            best, distance = k, d
    return best


def split(
    segments: Sequence[tuple[float, float, str, Sequence[Word]]], window: Pack
) -> list[list[tuple[int, Piece]]]:
    """Per utterance of ``window`` (in the order of its spans), the pieces of ``segments`` (start, end,
    text, words; times from the start of the window) that belong to it, each with the index of the
    segment it came from, and times made relative to the utterance's own start."""
    out: list[list[tuple[int, Piece]]] = [[] for _ in window.spans]
    for index, (start, end, text, words) in enumerate(segments):
        if not words:
            k = _owner(start, end, window.spans)
            if k is not None:
                offset = window.spans[k][1]
                out[k].append((index, Piece(start - offset, end - offset, text, ())))
            continue
        groups: dict[int, list[Word]] = {}
        for word in words:
            k = _owner(word.start, word.end, window.spans)
            if k is not None:
                groups.setdefault(k, []).append(word)
        for k, group in sorted(groups.items()):
            offset = window.spans[k][1]
            shifted = tuple(replace(w, start=w.start - offset, end=w.end - offset) for w in group)
            piece_text = "".join(w.word for w in group).strip()
            out[k].append((index, Piece(shifted[0].start, shifted[-1].end, piece_text, shifted)))
    return out
