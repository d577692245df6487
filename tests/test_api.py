"""The HTTP control API against a real service (decode only, no models), real Redis, real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio

from livesafe.api import HttpServer, make_app
from livesafe.pipeline import Analyzers
from livesafe.policy import load_policy
from livesafe.service import Service, ServiceOptions
from tests.media import make_clip

TOKENS = {"tok": "backend-a"}
AUTH = {"Authorization": "Bearer tok"}


@pytest.fixture
async def api(r: redis.asyncio.Redis, prefix: str) -> AsyncIterator[tuple[Service, str]]:
    options = ServiceOptions(port=0, tokens=TOKENS, prefix=prefix, pacing="realtime")
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
        ("POST", "/v1/streams", {"headers": AUTH, "json": {"source": "a.mp4"}}, 400, "'stream_id'"),
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
