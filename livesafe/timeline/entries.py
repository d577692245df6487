"""What a timeline holds: the core's events plus a session's start and end, each with its entry id.

Entries are stored as JSON with exact floats (``to_dict(..., precise=True)``), so reading them back gives
the very values the core was fed and returned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeAlias

from livesafe.core.events import (
    Ack,
    Event,
    EventFormatError,
    Intervention,
    InterventionLifted,
    ReviewVerdict,
    RiskUpdate,
    Signal,
    StreamState,
    Tick,
    Transcript,
    from_dict,
    to_dict,
)


@dataclass(frozen=True, slots=True)
class SessionStart:
    """A session (one broadcast of a stream id) began: where from, under which policy, with which models."""

    type: ClassVar[str] = "session.start"

    stream_id: str
    session: str
    source: str
    policy: str
    policy_hash: str
    #: Backend-given metadata (region, audience, ...).
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Analyzer name -> model id / version, as loaded.
    analyzers: Mapping[str, str] = field(default_factory=dict)
    #: Who started it: the backend's name, ``cli`` or ``whip``.
    started_by: str = ""
    media_ts: float = 0.0


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """The session ended: ``ended`` (end of media), ``stopped`` (stream.ended / shutdown) or ``failed``."""

    type: ClassVar[str] = "session.end"

    stream_id: str
    session: str
    media_ts: float
    state: str
    detail: str = ""


Record: TypeAlias = Event | SessionStart | SessionEnd

#: Entry types that are inputs of the core, replayed in recorded order.
INPUTS = frozenset({Signal.type, Tick.type, ReviewVerdict.type})
#: Entry types the core decided (compared byte for byte by a replay).
DECISIONS = frozenset({RiskUpdate.type, Intervention.type, InterventionLifted.type})
#: Entry types kept in the per-stream audit trail as well.
AUDITED = frozenset({Intervention.type, InterventionLifted.type, Ack.type, ReviewVerdict.type})
ALL_TYPES = frozenset({
    SessionStart.type, SessionEnd.type, Transcript.type, StreamState.type, Ack.type, *INPUTS, *DECISIONS
})


def record_dict(record: Record) -> dict[str, Any]:
    """A record as JSON-ready data with exact floats."""
    if isinstance(record, SessionStart | SessionEnd):
        data: dict[str, Any] = {"type": record.type}
        for name in record.__dataclass_fields__:
            value = getattr(record, name)
            data[name] = dict(value) if isinstance(value, Mapping) else value
        return data
    return to_dict(record, precise=True)


def dumps(record: Record) -> str:
    return json.dumps(record_dict(record), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(data: Mapping[str, Any]) -> Record:
    """The record of :func:`record_dict` output; EventFormatError naming the problem."""
    kind = data.get("type")
    if kind in (SessionStart.type, SessionEnd.type):
        cls: type[SessionStart] | type[SessionEnd] = SessionStart if kind == SessionStart.type else SessionEnd
        try:
            return cls(**{k: v for k, v in data.items() if k != "type"})
        except TypeError as exc:
            raise EventFormatError(f"{kind}: {exc}") from exc
    return from_dict(data)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One entry of a session's timeline: its Redis Stream id (also the paging cursor) and its record."""

    entry_id: str
    record: Record

    @property
    def type(self) -> str:
        return self.record.type

    @property
    def at(self) -> float:
        """When it was recorded: Unix seconds, from the entry id (Redis server time)."""
        return int(self.entry_id.split("-", 1)[0]) / 1000.0

    @property
    def at_iso(self) -> str:
        at = datetime.fromtimestamp(self.at, tz=UTC).isoformat(timespec="milliseconds")
        return at.replace("+00:00", "Z")

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.entry_id, "at": self.at_iso, **record_dict(self.record)}

    def line(self) -> str:
        """One readable line (``livesafe timeline``): when, media time, type, and what happened."""
        r = self.record
        detail = describe(r)
        return f"{self.at_iso}  t={r.media_ts:8.2f}s  {r.type:<19} {detail}".rstrip()


def describe(r: Record) -> str:
    """A short human description of a record."""
    if isinstance(r, SessionStart):
        meta = ", ".join(f"{k}={v}" for k, v in r.metadata.items())
        return (f"session {r.session} of {r.stream_id} from {r.source} under policy {r.policy} "
                f"({r.policy_hash})" + (f"; {meta}" if meta else ""))
    if isinstance(r, SessionEnd):
        return f"{r.state}" + (f": {r.detail}" if r.detail else "")
    if isinstance(r, Transcript):
        if r.translated:  # what the classifiers read, then what was said
            return f"[{r.language}->en] {r.text}" + (f" | {r.original}" if r.original else "")
        return f"[{r.language}] {r.text}"
    if isinstance(r, Signal):
        return f"{r.category} {r.score:.3f} ({r.analyzer})" + (
            f' "{str(r.evidence.get("text"))[:80]}"' if r.evidence.get("text") else "")
    if isinstance(r, Tick):
        return ""
    if isinstance(r, RiskUpdate):
        cat = f"{r.category} {r.level:.3f}, " if r.category else ""
        return f"{cat}overall {r.overall:.3f}, tier {r.tier}"
    if isinstance(r, Intervention):
        return (f"{r.action.upper()} #{r.seq} {r.tier} {','.join(r.effects)} {r.intervention_id}: "
                f"{r.reason}")
    if isinstance(r, InterventionLifted):
        return f"LIFT #{r.seq} {r.intervention_id} ({r.reason}) {r.detail}"
    if isinstance(r, Ack):
        key = r.lift_id or r.intervention_id
        return " ".join(x for x in (r.status, key, r.backend, ",".join(r.effects), r.reason) if x)
    if isinstance(r, ReviewVerdict):
        return f"{r.verdict} {r.intervention_id} by {r.reviewer}" + (f": {r.note}" if r.note else "")
    if isinstance(r, StreamState):
        return r.state + (f": {r.detail}" if r.detail else "")
    return ""
