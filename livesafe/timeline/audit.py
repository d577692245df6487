"""The audit trail of a stream: every intervention, lift, ack, nack, applied and review verdict, in order,
with who and when, across the stream's sessions.

It is written by the timeline store (:mod:`livesafe.timeline.store`) in the same Lua script as the timeline
entry and under the same entry id, to ``{prefix}:s:{<stream_id>}:audit``: a query reads that stream's
index only (``XRANGE``). Retention: the last ``AUDIT_MAXLEN`` entries per stream (trimmed approximately),
for as long as the policy's ``retention.timeline_days`` after the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from livesafe.core.events import Ack, Event, Intervention, InterventionLifted, ReviewVerdict, to_dict

#: Most audit entries kept per stream (approximately).
AUDIT_MAXLEN = 10_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of a stream's audit trail: ``entry_id`` is also its id in the session's timeline, and the
    paging cursor."""

    entry_id: str
    event: Event

    @property
    def at(self) -> float:
        """When it was recorded: Unix seconds, from the entry id (Redis server time)."""
        return int(self.entry_id.split("-", 1)[0]) / 1000.0

    @property
    def what(self) -> str:
        """``intervention``, ``lift``, ``ack``, ``nack``, ``applied``, ``overturn`` or ``uphold``."""
        event = self.event
        if isinstance(event, Ack):
            return event.status
        if isinstance(event, ReviewVerdict):
            return event.verdict
        return "lift" if isinstance(event, InterventionLifted) else event.type

    @property
    def who(self) -> str:
        """The backend (acks), the reviewer (verdicts, overturns), or ``policy:NAME`` (decisions)."""
        event = self.event
        if isinstance(event, Ack):
            return event.backend
        if isinstance(event, ReviewVerdict):
            return event.reviewer
        if isinstance(event, InterventionLifted) and event.reviewer:
            return event.reviewer
        if isinstance(event, Intervention | InterventionLifted):
            return f"policy:{event.policy}"
        return ""

    def as_dict(self) -> dict[str, Any]:
        at = datetime.fromtimestamp(self.at, tz=UTC).isoformat(timespec="milliseconds")
        return {"id": self.entry_id, "at": at.replace("+00:00", "Z"), "what": self.what, "who": self.who,
                "stream_id": self.event.stream_id, "media_ts": self.event.media_ts,
                "event": to_dict(self.event)}

    def line(self) -> str:
        """One human-readable line (the ``livesafe audit`` output)."""
        event, detail = self.event, ""
        if isinstance(event, Intervention):
            effects = ",".join(event.effects)
            detail = f"{event.intervention_id} {event.action}/{event.tier} {effects}: {event.reason}"
        elif isinstance(event, InterventionLifted):
            detail = f"{event.lift_id} of {event.intervention_id} ({event.reason}) {event.detail}"
        elif isinstance(event, Ack):
            detail = " ".join(x for x in (event.lift_id or event.intervention_id, ",".join(event.effects),
                                          event.reason) if x)
        elif isinstance(event, ReviewVerdict):
            detail = f"{event.intervention_id} {event.note}".rstrip()
        at = self.as_dict()["at"]
        return f"{self.entry_id}  {at}  t={event.media_ts:8.2f}s  {self.what:<12} {self.who:<16} {detail}"


def is_entry_id(text: str) -> bool:
    """Whether ``text`` is a Redis Stream entry id (``1718000000000-0``), usable as a cursor."""
    ms, sep, seq = text.partition("-")
    return ms.isdigit() and len(ms) <= 20 and (not sep or (seq.isdigit() and len(seq) <= 20))
