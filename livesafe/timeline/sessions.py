"""Session ids: one per broadcast of a stream id, sortable by start time."""

from __future__ import annotations

import secrets
import time

from livesafe.core.ids import SESSION_PATTERN


def new_session_id(now: float | None = None) -> str:
    """A new session id: the UTC start time to the millisecond and 6 random hex digits,
    e.g. ``20261202T083000123Z-1a2b3c``."""
    now = time.time() if now is None else now
    ms = round(now * 1000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ms // 1000)) + f"{ms % 1000:03d}Z"
    session = f"{stamp}-{secrets.token_hex(3)}"
    assert SESSION_PATTERN.fullmatch(session), session
    return session
