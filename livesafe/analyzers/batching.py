"""Batching across streams: one model pass for the work of several streams.

Streams share one set of analyzers (:class:`~livesafe.pipeline.Analyzers`). Where a model runs faster on
a batch than item by item, a :class:`MicroBatcher` collects the calls of every stream and runs them
together. Batching is *opportunistic*: nothing waits for a batch to fill. The runner takes everything
queued when it becomes free (up to ``max_batch``), so a lone stream sees no added latency, and under load
the batch grows by itself to the work that piled up while the previous batch ran.

Measured on a 2-core x86 VM (``make bench`` prints the current figures): the MiniLM text classifier scores
~57 texts/s one at a time and ~250 texts/s in batches of 32, so text analysis is batched. Open-NSFW on
ONNX Runtime with one thread gains nothing from batches (~22 images/s at batch sizes 1 to 16), so vision
stays per call. Speech is not batched as such (Whisper pads every utterance to a 30 s window, so a batch of
padded windows costs as much as its items one by one) but *packed*: :class:`BatchedSpeech` hands the
utterances queued from all streams to ``transcribe_batch``, which lays them end to end in shared windows
(:mod:`~livesafe.analyzers.speech_packing`): 8 utterances of ~3.4 s cost 2.4x less CPU than one by one.

Batch composition does not change a text score: the text classifier's scores of a text are the same
alone or in any batch (tested), so what a stream gets does not depend on what other streams send. A
packed utterance's transcript can differ a little from its transcript alone (Whisper reads it in the
company of the others; in our measurements as often better as worse), which is why decisions are
replayed from the transcripts the timeline records, never from re-transcribed audio.

The queue is bounded (``max_pending``): when it is full, callers wait for room (backpressure on the
stream's analysis lane, which itself drops or holds media by its own bounded policy). A batch that raises
is retried item by item, so one bad item fails only its own caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from livesafe.analyzers.base import AnalyzerCost, SpeechRecognizer, TextAnalyzer
from livesafe.core.events import AudioChunk, Signal, Transcript
from livesafe.tasks import cancel_and_wait

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "BatchStats", "Batched", "BatchedSpeech", "BatchedTextAnalyzer", "MicroBatcher", "analyze_text",
    "transcribe",
]


@dataclass(slots=True)
class BatchStats:
    """Counters of one batcher: batches run, items in them, the largest batch, failed items."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, float]:
        mean = self.items / self.batches if self.batches else 0.0
        return {"batches": self.batches, "items": self.items, "largest": self.largest,
                "mean_batch": round(mean, 2), "failed": self.failed}


class MicroBatcher(Generic[T, R]):
    """Runs ``fn`` on batches of items submitted by many tasks; ``fn`` runs off the event loop.

    ``fn(items)`` must return one result per item, in order. Use as an async context manager (or call
    :meth:`start` and :meth:`aclose`): the runner task belongs to the batcher and is cancelled on close;
    callers still waiting then get :class:`asyncio.CancelledError`.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        max_pending: int = 256,
        name: str = "batch",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_pending < max_batch:
            raise ValueError(f"max_pending ({max_pending}) must be >= max_batch ({max_batch})")
        self._fn = fn
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.name = name
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MicroBatcher[T, R]:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the runner on the running event loop (idempotent)."""
        if self._runner is not None:
            return
        self._queue = asyncio.Queue(maxsize=self.max_pending)
        self._runner = asyncio.create_task(self._run(), name=f"batcher-{self.name}")

    async def aclose(self) -> None:
        """Stop the runner; every call still queued is cancelled."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await cancel_and_wait(runner)
        queue, self._queue = self._queue, None
        while queue is not None and not queue.empty():
            _, future = queue.get_nowait()
            future.cancel()

    async def submit(self, item: T) -> R:
        """The result of ``fn`` for ``item``, computed in a batch with whatever else is queued."""
        if self._runner is None or self._queue is None:
            raise RuntimeError(f"batcher {self.name!r} is not running (use it as an async context manager)")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _run(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            live = [(item, future) for item, future in batch if not future.done()]
            if live:
                await self._execute(live)

    async def _execute(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        try:
            results = await asyncio.to_thread(self._fn, items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
        except asyncio.CancelledError:
            for _, future in batch:  # the batcher is closing: nobody is left waiting forever
                future.cancel()
            raise
        except Exception as exc:  # each caller gets the error of its own item, below
            if len(batch) == 1:
                self.stats.failed += 1
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            log.warning("%s: a batch of %d failed (%s); retrying item by item", self.name, len(items), exc)
            for one in batch:
                if not one[1].done():
                    await self._execute([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


class Batched(Generic[T, R]):
    """An analyzer whose calls from all streams go through one :class:`MicroBatcher` running its batch
    method (``method``: ``inner.method(items) -> one result per item``). Start and stop the batcher as an
    async context manager, or with ``batcher.start()`` and ``batcher.aclose()``."""

    def __init__(self, inner: Any, method: str, *, max_batch: int, max_pending: int) -> None:
        batch_fn: Callable[[Sequence[T]], Sequence[R]] | None = getattr(inner, method, None)
        if batch_fn is None:
            raise TypeError(f"{inner.name}: no {method}(), cannot batch it")
        self.inner = inner
        self.name: str = inner.name
        self.cost: AnalyzerCost = inner.cost
        self.batcher: MicroBatcher[T, R] = MicroBatcher(
            batch_fn, max_batch=max_batch, max_pending=max_pending, name=inner.name
        )

    async def __aenter__(self) -> Self:
        self.batcher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.batcher.aclose()


class BatchedTextAnalyzer(Batched[Transcript, list[Signal]]):
    """A text analyzer whose :meth:`analyze_async` calls from all streams share model passes.

    Wraps an analyzer with ``analyze_batch(transcripts) -> list[list[Signal]]`` (the
    :class:`~livesafe.analyzers.text.TextClassifier` has one). The plain :meth:`analyze` still works,
    unbatched, for callers outside an event loop.
    """

    inner: TextAnalyzer

    def __init__(self, inner: TextAnalyzer, *, max_batch: int = 32, max_pending: int = 256) -> None:
        super().__init__(inner, "analyze_batch", max_batch=max_batch, max_pending=max_pending)
        self.categories: tuple[str, ...] = inner.categories

    def scores(self, text: str) -> dict[str, float]:
        return self.inner.scores(text)

    def analyze(self, transcript: Transcript) -> list[Signal]:
        return self.inner.analyze(transcript)

    async def analyze_async(self, transcript: Transcript) -> list[Signal]:
        return await self.batcher.submit(transcript)


async def analyze_text(analyzer: TextAnalyzer, transcript: Transcript) -> list[Signal]:
    """Signals of ``transcript``: batched across streams where the analyzer supports it, else in a thread."""
    if isinstance(analyzer, BatchedTextAnalyzer):
        return await analyzer.analyze_async(transcript)
    return await asyncio.to_thread(analyzer.analyze, transcript)


class BatchedSpeech(Batched[AudioChunk, list[Transcript]]):
    """A speech recognizer whose :meth:`transcribe_async` calls from all streams share Whisper windows.

    Wraps a recognizer with ``transcribe_batch(chunks) -> list[list[Transcript]]`` (both Whisper
    backends have one: it packs the chunks into shared windows). Opportunistic like every
    :class:`MicroBatcher`: a lone stream's utterance is transcribed alone, as soon as the model is free.
    """

    inner: SpeechRecognizer

    def __init__(self, inner: SpeechRecognizer, *, max_batch: int = 16, max_pending: int = 64) -> None:
        super().__init__(inner, "transcribe_batch", max_batch=max_batch, max_pending=max_pending)
        #: What the session start records as this analyzer's model: the wrapped recognizer's class.
        self.model_id: str = type(inner).__name__

    def transcribe(self, chunk: AudioChunk) -> list[Transcript]:
        return self.inner.transcribe(chunk)

    async def transcribe_async(self, chunk: AudioChunk) -> list[Transcript]:
        return await self.batcher.submit(chunk)

    def forget(self, stream_id: str) -> None:
        """Drop what the wrapped recognizer keeps of a finished stream (its language)."""
        forget = getattr(self.inner, "forget", None)
        if forget is not None:
            forget(stream_id)


async def transcribe(recognizer: SpeechRecognizer, chunk: AudioChunk) -> list[Transcript]:
    """Transcripts of ``chunk``: packed with other streams' utterances where the recognizer is wrapped in
    :class:`BatchedSpeech`, else transcribed alone in a thread."""
    if isinstance(recognizer, BatchedSpeech):
        return await recognizer.transcribe_async(chunk)
    return await asyncio.to_thread(recognizer.transcribe, chunk)
