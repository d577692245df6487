"""Batching across streams: opportunistic batches, order, failures, bounds, shutdown, score invariance."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from livesafe.analyzers.batching import MicroBatcher


class Recorder:
    """A batch function that records the batches it ran and can be held closed by a gate."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError(f"negative item in {list(items)}")
        return [i * 10 for i in items]


async def test_lone_caller_is_not_held_back() -> None:
    fn = Recorder()
    async with MicroBatcher(fn, max_batch=8) as batcher:
        assert await batcher.submit(3) == 30
        assert await batcher.submit(4) == 40
    assert fn.batches == [[3], [4]]


async def test_calls_queued_while_a_batch_runs_share_the_next_one() -> None:
    fn = Recorder()
    fn.gate.clear()
    async with MicroBatcher(fn, max_batch=8) as batcher:
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.to_thread(fn.entered.wait, 5)  # batch [0] is running and held
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 12)]
        await asyncio.sleep(0.05)
        fn.gate.set()
        results = await asyncio.gather(first, *rest)
    assert results == [i * 10 for i in range(12)]
    assert fn.batches[0] == [0]
    assert fn.batches[1] == list(range(1, 9))  # capped at max_batch
    assert fn.batches[2] == list(range(9, 12))
    assert batcher.stats.largest == 8 and batcher.stats.items == 12


async def test_a_bad_item_fails_only_its_caller() -> None:
    fn = Recorder()
    fn.gate.clear()
    async with MicroBatcher(fn, max_batch=8) as batcher:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.to_thread(fn.entered.wait, 5)
        good = asyncio.create_task(batcher.submit(2))
        bad = asyncio.create_task(batcher.submit(-1))
        also_good = asyncio.create_task(batcher.submit(3))
        await asyncio.sleep(0.05)
        fn.gate.set()
        assert await first == 10
        assert await good == 20
        assert await also_good == 30
        with pytest.raises(ValueError, match="negative item"):
            await bad
    assert batcher.stats.failed == 1


async def test_close_cancels_waiting_callers_and_refuses_new_ones() -> None:
    fn = Recorder()
    fn.gate.clear()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=2)
    batcher.start()
    running = asyncio.create_task(batcher.submit(1))
    await asyncio.to_thread(fn.entered.wait, 5)
    queued = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    fn.gate.set()
    for task in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(RuntimeError, match="not running"):
        await batcher.submit(3)


async def test_the_queue_is_bounded() -> None:
    fn = Recorder()
    fn.gate.clear()
    async with MicroBatcher(fn, max_batch=1, max_pending=2) as batcher:
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(6)]
        await asyncio.to_thread(fn.entered.wait, 5)
        await asyncio.sleep(0.05)
        assert batcher._queue is not None and batcher._queue.qsize() <= 2
        fn.gate.set()
        assert await asyncio.gather(*tasks) == [i * 10 for i in range(6)]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="max_pending"):
        MicroBatcher(Recorder(), max_batch=8, max_pending=4)


@pytest.mark.models
async def test_text_from_several_streams_is_batched_and_scored_as_alone() -> None:
    from livesafe.analyzers.batching import BatchedTextAnalyzer, analyze_text
    from livesafe.analyzers.text import TextClassifier
    from livesafe.core.events import Transcript

    lines = ["I know where you live", "great game everyone", "all immigrants are criminals and rapists",
             "thanks for watching the stream", "I'm going to find you and hurt you"]
    transcripts = [Transcript(f"s{i}", float(t), float(t) + 1.5, text)
                   for t in range(3) for i, text in enumerate(lines)]
    alone = TextClassifier()
    expected = [alone.analyze(t) for t in transcripts]
    batched = BatchedTextAnalyzer(TextClassifier())
    async with batched:
        got = await asyncio.gather(*(analyze_text(batched, t) for t in transcripts))
    assert got == expected
    assert batched.batcher.stats.items == len(transcripts)
    assert batched.batcher.stats.largest > 1  # calls queued while a batch ran shared the next one
