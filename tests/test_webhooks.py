"""Signed webhooks (Standard Webhooks) over real HTTP on localhost and a real Redis outbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio
from standardwebhooks import Webhook

from livesafe.interventions.outbox import Outbox
from livesafe.interventions.webhooks import (
    WebhookDispatcher,
    WebhookEndpoint,
    WebhookRejectedError,
    sign,
    verify,
)
from tests.builders import NEW, OLD, Receiver, intervention, receiver_servers
from tests.waiting import until


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    async with receiver_servers() as start:
        yield start


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        await until(predicate)


def test_signature_verifies_with_the_reference_library_and_rejects_tampering() -> None:
    body = json.dumps({"type": "intervention", "x": 1})
    headers = sign(NEW, "iv_1", body)
    assert Webhook(NEW).verify(body, headers) == {"type": "intervention", "x": 1}
    assert verify(NEW, body, headers)["x"] == 1
    with pytest.raises(WebhookRejectedError, match="No matching signature"):
        verify(NEW, body.replace("1", "2"), headers)
    with pytest.raises(WebhookRejectedError, match="No matching signature"):
        verify(OLD, body, headers)
    with pytest.raises(WebhookRejectedError, match="Missing required headers"):
        verify(NEW, body, {k: v for k, v in headers.items() if k != "webhook-id"})
    with pytest.raises(WebhookRejectedError, match="malformed"):
        verify(NEW, body, {**headers, "webhook-signature": "garbage"})


def test_the_replay_window_is_enforced() -> None:
    body = "{}"
    stale = sign(NEW, "iv_1", body, now=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(WebhookRejectedError, match="too old"):
        verify(NEW, body, stale)
    future = sign(NEW, "iv_1", body, now=datetime.now(UTC) + timedelta(minutes=6))
    with pytest.raises(WebhookRejectedError, match="too new"):
        verify(NEW, body, future)


def test_rotation_signs_with_every_secret() -> None:
    headers = sign([NEW, OLD], "iv_1", "{}")
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(OLD, "{}", headers) == {}  # a receiver not yet rotated
    assert verify(NEW, "{}", headers) == {}  # a receiver already rotated
    assert verify([NEW, OLD], "{}", headers) == {}


def test_bad_endpoints_are_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookEndpoint("ftp://x", (NEW,))
    with pytest.raises(ValueError, match="at least one secret"):
        WebhookEndpoint("http://x", ())
    with pytest.raises(ValueError, match="invalid webhook secret"):
        WebhookEndpoint("http://x", ("whsec_",))


async def test_interventions_arrive_signed_in_order_and_are_acked(
    r: redis.asyncio.Redis, prefix: str, serve: Any
) -> None:
    receiver = Receiver(NEW)
    url = await serve(receiver)
    outbox = Outbox(r, prefix=prefix, redeliver_after_s=30)
    for n in range(1, 6):
        await outbox.publish(intervention(n))
    endpoint = WebhookEndpoint(url, (NEW, OLD), name="t")
    async with WebhookDispatcher(outbox, endpoint, block_ms=50) as dispatcher:
        await _until(lambda: len(receiver.accepted) == 5)
        await _until(lambda: dispatcher.stats.delivered == 5)
    assert [m["seq"] for m in receiver.accepted] == [1, 2, 3, 4, 5]
    assert all(m["type"] == "intervention" and m["delivery"]["attempt"] == 1 for m in receiver.accepted)
    assert await outbox.pending() == 0 and await outbox.backlog() == 0
    assert receiver.refused == []


async def test_an_endpoint_down_for_a_while_loses_nothing(
    r: redis.asyncio.Redis, prefix: str, serve: Any
) -> None:
    receiver = Receiver(NEW, fail_first=3)
    url = await serve(receiver)
    outbox = Outbox(r, prefix=prefix, redeliver_after_s=30)
    for n in range(1, 4):
        await outbox.publish(intervention(n))
    endpoint = WebhookEndpoint(url, (NEW,), name="t")
    async with WebhookDispatcher(outbox, endpoint, block_ms=50, initial_backoff_s=0.01) as dispatcher:
        await _until(lambda: dispatcher.stats.delivered == 3)
    assert [m["seq"] for m in receiver.accepted] == [1, 2, 3]
    assert receiver.accepted[0]["delivery"]["attempt"] == 4  # three 503s first
    assert dispatcher.stats.retries == 3 and dispatcher.stats.statuses[503] == 3
    assert await outbox.pending() == 0


async def test_no_listener_at_all_retries_then_delivers(
    r: redis.asyncio.Redis, prefix: str, serve: Any, unused_tcp_port: int
) -> None:
    outbox = Outbox(r, prefix=prefix, redeliver_after_s=30)
    await outbox.publish(intervention(1))
    endpoint = WebhookEndpoint(f"http://127.0.0.1:{unused_tcp_port}/hook", (NEW,), name="t", timeout_s=1)
    async with WebhookDispatcher(outbox, endpoint, block_ms=50, initial_backoff_s=0.01) as dispatcher:
        await _until(lambda: dispatcher.stats.retries >= 2)
        assert "Client" in dispatcher.stats.last_error or "Error" in dispatcher.stats.last_error
        assert await outbox.pending() == 1  # still held, not lost
    assert await outbox.backlog() + await outbox.pending() >= 1


async def test_a_refusal_is_final_and_a_wrong_secret_is_refused(
    r: redis.asyncio.Redis, prefix: str, serve: Any
) -> None:
    receiver = Receiver(NEW)
    url = await serve(receiver)
    outbox = Outbox(r, prefix=prefix, redeliver_after_s=30)
    await outbox.publish(intervention(1))
    results: list[tuple[str, int | None]] = []
    endpoint = WebhookEndpoint(url, (OLD,), name="t")  # the receiver only knows NEW
    async with WebhookDispatcher(
        outbox, endpoint, block_ms=50, on_result=lambda d, outcome, status: results.append((outcome, status))
    ) as dispatcher:
        await _until(lambda: dispatcher.stats.rejected == 1)
    assert results == [("rejected", 401)]
    assert receiver.accepted == [] and receiver.refused == ["No matching signature found"]
    assert await outbox.pending() == 0  # not retried forever


async def test_the_service_runs_its_webhooks(r: redis.asyncio.Redis, prefix: str, serve: Any) -> None:
    from livesafe.analyzers.registry import Analyzers
    from livesafe.core.policy import load_policy
    from livesafe.service import Service, ServiceOptions

    receiver = Receiver(NEW)
    url = await serve(receiver)
    options = ServiceOptions(port=0, tokens={"tok": "backend"}, prefix=prefix,
                             webhooks=(WebhookEndpoint(url, (NEW,), name="hook"),))
    async with Service(load_policy(), Analyzers(), r, options) as service:
        await service.outbox.publish(intervention(7))
        await _until(lambda: len(receiver.accepted) == 1)
        assert receiver.accepted[0]["seq"] == 7
        await _until(lambda: service.webhooks[0].stats.delivered == 1)
        assert await service.outbox.pending() == 0
    assert service.webhooks[0]._task is None  # stopped with the service
