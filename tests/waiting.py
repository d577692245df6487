"""Waiting in tests for conditions that have no event to wait on (stats counters, received lists)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until it holds; callers bound the wait (``asyncio.timeout``)."""
    while True:
        if predicate():
            return
        await asyncio.sleep(0.02)
