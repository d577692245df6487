"""The interfaces every analyzer implements.

Analyzers are synchronous and CPU-bound: the pipeline calls them off the event loop with
``asyncio.to_thread``. Each one loads its weights from an installed package, never from the network,
and declares a rough cost so a scheduler can plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from livesafe.core.events import AudioChunk, Signal, Transcript, VideoSample


@dataclass(frozen=True, slots=True)
class AnalyzerCost:
    """Rough CPU cost on one core, for planning (:mod:`livesafe.analyzers.capacity`).

    ``per_call_s`` is paid on every call (a frame, an utterance); ``per_media_s`` per second of media the
    analyzer covers, whatever the number of calls (speech recognition grows with the voiced seconds).
    An analyzer's load per media second is ``per_call_s * calls_per_s + per_media_s``.
    """

    per_call_s: float
    per_media_s: float = 0.0


class ModelUnavailableError(RuntimeError):
    """A model's packaged weights are missing or cannot be loaded; the message names the package."""


@runtime_checkable
class VisionAnalyzer(Protocol):
    """Scores sampled frames. An analyzer may also declare ``sample_fps: float | None`` (see
    :func:`sample_fps`): the rate, in frames per media second, at which it must see frames; without it (or
    None) it sees the stream's own, possibly adaptive, rate."""

    name: str
    categories: tuple[str, ...]
    cost: AnalyzerCost

    def analyze(self, sample: VideoSample) -> list[Signal]: ...


@runtime_checkable
class SpeechRecognizer(Protocol):
    name: str
    cost: AnalyzerCost

    def transcribe(self, chunk: AudioChunk) -> list[Transcript]: ...


@runtime_checkable
class TextAnalyzer(Protocol):
    name: str
    categories: tuple[str, ...]
    cost: AnalyzerCost

    def scores(self, text: str) -> dict[str, float]: ...

    def analyze(self, transcript: Transcript) -> list[Signal]: ...
