"""Per-stream order across backend connections and webhooks, over real websockets, HTTP and Redis.

Several consumers share the outbox, yet a delivery is sent only as the head of its stream's queue, so
the interventions and lifts of one stream reach the backends in ``seq`` order, whichever connection
gets each one, while other streams keep flowing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import redis.asyncio

from livesafe.client import BackendClient
from livesafe.core.events import Deliverable, InterventionLifted, make_id
from livesafe.interventions.gateway import Gateway
from livesafe.interventions.outbox import Outbox
from livesafe.interventions.webhooks import WebhookDispatcher, WebhookEndpoint
from tests.builders import NEW, RESTRICT, TOKEN, TOKENS, Receiver, intervention, receiver_servers
from tests.waiting import until

WAIT = 10.0

GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def gateway(r: redis.asyncio.Redis, prefix: str) -> GatewayFactory:
    def make(**overrides: Any) -> Gateway:
        options: dict[str, Any] = {"prefix": prefix, "ack_timeout_s": 30.0, "batch_size": 4}
        options.update(overrides)
        return Gateway(r, TOKENS, **options)

    return make


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    async with receiver_servers() as start:
        yield start


def lift(n: int, of: int, stream_id: str = "s1") -> InterventionLifted:
    return InterventionLifted(
        stream_id=stream_id, media_ts=float(n), lift_id=make_id("lf", stream_id, str(n)),
        intervention_id=make_id("iv", stream_id, str(of)), seq=n, reason="risk_fell", action="restrict",
        tier="restrict", category="violence", effects=("age_gate", "blur"), policy="default",
        policy_hash="abc123",
    )


def burst(stream_id: str, n: int) -> list[Deliverable]:
    """Interventions with odd seq, each lifted by the next (even) seq: 1, lift of 1, 3, lift of 3..."""
    return [intervention(k, stream_id, **RESTRICT) if k % 2 else lift(k, k - 1, stream_id)
            for k in range(1, n + 1)]


def strictly_increasing_per_stream(log: list[tuple[str, str, int]]) -> dict[str, list[int]]:
    per_stream: dict[str, list[int]] = {}
    for _who, stream, seq in log:
        per_stream.setdefault(stream, []).append(seq)
    for stream, seqs in per_stream.items():
        assert seqs == sorted(set(seqs)), f"{stream} out of order: {seqs}"
    return per_stream


async def test_one_stream_over_two_connections_arrives_in_order(gateway: GatewayFactory) -> None:
    rng = random.Random(7)
    async with gateway() as gw:
        a, b = BackendClient(gw.url, TOKEN), BackendClient(gw.url, TOKEN)
        async with a, b:
            await a.wait_connected()
            await b.wait_connected()
            messages = burst("s1", 30)
            for m in messages:
                await gw.outbox.publish(m)
            log: list[tuple[str, str, int]] = []  # (who, stream, seq) in receipt-then-ack order

            async def consume(name: str, client: BackendClient) -> None:
                while len(log) < len(messages):
                    try:
                        async with asyncio.timeout(0.2):
                            x = await anext(client)
                    except TimeoutError:
                        continue
                    log.append((name, x.message.stream_id, x.message.seq))
                    await asyncio.sleep(rng.random() * 0.01)  # acks interleave with the other's work
                    await client.ack(x)

            async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
                group.create_task(consume("a", a))
                group.create_task(consume("b", b))
            assert strictly_increasing_per_stream(log) == {"s1": list(range(1, 31))}
            assert {who for who, _s, _q in log} == {"a", "b"}  # both connections got some of it
            await a.ping()
            await b.ping()
        assert await gw.outbox.backlog() == 0
        assert await gw.outbox.queue("s1") == []


async def test_a_slow_backend_holding_a_head_delays_only_that_stream(gateway: GatewayFactory) -> None:
    async with gateway(batch_size=20) as gw:
        slow, fast = BackendClient(gw.url, TOKEN), BackendClient(gw.url, TOKEN)
        async with slow, fast:
            await slow.wait_connected()
            await gw.outbox.publish(intervention(1, "s1", **RESTRICT))
            head = await anext(slow)  # slow to apply this one: it acks everything else at once
            assert (head.message.stream_id, head.message.seq) == ("s1", 1)
            await fast.wait_connected()
            for m in burst("s1", 6)[1:] + burst("s2", 6) + burst("s3", 6):
                await gw.outbox.publish(m)
            log: list[tuple[str, str, int]] = [("slow", "s1", 1)]
            head_acked = asyncio.Event()

            async def consume(name: str, client: BackendClient) -> None:
                while len(log) < 18:
                    try:
                        async with asyncio.timeout(0.1):
                            x = await anext(client)
                    except TimeoutError:
                        continue
                    if x.message.stream_id == "s1":
                        assert head_acked.is_set(), f"s1 seq {x.message.seq} overtook its unacknowledged head"
                    log.append((name, x.message.stream_id, x.message.seq))
                    await client.ack(x)

            async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
                group.create_task(consume("slow", slow))
                group.create_task(consume("fast", fast))
                # Other streams flow while s1 waits behind its head.
                await until(lambda: len([e for e in log if e[1] != "s1"]) == 12)
                assert [e for e in log if e[1] == "s1"] == [("slow", "s1", 1)]
                assert sum(gw.deferred().values()) == 5  # s1's 2..6, claimed and held back
                await asyncio.sleep(0.2)
                assert len(log) == 13
                head_acked.set()
                await slow.ack(head)  # done at last: s1's rest follows, in order
            assert strictly_increasing_per_stream(log) == {
                "s1": list(range(1, 7)), "s2": list(range(1, 7)), "s3": list(range(1, 7))}
            await slow.ping()
            await fast.ping()
        assert await gw.outbox.backlog() == 0


async def test_disconnect_while_holding_the_head_next_connection_gets_it_first(
    gateway: GatewayFactory,
) -> None:
    async with gateway() as gw:
        async with BackendClient(gw.url, TOKEN) as first:
            await first.wait_connected()
            for m in burst("s1", 6):
                await gw.outbox.publish(m)
            got = await anext(first)
            assert got.message.seq == 1
            async with asyncio.timeout(WAIT):
                await until(lambda: sum(gw.deferred().values()) >= 3)  # it claimed more, held back
        # Gone without acking: everything it held (sent or not) goes to the next connection, in order.
        async with BackendClient(gw.url, TOKEN) as second:
            seqs, attempts = [], []
            async with asyncio.timeout(WAIT):
                for _ in range(6):
                    x = await anext(second)
                    seqs.append(x.message.seq)
                    attempts.append(x.attempt)
                    await second.ack(x)
            assert seqs == [1, 2, 3, 4, 5, 6]
            assert attempts[0] == 2  # the head was sent before
            await second.ping()
        assert await gw.outbox.backlog() == 0


async def test_two_gateway_processes_keep_one_stream_in_order(
    r: redis.asyncio.Redis, prefix: str
) -> None:
    # Two gateways (as two processes would) on one Redis: acks made at one release the next at the other.
    options: dict[str, Any] = {"prefix": prefix, "ack_timeout_s": 30.0, "batch_size": 3}
    async with Gateway(r, TOKENS, **options) as one, Gateway(r, TOKENS, **options) as two:
        a, b = BackendClient(one.url, TOKEN), BackendClient(two.url, TOKEN)
        async with a, b:
            await a.wait_connected()
            await b.wait_connected()
            for m in burst("s1", 20):
                await one.outbox.publish(m)
            log: list[tuple[str, str, int]] = []

            async def consume(name: str, client: BackendClient) -> None:
                while len(log) < 20:
                    try:
                        async with asyncio.timeout(0.2):
                            x = await anext(client)
                    except TimeoutError:
                        continue
                    log.append((name, x.message.stream_id, x.message.seq))
                    await client.ack(x)

            async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
                group.create_task(consume("a", a))
                group.create_task(consume("b", b))
            assert strictly_increasing_per_stream(log) == {"s1": list(range(1, 21))}
            assert {who for who, _s, _q in log} == {"a", "b"}


async def test_webhook_and_websocket_share_a_stream_in_order(
    gateway: GatewayFactory, r: redis.asyncio.Redis, serve: Any
) -> None:
    log: list[tuple[str, str, int]] = []
    receiver = Receiver(NEW)
    url = await serve(receiver)
    # One in flight on the websocket: it holds s1's head and cannot claim the rest before the webhook
    # dispatcher sees any of it (with more room it could take everything first).
    async with gateway(max_in_flight=1) as gw, BackendClient(gw.url, TOKEN) as ws_backend:
        await ws_backend.wait_connected()
        await gw.outbox.publish(intervention(1, "s1", **RESTRICT))
        head = await anext(ws_backend)  # the websocket holds s1's head
        log.append(("ws", "s1", head.message.seq))
        outbox = Outbox(r, prefix=gw.outbox.key.rsplit(":", 1)[0], redeliver_after_s=30)
        endpoint = WebhookEndpoint(url, (NEW,), name="t")
        async with WebhookDispatcher(outbox, endpoint, block_ms=50, batch_size=4) as hook:
            for m in burst("s1", 12)[1:] + burst("s2", 3):
                await gw.outbox.publish(m)

            async def consume_ws() -> None:
                while len(log) < 15:
                    try:
                        async with asyncio.timeout(0.1):
                            x = await anext(ws_backend)
                    except TimeoutError:
                        continue
                    log.append(("ws", x.message.stream_id, x.message.seq))
                    await ws_backend.ack(x)

            def on_post() -> None:
                for m in receiver.accepted[len([e for e in log if e[0] == "hook"]):]:
                    log.append(("hook", m["stream_id"], m["seq"]))

            # The webhook may hold later ones of s1 but sends none before the websocket acks the head.
            async with asyncio.timeout(WAIT):
                await until(lambda: hook.stats.delivered + len(hook.pump.deferred) >= 3)
            await asyncio.sleep(0.2)
            assert all(m["stream_id"] == "s2" for m in receiver.accepted)
            await ws_backend.ack(head)
            async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
                task = group.create_task(consume_ws())
                while not task.done():
                    on_post()  # the receiver accepts (and the dispatcher acks) in order, one at a time
                    await asyncio.sleep(0.005)
            on_post()
        assert strictly_increasing_per_stream(log) == {"s1": list(range(1, 13)), "s2": [1, 2, 3]}
        assert {who for who, s, _q in log if s == "s1"} == {"ws", "hook"}
        await ws_backend.ping()
        assert await gw.outbox.backlog() == 0
