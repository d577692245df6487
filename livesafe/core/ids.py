"""Stream ids and session ids: what they may contain, checked at every door (pure).

A stream id becomes part of Redis keys (and, with archives, of file names), so it is refused unless it is
1-128 characters of ``A-Z a-z 0-9 . _ : -`` starting with a letter or a digit: no ``/``, no ``..`` at the
start, no spaces, no braces (livesafe uses ``{stream_id}`` as the Redis Cluster hash tag of a stream's keys).
"""

from __future__ import annotations

import re

#: Longest stream id accepted.
MAX_STREAM_ID = 128
STREAM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: A session id: UTC start time to the millisecond, then 6 random hex digits (sortable by start).
SESSION_PATTERN = re.compile(r"[0-9]{8}T[0-9]{9}Z-[0-9a-f]{6}")


def stream_id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid stream id (a sentence quoting at most 40 characters of it), or None."""
    if not isinstance(value, str):
        return f"stream_id must be a string, got {type(value).__name__}"
    if not value:
        return "stream_id must not be empty"
    shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
    if len(value) > MAX_STREAM_ID:
        return f"stream_id {shown} is {len(value)} characters long; at most {MAX_STREAM_ID} are allowed"
    if STREAM_ID_PATTERN.fullmatch(value) is None:
        return (f"stream_id {shown} is not allowed: use letters, digits and . _ : - (starting with a letter "
                "or a digit)")
    return None


def check_stream_id(value: object) -> str:
    """``value`` if it is a valid stream id; ValueError saying why not otherwise."""
    problem = stream_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    assert isinstance(value, str)
    return value


def session_problem(value: object) -> str | None:
    """Why ``value`` is not a session id, or None."""
    if not isinstance(value, str) or SESSION_PATTERN.fullmatch(value) is None:
        shown = repr(value)[:50]
        return f"session {shown} is not a session id (like 20261202T083000123Z-1a2b3c)"
    return None
