"""``livesafe timeline`` and ``livesafe audit``: what was recorded, read from the service's Redis.

Both read ``REDIS_URL`` when set, else the embedded Redis on the data directory (``$LIVESAFE_DATA_DIR``,
see :func:`livesafe.store.data_dir`), so they find what a ``livesafe run`` or ``demo`` recorded on this
machine, whether it still runs or not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from livesafe.core.ids import session_problem, stream_id_problem
from livesafe.timeline.entries import ALL_TYPES, Record, SessionStart
from livesafe.timeline.replay import verify
from livesafe.timeline.store import TimelineStore


def add_redis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default="livesafe", help="Redis key prefix")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                   help="the service's Redis (default: $REDIS_URL, else the embedded one of the data dir)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the embedded Redis's data directory (default: $LIVESAFE_DATA_DIR or "
                        "~/.local/share/livesafe)")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tl = sub.add_parser("timeline", help="print a stream session's timeline: transcripts, signals, risk, "
                                         "interventions, acks")
    tl.add_argument("stream_id")
    tl.add_argument("--session", help="which session (default: the latest); see --sessions")
    tl.add_argument("--sessions", action="store_true", help="list the stream's recorded sessions")
    tl.add_argument("--json", action="store_true", help="one JSON object per line (exact floats)")
    tl.add_argument("--types", default="", metavar="T,T",
                    help=f"only these types ({', '.join(sorted(ALL_TYPES))}); default: all but tick")
    tl.add_argument("--verify", action="store_true",
                    help="replay the session's recorded inputs through a fresh core under its recorded "
                         "policy and compare every decision (exit 1 if any differs)")
    add_redis_args(tl)

    au = sub.add_parser("audit", help="print one stream's audit trail: interventions, lifts, acks, verdicts")
    au.add_argument("stream_id")
    au.add_argument("--limit", type=int, default=100, help="entries per page (default 100)")
    au.add_argument("--after", metavar="ENTRY_ID", help="start after this entry id (a cursor)")
    au.add_argument("--all", action="store_true", help="follow the cursor to the last entry")
    au.add_argument("--json", action="store_true", help="print one JSON object per line")
    add_redis_args(au)


def _fail(message: str) -> int:
    print(f"livesafe: {message}", file=sys.stderr)
    return 2


async def timeline(args: argparse.Namespace) -> int:
    from livesafe.store import RedisUnavailableError, data_dir, open_redis

    if (problem := stream_id_problem(args.stream_id)) is not None:
        return _fail(problem)
    if args.session and (problem := session_problem(args.session)) is not None:
        return _fail(problem)
    types = {t for t in args.types.split(",") if t} or (ALL_TYPES - {"tick"})
    if unknown := types - ALL_TYPES:
        return _fail(f"unknown entry types {sorted(unknown)}; known: {', '.join(sorted(ALL_TYPES))}")
    try:
        async with open_redis(args.redis_url, data=args.data_dir or data_dir()) as client:
            store = TimelineStore(client, prefix=args.prefix)
            sessions = await store.sessions(args.stream_id)
            if args.sessions:
                for s in sessions:
                    line = {"session": s.session, "started_at": s.started_at}
                    print(json.dumps(line) if args.json else f"{s.session}", flush=True)
                if not sessions:
                    return _fail(f"no recorded session of stream {args.stream_id!r}")
                return 0
            session = args.session or (sessions[-1].session if sessions else None)
            if session is None:
                return _fail(f"no recorded session of stream {args.stream_id!r} "
                             "(is REDIS_URL or --data-dir the service's?)")
            entries = await store.read_all(args.stream_id, session)
            if not entries:
                return _fail(f"no timeline for session {session} of stream {args.stream_id!r}")
            for entry in entries:
                if entry.type in types:
                    print(json.dumps(entry.as_dict(), ensure_ascii=False) if args.json else entry.line(),
                          flush=True)
            if args.verify:
                return await _verify(store, [e.record for e in entries])
    except (RedisUnavailableError, ValueError) as exc:
        return _fail(str(exc))
    return 0


async def _verify(store: TimelineStore, records: list[Record]) -> int:
    start = next((r for r in records if isinstance(r, SessionStart)), None)
    if start is None:
        return _fail("the timeline has no session.start: cannot tell which policy to replay")
    policy = await store.policy(start.policy_hash)
    if policy is None:
        return _fail(f"policy {start.policy_hash} is no longer stored (past its retention)")
    report = verify(policy, records)
    print(f"replay under policy {policy.name} ({policy.hash}): {report.summary()}", flush=True)
    return 0 if report.exact else 1


async def audit(args: argparse.Namespace) -> int:
    """Print a stream's audit trail (the per-stream index, not a scan)."""
    from livesafe.store import RedisUnavailableError, data_dir, open_redis

    if args.limit < 1:
        return _fail("--limit must be >= 1")
    if (problem := stream_id_problem(args.stream_id)) is not None:
        return _fail(problem)
    printed = 0
    try:
        async with open_redis(args.redis_url, data=args.data_dir or data_dir()) as client:
            store, after = TimelineStore(client, prefix=args.prefix), args.after
            while True:
                entries = await store.audit(args.stream_id, after=after, limit=args.limit)
                for entry in entries:
                    print(json.dumps(entry.as_dict()) if args.json else entry.line(), flush=True)
                printed += len(entries)
                if not args.all or len(entries) < args.limit:
                    break
                after = entries[-1].entry_id
    except (RedisUnavailableError, ValueError) as exc:
        return _fail(str(exc))
    if not printed:
        print(f"livesafe: no audit entries for stream {args.stream_id!r}"
              + (f" after {args.after}" if args.after else ""), file=sys.stderr)
    return 0
