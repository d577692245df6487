"""The timeline store over a real Redis, replay, ids and sources checked at the door, the embedded Redis
kept on disk."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio

from livesafe.core.events import Ack, Intervention, ReviewVerdict, Signal, Tick, Transcript
from livesafe.core.policy import RetentionPolicy, load_policy, policy_content, policy_from_content
from livesafe.store import open_redis
from livesafe.timeline.entries import SessionEnd, SessionStart, TimelineEntry, describe
from livesafe.timeline.evidence import thumbnail_jpeg
from livesafe.timeline.replay import replay, verify
from livesafe.timeline.sessions import new_session_id
from livesafe.timeline.store import TimelineStore

POLICY = load_policy()


def start(stream_id: str, session: str) -> SessionStart:
    return SessionStart(stream_id, session, "clip.mp4", POLICY.name, POLICY.hash, {"region": "EU"})


def synthetic_inputs(stream_id: str) -> list[Signal | Tick]:
    """Threat signals at odd media times (floats that do not survive rounding), then calm ticks."""
    out: list[Signal | Tick] = [
        Signal(stream_id, t / 3.0, "threat", 0.9, "text", evidence={"text": "I know where you live"})
        for t in range(1, 30)
    ]
    out += [Tick(stream_id, 10.0 + t * 7.0 / 3.0) for t in range(60)]
    return out


async def record_session(store: TimelineStore, stream_id: str, session: str) -> list[Intervention]:
    """Feed synthetic inputs through the core and record them as the worker does; the interventions."""
    from livesafe.core.monitor import Monitor

    monitor = Monitor(POLICY)
    monitor.open(stream_id, session)
    await store.open_session(start(stream_id, session), POLICY)
    await store.append(stream_id, session, Transcript(stream_id, 0.1, 0.3, "I know where you live"))
    ivs: list[Intervention] = []
    for event in synthetic_inputs(stream_id):
        if isinstance(event, Signal):
            d = monitor.step(event)
            await store.append(stream_id, session, event)
            await store.append(stream_id, session, d.risk)
        else:
            d = monitor.tick(stream_id, event.media_ts)
            await store.append(stream_id, session, event)
        for lift in d.lifted:
            await store.append(stream_id, session, lift)
        for iv in d.interventions:
            await store.append(stream_id, session, iv)
        ivs += d.interventions
    await store.close_session(SessionEnd(stream_id, session, 150.0, "ended"))
    return ivs


async def test_sessions_are_apart_and_replay_exactly(r: redis.asyncio.Redis, prefix: str) -> None:
    store = TimelineStore(r, prefix=prefix)
    a, b = new_session_id(), new_session_id()
    first = await record_session(store, "chan-42", a)
    second = await record_session(store, "chan-42", b)
    await record_session(store, "other", new_session_id())
    assert first and [iv.action for iv in first] == [iv.action for iv in second]
    assert not {iv.intervention_id for iv in first} & {iv.intervention_id for iv in second}
    assert [s.session for s in await store.sessions("chan-42")] == sorted([a, b])
    entries = await store.read_all("chan-42", a)
    assert isinstance(entries[0].record, SessionStart) and isinstance(entries[-1].record, SessionEnd)
    assert all(e.record.stream_id == "chan-42" for e in entries)
    signals = [e.record for e in entries if isinstance(e.record, Signal)]
    assert signals[0].media_ts == 1 / 3.0  # exact, not rounded to microseconds
    report = verify(POLICY, [e.record for e in entries])
    assert report.exact, report.summary()
    # A changed record is found, with where.
    records = [e.record for e in entries]
    i = next(i for i, rec in enumerate(records) if isinstance(rec, Intervention))
    records[i] = dataclasses.replace(records[i], score=0.5)  # type: ignore[arg-type]
    bad = verify(POLICY, records)
    assert not bad.exact and "DIFFERENT" in bad.summary()
    # Pages with a cursor give the same entries.
    page1 = await store.read("chan-42", a, limit=5)
    page2 = await store.read("chan-42", a, after=page1[-1].entry_id, limit=5)
    assert [e.entry_id for e in page1 + page2] == [e.entry_id for e in entries[:10]]
    assert "session.start" in page1[0].line() and page1[0].as_dict()["at"].endswith("Z")


async def test_policy_is_stored_once_by_hash_and_comes_back_equal(
    r: redis.asyncio.Redis, prefix: str
) -> None:
    store = TimelineStore(r, prefix=prefix)
    await store.open_session(start("s1", new_session_id()), POLICY)
    stored = await store.policy(POLICY.hash)
    assert stored is not None and stored.hash == POLICY.hash
    assert policy_content(stored) == policy_content(POLICY)
    assert policy_from_content(policy_content(POLICY)).hash == POLICY.hash
    assert await store.policy("0" * 16) is None
    with pytest.raises(ValueError, match="not the content of a policy"):
        policy_from_content({"name": "x"})


async def test_retention_follows_the_policy(r: redis.asyncio.Redis, prefix: str) -> None:
    policy = dataclasses.replace(POLICY, retention=RetentionPolicy(timeline_days=2, evidence_days=1))
    store = TimelineStore(r, prefix=prefix)
    session = new_session_id()
    await store.open_session(dataclasses.replace(start("s1", session), policy_hash=policy.hash), policy)
    await store.append("s1", session, Tick("s1", 1.0))
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    frame[100:200, 100:400] = 255
    jpeg = thumbnail_jpeg(frame)
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) < 20_000
    assert await store.put_evidence("s1", session, "frame:3", jpeg)
    assert not await store.put_evidence("s1", session, "frame:3", jpeg)  # kept once
    assert await store.evidence("s1", session, "frame:3") == jpeg
    assert await store.evidence("s1", session, "frame:4") is None
    assert 86400 < await r.ttl(store.timeline_key("s1", session)) <= 2 * 86400
    assert 0 < await r.ttl(store.evidence_key("s1", session)) <= 86400
    assert 86400 < await r.ttl(store.policy_key(policy.hash)) <= 2 * 86400


async def test_an_ack_finds_its_session(r: redis.asyncio.Redis, prefix: str) -> None:
    store = TimelineStore(r, prefix=prefix)
    session = new_session_id()
    [iv, *_] = await record_session(store, "s1", session)
    await store.record_ack(
        Ack("s1", iv.media_ts, iv.intervention_id, "applied", backend="b", effects=("notice",)))
    acks = [e.record for e in await store.read_all("s1", session) if isinstance(e.record, Ack)]
    assert [(a.status, a.session) for a in acks] == [("applied", session)]
    verdict = ReviewVerdict("s1", 50.0, iv.intervention_id, "uphold", "ana")
    await store.append("s1", session, verdict)
    assert [e.what for e in await store.audit("s1")][-2:] == ["applied", "uphold"]


def test_replay_of_nothing_decides_nothing() -> None:
    assert replay(POLICY, "s1", new_session_id(), []) == []
    with pytest.raises(ValueError, match=r"session\.start"):
        verify(POLICY, [])


# -- the embedded Redis keeps its data under the data directory --------------------------------------


async def test_embedded_redis_keeps_data_on_disk_and_is_shared(tmp_path: Path) -> None:
    if os.environ.get("REDIS_URL"):
        pass  # the embedded server is under test here whatever REDIS_URL says
    async with open_redis(None, data=tmp_path) as first:
        await first.set("k", "kept")
        async with open_redis(None, data=tmp_path) as second:  # another command while the service runs
            assert await second.get("k") == "kept"
            assert (await second.info("server"))["process_id"] == (await first.info("server"))["process_id"]
    async with open_redis(None, data=tmp_path) as again:  # after a restart
        assert await again.get("k") == "kept"
    assert (tmp_path / "redis" / "appendonlydir").is_dir() or any((tmp_path / "redis").glob("*.aof*"))


def test_timeline_entry_at() -> None:
    entry = TimelineEntry("1718000000000-0", Tick("s1", 1.0))
    assert entry.at == 1718000000.0 and entry.type == "tick"



def test_a_translated_transcript_reads_as_translation_and_what_was_said() -> None:
    said = Transcript("s", 1.0, 2.0, "I will kill you.", language="de", translated=True,
                      original="Ich bringe dich um.")
    assert describe(said) == "[de->en] I will kill you. | Ich bringe dich um."
    assert describe(Transcript("s", 1.0, 2.0, "hello", language="en")) == "[en] hello"
