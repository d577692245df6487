"""The HTTP control API against a real service (decode only, no models), real Redis, real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio

from livesafe.analyzers.base import AnalyzerCost
from livesafe.analyzers.registry import Analyzers
from livesafe.api import HttpServer, make_app
from livesafe.auth import TokenSet
from livesafe.client import BackendClient
from livesafe.core.events import (
    Ack,
    Intervention,
    InterventionLifted,
    ReviewVerdict,
    Signal,
    VideoSample,
    to_dict,
)
from livesafe.core.policy import load_policy
from livesafe.service import Service, ServiceOptions
from tests.builders import records
from tests.conftest import source_rules
from tests.media import make_clip

TOKENS = {"tok": "backend-a"}
AUTH = {"Authorization": "Bearer tok"}


@pytest.fixture
async def api(r: redis.asyncio.Redis, prefix: str) -> AsyncIterator[tuple[Service, str]]:
    options = ServiceOptions(port=0, tokens=TOKENS, prefix=prefix, pacing="realtime", sources=source_rules())
    async with Service(load_policy(), Analyzers(), r, options) as service:
        async with HttpServer(make_app(service, TOKENS)) as http:
            yield service, http.url


async def call(method: str, url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kw) as resp:
        return resp.status, await resp.json()


async def test_start_list_and_end_a_stream(api: tuple[Service, str], tmp_path: Path) -> None:
    service, url = api
    clip = make_clip(tmp_path / "c.mp4", 30.0, size=(64, 48))
    body = {"stream_id": "s1", "source": str(clip),
            "metadata": {"region": "EU", "audience": 1200, "account_age_days": 3, "tier": "partner"}}
    status, reply = await call("POST", f"{url}/v1/streams", json=body, headers=AUTH)
    assert (status, reply["type"], reply["stream_id"]) == (201, "ok", "s1")
    status, reply = await call("GET", f"{url}/v1/streams", headers=AUTH)
    (s1,) = reply["streams"]
    assert s1["stream_id"] == "s1" and s1["metadata"]["region"] == "EU"
    assert {"tier", "risk", "media_seconds", "lag_s", "ingest"} <= s1.keys()
    assert "frames_decoded" in s1["ingest"] and "video_dropped" in s1["ingest"]
    status, reply = await call("POST", f"{url}/v1/streams", json=body, headers=AUTH)
    assert status == 409 and "already" in reply["reason"]
    status, reply = await call("DELETE", f"{url}/v1/streams/s1", headers=AUTH)
    assert status == 200 and service.streams == []
    assert service.summaries["s1"].error == ""


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "reason"),
    [
        ("GET", "/v1/streams", {}, 401, "bearer token"),
        ("GET", "/v1/streams", {"headers": {"Authorization": "Bearer nope"}}, 401, "bearer token"),
        ("POST", "/v1/streams", {"headers": AUTH, "data": b"{not json"}, 400, "not JSON"),
        ("POST", "/v1/streams", {"headers": AUTH, "json": [1, 2]}, 400, "JSON object"),
        ("POST", "/v1/streams", {"headers": AUTH, "json": {"stream_id": "x"}}, 400, "'source'"),
        ("POST", "/v1/streams", {"headers": AUTH, "json": {"source": "a.mp4"}}, 400, "stream_id must be"),
        ("POST", "/v1/streams", {"headers": AUTH, "json": {"stream_id": "../../x", "source": "rtmp://h/a"}},
         400, "stream_id '../../x' is not allowed"),
        ("POST", "/v1/streams", {"headers": AUTH, "json": {"stream_id": "x" * 5000, "source": "rtmp://h/a"}},
         400, "is 5000 characters long"),
        ("POST", "/v1/streams", {"headers": AUTH, "json": {"stream_id": "x", "source": "/etc/shadow"}},
         400, "not under a configured source directory"),
        ("POST", "/v1/streams", {"headers": AUTH, "json": {"stream_id": "x", "source": "ftp://h/a.mp4"}},
         400, "scheme 'ftp' is not allowed"),
        ("GET", "/v1/streams/a..b%2F/timeline", {"headers": AUTH}, 400, "is not allowed"),
        ("GET", "/v1/streams/nobody/timeline", {"headers": AUTH}, 404, "no recorded session"),
        ("GET", "/v1/streams/s1/timeline?session=../x", {"headers": AUTH}, 400, "not a session id"),
        ("GET", "/v1/streams/s1/sessions/20261202T083000123Z-1a2b3c/evidence/frame:1", {"headers": AUTH},
         404, "no evidence"),
        ("POST", "/v1/streams", {"headers": AUTH, "json": {"stream_id": "x", "source": "a", "metadata": 3}},
         400, "'metadata'"),
        ("DELETE", "/v1/streams/nope", {"headers": AUTH}, 404, "not being monitored"),
    ],
)
async def test_bad_requests_are_refused_with_a_reason(
    api: tuple[Service, str], method: str, path: str, kw: dict[str, Any], status: int, reason: str
) -> None:
    _, url = api
    got, reply = await call(method, url + path, **kw)
    assert got == status and reply["type"] == "error" and reason in reply["reason"]


async def test_health_needs_no_token(api: tuple[Service, str]) -> None:
    _, url = api
    assert await call("GET", f"{url}/v1/health") == (200, {"type": "ok"})


async def running_stream_with_a_warning(service: Service, tmp_path: Path) -> Intervention:
    """A running stream (a real clip, no models) on which the core decided a warning."""
    clip = make_clip(tmp_path / "c.mp4", 30.0, size=(64, 48))
    service.start_stream("s1", str(clip), trusted=True)
    worker = service._running["s1"].worker
    async with asyncio.timeout(10):  # the session's start is recorded before its worker runs
        while not await service.timeline.sessions("s1"):  # noqa: ASYNC110 (a Redis read)
            await asyncio.sleep(0.01)
    threat = Signal("s1", 0.0, "threat", 0.9, "test", evidence={"text": "I'll find you"})
    await worker._signal(threat)  # as the stream's analyzers would: through the worker's one door
    [warn] = worker.summary.interventions
    return warn


async def test_overturn_over_http_lifts_and_the_backend_gets_the_lift(
    api: tuple[Service, str], tmp_path: Path
) -> None:
    service, url = api
    warn = await running_stream_with_a_warning(service, tmp_path)
    async with BackendClient(service.gateway.url, "tok") as backend:
        async with asyncio.timeout(10):
            first = await anext(backend)
        assert first.message == warn
        await backend.ack(first)  # a stream's next message (the lift) is sent once this one is acked
        status, reply = await call("POST", f"{url}/v1/interventions/{warn.intervention_id}/overturn",
                                   json={"reviewer": "ana", "note": "song lyrics"}, headers=AUTH)
        assert (status, reply["type"], reply["for"]) == (200, "ok", "overturn")
        lift = reply["lift"]
        assert (lift["type"], lift["intervention_id"], lift["reason"]) == (
            "intervention.lifted", warn.intervention_id, "overturned")
        async with asyncio.timeout(10):
            got = await anext(backend)
        assert got.lifted is not None and to_dict(got.lifted) == lift
        await backend.ack(got)
        await backend.ping()
    events = await records(service.timeline, "s1")
    verdict = next(e for e in events if isinstance(e, ReviewVerdict))
    assert (verdict.verdict, verdict.reviewer, verdict.note) == ("overturn", "ana", "song lyrics")
    assert events.index(verdict) < next(i for i, e in enumerate(events) if isinstance(e, InterventionLifted))
    assert any(isinstance(e, Ack) and e.lift_id == lift["lift_id"] for e in events)
    # Overturning it again, or something unknown, is refused with a reason.
    status, reply = await call("POST", f"{url}/v1/interventions/{warn.intervention_id}/overturn",
                               json={"stream_id": "s1"}, headers=AUTH)
    assert status == 404 and "already lifted" in reply["reason"]
    status, reply = await call("POST", f"{url}/v1/interventions/iv_nope/overturn", headers=AUTH)
    assert status == 404 and "not in force" in reply["reason"]
    status, reply = await call("POST", f"{url}/v1/interventions/iv_nope/overturn", json=[1])
    assert status == 401


async def test_lift_decided_by_a_tick_reaches_the_backend(api: tuple[Service, str], tmp_path: Path) -> None:
    """Risk falls on a calm stream: a tick that only lifts still delivers the lift (and records the tick)."""
    service, _ = api
    warn = await running_stream_with_a_warning(service, tmp_path)
    worker = service._running["s1"].worker
    deadline = worker.monitor.next_deadline("s1")
    assert deadline is not None
    await worker._tick(deadline)
    async with BackendClient(service.gateway.url, "tok", auto_ack=True) as backend:
        async with asyncio.timeout(10):
            first, second = await anext(backend), await anext(backend)
    assert first.message == warn
    assert second.lifted is not None
    assert (second.lifted.intervention_id, second.lifted.reason) == (warn.intervention_id, "risk_fell")


async def test_audit_over_http_lists_the_streams_trail_in_pages(
    api: tuple[Service, str], tmp_path: Path
) -> None:
    service, url = api
    warn = await running_stream_with_a_warning(service, tmp_path)
    async with BackendClient(service.gateway.url, "tok") as backend:
        async with asyncio.timeout(10):
            got = await anext(backend)
        await backend.applied(got, "s1", ("notice",), "banner shown")
        await backend.ping()
        await call("POST", f"{url}/v1/interventions/{warn.intervention_id}/overturn",
                   json={"reviewer": "ana"}, headers=AUTH)
        async with asyncio.timeout(10):
            await backend.ack(await anext(backend))
        await backend.ping()
    status, reply = await call("GET", f"{url}/v1/streams/s1/audit", headers=AUTH)
    assert (status, reply["type"], reply["stream_id"], reply["next"]) == (200, "audit", "s1", None)
    trail = [(e["what"], e["who"]) for e in reply["entries"]]
    assert trail == [("intervention", f"policy:{warn.policy}"), ("applied", "backend-a"),
                     ("overturn", "ana"), ("lift", "ana"), ("ack", "backend-a")]
    assert reply["entries"][0]["event"]["intervention_id"] == warn.intervention_id
    # Page by page with the cursor: the same entries, in the same order.
    entries, after = [], ""
    while True:
        status, page = await call("GET", f"{url}/v1/streams/s1/audit?limit=2{after}", headers=AUTH)
        entries += page["entries"]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert entries == reply["entries"]
    status, other = await call("GET", f"{url}/v1/streams/elsewhere/audit", headers=AUTH)
    assert (status, other["entries"]) == (200, [])
    for query, reason in (("limit=0", "'limit'"), ("limit=x", "'limit'"), ("after=soon", "entry id")):
        status, bad = await call("GET", f"{url}/v1/streams/s1/audit?{query}", headers=AUTH)
        assert status == 400 and reason in bad["reason"]
    status, _ = await call("GET", f"{url}/v1/streams/s1/audit")
    assert status == 401


async def test_the_api_follows_a_reloaded_tokens_file(
    r: redis.asyncio.Redis, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("backend-a: [old]\n")
    tokens = TokenSet(file=path)
    options = ServiceOptions(port=0, tokens=tokens, prefix=prefix)
    async with Service(load_policy(), Analyzers(), r, options) as service:
        assert service.gateway.tokens is tokens  # one token set for both
        async with HttpServer(make_app(service, tokens)) as http:
            old, new = {"Authorization": "Bearer old"}, {"Authorization": "Bearer new"}
            assert (await call("GET", f"{http.url}/v1/streams", headers=old))[0] == 200
            assert (await call("GET", f"{http.url}/v1/streams", headers=new))[0] == 401
            tmp = path.with_name("tokens.tmp")
            tmp.write_text("backend-a: [new]\n")
            tmp.replace(path)
            assert tokens.reload()  # what the gateway's reload task does every few seconds
            assert (await call("GET", f"{http.url}/v1/streams", headers=old))[0] == 401
            assert (await call("GET", f"{http.url}/v1/streams", headers=new))[0] == 200


async def test_timeline_over_http_pages_a_sessions_record(api: tuple[Service, str], tmp_path: Path) -> None:
    service, url = api
    warn = await running_stream_with_a_warning(service, tmp_path)
    session = service._running["s1"].worker.session
    status, reply = await call("GET", f"{url}/v1/streams/s1/sessions", headers=AUTH)
    assert status == 200 and [s["session"] for s in reply["sessions"]] == [session]
    status, reply = await call("GET", f"{url}/v1/streams/s1/timeline?types=intervention,signal", headers=AUTH)
    assert (status, reply["session"]) == (200, session)
    assert [e["type"] for e in reply["entries"]] == ["signal", "intervention"]
    assert reply["entries"][1]["intervention_id"] == warn.intervention_id
    entries, after = [], ""
    while True:
        status, page = await call("GET", f"{url}/v1/streams/s1/timeline?session={session}&limit=1{after}",
                                  headers=AUTH)
        assert status == 200
        entries += page["entries"]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert entries[0]["type"] == "session.start" and len(entries) >= 4
    status, bad = await call("GET", f"{url}/v1/streams/s1/timeline?types=nope", headers=AUTH)
    assert status == 400 and "unknown entry types" in bad["reason"]


class EveryOtherFrame:
    """A vision analyzer of our own interface for this test: every other sampled frame scores high as
    nudity (the real models need real offending images, which the tests do not carry)."""

    name = "test.every_other"
    categories: tuple[str, ...] = ("nudity",)
    cost = AnalyzerCost(per_call_s=0.0)

    def analyze(self, sample: VideoSample) -> list[Signal]:
        score = 0.95 if sample.index % 2 == 0 else 0.05
        return [Signal(sample.stream_id, sample.media_ts, "nudity", score, self.name,
                       evidence={"frame": sample.index})]


async def test_frames_that_score_are_kept_as_evidence_the_intervention_points_to(
    r: redis.asyncio.Redis, prefix: str, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "bright.mp4", 6.0, size=(320, 240))
    options = ServiceOptions(port=0, tokens=TOKENS, prefix=prefix, pacing="fast", sources=source_rules())
    async with Service(load_policy(), Analyzers(vision=[EveryOtherFrame()]), r, options) as service:
        async with HttpServer(make_app(service, TOKENS)) as http:
            service.start_stream("cam", str(clip), trusted=True)
            summary = await asyncio.wait_for(service.wait("cam"), 60)
            assert summary is not None and not summary.error
            [session] = [s.session for s in await service.timeline.sessions("cam")]
            refs = await service.timeline.evidence_refs("cam", session)
            floor = load_policy().categories["nudity"].floor
            signals = [x for x in await records(service.timeline, "cam") if isinstance(x, Signal)]
            flagged = {f"frame:{s.evidence['frame']}" for s in signals if s.score >= floor}
            assert refs and set(refs) == flagged  # every frame that scored, and only those
            thumbnails = {iv.thumbnail for iv in summary.interventions if iv.thumbnail}
            assert thumbnails and thumbnails <= set(refs)
            ref = sorted(thumbnails)[0]
            async with aiohttp.ClientSession() as client:
                url = f"{http.url}/v1/streams/cam/sessions/{session}/evidence/{ref}"
                async with client.get(url, headers=AUTH) as resp:
                    assert resp.status == 200 and resp.content_type == "image/jpeg"
                    assert (await resp.read())[:2] == b"\xff\xd8"
                async with client.get(url) as resp:
                    assert resp.status == 401  # evidence only with a token
