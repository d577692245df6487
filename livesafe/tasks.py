"""Owning tasks: cancel one and wait for it, so nothing a component started outlives it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it is done. Only the *caller's* own cancellation propagates: the
    task's ``CancelledError`` is absorbed, and an exception the task ended with is logged, not raised."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())
