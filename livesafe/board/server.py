"""The ops board: a read-only live view of every monitored stream's risk, transcripts and interventions.

One websockets server answers plain HTTP for the page (``GET /``) and a JSON snapshot
(``GET /v1/board/state``), and upgrades ``/v1/board`` to a websocket that first sends the snapshot and
then every event as it happens. Each viewer has a bounded queue: a viewer that cannot keep up loses
the oldest updates (counted in ``dropped``), never the service's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from livesafe.core.events import (
    Event,
    Intervention,
    InterventionLifted,
    RiskUpdate,
    Signal,
    Tick,
    Transcript,
    to_dict,
)

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "board.html"
#: Updates buffered per viewer before the oldest are dropped.
VIEWER_QUEUE = 256
#: Interventions and transcripts kept per stream for the snapshot.
HISTORY = 20


@dataclass(slots=True)
class StreamView:
    stream_id: str
    media_ts: float = 0.0
    tier: str = "none"
    overall: float = 0.0
    levels: dict[str, float] = field(default_factory=dict)
    transcripts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    interventions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    state: str = "live"

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id, "media_ts": self.media_ts, "tier": self.tier,
            "overall": self.overall, "levels": self.levels, "state": self.state,
            "transcripts": list(self.transcripts), "interventions": list(self.interventions),
        }


class _Viewer:
    def __init__(self) -> None:
        self.queue: deque[str] = deque(maxlen=VIEWER_QUEUE)
        self.ready = asyncio.Event()
        self.dropped = 0

    def push(self, text: str) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(text)
        self.ready.set()


class Board:
    """Keeps a view of every stream and serves it to ops viewers."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, policy_name: str = "", policy_hash: str = ""
    ) -> None:
        self.host = host
        self._requested_port = port
        self.policy = {"name": policy_name, "hash": policy_hash}
        self.streams: dict[str, StreamView] = {}
        self._viewers: set[_Viewer] = set()
        self._server: Server | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await serve(self._handle, self.host, self._requested_port,
                                   process_request=self._http, server_header=None, close_timeout=2.0)

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> Board:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("Board not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # -- state --------------------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """Account for an event and forward it to every viewer (never blocks)."""
        view = self.streams.get(event.stream_id)
        if view is None:
            view = self.streams[event.stream_id] = StreamView(event.stream_id)
        view.media_ts = max(view.media_ts, event.media_ts)
        data = to_dict(event)
        if isinstance(event, RiskUpdate):
            view.tier, view.overall = event.tier, event.overall
            if event.category:
                view.levels[event.category] = event.level
        elif isinstance(event, Transcript):
            view.transcripts.append({"media_ts": event.media_ts, "text": event.text})
        elif isinstance(event, Intervention | InterventionLifted):
            view.interventions.append(data)  # lifts beside the interventions they end, in order
        elif isinstance(event, Signal | Tick):
            return  # too many to forward; their effect arrives as risk updates
        self._broadcast({"type": "event", "event": data})

    def stream_state(self, stream_id: str, state: str, detail: str = "") -> None:
        view = self.streams.setdefault(stream_id, StreamView(stream_id))
        view.state = state
        self._broadcast({"type": "stream.state", "stream_id": stream_id, "state": state, "detail": detail})

    def snapshot(self) -> dict[str, Any]:
        return {"type": "snapshot", "policy": self.policy,
                "streams": [v.as_dict() for _, v in sorted(self.streams.items())]}

    def _broadcast(self, message: dict[str, Any]) -> None:
        if not self._viewers:
            return
        text = json.dumps(message)
        for viewer in self._viewers:
            viewer.push(text)

    # -- serving ------------------------------------------------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/v1/board":
            return None  # websocket upgrade
        if path in ("/", "/index.html"):
            return self._response(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
        if path == "/v1/board/state":
            return self._response(HTTPStatus.OK, json.dumps(self.snapshot()).encode(), "application/json")
        return self._response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    @staticmethod
    def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
        headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store")])
        return Response(status.value, status.phrase, headers, body)

    async def _handle(self, ws: ServerConnection) -> None:
        viewer = _Viewer()
        self._viewers.add(viewer)
        sender = asyncio.create_task(self._send_loop(ws, viewer), name=f"board-viewer-{ws.id}")
        try:
            async for _ in ws:  # viewers only listen; reading notices when they leave
                pass
        except ConnectionClosed:
            pass
        finally:
            self._viewers.discard(viewer)
            sender.cancel()
            await asyncio.wait([sender])
            if viewer.dropped:
                log.info("board viewer %s missed %d updates", ws.remote_address, viewer.dropped)

    async def _send_loop(self, ws: ServerConnection, viewer: _Viewer) -> None:
        try:
            await ws.send(json.dumps(self.snapshot()))
            while True:
                await viewer.ready.wait()
                viewer.ready.clear()
                while viewer.queue:
                    await ws.send(viewer.queue.popleft())
        except ConnectionClosed:
            pass
