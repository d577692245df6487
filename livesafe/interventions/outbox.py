"""The durable intervention outbox, a Redis Stream (what happened is recorded by :mod:`livesafe.timeline`).

``Outbox`` (``{prefix}:outbox``) is how decisions (interventions and their lifts, each acknowledged by
its key: ``intervention_id`` or ``lift_id``) reach the streaming backend at least once, even
across gateway restarts and backend disconnects. One consumer group (``{prefix}:gateway``) reads it;
each gateway connection is one consumer. An entry stays pending until the backend acks (or nacks)
it; an entry pending longer than ``redeliver_after_s`` is claimed again (``XPENDING IDLE`` +
``XCLAIM``: an ``XAUTOCLAIM`` that also reports delivery counts) and resent with its attempt
number. Acknowledged entries are deleted, so the stream holds only undelivered or unacknowledged
work and needs no trimming (trimming would silently drop pending interventions).

Order per stream: the publish script also appends the entry id to its stream's queue,
``{prefix}:outbox:q:{stream_id}`` (a list, oldest first; expiring with the markers, gone once empty), and
the ack script removes it. A consumer sends a delivery only while it is the head of its queue
(:meth:`Outbox.heads`), holding later ones back until then, and only heads are claimed again when
overdue, so the messages of one stream reach backends in publish order across consumers. Ids of entries
that left the outbox without an ack (deleted by hand) are dropped from the queue's head when found there;
an entry in no queue (published before queues existed) is never held back.

Publishing is idempotent by key: a marker key ``{prefix}:outbox:id:<key>`` (with a TTL) is set in the
same Lua script as the ``XADD``, so a retried publish never sends a decision twice, and the marker's
value (the entry id) lets ``ack`` find the entry by its key. Keys embed the stream's session (a new
broadcast of a stream id gets new ids), so only a true repeat is refused, and the caller logs it.

The outbox accepts clients with or without ``decode_responses``. Keys of one prefix are not given
a Redis Cluster hash tag; livesafe targets a single Redis server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.typing import StreamIdT

from livesafe.core.events import (
    Deliverable,
    Event,
    EventFormatError,
    Intervention,
    InterventionLifted,
    delivery_key,
    from_dict,
    to_dict,
)

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "livesafe"

# KEYS: marker, stream, the stream's queue. ARGV: key (intervention_id or lift_id), payload, ttl seconds,
# stream_id. The entry id also goes to the end of its stream's queue: the order deliveries are sent in.
_PUBLISH = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local entry = redis.call('XADD', KEYS[2], '*', 'key', ARGV[1], 'stream', ARGV[4], 'data', ARGV[2])
redis.call('SET', KEYS[1], entry, 'EX', tonumber(ARGV[3]))
redis.call('RPUSH', KEYS[3], entry)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
return entry
"""

# Shared by the scripts below: the first entry of queue ``q`` still in the outbox (KEYS[1]), dropping
# stale ids first (entries deleted by hand, or the whole outbox key); false for an empty queue. An
# entry is sendable when it is that head, or in no queue at all (published before queues existed, or
# its queue expired): nothing to keep it in order with.
_HEAD = """
local function head_of(q)
  while true do
    local h = redis.call('LINDEX', q, 0)
    if not h then return false end
    if #redis.call('XRANGE', KEYS[1], h, h) > 0 then return h end
    redis.call('LPOP', q)
  end
end
local function sendable(q, id)
  local h = head_of(q)
  return h == id or not redis.call('LPOS', q, id)
end
"""

# KEYS: stream. ARGV: group, consumer, queue key prefix, touch (1/0), then (entry id, stream_id) pairs.
# Per pair: 'gone' (no longer pending to this consumer: acked, or claimed by another), 'send' (the head
# of its stream's queue) or 'wait'. With touch, what is kept has its idle time reset (XCLAIM JUSTID:
# the delivery count is unchanged): a send starts its ack timeout now, and a held-back entry is not
# taken for overdue while its consumer is alive.
_HEADS = _HEAD + """
local out = {}
for i = 5, #ARGV, 2 do
  local id, q = ARGV[i], ARGV[3] .. ARGV[i + 1]
  if #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2]) == 0 then
    out[#out + 1] = 'gone'
  else
    out[#out + 1] = sendable(q, id) and 'send' or 'wait'
    if ARGV[4] == '1' then redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID') end
  end
end
return out
"""

# KEYS: stream. ARGV: group, consumer, min idle ms, count, queue key prefix, own (1/0), scan limit.
# Claims up to ``count`` entries pending longer than the min idle (``own``: only this consumer's) that
# are the heads of their streams' queues, scanning at most ``scan limit`` overdue entries; returns
# {entry id, delivery count after this claim, fields} for each. Pending entries no longer in the
# stream are acknowledged away.
_RECLAIM = _HEAD + """
local out, start, scanned = {}, '-', 0
local count, limit = tonumber(ARGV[4]), tonumber(ARGV[7])
while #out < count and scanned < limit do
  local page
  if ARGV[6] == '1' then
    page = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], start, '+', 100, ARGV[2])
  else
    page = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], start, '+', 100)
  end
  if #page == 0 then break end
  for _, p in ipairs(page) do
    scanned = scanned + 1
    local id = p[1]
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if #found == 0 then
      redis.call('XACK', KEYS[1], ARGV[1], id)
    else
      local fields, stream = found[1][2], false
      for j = 1, #fields, 2 do
        if fields[j] == 'stream' then stream = fields[j + 1] end
      end
      if not stream or sendable(ARGV[5] .. stream, id) then
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)
        out[#out + 1] = {id, p[4] + 1, fields}
        if #out >= count then break end
      end
    end
  end
  start = '(' .. page[#page][1]
end
return out
"""

# KEYS: stream. ARGV: group, queue key prefix, entry id. Drop an entry (unreadable): acknowledge and
# delete it, and take it out of its stream's queue.
_DROP = """
local found = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if #found > 0 then
  local fields = found[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'stream' then redis.call('LREM', ARGV[2] .. fields[i + 1], 1, ARGV[3]) end
  end
end
return #found
"""

# KEYS: marker, stream. ARGV: group, queue key prefix. Returns {status, payload, entry}: status 'ok',
# 'duplicate' or 'unknown'. The entry also leaves its stream's queue (the next one becomes the head).
_ACK = """
local entry = redis.call('GET', KEYS[1])
if not entry then return {'unknown', '', ''} end
local found = redis.call('XRANGE', KEYS[2], entry, entry)
redis.call('XACK', KEYS[2], ARGV[1], entry)
if #found == 0 then return {'duplicate', '', entry} end
redis.call('XDEL', KEYS[2], entry)
local fields, data = found[1][2], ''
for i = 1, #fields, 2 do
  if fields[i] == 'data' then data = fields[i + 1] end
  if fields[i] == 'stream' then redis.call('LREM', ARGV[2] .. fields[i + 1], 1, entry) end
end
return {'ok', data, entry}
"""


def reraise_swallowed_cancel() -> None:
    """Re-raise a cancellation of the current task that a library swallowed.

    redis-py sends commands through ``asyncio.wait_for``, which on Python 3.11 returns the result
    and drops a cancel that lands as the send completes (CPython gh-86296). The request is still
    counted by ``Task.cancelling()``, so code looping over Redis calls this to stay cancellable.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any] | None) -> dict[str, str]:
    return {_str(k): _str(v) for k, v in (raw or {}).items()}


def _dumps(event: Event) -> str:
    return json.dumps(to_dict(event), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message handed to one consumer: ``attempt`` is 1 on first delivery, 2 on the first resend..."""

    message: Deliverable
    entry_id: str
    attempt: int

    @property
    def key(self) -> str:
        """What the backend acknowledges: the ``intervention_id`` or the ``lift_id``."""
        return delivery_key(self.message)

    def wire(self, attempt: int | None = None) -> dict[str, Any]:
        """The message as sent to a backend (websocket or webhook), with ``delivery.attempt``: this
        delivery's, or ``attempt`` where the sender counts its own retries."""
        sent = self.attempt if attempt is None else attempt
        return {**to_dict(self.message), "delivery": {"attempt": sent}}

    @property
    def intervention(self) -> Intervention:
        """The message when it is an intervention; TypeError for a lift (use :attr:`message`, :attr:`key`)."""
        if not isinstance(self.message, Intervention):
            raise TypeError(f"delivery {self.key} is an {self.message.type}, not an intervention")
        return self.message


@dataclass(frozen=True, slots=True)
class AckResult:
    """What :meth:`Outbox.ack` did: ``status`` is ``ok``, ``duplicate`` (already acked) or ``unknown``.

    ``message`` is the acknowledged intervention or lift when ``status == "ok"``.
    """

    status: str
    message: Deliverable | None = None
    #: The outbox entry of the key (for ``ok`` and ``duplicate``): which delivery this settles.
    entry_id: str = ""


class Outbox:
    """Durable, idempotent, at-least-once outbox of interventions and lifts on ``{prefix}:outbox``."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        redeliver_after_s: float = 10.0,
        dedupe_ttl_s: int = 7 * 24 * 3600,
    ) -> None:
        if redeliver_after_s <= 0:
            raise ValueError(f"redeliver_after_s must be > 0, got {redeliver_after_s}")
        self.redis = redis_client
        self.key = f"{prefix}:outbox"
        self.group = f"{prefix}:gateway"
        self._marker_prefix = f"{prefix}:outbox:id:"
        self._queue_prefix = f"{prefix}:outbox:q:"
        self.redeliver_after_s = redeliver_after_s
        self.dedupe_ttl_s = dedupe_ttl_s
        self._publish = self.redis.register_script(_PUBLISH)
        self._ack = self.redis.register_script(_ACK)
        self._heads = self.redis.register_script(_HEADS)
        self._reclaim_heads = self.redis.register_script(_RECLAIM)
        self._drop = self.redis.register_script(_DROP)

    def _marker(self, key: str) -> str:
        return self._marker_prefix + key

    def queue_key(self, stream_id: str) -> str:
        """The Redis list of one stream's outbox entry ids, oldest first: its head is the next to send."""
        return self._queue_prefix + stream_id

    async def queue(self, stream_id: str) -> list[str]:
        """The entry ids of one stream's queue, oldest first."""
        return [_str(v) for v in await self.redis.lrange(self.queue_key(stream_id), 0, -1)]

    async def publish(self, message: Deliverable) -> bool:
        """Queue an intervention or a lift for the backend; ``False`` if its key was already published
        (a no-op)."""
        key = delivery_key(message)
        entry = await self._publish(
            keys=[self._marker(key), self.key, self.queue_key(message.stream_id)],
            args=[key, _dumps(message), self.dedupe_ttl_s, message.stream_id],
        )
        return entry is not None

    async def ensure_group(self) -> None:
        """Create the consumer group (reading from the start, so earlier publishes are delivered)."""
        try:
            await self.redis.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim(self, consumer: str, count: int = 10, block_ms: int | None = None) -> list[Delivery]:
        """Up to ``count`` deliveries for ``consumer``: overdue pending entries first, then new ones.

        Entries pending (unacknowledged) for longer than ``redeliver_after_s``, whoever held them,
        are re-claimed with their incremented delivery count. If none were overdue, waits up to
        ``block_ms`` for new entries (``None``: do not wait; Redis's "0 = forever" is not offered).
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if block_ms is not None and block_ms < 1:
            raise ValueError(f"block_ms must be >= 1 or None, got {block_ms}")
        try:
            return await self._claim(consumer, count, block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # first use, or the stream was deleted under us
            return await self._claim(consumer, count, block_ms)

    async def _claim(self, consumer: str, count: int, block_ms: int | None) -> list[Delivery]:
        overdue = await self._reclaim(consumer, count)
        if overdue:
            return overdue
        reraise_swallowed_cancel()  # before blocking, not after
        reply = await self.redis.xreadgroup(
            self.group, consumer, {self.key: ">"}, count=count, block=block_ms
        )
        entries: list[tuple[Any, Any]] = []
        for _stream, stream_entries in _stream_replies(reply):
            entries.extend(stream_entries)
        return await self._deliveries(entries, {})

    async def reclaim_own(self, consumer: str, count: int = 10) -> list[Delivery]:
        """Up to ``count`` of ``consumer``'s own overdue deliveries, to resend (attempt counted up).

        For a consumer that holds all it may: resending what it holds does not add to it.
        """
        try:
            return await self._reclaim(consumer, count, own=True)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise

    async def _reclaim(self, consumer: str, count: int, own: bool = False) -> list[Delivery]:
        # XPENDING (with IDLE) then XCLAIM rather than XAUTOCLAIM: XAUTOCLAIM does not return the
        # delivery counts, and the backend is told which attempt each resend is. Only heads of their
        # streams' queues are claimed: resending a later one would overtake the head.
        idle_ms = max(1, int(self.redeliver_after_s * 1000))
        claimed = await self._reclaim_heads(
            keys=[self.key],
            args=[self.group, consumer, idle_ms, count, self._queue_prefix, int(own), max(1000, 10 * count)],
        )
        if not claimed:
            return []
        attempts = {_str(entry): int(times) for entry, times, _fields in claimed}
        entries = [(entry, dict(zip(flat[::2], flat[1::2], strict=True))) for entry, _times, flat in claimed]
        return await self._deliveries(entries, attempts)

    async def heads(
        self, consumer: str, deliveries: Sequence[Delivery], *, touch: bool = True
    ) -> list[str]:
        """For each delivery ``consumer`` holds: ``send`` (the head of its stream's queue: send it now),
        ``wait`` (an earlier one of its stream is unacknowledged: hold it back) or ``gone`` (no longer
        held: acknowledged, or claimed by another consumer after it was overdue).

        With ``touch``, the idle time of those kept is reset: a ``send`` starts its ack timeout, and a
        held-back one is not taken for overdue (call at least every ``redeliver_after_s``).
        """
        if not deliveries:
            return []
        args: list[Any] = [self.group, consumer, self._queue_prefix, int(touch)]
        for delivery in deliveries:
            args += [delivery.entry_id, delivery.message.stream_id]
        return [_str(v) for v in await self._heads(keys=[self.key], args=args)]

    async def _deliveries(
        self, entries: Sequence[tuple[Any, Any]], attempts: Mapping[str, int]
    ) -> list[Delivery]:
        out: list[Delivery] = []
        for entry_id, raw in entries:
            entry = _str(entry_id)
            fields = _fields(raw)
            try:
                event = from_dict(json.loads(fields["data"]))
                if not isinstance(event, Intervention | InterventionLifted):
                    raise EventFormatError(f"expected an intervention or a lift, got {event.type!r}")
            except (KeyError, ValueError, EventFormatError) as exc:
                # A poison entry would be redelivered forever; log it loudly and drop it.
                logger.error("outbox %s: dropping unreadable entry %s: %s", self.key, entry, exc)
                await self._drop(keys=[self.key], args=[self.group, self._queue_prefix, entry])
                continue
            out.append(Delivery(event, entry, attempts.get(entry, 1)))
        return out

    async def ack(self, key: str) -> AckResult:
        """Mark the message with this key done (acked or nacked): it is removed and never redelivered.

        Works whichever consumer (connection) holds the entry, or none: a backend that reconnected
        may ack what it received on its previous connection.
        """
        status, payload, entry = (_str(v) for v in await self._ack(
            keys=[self._marker(key), self.key], args=[self.group, self._queue_prefix]))
        if status != "ok":
            return AckResult(status, None, entry)
        try:
            event = from_dict(json.loads(payload))
        except (ValueError, EventFormatError):
            return AckResult(status, None, entry)
        message = event if isinstance(event, Intervention | InterventionLifted) else None
        return AckResult(status, message, entry)

    async def held(self, consumer: str, count: int = 10_000) -> set[str]:
        """The entry ids ``consumer`` holds: delivered to it and not acknowledged (at most ``count``)."""
        try:
            pending = await self.redis.xpending_range(
                self.key, self.group, min="-", max="+", count=count, consumername=consumer
            )
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return set()
            raise
        return {_str(p["message_id"]) for p in pending}

    async def pending(self) -> int:
        """How many delivered messages await an ack (0 if nothing was ever claimed)."""
        try:
            summary = await self.redis.xpending(self.key, self.group)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return 0
            raise
        return int(summary["pending"])

    async def backlog(self) -> int:
        """Entries in the outbox: not yet delivered plus delivered and unacknowledged."""
        return int(await self.redis.xlen(self.key))

    async def release(self, consumer: str) -> int:
        """Make ``consumer``'s pending entries immediately claimable by others (it went away).

        Used when a backend disconnects, so its reconnection gets the unacknowledged interventions
        at once instead of after ``redeliver_after_s``. The delivery counts are unchanged. A consumer
        holding nothing is deleted now; others are left to :meth:`prune_consumers` once emptied.
        Returns how many entries were released.
        """
        try:
            pending = await self.redis.xpending_range(
                self.key, self.group, min="-", max="+", count=10_000, consumername=consumer
            )
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return 0
            raise
        ids: list[StreamIdT] = [_str(p["message_id"]) for p in pending]
        if ids:
            # IDLE makes them look long overdue; JUSTID leaves the delivery counter alone.
            idle_ms = int(self.redeliver_after_s * 1000) * 2 + 1
            await self.redis.xclaim(self.key, self.group, consumer, 0, ids, idle=idle_ms, justid=True)
        else:
            await self.redis.xgroup_delconsumer(self.key, self.group, consumer)
        return len(ids)

    async def prune_consumers(self, idle_s: float) -> int:
        """Delete consumers holding nothing and idle for ``idle_s``; returns how many were deleted."""
        try:
            consumers = await self.redis.xinfo_consumers(self.key, self.group)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                return 0
            raise
        removed = 0
        for info in consumers:
            info = {_str(k): v for k, v in info.items()}
            if int(info.get("pending", 0)) == 0 and int(info.get("idle", 0)) >= idle_s * 1000:
                await self.redis.xgroup_delconsumer(self.key, self.group, _str(info["name"]))
                removed += 1
        return removed


def _is_entry_id(text: str) -> bool:
    ms, sep, seq = text.partition("-")
    return ms.isdigit() and len(ms) <= 20 and (not sep or (seq.isdigit() and len(seq) <= 20))


def _stream_replies(reply: Any) -> list[tuple[Any, list[tuple[Any, Any]]]]:
    """XREADGROUP replies are a list of ``[stream, entries]`` (RESP2) or a dict (RESP3)."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        return [(name, entries[0] if entries and isinstance(entries[0], list) else entries)
                for name, entries in reply.items()]  # fmt: skip
    return [(name, entries) for name, entries in reply]
