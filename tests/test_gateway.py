"""The backend gateway over real websockets and a real Redis, each test under its own key prefix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livesafe.client import AuthenticationError, BackendClient, GatewayError, Received, print_interventions
from livesafe.core.events import Ack, Intervention
from livesafe.interventions.gateway import PROTOCOL, Gateway, StreamEnded, StreamStarted
from livesafe.interventions.protocol import check_outgoing
from tests.builders import RESTRICT, TOKEN, TOKENS, intervention, recorded_acks
from tests.waiting import until

WAIT = 5.0  # generous upper bound for anything awaited; tests finish far sooner


GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def gateway(r: redis.asyncio.Redis, prefix: str) -> GatewayFactory:
    """``async with gateway(**overrides) as gw``: a gateway on a free port with test defaults."""

    def make(**overrides: Any) -> Gateway:
        options: dict[str, Any] = {"prefix": prefix, "ack_timeout_s": 30.0, "max_message_bytes": 4096}
        options.update(overrides)
        return Gateway(r, TOKENS, **options)

    return make


def restriction(n: int = 1, stream_id: str = "s1") -> Intervention:
    return intervention(n, stream_id, **RESTRICT)


async def raw_connect(gw: Gateway, token: str | None = TOKEN, query: str = "") -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await connect(gw.url + query, additional_headers=headers, open_timeout=WAIT, close_timeout=1)


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def next_received(client: BackendClient) -> Received:
    async with asyncio.timeout(WAIT):
        return await anext(client)


async def acks_in_log(gw: Gateway) -> list[Ack]:
    return await recorded_acks(gw.timeline)


# -- handshake --------------------------------------------------------------------------------------


async def test_hello_with_header_or_query_token(gateway: GatewayFactory) -> None:
    async with gateway() as gw:
        for ws in (await raw_connect(gw), await raw_connect(gw, token=None, query=f"?token={TOKEN}")):
            async with ws:
                hello = await recv_json(ws)
                assert hello["type"] == "hello"
                assert (hello["protocol"], hello["backend"]) == (PROTOCOL, "acme")
                assert hello["max_message_bytes"] == 4096


@pytest.mark.parametrize(
    ("token", "query", "reason"),
    [
        ("wrong", "", "invalid token"),
        (None, "", "missing token"),
        (None, "?token=wrong", "invalid token"),
        ("", "", "malformed Authorization header"),
    ],
)
async def test_bad_token_is_refused_with_401(
    gateway: GatewayFactory, token: str | None, query: str, reason: str
) -> None:
    async with gateway() as gw:
        with pytest.raises(InvalidStatus) as info:
            await raw_connect(gw, token=token, query=query)
    response = info.value.response
    assert response.status_code == 401
    assert reason in response.body.decode()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_unknown_path_is_404(gateway: GatewayFactory) -> None:
    async with gateway() as gw:
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{gw.port}/elsewhere", open_timeout=WAIT)
    assert info.value.response.status_code == 404


async def test_client_with_bad_token_stops_with_authentication_error(gateway: GatewayFactory) -> None:
    async with gateway() as gw, BackendClient(gw.url, "wrong") as client:
        with pytest.raises(AuthenticationError, match="401"):
            await next_received(client)
        with pytest.raises(AuthenticationError):
            await client.wait_connected()


# -- delivery ---------------------------------------------------------------------------------------


async def test_delivers_to_a_client_that_acks_and_records_the_ack(gateway: GatewayFactory) -> None:
    async with gateway() as gw, BackendClient(gw.url, TOKEN) as client:
        ivs = [restriction(n) for n in (1, 2, 3)]
        for iv in ivs:
            await gw.outbox.publish(iv)
        received = []
        for _ in ivs:  # one stream: each is sent once the one before it is acknowledged
            received.append(await next_received(client))
            await client.ack(received[-1].intervention.intervention_id)
        assert [x.intervention for x in received] == ivs
        assert {x.attempt for x in received} == {1}
        await client.ping()  # handled in order: the acks are recorded
        acks = await acks_in_log(gw)
        assert [(a.intervention_id, a.status, a.backend) for a in acks] == [
            (iv.intervention_id, "ack", "acme") for iv in ivs
        ]
        assert [(a.stream_id, a.media_ts) for a in acks] == [(iv.stream_id, iv.media_ts) for iv in ivs]
        assert await gw.outbox.pending() == 0
        assert await gw.outbox.backlog() == 0


async def test_interventions_published_before_connect_are_delivered(gateway: GatewayFactory) -> None:
    async with gateway() as gw:
        await gw.outbox.publish(restriction(1))
        async with BackendClient(gw.url, TOKEN, auto_ack=True) as client:
            assert (await next_received(client)).intervention == restriction(1)
            await client.ping()
            assert await gw.outbox.backlog() == 0


async def test_unacked_intervention_is_resent(gateway: GatewayFactory) -> None:
    async with gateway(ack_timeout_s=0.2) as gw, BackendClient(gw.url, TOKEN) as client:
        iv = restriction(1)
        await gw.outbox.publish(iv)
        first = await next_received(client)
        second = await next_received(client)  # no ack: resent after ack_timeout_s
        assert (first.intervention, first.attempt) == (iv, 1)
        assert (second.intervention, second.attempt) == (iv, 2)
        await client.ack(iv.intervention_id)
        await client.ping()
        assert await gw.outbox.pending() == 0
        assert len(await acks_in_log(gw)) == 1


async def test_nack_is_recorded_and_not_redelivered(gateway: GatewayFactory) -> None:
    async with gateway(ack_timeout_s=0.1) as gw, BackendClient(gw.url, TOKEN) as client:
        await gw.outbox.publish(restriction(1))
        await gw.outbox.publish(restriction(2))
        got = await next_received(client)
        await client.nack(got.intervention.intervention_id, "stream already offline")
        await client.ping()
        [nack] = await acks_in_log(gw)
        assert (nack.status, nack.reason, nack.backend) == ("nack", "stream already offline", "acme")
        # Everything after the nack arrives, and the nacked one never again (ack_timeout is 0.1 s).
        later = await next_received(client)
        assert later.intervention.seq == 2
        await client.ack(later.intervention.intervention_id)
        await client.ping()
        assert await gw.outbox.backlog() == 0
        with pytest.raises(TimeoutError):  # three ack timeouts of silence
            async with asyncio.timeout(0.3):
                await anext(client)


async def test_disconnect_mid_burst_then_reconnect_gets_the_unacked(gateway: GatewayFactory) -> None:
    # ack_timeout is long: what was unacknowledged must come back because the connection dropped.
    async with gateway(ack_timeout_s=30.0) as gw:
        ivs = [restriction(n) for n in range(1, 11)]
        async with BackendClient(gw.url, TOKEN) as first:
            await first.wait_connected()
            for iv in ivs:
                await gw.outbox.publish(iv)
            for _ in range(4):
                got = await next_received(first)
                await first.ack(got.intervention.intervention_id)
            await first.ping()
        async with BackendClient(gw.url, TOKEN) as second:
            rest = []
            for _ in range(6):
                rest.append(await next_received(second))
                await second.ack(rest[-1].intervention.intervention_id)
            assert [x.intervention.seq for x in rest] == list(range(5, 11))  # in order, the unacked 5 first
            assert rest[0].attempt == 2
            await second.ping()
            assert await gw.outbox.backlog() == 0
        acked = [a.intervention_id for a in await acks_in_log(gw)]
        assert sorted(acked) == sorted(iv.intervention_id for iv in ivs)


async def test_client_reconnects_after_gateway_restart(gateway: GatewayFactory) -> None:
    async with gateway() as gw:
        port = gw.port
        client = BackendClient(gw.url, TOKEN, backoff_initial_s=0.02, backoff_max_s=0.1)
        await client.start()
        try:
            await client.wait_connected()
            await gw.outbox.publish(restriction(1))
            unacked = await next_received(client)
            await gw.aclose()
            async with gateway(port=port) as again:
                await again.outbox.publish(restriction(2, stream_id="s2"))  # s1's next waits for 1's ack
                got = {(x.intervention.seq, x.attempt) for x in [await next_received(client) for _ in "ab"]}
                assert got == {(1, 2), (2, 1)}  # the first, unacked, is resent after the restart
                assert client.connections == 2
                await client.ack(unacked.intervention.intervention_id)
        finally:
            await client.aclose()
        assert gw._tasks == set()


# -- robustness -------------------------------------------------------------------------------------


async def test_malformed_messages_get_reasons_and_connection_stays_usable(gateway: GatewayFactory) -> None:
    async with gateway() as gw, await raw_connect(gw) as ws:
        await recv_json(ws)  # hello
        await gw.outbox.publish(restriction(1))
        delivered = await recv_json(ws)
        assert delivered["type"] == "intervention"
        assert delivered["delivery"] == {"attempt": 1}
        assert delivered["effects"] == ["age_gate", "blur"]

        cases = [
            ("{not json", "malformed JSON"),
            ("[1, 2]", "must be a JSON object, got list"),
            ('{"intervention_id": "x"}', "missing 'type'"),
            ('{"type": "dance", "ref": "r1"}', "unknown message type 'dance'"),
            ('{"type": "ack"}', "ack: Exactly one of intervention_id"),
            ('{"type": "ack", "intervention_id": 5}',
             "ack: intervention_id: must be of type 'string', got int"),
            ('{"type": "ack", "intervention_id": "iv_nope"}', "unknown intervention_id 'iv_nope'"),
            ('{"type": "ack", "lift_id": "lf_nope"}', "unknown lift_id 'lf_nope'"),
            ('{"type": "nack", "intervention_id": "x"}', "nack: missing 'reason'"),
            ('{"type": "applied", "intervention_id": "x", "stream_id": "s1"}', "applied: missing 'effects'"),
            ('{"type": "applied", "intervention_id": "x", "stream_id": "s1", "effects": ["explode"]}',
             "applied: effects.0: 'explode' is not one of"),
            ('{"type": "stream.started", "stream_id": "s9"}', "no stream handler"),
            ('{"type": "stream.started", "stream_id": ""}',
             "stream.started: stream_id must not be empty"),
            ('{"type": "stream.started", "stream_id": "../../x", "source": "a.mp4"}',
             "stream_id '../../x' is not allowed: use letters, digits and . _ : -"),
            ('{"type": "stream.started", "stream_id": "' + "x" * 500 + '", "source": "a.mp4"}',
             "is 500 characters long; at most 128 are allowed"),
        ]
        for text, reason in cases:
            await ws.send(text)
            reply = await recv_json(ws)
            assert reply["type"] == "error"
            assert reason in reply["reason"]
            assert reply["code"] in ("bad_json", "bad_message", "unknown_type", "unknown_id", "refused")
        await ws.send(b"\x00binary")
        assert "binary frames" in (await recv_json(ws))["reason"]

        # Still usable: a real ack goes through, a repeated one is silently ignored.
        await ws.send(json.dumps({"type": "ack", "intervention_id": delivered["intervention_id"]}))
        await ws.send(json.dumps({"type": "ack", "intervention_id": delivered["intervention_id"]}))
        await ws.send(json.dumps({"type": "ping", "ref": 7}))
        assert await recv_json(ws) == {"type": "pong", "ref": 7}  # the duplicate ack had no reply
        [ack] = await acks_in_log(gw)
        assert ack.intervention_id == delivered["intervention_id"]


async def test_oversized_message_closes_with_1009_and_server_carries_on(gateway: GatewayFactory) -> None:
    async with gateway(max_message_bytes=1024) as gw:
        async with await raw_connect(gw) as ws:
            await recv_json(ws)
            await ws.send(json.dumps({"type": "ack", "intervention_id": "x" * 2000}))
            with pytest.raises(ConnectionClosed) as info:
                await recv_json(ws)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1009
            assert "exceeds limit of 1024 bytes" in info.value.rcvd.reason
        async with await raw_connect(gw) as ws:
            assert (await recv_json(ws))["type"] == "hello"


# -- control messages -------------------------------------------------------------------------------


async def test_control_messages_reach_callbacks(gateway: GatewayFactory) -> None:
    started: list[StreamStarted] = []
    ended: list[StreamEnded] = []

    async def on_started(event: StreamStarted) -> None:
        if event.source.startswith("ftp:"):
            raise ValueError(f"unsupported source {event.source}")
        started.append(event)

    async def on_ended(event: StreamEnded) -> None:
        ended.append(event)

    async with (
        gateway(on_stream_started=on_started, on_stream_ended=on_ended) as gw,
        BackendClient(gw.url, TOKEN) as client,
    ):
        reply = await client.send_control(
            {"type": "stream.started", "stream_id": "s1", "source": "rtmp://x/1", "metadata": {"lang": "de"}}
        )
        assert (reply["type"], reply["for"], reply["stream_id"]) == ("ok", "stream.started", "s1")
        assert started == [StreamStarted("acme", "s1", "rtmp://x/1", {"lang": "de"})]

        with pytest.raises(GatewayError, match="unsupported source ftp://y"):
            await client.send_control({"type": "stream.started", "stream_id": "s2", "source": "ftp://y"})
        with pytest.raises(GatewayError, match="metadata: must be of type 'object', got list"):
            await client.send_control({"type": "stream.started", "stream_id": "s2", "metadata": [1]})

        await client.send_control({"type": "stream.ended", "stream_id": "s1"})
        assert ended == [StreamEnded("acme", "s1")]


async def test_control_callback_crash_is_an_error_reply_not_a_crash(gateway: GatewayFactory) -> None:
    async def broken(event: StreamEnded) -> None:
        raise RuntimeError("bug")

    async with gateway(on_stream_ended=broken) as gw, BackendClient(gw.url, TOKEN) as client:
        with pytest.raises(GatewayError, match=r"internal error handling stream\.ended"):
            await client.send_control({"type": "stream.ended", "stream_id": "s1"})
        with pytest.raises(GatewayError, match="no stream handler"):
            await client.send_control({"type": "stream.started", "stream_id": "s1"})


async def test_printing_backend_prints_and_acks(
    gateway: GatewayFactory, r: redis.asyncio.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    async with gateway() as gw:
        printer = asyncio.create_task(print_interventions(gw.url, TOKEN))
        try:
            await gw.outbox.publish(restriction(1))
            # Block on the audit trail until the ack lands there (an XREAD wait, not a sleep).
            reply = await r.xread({gw.timeline.audit_key("s1"): "0"}, block=int(WAIT * 1000))
            assert reply, "no ack was recorded"
        finally:
            printer.cancel()
            await asyncio.wait([printer])
        [ack] = await acks_in_log(gw)
        assert ack.intervention_id == restriction(1).intervention_id
    out = capsys.readouterr().out
    assert "[s1 t=1.0s] RESTRICT violence score=0.80 effects=age_gate,blur" in out


# -- limits -----------------------------------------------------------------------------------------


async def test_over_the_rate_limit_messages_are_dropped_with_a_reason(gateway: GatewayFactory) -> None:
    async with gateway(rate_limit_per_s=0.5, rate_burst=3) as gw, await raw_connect(gw) as ws:
        hello = await recv_json(ws)
        assert hello["rate_limit"] == {"per_s": 0.5, "burst": 3}
        for n in range(3):
            await ws.send(json.dumps({"type": "ping", "ref": n}))
            assert await recv_json(ws) == {"type": "pong", "ref": n}
        await ws.send(json.dumps({"type": "ping", "ref": "over"}))
        error = await recv_json(ws)
        assert check_outgoing(error) == "error"
        assert (error["code"], error["ref"], error["for"]) == ("rate_limited", "over", "ping")
        assert "rate limit of 0.5 messages/s" in error["reason"] and "dropped" in error["reason"]
        assert 0 < error["retry_after_s"] <= 2.0
        await ws.send("{not json")  # anything counts, bad frames too
        assert (await recv_json(ws))["code"] == "rate_limited"


async def test_sustained_abuse_closes_with_1008(gateway: GatewayFactory) -> None:
    async with gateway(rate_limit_per_s=1.0, rate_burst=4) as gw:
        async with await raw_connect(gw) as ws:
            await recv_json(ws)
            codes = []
            with pytest.raises(ConnectionClosed) as info:
                for n in range(50):
                    await ws.send(json.dumps({"type": "ping", "ref": n}))
                    reply = await recv_json(ws)
                    codes.append(reply.get("code"))
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "rate limit exceeded")
            # The burst was served, then dropped messages used up the strikes (one per burst slot).
            assert codes[:4] == [None] * 4 and set(codes[4:]) == {"rate_limited"}
            assert len(codes) <= 4 + 4 + 1
        async with await raw_connect(gw) as ws:  # the gateway carries on
            assert (await recv_json(ws))["type"] == "hello"


async def test_acks_of_held_deliveries_are_never_rate_limited(gateway: GatewayFactory) -> None:
    async with gateway(rate_limit_per_s=0.1, rate_burst=1) as gw, BackendClient(gw.url, TOKEN) as client:
        ivs = [restriction(n) for n in range(1, 11)]
        for iv in ivs:
            await gw.outbox.publish(iv)
        for _ in ivs:
            await client.ack(await next_received(client))
        async with asyncio.timeout(WAIT):
            while await gw.outbox.backlog():  # noqa: ASYNC110 -- no event: a ping would be rate limited
                await asyncio.sleep(0.02)
        assert len(await acks_in_log(gw)) == 10
        assert client.last_error is None
        await client.ack(ivs[0].intervention_id)  # no longer held: this one counts (the burst of 1)
        await client.ack(ivs[1].intervention_id)  # and this one is over the limit
        async with asyncio.timeout(WAIT):
            await until(lambda: client.last_error is not None)
        assert "rate limit" in str(client.last_error)


async def drain(ws: ClientConnection, quiet_s: float = 0.3) -> list[dict[str, Any]]:
    """Messages until none came for ``quiet_s``."""
    out: list[dict[str, Any]] = []
    while True:
        try:
            async with asyncio.timeout(quiet_s):
                out.append(json.loads(await ws.recv()))
        except TimeoutError:
            return out


async def test_a_backend_that_never_acks_holds_at_most_max_in_flight_and_the_rest_goes_elsewhere(
    gateway: GatewayFactory,
) -> None:
    async with gateway(max_in_flight=3, ack_timeout_s=30.0) as gw:
        hoarder = await raw_connect(gw)
        assert (await recv_json(hoarder))["max_in_flight"] == 3
        ivs = [restriction(n, stream_id=f"s{n}") for n in range(1, 13)]  # 12 streams: 12 heads
        for iv in ivs:
            await gw.outbox.publish(iv)
        held = await drain(hoarder)
        assert len(held) == 3  # and no more, however long it waits
        async with BackendClient(gw.url, TOKEN) as worker:
            got = []
            for _ in range(9):
                got.append(await next_received(worker))
                await worker.ack(got[-1])  # it too holds at most 3 unacknowledged
            await worker.ping()
            assert await drain(hoarder) == []
            assert {x.intervention.seq for x in got} | {m["seq"] for m in held} == set(range(1, 13))
            assert sorted(gw.in_flight().values()) == [0, 3]
            # The hoarder goes away: what it held goes to the other connection at once.
            await hoarder.close()
            rest = [await next_received(worker) for _ in range(3)]
            assert {x.intervention.seq for x in rest} == {m["seq"] for m in held}
            assert {x.attempt for x in rest} == {2}
            for x in rest:
                await worker.ack(x)
            await worker.ping()
        assert await gw.outbox.backlog() == 0


async def test_two_backends_share_the_load_within_their_in_flight_limits(gateway: GatewayFactory) -> None:
    async with gateway(max_in_flight=2) as gw:
        a = BackendClient(gw.url, TOKEN)
        b = BackendClient(gw.url, TOKEN)
        async with a, b:
            await a.wait_connected()
            await b.wait_connected()
            for n in range(1, 21):
                await gw.outbox.publish(restriction(n, stream_id=f"s{n}"))
            seen: dict[str, list[int]] = {"a": [], "b": []}

            async def consume(name: str, client: BackendClient, other: str) -> None:
                while sum(map(len, seen.values())) < 20:
                    try:
                        async with asyncio.timeout(0.5):
                            x = await anext(client)
                    except TimeoutError:
                        continue
                    seen[name].append(x.intervention.seq)
                    # a holds its first deliveries until b has had some: both must get work.
                    if name == "a" and not seen[other]:
                        async with asyncio.timeout(WAIT):
                            await until(lambda: bool(seen[other]))
                    await client.ack(x)

            async with asyncio.timeout(WAIT * 2), asyncio.TaskGroup() as group:
                group.create_task(consume("a", a, "b"))
                group.create_task(consume("b", b, "a"))
            assert seen["a"] and seen["b"]
            assert sorted(seen["a"] + seen["b"]) == list(range(1, 21))  # each to one of them
            await a.ping()
            await b.ping()
        assert await gw.outbox.backlog() == 0


async def test_at_the_limit_unacked_deliveries_are_still_resent(gateway: GatewayFactory) -> None:
    async with gateway(max_in_flight=2, ack_timeout_s=0.2) as gw, await raw_connect(gw) as ws:
        await recv_json(ws)
        for n in (1, 2, 3):
            await gw.outbox.publish(restriction(n, stream_id=f"s{n}"))
        first = [await recv_json(ws), await recv_json(ws)]
        resent = [await recv_json(ws), await recv_json(ws)]
        assert [m["seq"] for m in first] == [1, 2] and [m["delivery"]["attempt"] for m in first] == [1, 1]
        assert sorted(m["seq"] for m in resent) == [1, 2]  # the same two again, not the third
        assert {m["delivery"]["attempt"] for m in resent} == {2}
        await ws.send(json.dumps({"type": "ack", "intervention_id": first[0]["intervention_id"]}))
        while (third := await recv_json(ws))["seq"] != 3:
            pass  # further resends of 1 or 2 may come first
        assert third["delivery"]["attempt"] == 1
