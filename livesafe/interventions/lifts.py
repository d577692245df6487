"""Carrying the core's lifts (``intervention.lifted``) to the service's sink, in order per stream.

The stream worker forwards a :class:`~livesafe.core.monitor.Decision`'s interventions to its sink but not its
``lifted``, and a tick that only lifts (a restriction expired, risk fell) sinks nothing at all. The
:class:`RelayMonitor` handed to workers takes the lifts out of every decision (so a worker that also
forwards ``decision.lifted`` can never send one twice), and :class:`LiftRelay` delivers them: before any
later event of the same stream goes through the sink (so a stream's sequence stays in order), and by a
background task otherwise (so a lift on a calm stream is not held back until the next event).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from livesafe.core.events import InterventionLifted, Signal
from livesafe.core.monitor import Decision, Monitor
from livesafe.core.policy import Policy

log = logging.getLogger(__name__)

LiftSink = Callable[[InterventionLifted], Awaitable[None]]


class LiftRelay:
    """Queues lifts per stream and hands them to ``sink`` in order."""

    def __init__(self, sink: LiftSink) -> None:
        self._sink = sink
        self._pending: dict[str, deque[InterventionLifted]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()

    def push(self, lifts: tuple[InterventionLifted, ...]) -> None:
        for lift in lifts:
            self._pending.setdefault(lift.stream_id, deque()).append(lift)
        if lifts:
            self._wake.set()

    @contextlib.asynccontextmanager
    async def ordered(self, stream_id: str) -> AsyncIterator[None]:
        """Hold the stream's order: its queued lifts go first, then the caller's event, nothing between."""
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            await self._flush(stream_id)
            yield

    async def _flush(self, stream_id: str) -> None:
        queue = self._pending.get(stream_id)
        while queue:
            await self._sink(queue[0])
            queue.popleft()  # only once delivered: a failed sink keeps it for the next try
        self._pending.pop(stream_id, None)

    async def run(self) -> None:
        """Deliver queued lifts as they come, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            for stream_id in list(self._pending):
                try:
                    async with self.ordered(stream_id):
                        pass
                except Exception:  # storage down: keep them queued, retry on the next wake or event
                    log.exception("could not deliver the lifts of stream %s yet", stream_id)
                    await asyncio.sleep(1.0)
                    self._wake.set()

    def forget(self, stream_id: str) -> None:
        """The stream ended: drop its lock (its queued lifts, if any, are still delivered)."""
        if stream_id not in self._pending:
            self._locks.pop(stream_id, None)


class RelayMonitor(Monitor):
    """A :class:`Monitor` whose decisions' lifts go to a :class:`LiftRelay` instead of the caller."""

    def __init__(self, policy: Policy, relay: LiftRelay) -> None:
        super().__init__(policy)
        self.relay = relay

    def _relay(self, decision: Decision) -> Decision:
        if not decision.lifted:
            return decision
        self.relay.push(decision.lifted)
        return dataclasses.replace(decision, lifted=())

    def step(self, signal: Signal) -> Decision:
        return self._relay(super().step(signal))

    def tick(self, stream_id: str, media_ts: float) -> Decision:
        return self._relay(super().tick(stream_id, media_ts))
