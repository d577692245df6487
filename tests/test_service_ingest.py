"""The service with live ingest: a WHIP publisher (real aiortc peer) becomes a monitored stream, and its
state changes reach the event log and a connected backend; a WHEP server's stream is pulled and released.
Decode only (no models) to stay fast."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from livesafe.analyzers.registry import Analyzers
from livesafe.api import HttpServer, make_app
from livesafe.client import BackendClient
from livesafe.core.events import StreamState
from livesafe.core.policy import load_policy
from livesafe.service import Service, ServiceOptions
from tests.builders import GradientTrack, ToneTrack, config, records, serve_app
from tests.conftest import source_rules

TOKENS = {"tok": "backend-a"}


@pytest.fixture
async def service(r: redis.asyncio.Redis, prefix: str) -> AsyncIterator[tuple[Service, str]]:
    options = ServiceOptions(port=0, tokens=TOKENS, prefix=prefix, sources=source_rules())
    async with Service(load_policy(), Analyzers(), r, options) as svc:
        async with HttpServer(make_app(svc, TOKENS, svc.whip.routes())) as http:
            yield svc, http.url


async def test_whip_publisher_becomes_a_monitored_stream(service: tuple[Service, str]) -> None:
    svc, url = service
    notices: list[dict[str, Any]] = []
    async with BackendClient(svc.gateway.url, "tok", on_notice=notices.append) as backend:
        await backend.wait_connected()
        pc = RTCPeerConnection(config())
        try:
            pc.addTransceiver(GradientTrack(), direction="sendonly")
            pc.addTransceiver(ToneTrack(), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            async with aiohttp.ClientSession() as http, http.post(
                f"{url}/whip/cam-1", data=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp", "Authorization": "Bearer tok"},
            ) as resp:
                assert resp.status == 201, await resp.text()
                answer = await resp.text()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            assert svc.streams == ["cam-1"]
            async with asyncio.timeout(20):
                while True:
                    (m,) = svc.metrics()
                    if m["ingest"]["frames_sampled"] >= 2 and m["ingest"]["audio_seconds"] >= 1.0:
                        break
                    await asyncio.sleep(0.1)
            assert m["metadata"] == {"ingest": "whip", "backend": "backend-a"}
        finally:
            await pc.close()
        summary = await asyncio.wait_for(svc.wait("cam-1"), 30)
        assert summary is not None and summary.ingest["frames_sampled"] >= 2
        await backend.ping()
    states = [e.state for e in await records(svc.timeline, "cam-1") if isinstance(e, StreamState)]
    assert states[0] == "live" and states[-1] in ("ended", "failed")
    assert [n["state"] for n in notices][:1] == ["live"]


@dataclass
class Whep:
    """What a test WHEP server saw: its address, the POSTs (with their Authorization) and the DELETEs."""

    base: str
    posts: list[str | None] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    peers: list[RTCPeerConnection] = field(default_factory=list)


@asynccontextmanager
async def whep_server() -> AsyncIterator[Whep]:
    """A WHEP server on 127.0.0.1 (any token or none): each viewer gets a live gradient and a tone, paced
    in real time (VP8 + Opus); DELETE of the session resource closes that viewer's connection."""

    async def post(request: web.Request) -> web.Response:
        whep.posts.append(request.headers.get("Authorization"))
        pc = RTCPeerConnection(config())
        whep.peers.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        pc.addTrack(GradientTrack())
        pc.addTrack(ToneTrack())
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(
            status=201, text=pc.localDescription.sdp, content_type="application/sdp",
            headers={"Location": f"/whep/{request.match_info['name']}/{len(whep.peers)}"},
        )

    async def delete(request: web.Request) -> web.Response:
        whep.deleted.append(request.path)
        await whep.peers[int(request.match_info["session"]) - 1].close()
        return web.Response(status=200)

    app = web.Application()
    app.add_routes([web.post("/whep/{name}", post), web.delete("/whep/{name}/{session}", delete)])
    runner, base = await serve_app(app)
    whep = Whep(base)
    try:
        yield whep
    finally:
        for pc in whep.peers:
            await pc.close()
        await runner.cleanup()


async def metrics_when(svc: Service, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The one running stream's metrics once ``condition`` holds for them (callers bound the wait)."""
    while True:
        (m,) = svc.metrics()
        if condition(m):
            return m
        await asyncio.sleep(0.05)


async def test_service_pulls_a_whep_source(service: tuple[Service, str]) -> None:
    svc, _ = service
    async with whep_server() as whep:
        source = "whep://s3cret@" + whep.base.removeprefix("http://") + "/whep/x"
        svc.start_stream("pull-1", source, {"ingest": "whep"})
        assert svc.streams == ["pull-1"]
        async with asyncio.timeout(20):
            m = await metrics_when(svc, lambda m: m["ingest"]["frames_sampled"] >= 2
                                   and m["ingest"]["audio_seconds"] >= 1.0)
            frames, audio_s = m["ingest"]["frames_sampled"], m["ingest"]["audio_seconds"]
            m = await metrics_when(svc, lambda m: m["ingest"]["frames_sampled"] >= frames + 2
                                   and m["ingest"]["audio_seconds"] >= audio_s + 0.5)
        assert m["source"] == source and m["metadata"] == {"ingest": "whep"}
        assert m["media_seconds"] > 0
        assert whep.posts == ["Bearer s3cret"]  # the token rides in the whep:// userinfo
        async with asyncio.timeout(10):
            summary = await svc.stop_stream("pull-1")
        # the worker closed its source before stop_stream returned: the server saw the DELETE
        assert whep.deleted == ["/whep/x/1"]
        assert svc.streams == []
        assert summary is not None and not summary.error
        assert summary.ingest["frames_sampled"] >= frames + 2 and summary.ingest["audio_seconds"] >= 1.5
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("webrtc-") and not t.done()]
    states = [e.state for e in await records(svc.timeline, "pull-1") if isinstance(e, StreamState)]
    assert states == ["live", "stopped"]
