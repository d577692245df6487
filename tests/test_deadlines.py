"""A live stream whose source stalls is still ticked at the core's next deadline: the restriction expires
and the lift reaches the sink, and the tick is part of the record, so replay stays exact."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import numpy as np

from livesafe.analyzers.registry import Analyzers
from livesafe.core.events import (
    Event,
    Intervention,
    InterventionLifted,
    MediaSample,
    Signal,
    Tick,
    VideoSample,
)
from livesafe.core.monitor import Monitor
from livesafe.core.policy import load_policy
from livesafe.ingest.source import IngestStats
from livesafe.pipeline import StreamWorker
from livesafe.timeline.entries import SessionStart
from livesafe.timeline.replay import verify
from livesafe.timeline.sessions import new_session_id


class StallingSource:
    """Our own source interface: one frame at media time 0, then nothing (a stalled live feed) until
    closed."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self._stats = IngestStats()
        self.closed = asyncio.Event()

    @property
    def stats(self) -> IngestStats:
        return self._stats

    async def samples(self) -> AsyncIterator[MediaSample]:
        yield VideoSample(self.stream_id, 0.0, np.zeros((8, 8, 3), dtype=np.uint8))
        await self.closed.wait()

    def set_video_fps(self, fps: float) -> None:
        pass

    async def aclose(self) -> None:
        self.closed.set()


async def test_a_stalled_live_stream_still_lifts_an_expired_restriction() -> None:
    base = load_policy()
    tiers = tuple(dataclasses.replace(t, duration_s=1.0) if t.kind == "restrict" else t
                  for t in base.ladder.tiers)
    policy = dataclasses.replace(base, ladder=dataclasses.replace(base.ladder, tiers=tiers))
    session = new_session_id()
    seen: list[Event] = []
    lifted = asyncio.Event()

    async def sink(event: Event) -> None:
        seen.append(event)
        if isinstance(event, InterventionLifted):
            lifted.set()

    source = StallingSource("cam")
    worker = StreamWorker(source, Analyzers(), Monitor(policy), sink, adaptive=True, lanes=True,
                          session=session)
    task = asyncio.create_task(worker.run())
    try:
        for k in range(3):  # a threat heard right at the start: restrict (1 s) within the first second
            await worker._signal(Signal("cam", 0.1 * k, "threat", 1.0, "test", evidence={"text": "die"}))
        assert any(isinstance(e, Intervention) and e.action == "restrict" for e in seen)
        async with asyncio.timeout(10):
            await lifted.wait()  # no sample ever comes again: the worker's deadline timer ticks
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [lift] = [e for e in seen if isinstance(e, InterventionLifted)]
    assert lift.reason == "expired" and lift.session == session
    ticks = [e for e in seen if isinstance(e, Tick)]
    assert ticks and ticks[-1].media_ts >= 1.0  # the tick that lifted it, in media time past the expiry
    records = [SessionStart("cam", session, "stall", policy.name, policy.hash), *seen]
    report = verify(policy, records)
    assert report.exact, report.summary()
