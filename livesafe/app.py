"""The composition root: one Redis, one outbox, one timeline, the service (backend gateway, WHIP, webhooks,
stream workers), the HTTP API and the ops board, each built once here and closed in reverse order.

``livesafe run`` and ``livesafe demo`` (and anything embedding livesafe) open an :class:`App`; the parts
receive what they share instead of building their own twins.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio

from livesafe.analyzers.registry import Analyzers
from livesafe.api import HttpServer, make_app
from livesafe.board.server import Board
from livesafe.core.policy import Policy
from livesafe.interventions.outbox import Outbox
from livesafe.service import Service, ServiceOptions
from livesafe.store import open_redis
from livesafe.timeline.store import TimelineStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AppOptions:
    service: ServiceOptions
    #: The shared Redis; None: the embedded one, keeping its data under ``data_dir`` (None: nothing kept).
    redis_url: str | None = None
    data_dir: Path | None = None
    http_port: int = 8767
    board: bool = True
    board_port: int = 8766


@dataclass(frozen=True, slots=True)
class App:
    """A running livesafe: what it is made of, for the entry point to print and use."""

    redis: redis.asyncio.Redis
    outbox: Outbox
    timeline: TimelineStore
    service: Service
    http: HttpServer
    board: Board | None
    #: Where the embedded Redis keeps its data (None with ``REDIS_URL``).
    data_dir: Path | None


@contextlib.asynccontextmanager
async def open_app(policy: Policy, analyzers: Analyzers, options: AppOptions) -> AsyncIterator[App]:
    """Build and start everything; stop it all (streams first, Redis last) when the block ends."""
    so = options.service
    async with contextlib.AsyncExitStack() as stack:
        board = None
        if options.board:
            board = await stack.enter_async_context(
                Board(so.host, options.board_port, policy_name=policy.name, policy_hash=policy.hash))
        data = None if options.redis_url else options.data_dir
        client = await stack.enter_async_context(open_redis(options.redis_url, data=data))
        outbox = Outbox(client, prefix=so.prefix, redeliver_after_s=so.ack_timeout_s)
        timeline = TimelineStore(client, prefix=so.prefix, retention=policy.retention)
        service = await stack.enter_async_context(
            Service(policy, analyzers, client, so, board=board, outbox=outbox, timeline=timeline))
        http = await stack.enter_async_context(
            HttpServer(make_app(service, so.tokens, service.whip.routes()), so.host, options.http_port))
        yield App(client, outbox, timeline, service, http, board, data)
