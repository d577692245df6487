"""The Outbox over a real Redis (``redis_url``), each test under its own key prefix."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesafe.core.events import Intervention, InterventionLifted, make_id
from livesafe.interventions.outbox import Outbox
from livesafe.store import open_redis
from tests.builders import intervention


@pytest.fixture(params=[True, False], ids=["str", "bytes"])
async def r(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[redis.asyncio.Redis]:
    """Both client flavours: ``open_redis`` decodes responses, a caller's own client may not."""
    if request.param:
        async with open_redis(redis_url) as client:
            yield client
    else:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            yield client
        finally:
            await client.aclose()


# -- Outbox -----------------------------------------------------------------------------------------


async def test_publish_claim_ack(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix)
    ivs = [intervention(n) for n in (1, 2, 3)]
    for iv in ivs:
        assert await outbox.publish(iv)
    assert await outbox.pending() == 0
    deliveries = await outbox.claim("c1", count=10)
    assert [d.message for d in deliveries] == ivs
    assert [d.attempt for d in deliveries] == [1, 1, 1]
    assert await outbox.pending() == 3
    assert await outbox.claim("c1", count=10) == []

    done = await outbox.ack(ivs[1].intervention_id)
    assert done.status == "ok"
    assert done.message == ivs[1]
    assert await outbox.pending() == 2
    assert await outbox.backlog() == 2
    assert (await outbox.ack(ivs[1].intervention_id)).status == "duplicate"
    assert (await outbox.ack("iv_never_published")).status == "unknown"


def lift(iv: Intervention, seq: int, reason: str = "risk_fell") -> InterventionLifted:
    return InterventionLifted(
        stream_id=iv.stream_id, media_ts=iv.media_ts + 30.0, lift_id=make_id("lf", iv.intervention_id),
        intervention_id=iv.intervention_id, seq=seq, reason=reason, action=iv.action, tier=iv.tier,
        category=iv.category, effects=iv.effects, policy=iv.policy, policy_hash=iv.policy_hash,
    )


async def test_lifts_share_the_outbox_and_are_acked_by_lift_id(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix)
    iv = intervention(1)
    lifted = lift(iv, 2)
    assert await outbox.publish(iv) and await outbox.publish(lifted)
    assert await outbox.publish(lifted) is False  # idempotent by lift_id
    first, second = await outbox.claim("c1", count=10)
    assert (first.message, first.key) == (iv, iv.intervention_id)
    assert (second.message, second.key) == (lifted, lifted.lift_id)
    with pytest.raises(TypeError, match="not an intervention"):
        _ = second.intervention
    assert (await outbox.ack(lifted.lift_id)).message == lifted
    assert (await outbox.ack(iv.intervention_id)).message == iv
    assert await outbox.backlog() == 0


async def test_publish_is_idempotent_by_intervention_id(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix)
    iv = intervention(1)
    assert await outbox.publish(iv) is True
    assert await outbox.publish(iv) is False
    assert await outbox.publish(intervention(1, reason="same id, other text")) is False
    [delivery] = await outbox.claim("c1", count=10)
    assert delivery.message.reason == iv.reason  # the first publish wins
    await outbox.ack(iv.intervention_id)
    assert await outbox.publish(iv) is False  # acked is still published: never sent twice
    assert await outbox.backlog() == 0
    assert 0 < await r.ttl(f"{prefix}:outbox:id:{iv.intervention_id}") <= outbox.dedupe_ttl_s


async def test_unacked_is_redelivered_after_timeout_with_attempt(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix, redeliver_after_s=0.1)
    iv = intervention(1)
    await outbox.publish(iv)
    [first] = await outbox.claim("c1")
    assert first.attempt == 1
    assert await outbox.claim("c2") == []  # not overdue yet
    await asyncio.sleep(0.15)  # the redelivery timeout itself is what is under test
    [second] = await outbox.claim("c2")
    assert (second.message, second.entry_id, second.attempt) == (iv, first.entry_id, 2)
    await asyncio.sleep(0.15)
    [third] = await outbox.claim("c1")
    assert third.attempt == 3
    assert (await outbox.ack(iv.intervention_id)).status == "ok"
    await asyncio.sleep(0.15)
    assert await outbox.claim("c1") == []
    assert await outbox.pending() == 0


async def test_claim_blocks_until_something_is_published(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix)
    await outbox.ensure_group()
    waiting = asyncio.create_task(outbox.claim("c1", block_ms=5000))
    await asyncio.sleep(0.05)  # let XREADGROUP reach the server and block
    assert not waiting.done()
    await outbox.publish(intervention(1))
    async with asyncio.timeout(2):
        [delivery] = await waiting
    assert delivery.message == intervention(1)


async def test_release_makes_pending_claimable_at_once(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix, redeliver_after_s=60)
    for n in (1, 2):
        await outbox.publish(intervention(n, stream_id=f"s{n}"))  # two heads: both claimable again
    assert len(await outbox.claim("gone", count=10)) == 2
    assert await outbox.claim("next") == []
    assert await outbox.release("gone") == 2
    again = await outbox.claim("next", count=10)
    assert [(d.message.seq, d.attempt) for d in again] == [(1, 2), (2, 2)]
    assert await outbox.release("next-idle-consumer") == 0
    # "gone" now holds nothing and can be pruned; "next" still holds two entries.
    assert await outbox.prune_consumers(idle_s=0) == 1
    assert await outbox.pending() == 2


async def test_unreadable_outbox_entry_is_dropped_not_redelivered(
    r: redis.asyncio.Redis, prefix: str
) -> None:
    outbox = Outbox(r, prefix=prefix, redeliver_after_s=0.05)
    await r.xadd(outbox.key, {"intervention_id": "bad", "data": json.dumps({"type": "nope"})})
    await outbox.publish(intervention(1))
    [delivery] = await outbox.claim("c1", count=10)
    assert delivery.message.seq == 1
    assert await outbox.backlog() == 1


async def test_claim_recreates_a_deleted_stream_group(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix)
    await outbox.publish(intervention(1))
    assert len(await outbox.claim("c1")) == 1
    await r.delete(outbox.key)
    assert await outbox.pending() == 0
    await outbox.publish(intervention(2))
    assert [d.message.seq for d in await outbox.claim("c1")] == [2]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(max_size=200),
    score=st.floats(min_value=0, max_value=1),
    effects=st.lists(st.sampled_from(["blur", "mute", "notice", "cut"]), max_size=4, unique=True),
)
async def test_any_intervention_survives_the_outbox(
    r: redis.asyncio.Redis, text: str, score: float, effects: list[str]
) -> None:
    outbox = Outbox(r, prefix=f"test-{uuid.uuid4().hex[:12]}")
    iv = intervention(1, reason=text, excerpt=text, score=round(score, 6), effects=tuple(effects))
    try:
        await outbox.publish(iv)
        [delivery] = await outbox.claim("c1")
        assert delivery.message == iv
        assert (await outbox.ack(iv.intervention_id)).message == iv
    finally:
        await r.delete(outbox.key, f"{outbox.key}:id:{iv.intervention_id}")


async def test_outbox_rejects_bad_arguments(r: redis.asyncio.Redis, prefix: str) -> None:
    with pytest.raises(ValueError, match="redeliver_after_s"):
        Outbox(r, prefix=prefix, redeliver_after_s=0)
    outbox = Outbox(r, prefix=prefix)
    with pytest.raises(ValueError, match="block_ms"):
        await outbox.claim("c1", block_ms=0)  # Redis would read 0 as "block forever"
    with pytest.raises(ValueError, match="count"):
        await outbox.claim("c1", count=0)


# -- per-stream order -------------------------------------------------------------------------------


async def test_each_stream_queues_its_entries_in_publish_order(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix)
    for n in (1, 2, 3):
        await outbox.publish(intervention(n))
    await outbox.publish(intervention(1, stream_id="s2"))
    assert not await outbox.publish(intervention(2))  # a repeat is not queued twice
    deliveries = await outbox.claim("c1", count=10)
    assert await outbox.queue("s1") == [d.entry_id for d in deliveries[:3]]
    assert await outbox.queue("s2") == [deliveries[3].entry_id]
    assert 0 < await r.ttl(outbox.queue_key("s1")) <= outbox.dedupe_ttl_s
    # Only the head of each stream may be sent; the rest wait.
    assert await outbox.heads("c1", deliveries) == ["send", "wait", "wait", "send"]
    assert await outbox.heads("other", deliveries) == ["gone"] * 4  # not held by that consumer

    # An ack (or a nack: the same) takes the entry out of its queue: the next is the head.
    assert (await outbox.ack(deliveries[0].key)).status == "ok"
    assert await outbox.queue("s1") == [d.entry_id for d in deliveries[1:3]]
    assert await outbox.heads("c1", deliveries[1:]) == ["send", "wait", "send"]
    assert (await outbox.ack(deliveries[0].key)).status == "duplicate"  # changes nothing
    assert await outbox.queue("s1") == [d.entry_id for d in deliveries[1:3]]
    for d in deliveries[1:]:
        assert (await outbox.ack(d.key)).status == "ok"
    assert await r.exists(outbox.queue_key("s1"), outbox.queue_key("s2")) == 0  # empty queues are gone


async def test_overdue_entries_are_reclaimed_head_first(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix, redeliver_after_s=0.05)
    for n in (1, 2, 3):
        await outbox.publish(intervention(n))
    await outbox.publish(intervention(1, stream_id="s2"))
    assert len(await outbox.claim("gone", count=10)) == 4
    await asyncio.sleep(0.1)
    # All four are overdue, but a resend of s1's 2 or 3 would overtake 1: only heads come back.
    again = await outbox.claim("next", count=10)
    got = sorted((d.message.stream_id, d.message.seq, d.attempt) for d in again)
    assert got == [("s1", 1, 2), ("s2", 1, 2)]
    await outbox.ack(again[0].key)
    await outbox.ack(again[1].key)
    await asyncio.sleep(0.1)
    assert [(d.message.seq, d.attempt) for d in await outbox.claim("next", count=10)] == [(2, 2)]


async def test_a_held_back_entry_touched_in_time_is_not_taken_for_overdue(
    r: redis.asyncio.Redis, prefix: str
) -> None:
    outbox = Outbox(r, prefix=prefix, redeliver_after_s=0.2)
    for n in (1, 2):
        await outbox.publish(intervention(n))
    first, second = await outbox.claim("c1", count=10)
    await outbox.ack(first.key)
    for _ in range(4):  # its consumer checks it more often than the ack timeout
        await asyncio.sleep(0.08)
        assert await outbox.heads("c1", [second]) == ["send"]
    assert await outbox.claim("c2", count=10) == []  # so nobody else takes it
    assert await outbox.held("c1") == {second.entry_id}


async def test_unreadable_entries_leave_their_queue(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix)
    # Unreadable data under a stream's queue (as a bad writer or an old version might leave it).
    bad = await r.xadd(outbox.key, {"key": "bad", "stream": "s1", "data": "{not json"})
    await r.rpush(outbox.queue_key("s1"), bad)
    await outbox.publish(intervention(1))
    [delivery] = await outbox.claim("c1", count=10)
    assert delivery.message.seq == 1
    assert await outbox.queue("s1") == [delivery.entry_id]
    assert await outbox.heads("c1", [delivery]) == ["send"]  # not stuck behind the dropped entry


async def test_a_stale_head_does_not_block_its_stream(r: redis.asyncio.Redis, prefix: str) -> None:
    outbox = Outbox(r, prefix=prefix)
    for n in (1, 2):
        await outbox.publish(intervention(n))
    first, second = await outbox.claim("c1", count=10)
    await r.xdel(outbox.key, first.entry_id)  # deleted by hand, never acknowledged
    assert await outbox.heads("c1", [second]) == ["send"]
    assert await outbox.queue("s1") == [second.entry_id]
    # An entry in no queue (published before queues existed) is never held back.
    legacy = await r.xadd(outbox.key, {"key": "iv_legacy", "data": json.dumps(_legacy_dict())})
    [old] = await outbox.claim("c1", count=10)
    assert old.entry_id == (legacy if isinstance(legacy, str) else legacy.decode())
    assert await outbox.heads("c1", [old]) == ["send"]


def _legacy_dict() -> dict[str, Any]:
    from livesafe.core.events import to_dict

    return to_dict(intervention(3))
