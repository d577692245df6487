"""Embedded Redis and ``open_redis``, against real servers (no mocks)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from livesafe.store import EmbeddedRedis, RedisUnavailableError, open_redis, redact_url


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_embedded_redis_is_usable_and_leaves_nothing_behind() -> None:
    with EmbeddedRedis() as server:
        assert server.url.startswith("redis://127.0.0.1:")
        assert server.running
        client = redis.Redis.from_url(server.url)
        try:
            client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.xadd("s", {"a": "1"})
        finally:
            client.close()
        pid, data_dir = server.pid, server.data_dir
        assert pid is not None
    assert not server.running
    assert not Path(data_dir).exists()
    if sys.platform.startswith("linux"):
        assert not _alive(pid)
    server.close()  # idempotent


def test_two_embedded_servers_are_independent() -> None:
    with EmbeddedRedis() as a, EmbeddedRedis() as b:
        assert a.port != b.port
        ca, cb = redis.Redis.from_url(a.url), redis.Redis.from_url(b.url)
        try:
            ca.set("k", "a")
            assert cb.get("k") is None
        finally:
            ca.close()
            cb.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_embedded_server_dies_with_a_killed_parent_and_its_dir_is_swept() -> None:
    code = (
        "from livesafe.store import EmbeddedRedis; import time; "
        "r = EmbeddedRedis(); print(r.pid, r.data_dir, flush=True); time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    try:
        pid_text, data_dir = parent.stdout.readline().split()
        pid = int(pid_text)
        assert _alive(pid)
    finally:
        parent.kill()  # SIGKILL: no close(), no finalizers
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)
    assert Path(data_dir).is_dir()
    with EmbeddedRedis():
        assert not Path(data_dir).exists()


async def test_open_redis_without_url_starts_embedded_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="livesafe.store")
    async with open_redis(None) as client:
        assert await client.set("k", "v")
        assert await client.get("k") == "v"  # decode_responses=True
        messages = [r.getMessage() for r in caplog.records]
        assert any(
            m.startswith("REDIS_URL not set: started embedded Redis at redis://127.0.0.1:") for m in messages
        )
        port = client.connection_pool.connection_kwargs["port"]
    with pytest.raises(ConnectionRefusedError):  # the embedded server is gone with the block
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_open_redis_with_url(redis_url: str) -> None:
    async with open_redis(redis_url) as client:
        assert await client.ping()


async def test_open_redis_unreachable_names_the_url_without_password() -> None:
    url = "redis://:s3cret@127.0.0.1:1/0"
    with pytest.raises(RedisUnavailableError) as info:
        async with open_redis(url):
            pass  # pragma: no cover
    message = str(info.value)
    assert "redis://:***@127.0.0.1:1/0" in message
    assert "s3cret" not in message


def test_redact_url() -> None:
    assert redact_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redact_url("redis://host:1/0") == "redis://host:1/0"
