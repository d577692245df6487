"""The backend client's bounded receive queue, and the example backend, against a real gateway and Redis."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
import redis.asyncio

from livesafe.client import BackendClient, Received
from livesafe.core.events import Intervention, InterventionLifted, ReviewVerdict, Signal
from livesafe.core.monitor import Monitor
from livesafe.core.policy import load_policy
from livesafe.interventions.gateway import Gateway
from tests.builders import RESTRICT, intervention, recorded_acks
from tests.waiting import until

TOKEN = "t0ken-acme"
WAIT = 5.0
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "backend.py"


@pytest.fixture
async def gw(r: redis.asyncio.Redis, prefix: str) -> AsyncIterator[Gateway]:
    async with Gateway(r, {TOKEN: "acme"}, prefix=prefix, ack_timeout_s=30.0, max_in_flight=1000) as gateway:
        yield gateway


def restriction(n: int, stream_id: str = "s1", effects: tuple[str, ...] = ("blur",)) -> Intervention:
    """A restriction over violence, by default a blur alone, without rule."""
    return intervention(n, stream_id, **{**RESTRICT, "effects": effects, "rule": {}})


async def test_receive_queue_is_bounded_and_reading_pauses_until_the_application_catches_up(
    gw: Gateway,
) -> None:
    async with BackendClient(gw.url, TOKEN, max_pending=5) as client:
        await client.wait_connected()
        for n in range(1, 41):
            await gw.outbox.publish(restriction(n, stream_id=f"s{n % 8}"))  # 8 streams: 8 sent at once
        async with asyncio.timeout(WAIT):
            await until(lambda: client.paused >= 1)
        await asyncio.sleep(0.2)  # time enough for more to pile up, were the queue not bounded
        assert client.pending == 5
        got: list[Received] = []
        async with asyncio.timeout(WAIT):
            while len(got) < 40:
                got.append(await anext(client))
                assert client.pending <= 5
                await client.ack(got[-1])
        assert sorted(x.intervention.seq for x in got) == list(range(1, 41))  # nothing lost or repeated
        await client.ping()
    assert await gw.outbox.backlog() == 0


def test_max_pending_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        BackendClient("ws://127.0.0.1:1/v1/backend", TOKEN, max_pending=0)


# -- the example backend ------------------------------------------------------------------------------------


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_backend", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def warn_and_lift() -> tuple[Intervention, InterventionLifted]:
    monitor = Monitor(load_policy())
    [warn] = monitor.feed(Signal("s1", 12.0, "threat", 0.9, "test", end_ts=13.0, evidence={"text": "x"}))
    [lift] = monitor.review(ReviewVerdict("s1", 15.0, warn.intervention_id, "overturn", "ana", "a quote"))
    return warn, lift


async def test_example_backend_applies_undoes_and_dedupes(gw: Gateway) -> None:
    example = load_example()
    warn, lift = warn_and_lift()
    restrict = restriction(7, effects=("age_gate", "blur", "notice"))
    out = io.StringIO()
    async with BackendClient(gw.url, TOKEN) as client:
        backend = example.ExampleBackend(client, out=out)
        for message in (warn, restrict, lift):
            await gw.outbox.publish(message)
        async with asyncio.timeout(WAIT):
            await backend.run(max_messages=3)
        # A resend (as after a lost ack) is acknowledged again but not applied twice.
        assert await backend.handle(Received(restrict, attempt=2)) is False
        await client.ping()
    assert backend.duplicates == 1
    # The warning's notice stays on after its lift: the restriction still holds a notice too.
    assert backend.actions == [("s1", "notice", "on"), ("s1", "age_gate", "on"), ("s1", "blur", "on")]
    assert backend.streams["s1"].active == ["age_gate", "blur", "notice"]
    text = out.getvalue()
    assert "WARN threat" in text and "LIFT" in text and "by ana" in text
    assert "notice stays on: 1 other intervention(s) need it" in text
    acks = await recorded_acks(gw.timeline, "s1")
    assert [(a.status, a.intervention_id, a.lift_id) for a in acks] == [
        ("applied", warn.intervention_id, ""),
        ("applied", restrict.intervention_id, ""),
        ("applied", warn.intervention_id, lift.lift_id),
    ]  # the duplicate's ack was ignored by the gateway: the intervention was already acknowledged
    assert acks[1].effects == ("age_gate", "blur", "notice")
    assert await gw.outbox.backlog() == 0


async def test_example_backend_runs_as_a_program(gw: Gateway) -> None:
    warn, lift = warn_and_lift()
    await gw.outbox.publish(warn)
    await gw.outbox.publish(lift)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), gw.url, "--token", TOKEN, "--max-messages", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    text = stdout.decode()
    assert "as backend 'acme'" in text
    assert "-> show the streamer an on-screen notice" in text and "-> remove the notice" in text
    acks = await recorded_acks(gw.timeline, "s1")
    assert [(a.status, a.lift_id) for a in acks] == [("applied", ""), ("applied", lift.lift_id)]
    assert await gw.outbox.backlog() == 0


async def test_example_backend_with_a_bad_token_exits_1(gw: Gateway) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), gw.url, "--token", "wrong",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    assert proc.returncode == 1 and "401" in stderr.decode()
