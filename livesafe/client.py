"""A minimal Python client for the streaming backend side of the gateway (protocol ``livesafe.v1``).

A real backend may be written in any language; this one documents the protocol by example, lets
the demo play a backend that prints what it is told, and drives the gateway in tests. It keeps one
connection open, reconnecting with exponential backoff, and hands interventions to ``async for``.
Acks, nacks and control messages sent while disconnected wait for the next connection (acks are
by ``intervention_id``, so any connection of the same backend may carry them).

Usage::

    async with BackendClient("ws://127.0.0.1:8765/v1/backend", token) as client:
        async for received in client:
            if received.lifted is not None:
                undo(received.lifted)           # intervention.lifted: the effects are over
            else:
                apply(received.intervention)
            await client.ack(received)          # by intervention_id or lift_id, as fits

Run ``python -m livesafe.client URL --token TOKEN`` for a backend that prints and acks everything;
``examples/backend.py`` is a fuller example that applies and undoes effects.

Backpressure: at most ``max_pending`` (default 1,000) received messages wait for ``async for``. When
that many are waiting, the client stops reading from the websocket until the application takes one:
websockets then stops reading the socket, TCP flow control pushes back on the gateway, and memory does
not grow with a slow consumer. (The gateway sends a connection at most ``max_in_flight`` unacknowledged
deliveries anyway, so with acks the queue stays below that.) While reading is paused, replies to
control messages and pings wait too: keep consuming. A consumer stuck for longer than the keepalive
timeout loses its connection; what it held is then resent, to it or another backend connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from livesafe.core.events import (
    Deliverable,
    EventFormatError,
    Intervention,
    InterventionLifted,
    delivery_key,
    from_dict,
)
from livesafe.interventions.protocol import PROTOCOL
from livesafe.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Received:
    """An intervention or a lift as delivered: ``attempt`` > 1 means a resend (dedupe by :attr:`key`)."""

    message: Deliverable
    attempt: int

    @property
    def key(self) -> str:
        """The idempotency key: ``intervention_id`` of an intervention, ``lift_id`` of a lift."""
        return delivery_key(self.message)

    @property
    def lifted(self) -> InterventionLifted | None:
        return self.message if isinstance(self.message, InterventionLifted) else None

    @property
    def intervention(self) -> Intervention:
        """The intervention; TypeError for a lift (check :attr:`lifted` first)."""
        if not isinstance(self.message, Intervention):
            raise TypeError(f"{self.key} is an intervention.lifted, not an intervention: check .lifted first")
        return self.message


#: What acks, nacks and applied name: a received message, an event, or an intervention_id.
Target = Received | Intervention | InterventionLifted | str


def _target(target: Target) -> dict[str, str]:
    message = target.message if isinstance(target, Received) else target
    if isinstance(message, InterventionLifted):
        return {"lift_id": message.lift_id}
    if isinstance(message, Intervention):
        return {"intervention_id": message.intervention_id}
    return {"intervention_id": message}


class GatewayError(RuntimeError):
    """The gateway answered a control message with an error; the message is its reason."""


class AuthenticationError(ConnectionError):
    """The gateway refused the token (HTTP 401/403). Not retried: a bad token stays bad."""


class ProtocolVersionError(ConnectionError):
    """The gateway and this client share no protocol version. Not retried."""


@dataclass(slots=True)
class _Pending:
    """A control message awaiting its reply, and the connection it went out on."""

    future: asyncio.Future[dict[str, Any]]
    sent_on: ClientConnection | None = None


class BackendClient:
    """A reconnecting websocket client yielding :class:`Received` interventions."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        auto_ack: bool = False,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        reply_timeout_s: float = 10.0,
        open_timeout_s: float = 10.0,
        max_message_bytes: int = 2**20,
        on_notice: Callable[[dict[str, Any]], None] | None = None,
        max_pending: int = 1000,
    ) -> None:
        """``auto_ack`` acks on receipt, before your code sees the intervention (at-most-once for you).

        ``max_pending``: received messages held for ``async for``; when full, reading pauses."""
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.url = url
        self.max_pending = max_pending
        self._token = token
        self.auto_ack = auto_ack
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.reply_timeout_s = reply_timeout_s
        self.open_timeout_s = open_timeout_s
        self.max_message_bytes = max_message_bytes
        #: Called with each informational message (``stream.state``: live, degraded, lost, ended...).
        self.on_notice = on_notice
        #: The gateway's last ``hello`` (backend name, protocol, ack timeout), ``None`` before the first.
        self.hello: dict[str, Any] | None = None
        #: How many times a connection was established (reconnections included).
        self.connections = 0
        #: The reason of the last unsolicited ``error`` from the gateway.
        self.last_error: str | None = None
        self._ws: ClientConnection | None = None
        self._state_changed = asyncio.Event()  # set while connected, or once the client is finished
        # Bounded: the connection's reader waits for room (see the module docstring).
        self._queue: deque[Received] = deque()
        self._readable = asyncio.Event()  # set while the queue has items or iteration is over
        self._room = asyncio.Event()  # set while the queue has room
        self._room.set()
        self._end: BaseException | None = None
        self._ended = False
        #: How many times reading paused because ``max_pending`` messages were waiting.
        self.paused = 0
        self._replies: dict[str, _Pending] = {}
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._failure: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("BackendClient already started")
        self._runner = asyncio.create_task(self._run(), name=f"backend-client-{self.url}")

    async def aclose(self) -> None:
        """Close the connection and stop reconnecting; iteration ends."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            await ws.close()
        await cancel_and_wait(self._runner)
        self._finish(None)

    async def __aenter__(self) -> BackendClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def wait_connected(self) -> None:
        """Wait for a live connection; raises if the client is closed or its token was refused."""
        while self._ws is None:
            self._raise_if_finished()
            await self._state_changed.wait()
            self._raise_if_finished()

    def _raise_if_finished(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise ConnectionError("BackendClient is closed")

    def _finish(self, failure: BaseException | None) -> None:
        self._failure = self._failure or failure
        self._state_changed.set()
        if not self._ended:  # what was already received is still yielded first
            self._ended, self._end = True, failure
            self._readable.set()
        self._fail_replies(None, ConnectionError("BackendClient closed before the gateway replied"))

    def _fail_replies(self, ws: ClientConnection | None, exc: BaseException) -> None:
        """Fail the replies awaited on ``ws`` (on any connection if ``None``): they will never come."""
        for pending in self._replies.values():
            if (ws is None or pending.sent_on is ws) and not pending.future.done():
                pending.future.set_exception(exc)

    # -- connection loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._connect_loop()
        except Exception as exc:  # a bug must end iteration loudly, not leave it waiting forever
            logger.exception("backend client for %s stopped", self.url)
            self._finish(exc)

    async def _connect_loop(self) -> None:
        delay = self.backoff_initial_s
        headers = {"Authorization": f"Bearer {self._token}"}
        while not self._closing:
            try:
                async with connect(
                    self.url,
                    additional_headers=headers,
                    open_timeout=self.open_timeout_s,
                    max_size=self.max_message_bytes,
                    close_timeout=2.0,
                ) as ws:
                    await self._session(ws)
                    delay = self.backoff_initial_s
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
                if status in (401, 403):
                    self._finish(AuthenticationError(f"gateway refused the token (HTTP {status}): {body}"))
                    return
                logger.warning("gateway %s refused the connection: HTTP %d %s", self.url, status, body)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ValueError) as exc:
                logger.warning("gateway %s: connection failed: %s", self.url, exc)
            if self._closing:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.backoff_max_s)

    async def _session(self, ws: ClientConnection) -> None:
        hello = json.loads(await ws.recv())
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise InvalidHandshake(f"expected a hello message first, got {hello!r}")
        supported = hello.get("supported") or [hello.get("protocol")]
        if PROTOCOL not in supported:
            self._finish(ProtocolVersionError(f"gateway speaks {supported}, this client {PROTOCOL}"))
            self._closing = True
            return
        await ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL, "client": "livesafe.client"}))
        self.hello = hello
        self.connections += 1
        self._ws = ws
        self._state_changed.set()
        logger.info("connected to %s as backend %r", self.url, hello.get("backend"))
        try:
            async for raw in ws:
                await self._dispatch(ws, raw)
        finally:
            self._ws = None
            self._state_changed.clear()
            self._fail_replies(ws, ConnectionError("connection lost before the gateway replied"))

    async def _dispatch(self, ws: ClientConnection, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
            kind = msg.get("type")
        except (ValueError, AttributeError):
            logger.warning("gateway sent an unreadable message: %.200r", raw)
            return
        if kind in ("intervention", "intervention.lifted"):
            delivery = msg.pop("delivery", None) or {}
            try:
                event = from_dict(msg)
            except (EventFormatError, TypeError) as exc:
                logger.warning("gateway sent a bad %s: %s", kind, exc)
                return
            assert isinstance(event, Intervention | InterventionLifted)
            received = Received(event, int(delivery.get("attempt", 1)))
            if self.auto_ack:
                await ws.send(json.dumps({"type": "ack", **_target(received)}))
            await self._put(received)
            return
        pending = self._replies.get(str(msg.get("ref")))
        if pending is not None and not pending.future.done():
            pending.future.set_result(msg)
        elif kind == "error":
            self.last_error = str(msg.get("reason"))
            logger.warning("gateway error: %s", self.last_error)
            if msg.get("code") == "unsupported_protocol":
                self._closing = True
                self._finish(ProtocolVersionError(self.last_error))
        elif kind == "stream.state" and self.on_notice is not None:
            self.on_notice(msg)
        else:
            logger.debug("ignoring gateway message of type %r", kind)

    # -- iteration and sending -------------------------------------------------------------------

    def __aiter__(self) -> BackendClient:
        return self

    @property
    def pending(self) -> int:
        """Received messages waiting for ``async for`` (at most ``max_pending``)."""
        return len(self._queue)

    async def _put(self, received: Received) -> None:
        """Queue for the application; with ``max_pending`` waiting, stop reading until one is taken."""
        if len(self._queue) >= self.max_pending:
            self.paused += 1
            logger.debug("%d messages wait for the application: pausing reads", len(self._queue))
            while len(self._queue) >= self.max_pending:
                self._room.clear()
                await self._room.wait()
        self._queue.append(received)
        self._readable.set()

    async def __anext__(self) -> Received:
        while not self._queue:
            if self._ended:  # later calls keep ending too
                if self._end is not None:
                    raise self._end
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        item = self._queue.popleft()
        self._room.set()
        return item

    async def _send(self, message: Mapping[str, Any]) -> ClientConnection:
        """Send on the current connection, waiting for one if need be; returns the one used."""
        text = json.dumps(message)
        while True:
            await self.wait_connected()
            ws = self._ws
            if ws is None:
                continue
            try:
                await ws.send(text)
                return ws
            except ConnectionClosed:
                if self._ws is ws:  # the session loop has not noticed yet
                    self._ws = None
                    self._state_changed.clear()

    async def ack(self, target: Target) -> None:
        """Tell the gateway the intervention (or lift) was received and will be applied.

        ``target``: what was received, or an ``intervention_id``."""
        await self._send({"type": "ack", **_target(target)})

    async def nack(self, target: Target, reason: str) -> None:
        """Refuse the intervention (or lift) for good (it is recorded and not resent)."""
        await self._send({"type": "nack", **_target(target), "reason": reason})

    async def applied(
        self, target: Target, stream_id: str, effects: tuple[str, ...], detail: str = ""
    ) -> None:
        """Report what was done (also acknowledges it): the effects applied, or removed for a lift."""
        await self._send({"type": "applied", **_target(target), "stream_id": stream_id,
                          "effects": list(effects), "detail": detail})

    async def ping(self) -> None:
        """Round-trip to the gateway; on return, everything sent before (acks too) was handled."""
        await self.send_control({"type": "ping"})

    async def send_control(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Send a control message (``stream.started``...) and return the gateway's reply (``ok``...).

        Raises :class:`GatewayError` with the gateway's reason if it answers with an error,
        ``ConnectionError`` if the connection drops first, ``TimeoutError`` after ``reply_timeout_s``.
        """
        if not isinstance(message.get("type"), str):
            raise ValueError("a control message needs a string 'type'")
        ref = uuid.uuid4().hex
        pending = _Pending(asyncio.get_running_loop().create_future())
        self._replies[ref] = pending
        try:
            pending.sent_on = await self._send({**message, "ref": ref})
            async with asyncio.timeout(self.reply_timeout_s):
                reply = await pending.future
        finally:
            del self._replies[ref]
            if pending.future.done() and not pending.future.cancelled():
                pending.future.exception()  # retrieved: no "exception never retrieved" noise
        if reply.get("type") == "error":
            raise GatewayError(str(reply.get("reason")))
        return reply


async def print_interventions(url: str, token: str) -> None:
    """A simulated backend: print every intervention and ack it."""
    async with BackendClient(url, token) as client:
        async for received in client:
            resend = f" (attempt {received.attempt})" if received.attempt > 1 else ""
            if (lift := received.lifted) is not None:
                print(
                    f"[{lift.stream_id} t={lift.media_ts:.1f}s] LIFT {lift.action.upper()} {lift.category} "
                    f"effects={','.join(lift.effects)} ({lift.reason}){resend}: {lift.detail}",
                    flush=True,
                )
            else:
                iv = received.intervention
                print(
                    f"[{iv.stream_id} t={iv.media_ts:.1f}s] {iv.action.upper()} {iv.category} "
                    f"score={iv.score:.2f} effects={','.join(iv.effects)}{resend}: {iv.reason}",
                    flush=True,
                )
            await client.ack(received)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A simulated streaming backend that prints interventions")
    parser.add_argument("url", help="gateway endpoint, e.g. ws://127.0.0.1:8765/v1/backend")
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(print_interventions(args.url, args.token))


if __name__ == "__main__":
    main()
