"""One outbox consumer: claim, hold back what is not its stream's turn, send heads, settle, back off.

The websocket gateway runs one per backend connection and each webhook endpoint runs one; only the way a
delivery is sent differs (``send``). Order per stream holds across consumers and processes: a delivery is
sent only as the head of its stream's outbox queue (every earlier one of its stream acknowledged); a
consumer that claimed a later one holds it back, counted against its ``max_in_flight``, until then.

The bookkeeping (what a consumer holds, what it holds back, who holds an entry when one consumer takes an
overdue entry over from another) is plain synchronous state, tested without sockets; :meth:`run` is the
loop that asks Redis and calls ``send``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping

import redis

from livesafe.interventions.outbox import Delivery, Outbox, reraise_swallowed_cancel

log = logging.getLogger(__name__)

Send = Callable[[Delivery], Awaitable[None]]


class OutboxConsumer:
    """A consumer of the outbox group named ``name``: holds at most ``max_in_flight`` deliveries (sent and
    unacknowledged, or held back), claims up to ``batch_size`` at a time once ``refill_at`` are free."""

    def __init__(
        self,
        outbox: Outbox,
        name: str,
        send: Send,
        *,
        max_in_flight: int = 100,
        batch_size: int = 20,
        refill_at: int | None = None,
        block_ms: int = 250,
        poll_s: float = 0.05,
        reconcile_s: float = 1.0,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        holders: MutableMapping[str, OutboxConsumer] | None = None,
    ) -> None:
        """``poll_s``: how often held-back deliveries are checked for their turn (an ack settled through
        :meth:`settle` wakes the loop at once; one made elsewhere cannot); ``reconcile_s``: how often a
        consumer at its limit asks Redis what it still holds. ``holders``: the registry (entry id ->
        consumer) shared by consumers of one process, so an entry taken over leaves its previous holder."""
        if max_in_flight < 1 or batch_size < 1:
            raise ValueError(f"max_in_flight and batch_size must be >= 1, got {max_in_flight}, {batch_size}")
        self.outbox = outbox
        self.name = name
        self.send = send
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.refill_at = refill_at or max(1, min(batch_size, max_in_flight // 2))
        self.block_ms = block_ms
        self.poll_s = poll_s
        self.reconcile_s = reconcile_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.holders: MutableMapping[str, OutboxConsumer] = holders if holders is not None else {}
        #: key (intervention_id or lift_id) -> outbox entry id, of deliveries held and not yet settled:
        #: sent, or claimed and held back (:attr:`deferred`) until they are the head of their stream's queue.
        self.in_flight: dict[str, str] = {}
        #: outbox entry id -> delivery claimed but not sent: an earlier one of its stream is unacknowledged.
        self.deferred: dict[str, Delivery] = {}
        #: Set whenever a held delivery is settled (or taken over): the loop may claim or send more.
        self.space = asyncio.Event()

    # -- bookkeeping (no I/O) ----------------------------------------------------------------------------

    @property
    def free(self) -> int:
        return self.max_in_flight - len(self.in_flight)

    def holds(self, key: str) -> bool:
        return key in self.in_flight

    def hold(self, entry_id: str, key: str) -> None:
        """This consumer holds the delivery now (taken over from another one that timed out)."""
        previous = self.holders.get(entry_id)
        if previous is not None and previous is not self:
            previous.forget(entry_id, key)
        self.holders[entry_id] = self
        self.in_flight[key] = entry_id

    def forget(self, entry_id: str, key: str) -> None:
        self.in_flight.pop(key, None)
        self.deferred.pop(entry_id, None)
        self.space.set()

    def claimed(self, deliveries: list[Delivery]) -> None:
        """Deliveries claimed from Redis: held, and held back until :meth:`judged` says send."""
        for delivery in deliveries:
            self.hold(delivery.entry_id, delivery.key)
            self.deferred[delivery.entry_id] = delivery

    def judged(self, deliveries: list[Delivery], verdicts: list[str]) -> list[Delivery]:
        """Redis's verdict on each held-back delivery (``send``, ``wait``, ``gone``): returns those to send
        now, in order; forgets those no longer held; keeps the others held back."""
        out = []
        for delivery, verdict in zip(deliveries, verdicts, strict=True):
            if self.deferred.get(delivery.entry_id) is not delivery:
                continue  # settled or taken over meanwhile
            if verdict == "send":
                del self.deferred[delivery.entry_id]
                out.append(delivery)
            elif verdict == "gone":
                if self.holders.get(delivery.entry_id) is self:
                    del self.holders[delivery.entry_id]
                self.forget(delivery.entry_id, delivery.key)
        return out

    def settle(self, entry_id: str, key: str) -> None:
        """The delivery was acknowledged (through any consumer): free the slot of whoever holds it."""
        holder = self.holders.pop(entry_id, None)
        if holder is not None:
            holder.forget(entry_id, key)
        self.forget(entry_id, key)

    def waits_for(self, stream_id: str) -> bool:
        """Whether a delivery of ``stream_id`` is held back here (an ack of that stream may free it)."""
        return any(d.message.stream_id == stream_id for d in self.deferred.values())

    def clear(self) -> None:
        """The consumer is going away: drop what it holds from the registry and from itself."""
        for entry in self.in_flight.values():
            if self.holders.get(entry) is self:
                del self.holders[entry]
        self.in_flight.clear()
        self.deferred.clear()

    # -- the loop -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and send until cancelled; Redis outages are waited out with backoff. ``send`` failing
        ends the loop with its exception (the transport decides what that means)."""
        delay = self.initial_backoff_s
        reconciled = time.monotonic()
        while True:
            self.space.clear()
            try:
                if self.deferred:
                    await self._send_heads(list(self.deferred.values()))
                deliveries: list[Delivery] = []
                if self.free >= self.refill_at:
                    deliveries = await self.outbox.claim(
                        self.name, count=min(self.batch_size, self.free),
                        block_ms=None if self.deferred else self.block_ms,
                    )
            except redis.RedisError as exc:
                reraise_swallowed_cancel()
                log.warning("outbox read failed for %s, retrying in %.1fs: %s", self.name, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            reraise_swallowed_cancel()
            delay = self.initial_backoff_s
            if deliveries:
                self.claimed(deliveries)
                await self._send_heads(deliveries)
                continue
            if self.free >= self.refill_at and not self.deferred:
                continue  # the read waited for news already
            try:
                async with asyncio.timeout(self.poll_s if self.deferred else self.reconcile_s):
                    await self.space.wait()
            except TimeoutError:
                pass
            if self.free < self.refill_at and time.monotonic() - reconciled >= self.reconcile_s:
                reconciled = time.monotonic()
                await self._reconcile()
                if self.free < self.refill_at:
                    await self._resend_overdue()

    async def _send_heads(self, deliveries: list[Delivery]) -> None:
        """Send those of ``deliveries`` that are the heads of their streams' queues, in order."""
        try:
            verdicts = await self.outbox.heads(self.name, deliveries)
        except redis.RedisError as exc:
            reraise_swallowed_cancel()  # they stay held back; the next check sends them
            log.warning("could not check the order of %s's deliveries: %s", self.name, exc)
            return
        reraise_swallowed_cancel()
        for delivery in self.judged(deliveries, verdicts):
            self.hold(delivery.entry_id, delivery.key)
            await self.send(delivery)

    async def _reconcile(self) -> None:
        """Forget held deliveries that Redis says this consumer no longer holds (acked elsewhere)."""
        try:
            held = await self.outbox.held(self.name, count=self.max_in_flight + self.batch_size)
        except redis.RedisError as exc:
            reraise_swallowed_cancel()
            log.warning("could not check %s's in-flight deliveries: %s", self.name, exc)
            return
        reraise_swallowed_cancel()
        for key, entry in list(self.in_flight.items()):
            if entry not in held:
                self.settle(entry, key)

    async def _resend_overdue(self) -> None:
        """At the limit, still resend what this consumer holds past the ack timeout."""
        try:
            deliveries = await self.outbox.reclaim_own(self.name, count=self.batch_size)
        except redis.RedisError as exc:
            reraise_swallowed_cancel()
            log.warning("could not resend %s's overdue deliveries: %s", self.name, exc)
            return
        reraise_swallowed_cancel()
        self.claimed(deliveries)
        await self._send_heads(deliveries)  # only heads are reclaimed: sent at once
