"""The websocket endpoint the streaming backend connects to, to receive interventions.

The backend is the system that actually blurs, mutes or cuts a stream, so it must get every
decision even across its own restarts and network drops. The gateway is therefore a thin pipe
over the durable :class:`~livesafe.interventions.outbox.Outbox`: each connection is one outbox
consumer, an intervention stays pending until the backend acks or nacks it, anything unanswered
for ``ack_timeout_s`` is resent, and whatever a dropped connection held is released at once so the
reconnection receives it without waiting. Delivery is at-least-once: backends dedupe by
``intervention_id``. Per stream it is in order, across connections and gateway processes: a delivery is
sent only as the head of its stream's outbox queue (every earlier one of its stream acknowledged); a
connection that claimed a later one holds it back, counted in its in-flight, until then.

Wire protocol ``livesafe.v1``, documented in ``docs/protocol.md``, with one JSON Schema per message in
``protocol.schema.json`` (see :mod:`livesafe.interventions.protocol`); every incoming message is
validated against its schema before the gateway acts on it. JSON text frames, at most
``max_message_bytes`` each (a larger frame closes the connection with code 1009). Handshake: ``GET
/v1/backend`` with ``Authorization: Bearer <token>`` (or ``?token=<token>``); otherwise HTTP 401 with
the reason as body.

Tokens (:class:`~livesafe.auth.TokenSet`): several per backend, from fixed values and a
tokens file that the gateway re-reads when it changes (every ``tokens_reload_s``, in a task it owns). A
connection whose token was removed (or now names another backend) is closed with code 4001 "token
revoked"; new connections with it get 401.

Limits, per connection: a token bucket of ``rate_limit_per_s`` messages per second (bursts of
``rate_burst``): a message over it is dropped and answered with an ``error`` ``rate_limited`` (with
``retry_after_s``); after ``rate_burst`` dropped messages within about ten seconds the connection is
closed with 1008 "rate limit exceeded". Acks, nacks and ``applied`` of deliveries the connection holds
are never limited (``max_in_flight`` bounds them). At most ``max_in_flight`` deliveries are held
unacknowledged by one connection: its consumer stops claiming until acks free a batch's worth of room
(what it holds past ``ack_timeout_s`` is still resent), and the rest of the outbox goes to other
connections, so backends share the load and a slow one does not hoard it.

Server → backend: ``hello`` once, first (protocol, supported versions, backend name, ack timeout, size
limit); ``intervention`` and ``intervention.lifted`` from the outbox, each with ``delivery.attempt``;
``stream.state`` (informational); ``ok`` after an accepted control message; ``pong``; ``error`` with a
``code`` and a ``reason`` for anything it could not accept (the connection stays open, except after a
``hello`` naming an unsupported protocol: then it closes with 1002). Replies echo the ``ref`` of the
message they answer when it had one (a string or integer).

Backend → server: ``hello`` (optional: its protocol version); ``ack`` / ``nack`` (with a reason; final,
never redelivered) / ``applied`` (what it did; also acknowledges) by ``intervention_id`` or ``lift_id``;
``stream.started``; ``stream.ended``; ``ping``. Acks, nacks and applied get no reply unless they fail;
a repeated ack of the same id is ignored. Messages of one connection are handled in order, so a pong
also confirms that everything sent before the ping (acks included) has been recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
import redis.asyncio
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from livesafe.auth import RELOAD_EVERY_S, TokenSet
from livesafe.core.events import Ack, Intervention, InterventionLifted
from livesafe.core.ids import stream_id_problem
from livesafe.interventions.consumer import OutboxConsumer
from livesafe.interventions.outbox import (
    DEFAULT_PREFIX,
    Delivery,
    Outbox,
)
from livesafe.interventions.protocol import PROTOCOL, SUPPORTED, ProtocolError, check_incoming
from livesafe.tasks import cancel_and_wait
from livesafe.timeline.store import TimelineStore

__all__ = ["PATH", "PROTOCOL", "SUPPORTED", "Gateway", "ProtocolError", "StreamEnded", "StreamStarted"]

logger = logging.getLogger(__name__)

PATH = "/v1/backend"
#: Close code after a ``hello`` naming a protocol version this gateway does not speak.
CLOSE_UNSUPPORTED = 1002
#: Close code of a connection whose token was removed from the tokens (an application code, 4000-4999).
CLOSE_TOKEN_REVOKED = 4001
#: Close code of a connection that kept sending over its rate limit (policy violation).
CLOSE_RATE_LIMITED = 1008
#: Messages that answer a delivery: free of the rate limit when the connection holds that delivery.
_ANSWERS = frozenset({"ack", "nack", "applied"})


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; :meth:`take` spends one if there is one."""

    def __init__(self, rate: float, capacity: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError(f"a token bucket needs rate > 0 and capacity >= 1, got {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self._level = capacity
        self._at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> bool:
        self._refill()
        if self._level >= 1.0:
            self._level -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until one token is available."""
        self._refill()
        return max(0.0, (1.0 - self._level) / self.rate)


@dataclass(eq=False, slots=True)
class _Connection:
    """One backend connection: its token, its rate limit and the deliveries it holds unacknowledged."""

    ws: ServerConnection
    backend: str
    token: str
    consumer: str
    bucket: TokenBucket | None
    strikes: TokenBucket | None
    #: Its outbox consumer: what it holds unacknowledged (sent, or held back for its stream's turn).
    delivery: OutboxConsumer
    limited: bool = False
    close: tuple[int, str] | None = None


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """A backend announced a new stream it wants monitored."""

    backend: str
    stream_id: str
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """A backend announced that a stream is over."""

    backend: str
    stream_id: str


#: Control callbacks. Raise ``ValueError`` to refuse (its message goes back to the backend). They run
#: inline on the connection's receive path, so they should hand long work to a task of their own.
StreamStartedHandler = Callable[[StreamStarted], Awaitable[None]]
StreamEndedHandler = Callable[[StreamEnded], Awaitable[None]]


def _error(reason: str, ref: object = None, code: str = "bad_message", **extra: Any) -> dict[str, Any]:
    return _with_ref({"type": "error", "code": code, "reason": reason, **extra}, ref)


def _parse(raw: str | bytes) -> tuple[object, dict[str, Any] | None]:
    """``(message, None)``, or ``(None, error reply)`` for a binary frame or text that is not JSON."""
    if isinstance(raw, bytes):
        return None, _error("binary frames are not supported: send JSON text frames", code="bad_frame")
    try:
        return json.loads(raw), None
    except (json.JSONDecodeError, RecursionError) as exc:
        return None, _error(f"malformed JSON: {exc}"[:300], code="bad_json")


def _with_ref(reply: dict[str, Any], ref: object) -> dict[str, Any]:
    if isinstance(ref, str | int) and not isinstance(ref, bool):
        reply["ref"] = ref
    return reply


class Gateway:
    """The ``/v1/backend`` websocket server delivering the outbox to authenticated backends."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        tokens: Mapping[str, str] | TokenSet,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: str = DEFAULT_PREFIX,
        ack_timeout_s: float = 10.0,
        max_message_bytes: int = 64 * 1024,
        batch_size: int = 20,
        on_stream_started: StreamStartedHandler | None = None,
        on_stream_ended: StreamEndedHandler | None = None,
        close_timeout_s: float = 2.0,
        max_in_flight: int = 100,
        rate_limit_per_s: float | None = 100.0,
        rate_burst: int = 200,
        tokens_reload_s: float = RELOAD_EVERY_S,
        outbox: Outbox | None = None,
        timeline: TimelineStore | None = None,
    ) -> None:
        """``tokens`` maps each accepted token to the backend name it authenticates; a :class:`TokenSet`
        with a file is re-read every ``tokens_reload_s``. ``rate_limit_per_s=None`` lifts the rate limit.
        ``outbox`` and ``timeline``: the deployment's (see :mod:`livesafe.app`); made here when not given."""
        if not tokens:
            raise ValueError("Gateway needs at least one token: no backend could ever connect")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if rate_limit_per_s is not None and (rate_limit_per_s <= 0 or rate_burst < 1):
            raise ValueError(f"rate_limit_per_s must be > 0 and rate_burst >= 1, got {rate_limit_per_s}, "
                             f"{rate_burst}")
        self.outbox = outbox or Outbox(redis_client, prefix=prefix, redeliver_after_s=ack_timeout_s)
        #: Acks, nacks and applied reports are recorded in the session timeline of what they answer.
        self.timeline = timeline or TimelineStore(redis_client, prefix=prefix)
        self.tokens = tokens if isinstance(tokens, TokenSet) else TokenSet(tokens)
        self.tokens_reload_s = tokens_reload_s
        self.max_in_flight = max_in_flight
        self.rate_limit_per_s = rate_limit_per_s
        self.rate_burst = rate_burst
        self.host = host
        self._requested_port = port
        self.ack_timeout_s = ack_timeout_s
        self.max_message_bytes = max_message_bytes
        self.batch_size = batch_size
        self.on_stream_started = on_stream_started
        self.on_stream_ended = on_stream_ended
        self.close_timeout_s = close_timeout_s
        # How long one outbox read waits for news. New interventions wake it at once, but resends
        # (timeouts, or entries a dropped connection released) are only seen between reads.
        self._block_ms = int(min(250.0, max(10.0, ack_timeout_s * 250)))
        self._instance = uuid.uuid4().hex[:8]
        self._connection_seq = 0
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: dict[ServerConnection, _Connection] = {}
        #: outbox entry id -> the consumer (connection) holding it, across connections.
        self._holders: dict[str, OutboxConsumer] = {}
        self._unsubscribe: Callable[[], None] | None = None
        # A connection at its in-flight limit re-checks with Redis this often: acks may have been
        # handled by another gateway process, which cannot tell this one.
        self._reconcile_s = max(0.05, min(1.0, ack_timeout_s))
        # A connection holding deliveries back checks this often whether they became heads (an ack
        # handled here wakes it at once; one handled by another gateway process cannot).
        self._deferred_poll_s = 0.05
        self._handlers: dict[str, Callable[[str, Mapping[str, Any]], Awaitable[dict[str, Any] | None]]] = {
            "hello": self._on_hello,
            "ack": self._on_ack,
            "nack": self._on_ack,
            "applied": self._on_ack,
            "stream.started": self._on_stream_started,
            "stream.ended": self._on_stream_ended,
            "ping": self._on_ping,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("Gateway already started")
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            max_size=self.max_message_bytes,
            close_timeout=self.close_timeout_s,
            server_header=None,
        )
        self._unsubscribe = self.tokens.subscribe(self._tokens_changed)
        if self.tokens.file is not None and self.tokens_reload_s > 0:
            self._spawn(self.tokens.watch(self.tokens_reload_s), name="gateway-tokens-reload")

    async def aclose(self) -> None:
        """Close every connection (code 1001), wait for their handlers, then for any task left."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for task in list(self._tasks):
            await cancel_and_wait(task)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("Gateway not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The backend endpoint, e.g. ``ws://127.0.0.1:8765/v1/backend``."""
        return f"ws://{self.host}:{self.port}{PATH}"

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- handshake -------------------------------------------------------------------------------

    @staticmethod
    def _token_of(path: str, headers: Headers) -> tuple[str, str]:
        """``(token, "")``, or ``("", why)`` when the request carries none in a usable form."""
        header = headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return "", "malformed Authorization header: expected 'Bearer <token>'"
            return token, ""
        token = (parse_qs(urlsplit(path).query).get("token") or [""])[0]
        if not token:
            return "", "missing token: send 'Authorization: Bearer <token>' or ?token=<token>"
        return token, ""

    def _authenticate(self, path: str, headers: Headers) -> tuple[str | None, str]:
        """``(backend, "")`` for a good token, else ``(None, why)``."""
        token, why = self._token_of(path, headers)
        if not token:
            return None, why
        backend = self.tokens.lookup(token)  # constant time over all tokens
        return (backend, "") if backend is not None else (None, "invalid token")

    def _tokens_changed(self) -> None:
        """The tokens were reloaded: close every connection whose token no longer names its backend."""
        for conn in list(self._connections.values()):
            if conn.close is None and self.tokens.lookup(conn.token) != conn.backend:
                logger.warning("token of backend %r (%s) was revoked: closing its connection",
                               conn.backend, conn.consumer)
                conn.close = (CLOSE_TOKEN_REVOKED, "token revoked")
                self._spawn(conn.ws.close(CLOSE_TOKEN_REVOKED, "token revoked"),
                            name=f"gateway-revoke-{conn.consumer}")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"no endpoint at {path}; backends use {PATH}\n")
        backend, why = self._authenticate(request.path, request.headers)
        if backend is None:
            logger.warning("refused backend connection from %s: %s", connection.remote_address, why)
            response = connection.respond(HTTPStatus.UNAUTHORIZED, why + "\n")
            response.headers["WWW-Authenticate"] = 'Bearer realm="livesafe"'
            return response
        return None

    # -- connection ------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None  # the handshake succeeded, so process_request accepted it
        token, _ = self._token_of(ws.request.path, ws.request.headers)
        backend = self.tokens.lookup(token)
        if backend is None:  # revoked between the handshake and now
            await ws.close(CLOSE_TOKEN_REVOKED, "token revoked")
            return
        self._connection_seq += 1
        consumer = f"{backend}:{self._instance}:{self._connection_seq}"
        limited = self.rate_limit_per_s is not None
        async def send(delivery: Delivery) -> None:
            await ws.send(json.dumps(delivery.wire()))

        conn = _Connection(
            ws, backend, token, consumer,
            bucket=TokenBucket(self.rate_limit_per_s, self.rate_burst) if self.rate_limit_per_s else None,
            # Dropped messages spend strikes; they come back over ten seconds. None left: closed.
            strikes=TokenBucket(self.rate_burst / 10.0, self.rate_burst) if limited else None,
            delivery=OutboxConsumer(
                self.outbox, consumer, send, max_in_flight=self.max_in_flight, batch_size=self.batch_size,
                block_ms=self._block_ms, poll_s=self._deferred_poll_s, reconcile_s=self._reconcile_s,
                holders=self._holders,
            ),
        )
        logger.info("backend %r connected from %s as consumer %s", backend, ws.remote_address, consumer)
        hello = {
            "type": "hello",
            "protocol": PROTOCOL,
            "supported": list(SUPPORTED),
            "backend": backend,
            "ack_timeout_s": self.ack_timeout_s,
            "max_message_bytes": self.max_message_bytes,
            "max_in_flight": self.max_in_flight,
            "rate_limit": {"per_s": self.rate_limit_per_s, "burst": self.rate_burst} if limited else None,
        }
        pump: asyncio.Task[None] | None = None
        self._connections[ws] = conn
        try:
            await ws.send(json.dumps(hello))
            await self._prune()
            pump = self._spawn(self._pump(conn), name=f"gateway-pump-{consumer}")
            async for raw in ws:
                reply = await self._on_message(conn, raw)
                if reply is not None:
                    await ws.send(json.dumps(reply))
                    if reply.get("code") == "unsupported_protocol":
                        conn.close = (CLOSE_UNSUPPORTED, "unsupported protocol version")
                if conn.close is not None:
                    await ws.close(*conn.close)
                    break
        except ConnectionClosed as exc:
            logger.info("backend %r (%s) disconnected: %s", backend, consumer, exc)
        finally:
            del self._connections[ws]
            if pump is not None:
                await cancel_and_wait(pump)
            conn.delivery.clear()
            await self._release(consumer)

    @property
    def connections(self) -> int:
        """How many backend connections are open."""
        return len(self._connections)

    def in_flight(self) -> dict[str, int]:
        """Per consumer (connection), how many deliveries it holds unacknowledged (sent or held back)."""
        return {conn.consumer: len(conn.delivery.in_flight) for conn in self._connections.values()}

    def deferred(self) -> dict[str, int]:
        """Per consumer (connection), how many of those it holds back, waiting for their stream's turn."""
        return {conn.consumer: len(conn.delivery.deferred) for conn in self._connections.values()}

    def notify(self, message: Mapping[str, Any]) -> int:
        """Send an informational message (e.g. ``stream.state``) to every connected backend, now.

        Not durable and not acknowledged, unlike interventions: a backend that is offline misses it.
        Returns how many connections it was sent to.
        """
        connections = [ws for ws in self._connections if ws.state is State.OPEN]
        broadcast(connections, json.dumps(message))
        return len(connections)

    async def _prune(self) -> None:
        try:
            await self.outbox.prune_consumers(idle_s=max(60.0, 10 * self.ack_timeout_s))
        except redis.RedisError as exc:
            logger.warning("could not prune idle outbox consumers: %s", exc)

    async def _release(self, consumer: str) -> None:
        try:
            released = await self.outbox.release(consumer)
        except redis.RedisError as exc:
            logger.warning("could not release %s's interventions (resent after timeout): %s", consumer, exc)
            return
        if released:
            logger.info("released %d unacknowledged interventions of %s for redelivery", released, consumer)

    async def _pump(self, conn: _Connection) -> None:
        """Run the connection's outbox consumer; if it breaks, close the connection so the backend
        reconnects (what it held is released by the handler)."""
        try:
            await conn.delivery.run()
        except ConnectionClosed:
            return  # the handler releases what this consumer still holds
        except Exception:
            logger.exception("delivery to %s failed; closing its connection", conn.consumer)
            await conn.ws.close(1011, "internal error delivering interventions")

    def _settled(self, entry_id: str, key: str, stream_id: str | None = None) -> None:
        """A delivery was acknowledged (by any connection): free the slot of the connection holding it,
        and wake the connections holding back later deliveries of its stream (one is the head now)."""
        holder = self._holders.get(entry_id)
        if holder is not None:
            holder.settle(entry_id, key)
        if stream_id is not None:
            for conn in self._connections.values():
                if conn.delivery.waits_for(stream_id):
                    conn.delivery.space.set()

    # -- messages --------------------------------------------------------------------------------

    async def _on_message(self, conn: _Connection, raw: str | bytes) -> dict[str, Any] | None:
        """The reply to one backend message, if any. Never raises for anything the backend sends."""
        msg, reply = _parse(raw)
        if not self._allowed(conn, msg):
            return self._rate_limited(conn, msg)
        if conn.limited:
            conn.limited = False
            logger.info("backend %r (%s) is back under its rate limit", conn.backend, conn.consumer)
        if reply is None:
            reply = await self._reply(conn.backend, msg)
        if reply is not None and reply["type"] == "error":
            logger.warning("refused a message from %r (%s): %s", conn.backend, reply["code"], reply["reason"])
        return reply

    def _allowed(self, conn: _Connection, msg: object) -> bool:
        if conn.bucket is None:
            return True
        if isinstance(msg, dict) and msg.get("type") in _ANSWERS:
            key = msg.get("lift_id") or msg.get("intervention_id")
            if isinstance(key, str) and conn.delivery.holds(key):
                return True  # answers to what it holds: bounded by max_in_flight, never dropped
        return conn.bucket.take()

    def _rate_limited(self, conn: _Connection, msg: object) -> dict[str, Any]:
        assert conn.bucket is not None and conn.strikes is not None
        if not conn.limited:
            conn.limited = True
            logger.warning("backend %r (%s) is over its rate limit of %g messages/s: dropping messages",
                           conn.backend, conn.consumer, conn.bucket.rate)
        if not conn.strikes.take() and conn.close is None:
            logger.warning("backend %r (%s) kept sending over its rate limit: closing its connection (%d)",
                           conn.backend, conn.consumer, CLOSE_RATE_LIMITED)
            conn.close = (CLOSE_RATE_LIMITED, "rate limit exceeded")
        ref = msg.get("ref") if isinstance(msg, dict) else None
        kind = msg.get("type") if isinstance(msg, dict) else None
        extra: dict[str, Any] = {"retry_after_s": round(conn.bucket.wait_s(), 3)}
        if isinstance(kind, str):
            extra["for"] = kind[:50]
        return _error(f"over the rate limit of {conn.bucket.rate:g} messages/s (bursts of "
                      f"{conn.bucket.capacity:g}): message dropped", ref, "rate_limited", **extra)

    async def _reply(self, backend: str, msg: object) -> dict[str, Any] | None:
        ref = msg.get("ref") if isinstance(msg, dict) else None
        kind = str(msg.get("type"))[:50] if isinstance(msg, dict) else "message"
        try:
            checked = check_incoming(msg)
            assert isinstance(msg, dict)
            reply = await self._handlers[checked](backend, msg)
        except ProtocolError as exc:
            return _error(str(exc), ref, exc.code, **exc.extra)
        except redis.RedisError as exc:
            logger.error("%s from %r not recorded: %s", kind, backend, exc)
            return _error(f"{kind} not recorded, storage unavailable; retry later", ref, "unavailable")
        except Exception:
            logger.exception("internal error handling %s from %r", kind, backend)
            return _error(f"internal error handling {kind}", ref, "internal")
        return None if reply is None else _with_ref(reply, ref)

    async def _on_hello(self, backend: str, msg: Mapping[str, Any]) -> dict[str, Any]:
        protocol = str(msg["protocol"])
        if protocol not in SUPPORTED:
            raise ProtocolError(
                f"hello: protocol {protocol[:50]!r} is not supported; this gateway speaks "
                f"{', '.join(SUPPORTED)}", "unsupported_protocol", supported=list(SUPPORTED)
            )
        logger.info("backend %r speaks %s (%s)", backend, protocol, str(msg.get("client", ""))[:100])
        return {"type": "ok", "for": "hello", "protocol": protocol}

    async def _on_ack(self, backend: str, msg: Mapping[str, Any]) -> dict[str, Any] | None:
        """``ack``, ``nack`` and ``applied``: settle the outbox entry and record it in the audit log."""
        status = str(msg["type"])
        key = str(msg.get("lift_id") or msg["intervention_id"])
        result = await self.outbox.ack(key)
        if result.entry_id:
            self._settled(result.entry_id, key, None if result.message is None else result.message.stream_id)
        if result.status == "unknown":
            field = "lift_id" if "lift_id" in msg else "intervention_id"
            raise ProtocolError(f"{status}: unknown {field} {key!r}", "unknown_id")
        if result.status == "duplicate" and status != "applied":
            logger.debug("%r repeated %s of %s; ignored", backend, status, key)
            return None
        done = result.message
        stream_id, media_ts, intervention_id, lift_id = str(msg.get("stream_id", "")), 0.0, key, ""
        session = ""
        if isinstance(done, Intervention | InterventionLifted):
            stream_id, media_ts, intervention_id = done.stream_id, done.media_ts, done.intervention_id
            session = done.session
        if isinstance(done, InterventionLifted) or "lift_id" in msg:
            lift_id = key
        reason = str(msg.get("detail", "") if status == "applied" else msg.get("reason", ""))
        if (problem := stream_id_problem(stream_id)) is not None:  # nowhere to record it: say so, loudly
            logger.error("%r %s %s settled but not recorded: %s", backend, status, key, problem)
            return None
        await self.timeline.record_ack(
            Ack(
                stream_id=stream_id,
                media_ts=media_ts,
                intervention_id=intervention_id,
                status=status,
                backend=backend,
                reason=reason,
                lift_id=lift_id,
                effects=tuple(msg.get("effects", ())),
                session=session,
            )
        )
        log = logger.warning if status == "nack" else logger.info
        log("%r %s %s%s", backend, status, key, f": {reason}" if reason else "")
        return None

    async def _on_ping(self, backend: str, msg: Mapping[str, Any]) -> dict[str, Any]:
        return {"type": "pong"}

    async def _on_stream_started(self, backend: str, msg: Mapping[str, Any]) -> dict[str, Any]:
        event = StreamStarted(
            backend=backend,
            stream_id=str(msg["stream_id"]),
            source=str(msg.get("source", "")),
            metadata=dict(msg.get("metadata", {})),
        )
        if self.on_stream_started is None:
            raise ProtocolError("stream.started is not accepted here: no stream handler is configured",
                                "refused")
        try:
            await self.on_stream_started(event)
        except ValueError as exc:
            raise ProtocolError(f"stream.started refused: {exc}", "refused") from exc
        return {"type": "ok", "for": "stream.started", "stream_id": event.stream_id}

    async def _on_stream_ended(self, backend: str, msg: Mapping[str, Any]) -> dict[str, Any]:
        event = StreamEnded(backend=backend, stream_id=str(msg["stream_id"]))
        if self.on_stream_ended is None:
            raise ProtocolError("stream.ended is not accepted here: no stream handler is configured",
                                "refused")
        try:
            await self.on_stream_ended(event)
        except ValueError as exc:
            raise ProtocolError(f"stream.ended refused: {exc}", "refused") from exc
        return {"type": "ok", "for": "stream.ended", "stream_id": event.stream_id}
