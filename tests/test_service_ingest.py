"""The service with live ingest: a WHIP publisher (real aiortc peer) becomes a monitored stream, and its
state changes reach the event log and a connected backend. Decode only (no models) to stay fast."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription

from livesafe.api import HttpServer, make_app
from livesafe.client import BackendClient
from livesafe.events import StreamState
from livesafe.pipeline import Analyzers
from livesafe.policy import load_policy
from livesafe.service import Service, ServiceOptions
from tests.test_webrtc import GradientTrack, ToneTrack, config

TOKENS = {"tok": "backend-a"}


@pytest.fixture
async def service(r: redis.asyncio.Redis, prefix: str) -> AsyncIterator[tuple[Service, str]]:
    options = ServiceOptions(port=0, tokens=TOKENS, prefix=prefix)
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
    states = [e.state for e in await svc.events.read(stream_id="cam-1") if isinstance(e, StreamState)]
    assert states[0] == "live" and states[-1] in ("ended", "failed")
    assert [n["state"] for n in notices][:1] == ["live"]
