"""The backend protocol (livesafe.v1) over real websockets and a real Redis: lifts, applied, versions, the
schemas checked against captured traffic, and the incoming-message parser fuzzed with Hypothesis."""

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
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from livesafe.client import BackendClient
from livesafe.core.events import (
    Intervention,
    InterventionLifted,
    ReviewVerdict,
    Signal,
    StreamState,
    to_dict,
)
from livesafe.core.monitor import Monitor
from livesafe.core.policy import load_policy
from livesafe.interventions.gateway import Gateway
from livesafe.interventions.protocol import (
    PROTOCOL,
    SUPPORTED,
    ProtocolError,
    check_incoming,
    check_outgoing,
    incoming_types,
    schema,
)
from tests.builders import recorded_acks

TOKEN = "t0ken-acme"
TOKENS = {TOKEN: "acme"}
WAIT = 5.0


def decisions() -> tuple[Intervention, InterventionLifted]:
    """A real warning from the core, and its lift by a reviewer."""
    monitor = Monitor(load_policy())
    [warn] = monitor.feed(Signal("s1", 12.0, "threat", 0.9, "test", end_ts=13.0,
                                 evidence={"text": "I will find you", "frame": 3}))
    [lift] = monitor.review(ReviewVerdict("s1", 15.0, warn.intervention_id, "overturn", "ana", "a quote"))
    return warn, lift


async def raw(gw: Gateway) -> ClientConnection:
    return await connect(gw.url, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                         open_timeout=WAIT, close_timeout=1)


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


@pytest.fixture
async def gw(r: redis.asyncio.Redis, prefix: str) -> AsyncIterator[Gateway]:
    # No rate limit: the fuzz test sends hundreds of frames on one connection as fast as it can.
    async with Gateway(r, TOKENS, prefix=prefix, ack_timeout_s=30.0, max_message_bytes=64 * 1024,
                       rate_limit_per_s=None) as gateway:
        yield gateway


# -- lifts and applied --------------------------------------------------------------------------------


async def test_lift_is_delivered_in_order_and_acked_by_lift_id(gw: Gateway) -> None:
    warn, lift = decisions()
    async with BackendClient(gw.url, TOKEN) as client:
        await gw.outbox.publish(warn)
        await gw.outbox.publish(lift)
        async with asyncio.timeout(WAIT):
            first = await anext(client)
            await client.ack(first)  # one stream: the lift is sent once the warning is acknowledged
            second = await anext(client)
        assert (first.message, first.lifted, first.key) == (warn, None, warn.intervention_id)
        assert (second.lifted, second.key) == (lift, lift.lift_id)
        assert (lift.reason, lift.intervention_id, lift.seq) == ("overturned", warn.intervention_id, 2)
        with pytest.raises(TypeError, match=r"check \.lifted first"):
            _ = second.intervention
        await client.ack(second)
        await client.ping()
        acks = await recorded_acks(gw.timeline)
        assert [(a.intervention_id, a.lift_id, a.status, a.stream_id) for a in acks] == [
            (warn.intervention_id, "", "ack", "s1"), (warn.intervention_id, lift.lift_id, "ack", "s1")]
        assert await gw.outbox.backlog() == 0


async def test_applied_acknowledges_and_is_recorded_even_after_an_ack(gw: Gateway) -> None:
    warn, lift = decisions()
    async with BackendClient(gw.url, TOKEN) as client:
        await gw.outbox.publish(warn)
        await gw.outbox.publish(lift)
        async with asyncio.timeout(WAIT):
            first = await anext(client)
            await client.applied(first, "s1", ("notice",), "banner shown")
            second = await anext(client)  # one stream: sent once the first is acknowledged
        await client.ack(second)
        await client.applied(second, "s1", ("notice",), "banner removed")  # after its ack: still recorded
        await client.ping()
        acks = await recorded_acks(gw.timeline, "s1")
        assert [(a.status, a.lift_id, a.effects, a.reason) for a in acks] == [
            ("applied", "", ("notice",), "banner shown"),
            ("ack", lift.lift_id, (), ""),
            ("applied", lift.lift_id, ("notice",), "banner removed"),
        ]
        assert await gw.outbox.backlog() == 0


# -- versions ------------------------------------------------------------------------------------------


async def test_hello_with_a_supported_version_is_accepted(gw: Gateway) -> None:
    async with await raw(gw) as ws:
        hello = await recv_json(ws)
        assert (hello["protocol"], hello["supported"]) == (PROTOCOL, list(SUPPORTED))
        await ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL, "ref": 1}))
        assert await recv_json(ws) == {"type": "ok", "for": "hello", "protocol": PROTOCOL, "ref": 1}


async def test_hello_with_an_unsupported_version_is_refused_and_closed(gw: Gateway) -> None:
    async with await raw(gw) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "hello", "protocol": "livesafe.v9"}))
        error = await recv_json(ws)
        assert (error["type"], error["code"]) == ("error", "unsupported_protocol")
        assert error["supported"] == [PROTOCOL]
        assert "'livesafe.v9' is not supported" in error["reason"]
        with pytest.raises(ConnectionClosed) as info:
            await recv_json(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1002
    async with await raw(gw) as ws:  # the gateway carries on
        assert (await recv_json(ws))["type"] == "hello"


# -- schemas against real traffic ----------------------------------------------------------------------


async def test_every_message_livesafe_sends_validates_against_its_schema(gw: Gateway) -> None:
    async def refuse(event: object) -> None:
        raise ValueError("not today")

    gw.on_stream_started = refuse
    warn, lift = decisions()
    seen: list[dict[str, Any]] = []
    async with await raw(gw) as ws:
        seen.append(await recv_json(ws))  # hello
        await gw.outbox.publish(warn)
        await gw.outbox.publish(lift)
        seen.append(await recv_json(ws))
        await ws.send(json.dumps({"type": "ack", "intervention_id": warn.intervention_id}))  # lift follows
        seen.append(await recv_json(ws))
        gw.notify(to_dict(StreamState("s1", 3.5, "degraded", "no video for 5 s")))
        seen.append(await recv_json(ws))
        for message in (
            {"type": "hello", "protocol": PROTOCOL, "ref": "h"},
            {"type": "stream.started", "stream_id": "s2", "source": "x.mp4", "ref": 2},
            {"type": "stream.ended", "stream_id": "s2"},
            {"type": "ack", "intervention_id": warn.intervention_id},
            {"type": "ack", "lift_id": "lf_unknown"},
            {"type": "dance"},
            {"type": "ping", "ref": "p"},
        ):
            await ws.send(json.dumps(message))
        while not seen or seen[-1].get("type") != "pong":
            seen.append(await recv_json(ws))
        await ws.send(b"\x00")
        await ws.send("{")
        seen += [await recv_json(ws), await recv_json(ws)]
    kinds = [check_outgoing(m) for m in seen]
    assert set(kinds) == {
        "hello", "intervention", "intervention.lifted", "stream.state", "ok", "pong", "error"}
    codes = {m["code"] for m in seen if m["type"] == "error"}
    assert codes == {"refused", "unknown_id", "unknown_type", "bad_frame", "bad_json"}
    assert set(schema()["x-outgoing"]) == set(kinds)  # every outgoing message type was exercised


def test_schemas_reject_what_the_code_would_not_send() -> None:
    _, lift = decisions()
    good = {**to_dict(lift), "delivery": {"attempt": 1}}
    assert check_outgoing(good) == "intervention.lifted"
    no_seq = {k: v for k, v in good.items() if k != "seq"}
    for bad in ({**good, "reason": "bored"}, {**good, "surprise": 1}, no_seq):
        with pytest.raises(ProtocolError):
            check_outgoing(bad)
    assert check_incoming({"type": "ack", "intervention_id": "iv_1", "extra": "ignored"}) == "ack"
    with pytest.raises(ProtocolError, match="Exactly one of"):
        check_incoming({"type": "ack", "intervention_id": "iv_1", "lift_id": "lf_1"})


# -- fuzzing the parser ----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=15,
)
# Structured but (mostly) wrong: a real type with fields of random shapes. No hello: a valid hello with
# an unsupported version closes the connection by design (tested above).
STRUCTURED = st.fixed_dictionaries(
    {"type": st.sampled_from([t for t in incoming_types() if t != "hello"] + ["intervention", "", "ACK"])},
    optional={
        name: JSON | st.text(max_size=20)
        for name in ("intervention_id", "lift_id", "reason", "stream_id", "source", "metadata", "effects",
                     "detail", "ref", "protocol")
    },
)
FRAMES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=300),
    JSON.map(json.dumps),
    STRUCTURED.map(json.dumps),
)


@pytest.fixture
async def fuzz_ws(gw: Gateway) -> AsyncIterator[tuple[Gateway, ClientConnection]]:
    async with await raw(gw) as ws:
        await recv_json(ws)
        yield gw, ws


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(FRAMES, min_size=1, max_size=3))
async def test_fuzzed_messages_get_an_error_or_nothing_and_the_connection_stays_usable(
    fuzz_ws: tuple[Gateway, ClientConnection], frames: list[str | bytes]
) -> None:
    gw, ws = fuzz_ws
    for frame in frames:
        await ws.send(frame)
    probe = f"probe-{uuid.uuid4().hex}"
    await ws.send(json.dumps({"type": "ping", "ref": probe}))
    while True:
        reply = await recv_json(ws)  # a crash would close the connection and fail here
        check_outgoing(reply)
        if reply == {"type": "pong", "ref": probe}:
            break
        assert reply["type"] in ("error", "pong"), reply
    assert gw._tasks  # the delivery pump is still running
