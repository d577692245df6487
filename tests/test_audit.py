"""The per-stream audit trail over a real Redis: what is indexed, order, pagination, the CLI."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
import redis.asyncio

from livesafe.cli import main
from livesafe.client import BackendClient
from livesafe.core.events import Ack, Intervention, ReviewVerdict, RiskUpdate, Signal, StreamState
from livesafe.interventions.gateway import Gateway
from livesafe.store import open_redis
from livesafe.timeline.sessions import new_session_id
from livesafe.timeline.store import TimelineStore
from tests.builders import intervention

TOKEN = "t0ken-acme"
WAIT = 5.0


def warning(n: int, stream_id: str = "s1") -> Intervention:
    """A warning over a threat, without rule, evidence ids or message."""
    return intervention(n, stream_id, category="threat", reason="threat risk 0.70 >= 0.50", rule={},
                        signal_ids=(), message="")


SESSION = new_session_id()


async def fill(events: TimelineStore) -> list[str]:
    """Two streams' events, interleaved, audited and not; returns s1's audited entry ids in order."""
    ids: list[str] = []
    for event in (
        Signal("s1", 1.0, "threat", 0.9, "text"),
        warning(1),
        warning(1, "s2"),
        RiskUpdate("s1", 1.0, "threat", 0.7, 0.7, "warn"),
        Ack("s1", 1.0, warning(1).intervention_id, "ack", backend="acme"),
        StreamState("s1", 2.0, "degraded"),
        Ack("s1", 1.0, warning(1).intervention_id, "applied", backend="acme", effects=("notice",),
            reason="banner shown"),
        ReviewVerdict("s1", 3.0, warning(1).intervention_id, "overturn", "ana", "lyrics"),
        Ack("s2", 1.0, warning(1, "s2").intervention_id, "nack", backend="globex", reason="offline"),
        warning(2),
    ):
        entry = await (events.record_ack(event) if isinstance(event, Ack)
                       else events.append(event.stream_id, SESSION, event))
        if event.stream_id == "s1" and event.type in ("intervention", "ack", "review"):
            ids.append(entry)
    return ids


async def test_audit_lists_one_streams_decisions_and_answers_in_order(
    r: redis.asyncio.Redis, prefix: str
) -> None:
    events = TimelineStore(r, prefix=prefix)
    ids = await fill(events)
    trail = await events.audit("s1")
    assert [e.entry_id for e in trail] == ids  # the same ids as in the session's timeline
    assert [(e.what, e.who) for e in trail] == [
        ("intervention", "policy:default"), ("ack", "acme"), ("applied", "acme"), ("overturn", "ana"),
        ("intervention", "policy:default")]
    assert all(e.event.stream_id == "s1" for e in trail)
    assert [(e.what, e.who) for e in await events.audit("s2")] == [
        ("intervention", "policy:default"), ("nack", "globex")]
    assert await events.audit("nobody") == []
    first = trail[2].as_dict()
    assert first["event"]["reason"] == "banner shown" and first["at"].endswith("Z")
    assert "applied" in trail[2].line() and "banner shown" in trail[2].line()
    # The index is bounded in time: it expires after the retention period.
    ttl = await r.ttl(events.audit_key("s1"))
    assert 0 < ttl <= events.retention.timeline_s


async def test_audit_pages_with_an_after_cursor(r: redis.asyncio.Redis, prefix: str) -> None:
    events = TimelineStore(r, prefix=prefix)
    ids = await fill(events)
    pages, after = [], None
    while True:
        page = await events.audit("s1", after=after, limit=2)
        if not page:
            break
        pages.append([e.entry_id for e in page])
        after = page[-1].entry_id
    assert pages == [ids[:2], ids[2:4], ids[4:]]
    with pytest.raises(ValueError, match="entry id"):
        await events.audit("s1", after="yesterday")
    with pytest.raises(ValueError, match="limit"):
        await events.audit("s1", limit=0)


async def test_audit_index_is_bounded_per_stream(r: redis.asyncio.Redis, prefix: str) -> None:
    events = TimelineStore(r, prefix=prefix, audit_maxlen=10)
    for n in range(1, 501):
        await events.append("s1", SESSION, warning(n))
    trail = await events.audit("s1", limit=1000)
    assert len(trail) < 500  # trimmed (approximately, as Redis does cheaply)
    assert trail[-1].event.media_ts == 500.0  # the newest are kept


async def test_gateway_acks_reach_the_audit_trail(r: redis.asyncio.Redis, prefix: str) -> None:
    async with Gateway(r, {TOKEN: "acme"}, prefix=prefix) as gw, BackendClient(gw.url, TOKEN) as client:
        for n in (1, 2):
            await gw.timeline.append("s1", SESSION, warning(n))  # as the service records a decision
            await gw.outbox.publish(warning(n))
        async with asyncio.timeout(WAIT):
            first = await anext(client)
            await client.ack(first)  # one stream: the second is sent once the first is acknowledged
            second = await anext(client)
        await client.nack(second, "stream already offline")
        await client.ping()
        trail = await gw.timeline.audit("s1")
    assert [(e.what, e.who, e.event.media_ts) for e in trail] == [
        ("intervention", "policy:default", 1.0), ("intervention", "policy:default", 2.0),
        ("ack", "acme", 1.0), ("nack", "acme", 2.0)]


def test_cli_prints_a_streams_audit_trail(
    redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:12]}"

    async def setup() -> list[str]:
        async with open_redis(redis_url) as client:
            return await fill(TimelineStore(client, prefix=prefix))

    async def cleanup() -> None:
        async with open_redis(redis_url) as client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)

    ids = asyncio.run(setup())
    try:
        assert main(["audit", "s1", "--redis-url", redis_url, "--prefix", prefix, "--json"]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [line["id"] for line in lines] == ids
        whats = [line["what"] for line in lines]
        assert whats == ["intervention", "ack", "applied", "overturn", "intervention"]

        args = ["audit", "s1", "--redis-url", redis_url, "--prefix", prefix, "--limit", "2"]
        assert main([*args, "--after", ids[1]]) == 0
        text = capsys.readouterr().out.splitlines()
        assert [line.split()[0] for line in text] == ids[2:4]
        assert "overturn" in text[1] and "ana" in text[1]
        assert main([*args, "--all"]) == 0
        assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ids

        assert main(["audit", "nobody", "--redis-url", redis_url, "--prefix", prefix]) == 0
        assert "no audit entries for stream 'nobody'" in capsys.readouterr().err
        # Without REDIS_URL it reads the embedded Redis of the data directory (here: an empty one).
        monkeypatch.delenv("REDIS_URL", raising=False)
        assert main(["audit", "s1", "--redis-url", "", "--data-dir", str(tmp_path)]) == 0
        assert "no audit entries for stream 's1'" in capsys.readouterr().err
        assert main(["audit", "../etc", "--redis-url", redis_url]) == 2
        assert "is not allowed" in capsys.readouterr().err
    finally:
        asyncio.run(cleanup())
