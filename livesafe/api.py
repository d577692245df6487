"""The HTTP control API (aiohttp): what the websocket control channel does, for backends that prefer HTTP.

    POST   /v1/streams              {"stream_id", "source", "metadata"}  -> 201 (stream.started)
    DELETE /v1/streams/{stream_id}                                       -> 200 (stream.ended)
    GET    /v1/streams                                                   -> 200 streams with metrics
    POST   /v1/interventions/{intervention_id}/overturn
                                {"reviewer", "note", "stream_id"?}       -> 200 the intervention.lifted
    GET    /v1/streams/{stream_id}/audit?limit=100&after=ENTRY_ID        -> 200 the stream's audit trail
    GET    /v1/streams/{stream_id}/sessions                              -> 200 the stream's recorded sessions
    GET    /v1/streams/{stream_id}/timeline?session=S&limit=500&after=ENTRY_ID&types=signal,intervention
                                                                         -> 200 a session's timeline (latest
                                                                            session when none is named)
    GET    /v1/streams/{stream_id}/sessions/{session}/evidence/{ref}     -> 200 image/jpeg (a thumbnail)
    GET    /v1/health                                                    -> 200

Stream ids are checked at the door (:mod:`livesafe.core.ids`: 1-128 of ``A-Z a-z 0-9 . _ : -``), and a
``source`` must be allowed by the service's source rules (URL schemes; files only under configured
directories): anything else is a 400 naming the problem.

The audit trail lists every intervention, lift, ack, nack, applied and review verdict (overturn) of one
stream, oldest first, each with ``id`` (the cursor: pass the last one as ``after`` for the next page;
``next`` is null on the last page), ``at`` (when it was recorded, UTC), ``what``, ``who`` (backend,
reviewer or ``policy:NAME``), ``media_ts`` and the ``event`` itself. It reads a per-stream index, not the
whole record; it outlives the stream (see :mod:`livesafe.timeline.audit` for the retention).

A timeline page lists entries oldest first, each with ``id`` (the cursor), ``at`` and the record (``type``
and its fields, floats exact); ``next`` is the cursor of the next page, null on the last.

An overturn lifts an intervention in force (``reason: overturned``): the verdict goes to the session's
timeline and the lift to the backend through the outbox like any intervention. ``stream_id`` may be left
out.

Every call but ``/v1/health`` needs ``Authorization: Bearer TOKEN``: the backend tokens, the same
:class:`~livesafe.auth.TokenSet` as the gateway's, so a reloaded tokens file applies
here at once. Errors are JSON
``{"type": "error", "reason": ...}`` with a 4xx status naming what was wrong. Other routes (WHIP) can be
added to the same application.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from livesafe.auth import TokenSet
from livesafe.core.events import InterventionLifted, to_dict
from livesafe.core.ids import session_problem, stream_id_problem
from livesafe.timeline.entries import ALL_TYPES
from livesafe.timeline.store import MAX_READ, TimelineStore

log = logging.getLogger(__name__)

#: Largest control request body accepted.
MAX_BODY = 64 * 1024
#: Most audit entries returned by one request, and the default.
MAX_AUDIT_LIMIT = 1000
DEFAULT_AUDIT_LIMIT = 100
#: Timeline entries per page by default (at most ``MAX_READ``).
DEFAULT_TIMELINE_LIMIT = 500
#: The authenticated backend's name, set on each request by the auth middleware.
BACKEND = web.RequestKey("backend", str)


class Controller(Protocol):
    """What the API needs of the service."""

    def start_stream(
        self, stream_id: str, source: str, metadata: Mapping[str, Any] | None = None, *,
        trusted: bool = False, started_by: str = "",
    ) -> None: ...

    async def stop_stream_by_request(self, stream_id: str) -> None: ...

    def metrics(self) -> list[dict[str, Any]]: ...

    async def overturn(
        self, stream_id: str, intervention_id: str, reviewer: str, note: str = ""
    ) -> InterventionLifted: ...

    def find_stream(self, intervention_id: str) -> str | None: ...

    @property
    def timeline(self) -> TimelineStore: ...


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"type": "error", "reason": reason}, status=status)


async def _json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any] | web.Response:
    """The request's JSON object body, or the error response saying what is wrong with it.

    ``optional``: an empty body reads as ``{}``."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"body over {MAX_BODY} bytes")
    if optional and not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    return body


def bearer_backend(request: web.Request, tokens: Mapping[str, str]) -> str | None:
    """The backend name for the request's bearer token, or None (compared in constant time)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    if isinstance(tokens, TokenSet):
        return tokens.lookup(token.strip())
    given, found = token.strip().encode(), None
    for known, name in tokens.items():  # no early exit: constant time over all tokens
        if hmac.compare_digest(given, known.encode()):
            found = name
    return found


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(
    controller: Controller, tokens: Mapping[str, str], extra_routes: Sequence[web.RouteDef] = ()
) -> web.Application:
    """The control application (plus ``extra_routes``, e.g. WHIP); ``tokens`` maps token -> backend name."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v1/health" or not request.path.startswith(("/v1/streams", "/v1/interventions")):
            return await handler(request)
        backend = bearer_backend(request, tokens)
        if backend is None:
            return _error(401, "missing or invalid bearer token")
        request[BACKEND] = backend
        return await handler(request)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"type": "ok"})

    async def list_streams(_: web.Request) -> web.Response:
        return web.json_response({"type": "streams", "streams": controller.metrics()})

    async def start(request: web.Request) -> web.Response:
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        stream_id, source, metadata = body.get("stream_id"), body.get("source"), body.get("metadata", {})
        if (problem := stream_id_problem(stream_id)) is not None:
            return _error(400, problem)
        assert isinstance(stream_id, str)
        if not isinstance(source, str) or not source:
            return _error(400, "'source' must be a non-empty string")
        if not isinstance(metadata, dict):
            return _error(400, "'metadata' must be an object")
        try:
            controller.start_stream(stream_id, source, metadata, started_by=request[BACKEND])
        except ValueError as exc:
            status = 409 if "already" in str(exc) else 400
            return _error(status, str(exc))
        log.info("backend %r started stream %s over HTTP", request[BACKEND], stream_id)
        return web.json_response({"type": "ok", "for": "stream.started", "stream_id": stream_id}, status=201)

    async def overturn(request: web.Request) -> web.Response:
        intervention_id = request.match_info["intervention_id"]
        body = await _json_object(request, optional=True)
        if isinstance(body, web.Response):
            return body
        reviewer, note = body.get("reviewer", request[BACKEND]), body.get("note", "")
        stream_id = body.get("stream_id") or controller.find_stream(intervention_id)
        if not isinstance(reviewer, str) or not reviewer:
            return _error(400, "'reviewer' must be a non-empty string")
        if not isinstance(note, str):
            return _error(400, "'note' must be a string")
        if not isinstance(stream_id, str):
            return _error(404, f"intervention {intervention_id!r} is not in force on any monitored stream")
        try:
            lift = await controller.overturn(stream_id, intervention_id, reviewer, note)
        except ValueError as exc:
            return _error(404, str(exc))
        log.info("backend %r: %s overturned %s", request[BACKEND], reviewer, intervention_id)
        return web.json_response({"type": "ok", "for": "overturn", "lift": to_dict(lift)})

    async def end(request: web.Request) -> web.Response:
        stream_id = request.match_info["stream_id"]
        if (problem := stream_id_problem(stream_id)) is not None:
            return _error(400, problem)
        try:
            await controller.stop_stream_by_request(stream_id)
        except ValueError as exc:
            return _error(404, str(exc))
        return web.json_response({"type": "ok", "for": "stream.ended", "stream_id": stream_id})

    async def audit(request: web.Request) -> web.Response:
        stream_id = request.match_info["stream_id"]
        if (problem := stream_id_problem(stream_id)) is not None:
            return _error(400, problem)
        after = request.query.get("after") or None
        try:
            limit = int(request.query.get("limit", DEFAULT_AUDIT_LIMIT))
        except ValueError:
            return _error(400, "'limit' must be an integer")
        if not 1 <= limit <= MAX_AUDIT_LIMIT:
            return _error(400, f"'limit' must be between 1 and {MAX_AUDIT_LIMIT}")
        try:
            entries = await controller.timeline.audit(stream_id, after=after, limit=limit)
        except ValueError as exc:
            return _error(400, str(exc))
        next_cursor = entries[-1].entry_id if len(entries) == limit else None
        return web.json_response({"type": "audit", "stream_id": stream_id,
                                  "entries": [e.as_dict() for e in entries], "next": next_cursor})

    async def sessions(request: web.Request) -> web.Response:
        stream_id = request.match_info["stream_id"]
        if (problem := stream_id_problem(stream_id)) is not None:
            return _error(400, problem)
        found = await controller.timeline.sessions(stream_id)
        return web.json_response({"type": "sessions", "stream_id": stream_id, "sessions": [
            {"session": s.session, "started_at": s.started_at} for s in found]})

    async def timeline(request: web.Request) -> web.Response:
        stream_id = request.match_info["stream_id"]
        if (problem := stream_id_problem(stream_id)) is not None:
            return _error(400, problem)
        session = request.query.get("session") or await controller.timeline.latest_session(stream_id)
        if session is None:
            return _error(404, f"no recorded session of stream {stream_id!r}")
        if (problem := session_problem(session)) is not None:
            return _error(400, problem)
        try:
            limit = int(request.query.get("limit", DEFAULT_TIMELINE_LIMIT))
        except ValueError:
            return _error(400, "'limit' must be an integer")
        if not 1 <= limit <= MAX_READ:
            return _error(400, f"'limit' must be between 1 and {MAX_READ}")
        types = {t for t in request.query.get("types", "").split(",") if t}
        if unknown := types - ALL_TYPES:
            return _error(400, f"unknown entry types {sorted(unknown)}; known {sorted(ALL_TYPES)}")
        try:
            after = request.query.get("after") or None
            page = await controller.timeline.read(stream_id, session, after=after, limit=limit)
        except ValueError as exc:
            return _error(400, str(exc))
        if not page and request.query.get("after") is None:
            return _error(404, f"no timeline for session {session!r} of stream {stream_id!r}")
        next_cursor = page[-1].entry_id if len(page) == limit else None
        entries = [e.as_dict() for e in page if not types or e.type in types]
        return web.json_response({"type": "timeline", "stream_id": stream_id, "session": session,
                                  "entries": entries, "next": next_cursor})

    async def evidence(request: web.Request) -> web.StreamResponse:
        stream_id, session, ref = (request.match_info[k] for k in ("stream_id", "session", "ref"))
        if (problem := stream_id_problem(stream_id) or session_problem(session)) is not None:
            return _error(400, problem)
        jpeg = await controller.timeline.evidence(stream_id, session, ref)
        if jpeg is None:
            return _error(404, f"no evidence {ref[:60]!r} kept for session {session} of stream {stream_id!r}")
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "private, no-store"})

    app = web.Application(middlewares=[auth], client_max_size=MAX_BODY)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/streams", list_streams)
    app.router.add_post("/v1/streams", start)
    app.router.add_delete("/v1/streams/{stream_id}", end)
    app.router.add_get("/v1/streams/{stream_id}/audit", audit)
    app.router.add_get("/v1/streams/{stream_id}/sessions", sessions)
    app.router.add_get("/v1/streams/{stream_id}/timeline", timeline)
    app.router.add_get("/v1/streams/{stream_id}/sessions/{session}/evidence/{ref}", evidence)
    app.router.add_post("/v1/interventions/{intervention_id}/overturn", overturn)
    app.add_routes(extra_routes)
    return app


class HttpServer:
    """Runs an aiohttp application on host:port (port 0 picks a free one) with owned lifecycle."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._requested_port)
        await self._site.start()

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("HTTP server not started")
        for addr in self._runner.addresses:
            return int(addr[1])
        raise RuntimeError("HTTP server has no address")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
