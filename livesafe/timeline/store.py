"""The timeline in Redis: one Redis Stream per stream session, the policy by hash, evidence, the audit trail.

Keys (``P`` is the prefix, ``{S}`` the stream id as a Redis Cluster hash tag, so one stream's keys share a
slot and one Lua script may touch them all):

``P:s:{S}:tl:<session>``   the session's timeline: a Redis Stream of ``type`` + ``data`` (exact JSON)
``P:s:{S}:sessions``       the stream's sessions: a sorted set, session -> start time (ms)
``P:s:{S}:ids``            intervention id -> session (so an ack finds its session)
``P:s:{S}:ev:<session>``   evidence: a hash, thumbnail reference (``frame:42``) -> base64 JPEG
``P:s:{S}:audit``          the audit trail across sessions (:mod:`livesafe.timeline.audit`)
``P:policy:<hash>``        a policy's validated content (JSON), stored once per hash
``P:streams``              every stream with a timeline: a sorted set, stream id -> last session start (ms)

Reading one stream's timeline reads only its own keys. Retention follows the session's policy
(``retention``): every write sets the expiry of what it wrote to ``timeline_days`` (evidence:
``evidence_days``), so a session's record disappears that long after its last entry; the policy content
lives as long as the newest session that refers to it. Nothing is trimmed from a session's timeline while
it lives (a trimmed timeline could not be replayed); the audit trail keeps the last ``AUDIT_MAXLEN``.
"""

from __future__ import annotations

import base64
import calendar
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from livesafe.core.events import Ack, EventFormatError, Intervention, InterventionLifted, ReviewVerdict
from livesafe.core.ids import check_stream_id, session_problem
from livesafe.core.policy import Policy, RetentionPolicy, policy_content, policy_from_content
from livesafe.timeline.audit import AUDIT_MAXLEN, AuditEntry, is_entry_id
from livesafe.timeline.entries import AUDITED, Record, SessionEnd, SessionStart, TimelineEntry, dumps, loads

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "livesafe"
#: Most thumbnails kept per session; past it further ones are counted (``evidence_skipped``) and logged.
MAX_EVIDENCE_PER_SESSION = 2000
#: Most entries one read returns.
MAX_READ = 10_000

# KEYS: timeline, audit, ids. ARGV: type, data, ttl s, audited (1/0), intervention id or '', session,
# audit maxlen. The audit copy gets the timeline's entry id (a cursor valid in both) or a fresh one should
# the audit index be ahead (entries of a later session written first).
_APPEND = """
local entry = redis.call('XADD', KEYS[1], '*', 'type', ARGV[1], 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if ARGV[4] == '1' then
  local ok = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], entry,
                         'type', ARGV[1], 'session', ARGV[6], 'data', ARGV[2])
  if type(ok) == 'table' and ok.err then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
               'type', ARGV[1], 'session', ARGV[6], 'data', ARGV[2])
  end
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
end
return entry
"""

# KEYS: evidence hash, its counter key. ARGV: ref, base64 jpeg, ttl s, max per session.
# Returns 1 stored, 0 already there, -1 over the cap.
_EVIDENCE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session of a stream: its id and when it started (Unix seconds)."""

    stream_id: str
    session: str
    started_at: float


def _str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TimelineStore:
    """Reads and writes the timelines of one deployment (one key prefix) in Redis."""

    def __init__(self, redis_client: redis.asyncio.Redis, *, prefix: str = DEFAULT_PREFIX,
                 retention: RetentionPolicy | None = None, audit_maxlen: int = AUDIT_MAXLEN) -> None:
        self.redis = redis_client
        self.prefix = prefix
        #: Retention for writes that carry no policy of their own (acks, states of unknown streams).
        self.retention = retention or RetentionPolicy()
        self.audit_maxlen = audit_maxlen
        self._append = self.redis.register_script(_APPEND)
        self._evidence = self.redis.register_script(_EVIDENCE)
        #: Retention of each open session (from its policy), by (stream id, session).
        self._retention: dict[tuple[str, str], RetentionPolicy] = {}
        #: Thumbnails not kept because a session reached MAX_EVIDENCE_PER_SESSION.
        self.evidence_skipped = 0

    # -- keys -------------------------------------------------------------------------------------------

    def _stream(self, stream_id: str) -> str:
        return f"{self.prefix}:s:{{{check_stream_id(stream_id)}}}"

    def timeline_key(self, stream_id: str, session: str) -> str:
        problem = session_problem(session)
        if problem is not None and session:  # "" is the unnamed session of a stream fed without one
            raise ValueError(problem)
        return f"{self._stream(stream_id)}:tl:{session or '-'}"

    def sessions_key(self, stream_id: str) -> str:
        return f"{self._stream(stream_id)}:sessions"

    def ids_key(self, stream_id: str) -> str:
        return f"{self._stream(stream_id)}:ids"

    def evidence_key(self, stream_id: str, session: str) -> str:
        return f"{self._stream(stream_id)}:ev:{session or '-'}"

    def audit_key(self, stream_id: str) -> str:
        return f"{self._stream(stream_id)}:audit"

    def policy_key(self, policy_hash: str) -> str:
        if not policy_hash.isalnum() or len(policy_hash) > 64:
            raise ValueError(f"not a policy hash: {policy_hash[:70]!r}")
        return f"{self.prefix}:policy:{policy_hash}"

    @property
    def streams_key(self) -> str:
        return f"{self.prefix}:streams"

    def _ttl(self, stream_id: str, session: str) -> RetentionPolicy:
        return self._retention.get((stream_id, session), self.retention)

    # -- writing ----------------------------------------------------------------------------------------

    async def open_session(self, start: SessionStart, policy: Policy) -> str:
        """Record a session's start (and its policy's content, once per hash); returns the entry id."""
        retention = policy.retention
        self._retention[(start.stream_id, start.session)] = retention
        ttl = retention.timeline_s
        content = json.dumps(policy_content(policy), sort_keys=True, separators=(",", ":"))
        started_ms = _session_ms(start.session) if start.session else int(time.time() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.policy_key(policy.hash), content, ex=ttl)
            pipe.zadd(self.sessions_key(start.stream_id), {start.session: started_ms})
            pipe.expire(self.sessions_key(start.stream_id), ttl)
            pipe.zadd(self.streams_key, {start.stream_id: started_ms})
            pipe.zremrangebyscore(self.streams_key, "-inf", started_ms - ttl * 1000)
            await pipe.execute()
        return await self.append(start.stream_id, start.session, start)

    async def close_session(self, end: SessionEnd) -> str:
        """Record a session's end; returns the entry id."""
        try:
            return await self.append(end.stream_id, end.session, end)
        finally:
            self._retention.pop((end.stream_id, end.session), None)

    async def append(self, stream_id: str, session: str, record: Record) -> str:
        """Append ``record`` to the session's timeline (and to the stream's audit trail if it is an
        intervention, lift, ack or verdict); returns its entry id."""
        ttl = self._ttl(stream_id, session).timeline_s
        intervention_id = record.intervention_id if isinstance(record, Intervention) else ""
        entry = await self._append(
            keys=[self.timeline_key(stream_id, session), self.audit_key(stream_id), self.ids_key(stream_id)],
            args=[record.type, dumps(record), ttl, int(record.type in AUDITED), intervention_id, session,
                  self.audit_maxlen],
        )
        return _str(entry)

    async def record_ack(self, ack: Ack) -> str:
        """Record a backend's ack, nack or applied in the session of the intervention it answers (found by
        the intervention's id when the ack does not name it). An ack whose session is no longer known (its
        timeline expired) goes to the stream's audit trail only. Returns the entry id."""
        session = ack.session
        if not session and ack.stream_id and ack.intervention_id:
            found = await self.redis.hget(self.ids_key(ack.stream_id), ack.intervention_id)
            session = _str(found) if found is not None else ""
        if session:
            if session != ack.session:
                ack = dataclasses.replace(ack, session=session)
            return await self.append(ack.stream_id, session, ack)
        entry = await self.redis.xadd(
            self.audit_key(ack.stream_id), {"type": ack.type, "session": "", "data": dumps(ack)},
            maxlen=self.audit_maxlen, approximate=True)
        await self.redis.expire(self.audit_key(ack.stream_id), self.retention.timeline_s)
        return _str(entry)

    async def put_evidence(self, stream_id: str, session: str, ref: str, jpeg: bytes) -> bool:
        """Keep a thumbnail under ``ref`` (e.g. ``frame:42``) for the session's evidence retention; False
        if one is already there or the session reached its cap (counted and logged)."""
        key = self.evidence_key(stream_id, session)
        stored = int(await self._evidence(
            keys=[key, key + ":n"],
            args=[ref, base64.b64encode(jpeg).decode("ascii"), self._ttl(stream_id, session).evidence_s,
                  MAX_EVIDENCE_PER_SESSION],
        ))
        if stored < 0:
            self.evidence_skipped += 1
            if self.evidence_skipped == 1 or self.evidence_skipped % 1000 == 0:
                log.warning("stream %s session %s: %d thumbnails kept, the most per session; %d not kept "
                            "(in all sessions so far)", stream_id, session, MAX_EVIDENCE_PER_SESSION,
                            self.evidence_skipped)
        return stored == 1

    # -- reading ----------------------------------------------------------------------------------------

    async def sessions(self, stream_id: str) -> list[SessionInfo]:
        """The stream's sessions whose timelines still exist, oldest first."""
        raw: list[tuple[Any, Any]] = await self.redis.zrange(  # type: ignore[assignment]
            self.sessions_key(stream_id), 0, -1, withscores=True)
        out: list[SessionInfo] = []
        gone: list[str] = []
        for member, score in raw:
            session = _str(member)
            if not await self.redis.exists(self.timeline_key(stream_id, session)):
                gone.append(session)
                continue
            out.append(SessionInfo(stream_id, session, float(score) / 1000.0))
        if gone:  # expired timelines leave the index too
            await self.redis.zrem(self.sessions_key(stream_id), *gone)
        return out

    async def latest_session(self, stream_id: str) -> str | None:
        sessions = await self.sessions(stream_id)
        return sessions[-1].session if sessions else None

    async def streams(self, limit: int = 1000) -> list[tuple[str, float]]:
        """Streams with a recorded session, most recently started first: (stream id, start Unix seconds)."""
        raw: list[tuple[Any, Any]] = await self.redis.zrevrange(  # type: ignore[assignment]
            self.streams_key, 0, max(0, limit - 1), withscores=True)
        return [(_str(m), float(s) / 1000.0) for m, s in raw]

    async def read(self, stream_id: str, session: str, *, after: str | None = None,
                   limit: int = 1000) -> list[TimelineEntry]:
        """Up to ``limit`` entries of a session's timeline after the cursor ``after`` (an entry id; None:
        from the start), oldest first. An entry that does not parse is logged and skipped."""
        if not 1 <= limit <= MAX_READ:
            raise ValueError(f"limit must be between 1 and {MAX_READ}, got {limit}")
        if after is not None and not is_entry_id(after):
            raise ValueError(f"'after' must be an entry id like 1718000000000-0, got {after[:40]!r}")
        lower = "-" if after is None else f"({after}"
        key = self.timeline_key(stream_id, session)
        batch = await self.redis.xrange(key, min=lower, max="+", count=limit)
        out: list[TimelineEntry] = []
        for entry_id, raw in batch or []:
            fields = {_str(k): _str(v) for k, v in (raw or {}).items()}
            try:
                out.append(TimelineEntry(_str(entry_id), loads(json.loads(fields["data"]))))
            except (KeyError, ValueError, EventFormatError) as exc:
                log.warning("timeline %s: skipping unreadable entry %s: %s", key, entry_id, exc)
        return out

    async def read_all(self, stream_id: str, session: str) -> list[TimelineEntry]:
        """Every entry of a session's timeline, oldest first (paged reads)."""
        out: list[TimelineEntry] = []
        after: str | None = None
        while True:
            page = await self.read(stream_id, session, after=after, limit=MAX_READ)
            out.extend(page)
            if len(page) < MAX_READ:
                return out
            after = page[-1].entry_id

    async def policy(self, policy_hash: str) -> Policy | None:
        """The policy stored under ``policy_hash`` (None once expired); ValueError if the stored content
        does not give that hash back."""
        raw = await self.redis.get(self.policy_key(policy_hash))
        if raw is None:
            return None
        source = f"<policy {policy_hash} from the timeline>"
        policy = policy_from_content(json.loads(_str(raw)), source=source)
        if policy.hash != policy_hash:
            raise ValueError(f"stored policy {policy_hash} hashes to {policy.hash}: content changed")
        return policy

    async def evidence(self, stream_id: str, session: str, ref: str) -> bytes | None:
        """The thumbnail JPEG kept under ``ref``, or None (never stored, or past its retention)."""
        raw = await self.redis.hget(self.evidence_key(stream_id, session), ref)
        return None if raw is None else base64.b64decode(_str(raw))

    async def evidence_refs(self, stream_id: str, session: str) -> list[str]:
        return sorted(_str(k) for k in await self.redis.hkeys(self.evidence_key(stream_id, session)))

    async def audit(self, stream_id: str, *, after: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The audit trail of one stream, oldest first: up to ``limit`` entries after the cursor ``after``."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if after is not None and not is_entry_id(after):
            raise ValueError(f"'after' must be an entry id like 1718000000000-0, got {after[:40]!r}")
        lower = "-" if after is None else f"({after}"
        batch = await self.redis.xrange(self.audit_key(stream_id), min=lower, max="+", count=limit)
        out: list[AuditEntry] = []
        for entry_id, raw in batch or []:
            fields = {_str(k): _str(v) for k, v in (raw or {}).items()}
            try:
                record = loads(json.loads(fields["data"]))
                if not isinstance(record, Intervention | InterventionLifted | Ack | ReviewVerdict):
                    raise EventFormatError(f"{record.type} is not audited")
                out.append(AuditEntry(_str(entry_id), record))
            except (KeyError, ValueError, EventFormatError) as exc:
                log.warning("audit of %s: skipping unreadable entry %s: %s", stream_id, entry_id, exc)
        return out


def _session_ms(session: str) -> int:
    """The start time (ms since the epoch) a session id carries."""
    stamp = session.split("-", 1)[0]  # 20261202T083000123Z
    seconds = calendar.timegm(time.strptime(stamp[:15], "%Y%m%dT%H%M%S"))
    return seconds * 1000 + int(stamp[15:18])


def session_started_at(session: str) -> float | None:
    """The start time (Unix seconds) of a session id, None for a malformed one."""
    try:
        return _session_ms(session) / 1000.0
    except ValueError:
        return None

