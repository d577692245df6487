"""Shared helpers of the tests: reading back what the timeline recorded."""

from __future__ import annotations

from livesafe.core.events import Ack
from livesafe.timeline.entries import Record
from livesafe.timeline.store import TimelineStore


async def recorded_acks(timeline: TimelineStore, stream_id: str | None = None) -> list[Ack]:
    """Every ack, nack and applied recorded in the audit trails (of one stream, or all), in entry order."""
    if stream_id is not None:
        keys = [timeline.audit_key(stream_id)]
    else:
        keys = [k async for k in timeline.redis.scan_iter(match=f"{timeline.prefix}:s:*:audit")]
    found: list[tuple[tuple[int, int], Ack]] = []
    for key in keys:
        sid = str(key).split("{", 1)[1].split("}", 1)[0]
        for entry in await timeline.audit(sid, limit=100_000):
            if isinstance(entry.event, Ack):
                ms, _, seq = entry.entry_id.partition("-")
                found.append(((int(ms), int(seq or 0)), entry.event))
    return [ack for _, ack in sorted(found, key=lambda x: x[0])]


async def records(timeline: TimelineStore, stream_id: str, session: str | None = None) -> list[Record]:
    """The records of a stream's session (default: its latest), oldest first; [] if none."""
    session = session or await timeline.latest_session(stream_id)
    if session is None:
        return []
    return [e.record for e in await timeline.read_all(stream_id, session)]
