"""A stream id that goes live again is a new session: its interventions all reach the backend again, and
each session's recorded inputs replay to exactly its recorded decisions. Real models on the bundled demo,
the real service, a real websocket backend, a real Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio

from livesafe.analyzers.registry import Analyzers
from livesafe.cli import main
from livesafe.client import BackendClient, GatewayError
from livesafe.core.events import Ack, Intervention, Signal, StreamState, Tick, Transcript
from livesafe.core.policy import load_policy
from livesafe.service import Service, ServiceOptions
from livesafe.timeline.entries import SessionEnd, SessionStart
from livesafe.timeline.replay import verify
from tests.conftest import DEMO_DIR, source_rules

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def analyzers() -> Analyzers:
    return Analyzers.load(load_policy())


async def cli(*argv: str) -> int:
    """``livesafe ARGV...`` in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


async def broadcast(backend: BackendClient, service: Service, stream_id: str) -> list[Intervention]:
    """Announce the threat demo as ``stream_id``, ack everything until it ends; its interventions."""
    await backend.send_control({"type": "stream.started", "stream_id": stream_id,
                                "source": str(DEMO_DIR / "threat.mp4"), "metadata": {"region": "EU"}})
    got: list[Intervention] = []

    async def receive() -> None:
        async for msg in backend:
            if msg.lifted is None:
                got.append(msg.intervention)
            await backend.ack(msg)

    receiver = asyncio.create_task(receive())
    try:
        await asyncio.wait_for(service.wait(stream_id), 180)
        await backend.ping()
        async with asyncio.timeout(10):  # what the last decisions sent is acked
            while await service.outbox.backlog():  # noqa: ASYNC110 (a Redis count: nothing to wait on)
                await asyncio.sleep(0.05)
    finally:
        receiver.cancel()
        await asyncio.wait([receiver])
    return got


async def test_a_stream_id_live_again_gets_its_interventions_again_and_each_session_replays_exactly(
    analyzers: Analyzers, r: redis.asyncio.Redis, prefix: str, redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = load_policy()
    options = ServiceOptions(port=0, tokens={"tok": "backend-a"}, prefix=prefix, pacing="fast",
                             sources=source_rules())
    async with Service(policy, analyzers, r, options) as service:
        async with BackendClient(service.gateway.url, "tok") as backend:
            await backend.wait_connected()
            first = await broadcast(backend, service, "chan-42")
            second = await broadcast(backend, service, "chan-42")
            # Bad ids and sources are refused at the door, with the reason.
            for body, reason in (({"stream_id": "../../x", "source": "rtmp://h/a"}, "is not allowed"),
                                 ({"stream_id": "ok", "source": "/etc/shadow"}, "not under a configured"),
                                 ({"stream_id": "ok", "source": "gopher://h/x"}, "scheme 'gopher'")):
                with pytest.raises(GatewayError, match=reason):
                    await backend.send_control({"type": "stream.started", **body})
    assert len(first) >= 3 and [iv.action for iv in first] == [iv.action for iv in second]
    assert first[0].session and first[0].session != second[0].session
    assert not {iv.intervention_id for iv in first} & {iv.intervention_id for iv in second}
    assert [iv.seq for iv in first] == [iv.seq for iv in second]  # each session counts from 1

    sessions = await service.timeline.sessions("chan-42")
    assert [s.session for s in sessions] == [first[0].session, second[0].session]
    for info, sent in zip(sessions, (first, second), strict=True):
        records = [e.record for e in await service.timeline.read_all("chan-42", info.session)]
        start, end = records[0], records[-1]
        assert isinstance(start, SessionStart) and start.policy_hash == policy.hash
        assert start.metadata == {"region": "EU"} and start.started_by == "backend-a" and start.analyzers
        assert isinstance(end, SessionEnd) and end.state == "ended"
        kinds = {type(r) for r in records}
        assert {Transcript, Signal, Tick, Intervention, Ack, StreamState} <= kinds
        recorded = [r for r in records if isinstance(r, Intervention)]
        assert [iv.intervention_id for iv in recorded] == [iv.intervention_id for iv in sent]
        acked = {r.intervention_id for r in records if isinstance(r, Ack) and r.status == "ack"}
        assert {iv.intervention_id for iv in sent} <= acked
        # The policy is stored by its hash, and replaying the recorded inputs gives the recorded decisions.
        stored = await service.timeline.policy(start.policy_hash)
        assert stored is not None and stored.hash == policy.hash
        report = verify(stored, records)
        assert report.exact, report.summary()
        assert report.recorded > len(recorded)  # risk updates and lifts too
    # The command line shows it: a readable table, JSON lines, and the replay check.
    args = ["--redis-url", redis_url, "--prefix", prefix]
    assert await cli("timeline", "chan-42", *args) == 0
    text = capsys.readouterr().out
    assert "session.start" in text and "transcript" in text and "INTERVENTION" not in text
    assert "WARN #" in text and "tick" not in text
    assert await cli("timeline", "chan-42", "--session", first[0].session, "--json", "--types",
                     "intervention", *args) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["intervention_id"] for x in lines] == [iv.intervention_id for iv in first]
    assert await cli("timeline", "chan-42", "--verify", "--types", "session.end", *args) == 0
    assert "exact:" in capsys.readouterr().out
    assert await cli("timeline", "chan-42", "--sessions", *args) == 0
    assert capsys.readouterr().out.split() == [first[0].session, second[0].session]
    assert await cli("timeline", "nobody", *args) == 2
    assert "no recorded session" in capsys.readouterr().err


def test_watch_refuses_a_bad_stream_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["watch", str(DEMO_DIR / "benign.mp4"), "--stream-id", "a/b"]) == 2
    assert "is not allowed" in capsys.readouterr().err
