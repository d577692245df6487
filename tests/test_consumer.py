"""The outbox consumer's bookkeeping, without sockets or Redis: what it holds, holds back, sends, forgets."""

from __future__ import annotations

from livesafe.core.events import Intervention, make_id
from livesafe.interventions.consumer import OutboxConsumer
from livesafe.interventions.outbox import Delivery, Outbox


def delivery(n: int, stream_id: str = "s1") -> Delivery:
    iv = Intervention(
        stream_id=stream_id, media_ts=float(n), intervention_id=make_id("iv", stream_id, str(n)), seq=n,
        action="warn", tier="warn", tier_level=1, category="threat", score=0.7, effects=("notice",),
        reason="r", policy="default", policy_hash="abc", rule={},
    )
    return Delivery(iv, f"{n}-{len(stream_id) * ord(stream_id[-1])}", 1)


async def nothing(_: Delivery) -> None:
    raise AssertionError("the bookkeeping sends nothing itself")


def consumer(name: str, holders: dict[str, OutboxConsumer], max_in_flight: int = 4) -> OutboxConsumer:
    outbox = Outbox.__new__(Outbox)  # never used: the bookkeeping does no I/O
    return OutboxConsumer(outbox, name, nothing, max_in_flight=max_in_flight, batch_size=2, holders=holders)


def test_claimed_deliveries_wait_for_their_turn_and_count_against_the_limit() -> None:
    c = consumer("c1", {})
    a, b, other = delivery(1), delivery(2), delivery(1, "s2")
    c.claimed([a, b, other])
    assert c.free == 1 and set(c.deferred) == {a.entry_id, b.entry_id, other.entry_id}
    assert c.judged([a, b, other], ["send", "wait", "send"]) == [a, other]  # in order; b held back
    assert list(c.deferred.values()) == [b] and c.waits_for("s1") and not c.waits_for("s2")
    c.settle(a.entry_id, a.key)  # acknowledged: its slot is free, b may go
    assert c.free == 2 and c.space.is_set()
    assert c.judged([b], ["send"]) == [b] and not c.deferred


def test_a_delivery_taken_over_leaves_its_previous_holder() -> None:
    holders: dict[str, OutboxConsumer] = {}
    first, second = consumer("c1", holders), consumer("c2", holders)
    d = delivery(1)
    first.claimed([d])
    assert first.judged([d], ["send"]) == [d]
    second.claimed([d])  # overdue: reclaimed by another connection
    assert not first.holds(d.key) and second.holds(d.key) and holders[d.entry_id] is second
    assert first.judged([d], ["send"]) == []  # the first one no longer sends it
    second.settle(d.entry_id, d.key)
    assert not holders and second.free == 4


def test_gone_deliveries_are_forgotten_and_clear_drops_everything() -> None:
    holders: dict[str, OutboxConsumer] = {}
    c = consumer("c1", holders)
    a, b = delivery(1), delivery(2)
    c.claimed([a, b])
    assert c.judged([a, b], ["gone", "wait"]) == []
    assert not c.holds(a.key) and c.holds(b.key) and a.entry_id not in holders
    c.clear()
    assert not c.in_flight and not c.deferred and not holders
