"""WHIP ingest endpoint (RFC 9725): publishers push WebRTC streams to livesafe over HTTP.

``POST {prefix}/{stream_id}`` with ``Authorization: Bearer <token>`` and an ``application/sdp`` offer
creates a session: livesafe answers ``201 Created`` with the SDP answer (ICE gathering complete, so no
trickle ICE is needed) and ``Location: {prefix}/{stream_id}`` (the path posted to), then hands a
:class:`~livesafe.ingest.webrtc.WebRTCSource` to the ``on_session`` callback, which starts whatever
consumes it. ``DELETE {prefix}/{stream_id}`` (same token's backend) ends the session; so does the
publisher closing its connection or going silent. One session per stream id at a time (409).

Tokens map to backend names as for the websocket gateway; a session belongs to the backend whose token
created it, and only that backend can delete it: a stream's monitoring cannot be ended by a stranger.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from livesafe.auth import TokenSet
from livesafe.core.ids import stream_id_problem
from livesafe.ingest.source import IngestOptions
from livesafe.ingest.webrtc import SDP_ERRORS, WebRTCSource, default_configuration

log = logging.getLogger(__name__)

#: ``await on_session(stream_id, source, backend)`` once a session is negotiated, before the 201 goes
#: out. It should start the consumer of ``source`` (e.g. a worker task) and return promptly. Raising an
#: ``aiohttp.web.HTTPException`` refuses the session with that response; any other exception gives 500.
#: Either way the connection is closed.
OnSession = Callable[[str, WebRTCSource, str], Awaitable[None]]



@dataclass(frozen=True, slots=True)
class WhipSession:
    stream_id: str
    backend: str
    source: WebRTCSource
    etag: str


class WhipEndpoint:
    """The WHIP resource handlers; mount :meth:`routes` in an app or serve :meth:`app` on its own."""

    def __init__(
        self,
        tokens: Mapping[str, str],
        on_session: OnSession,
        *,
        options: IngestOptions | None = None,
        prefix: str = "/whip",
        max_offer_bytes: int = 64 * 1024,
        idle_timeout_s: float | None = 20.0,
        configuration: RTCConfiguration | None = None,
    ) -> None:
        """``tokens`` maps each accepted token to the backend name it authenticates."""
        if not tokens:
            raise ValueError("WhipEndpoint needs at least one token: no publisher could ever connect")
        # The live token set when given one (a tokens file reloaded while running: rotation applies here
        # at once, as on the websocket gateway), else a fixed copy.
        self._tokens = tokens if isinstance(tokens, TokenSet) else TokenSet(tokens)
        self._on_session = on_session
        self.options = options or IngestOptions()
        self.prefix = prefix.rstrip("/")
        self.max_offer_bytes = max_offer_bytes
        self.idle_timeout_s = idle_timeout_s
        self.configuration = configuration or default_configuration()
        self._sessions: dict[str, WhipSession] = {}
        self._pending: set[str] = set()
        self._closed = False

    @property
    def sessions(self) -> Mapping[str, WhipSession]:
        """Live sessions by stream id (a session leaves when its media stops)."""
        return self._sessions

    def routes(self) -> list[web.RouteDef]:
        path = f"{self.prefix}/{{stream_id}}"
        return [web.post(path, self._post), web.delete(path, self._delete)]

    def app(self) -> web.Application:
        """A standalone application serving the routes; its shutdown closes every session."""
        app = web.Application()
        app.add_routes(self.routes())

        async def on_shutdown(_app: web.Application) -> None:
            await self.aclose()

        app.on_shutdown.append(on_shutdown)
        return app

    async def aclose(self) -> None:
        """Refuse new sessions and end every session (closing its peer connection)."""
        self._closed = True
        await asyncio.gather(*(s.source.aclose() for s in list(self._sessions.values())))
        self._sessions.clear()

    # -- handlers -------------------------------------------------------------------------------------
    async def _post(self, request: web.Request) -> web.Response:
        backend = self._authenticate(request)
        stream_id = request.match_info["stream_id"]
        if (reason := stream_id_problem(stream_id)) is not None:
            raise web.HTTPBadRequest(text=reason)
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(
                text=f"expected Content-Type application/sdp, got {request.content_type!r}"
            )
        offer = _parse_offer(await self._read_body(request))
        if self._closed:
            raise web.HTTPServiceUnavailable(text="livesafe is shutting down")
        if stream_id in self._sessions or stream_id in self._pending:
            raise web.HTTPConflict(text=f"stream {stream_id!r} already has a WHIP session")
        self._pending.add(stream_id)
        try:
            session = await self._negotiate(stream_id, backend, offer)
        finally:
            self._pending.discard(stream_id)
        return web.Response(
            status=201,
            body=session.source.pc.localDescription.sdp.encode("utf-8"),
            content_type="application/sdp",
            headers={"Location": request.path, "ETag": session.etag},
        )

    async def _delete(self, request: web.Request) -> web.Response:
        backend = self._authenticate(request)
        stream_id = request.match_info["stream_id"]
        session = self._sessions.get(stream_id)
        if session is None:
            raise web.HTTPNotFound(text=f"no WHIP session for stream {stream_id!r}")
        if session.backend != backend:
            raise web.HTTPForbidden(text=f"stream {stream_id!r} belongs to another backend")
        await session.source.aclose()
        self._forget(session.source)
        return web.Response(status=200, text="session ended")

    # -- helpers --------------------------------------------------------------------------------------
    async def _negotiate(self, stream_id: str, backend: str, offer: str) -> WhipSession:
        source = WebRTCSource(
            stream_id,
            RTCPeerConnection(self.configuration),
            self.options,
            idle_timeout_s=self.idle_timeout_s,
        )
        try:
            try:
                await source.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            except SDP_ERRORS as exc:
                raise web.HTTPBadRequest(text=f"unusable SDP offer: {exc}") from exc
            if not source.kinds:
                raise web.HTTPBadRequest(text="the offer sends no audio or video")
            await source.pc.setLocalDescription(await source.pc.createAnswer())  # gathers all candidates
            if self._closed:
                raise web.HTTPServiceUnavailable(text="livesafe is shutting down")
            session = WhipSession(stream_id, backend, source, f'"{uuid.uuid4().hex}"')
            self._sessions[stream_id] = session
            source.add_end_callback(self._forget)
            await self._call_on_session(session)
        except BaseException:
            await source.aclose()
            self._forget(source)
            raise
        log.info("%s: WHIP session from %s (%s)", stream_id, backend, ", ".join(sorted(source.kinds)))
        return session

    async def _call_on_session(self, session: WhipSession) -> None:
        try:
            await self._on_session(session.stream_id, session.source, session.backend)
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("%s: on_session failed", session.stream_id)
            raise web.HTTPInternalServerError(text=f"session not started: {type(exc).__name__}") from exc

    def _forget(self, source: WebRTCSource) -> None:
        session = self._sessions.get(source.stream_id)
        if session is not None and session.source is source:
            del self._sessions[source.stream_id]

    def _authenticate(self, request: web.Request) -> str:
        """The backend of the request's bearer token, else 401 with the reason."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if not header:
            reason = "missing token: send 'Authorization: Bearer <token>'"
        elif scheme.lower() != "bearer" or not token:
            reason = "malformed Authorization header: expected 'Bearer <token>'"
        else:
            backend = self._tokens.lookup(token)  # constant time over all tokens
            if backend is not None:
                return backend
            reason = "invalid token"
        raise web.HTTPUnauthorized(text=reason, headers={"WWW-Authenticate": 'Bearer realm="livesafe"'})

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.max_offer_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit, request.content_length)
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit, len(body))
        return bytes(body)


def _too_large(limit: int, size: int) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(
        max_size=limit, actual_size=size, text=f"SDP offer larger than {limit} bytes"
    )


def _parse_offer(body: bytes) -> str:
    """The offer as text if it looks like SDP with at most one audio and one video section, else 400."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise web.HTTPBadRequest(text=f"SDP offer is not UTF-8: {exc}") from exc
    if not text.startswith("v=0"):
        raise web.HTTPBadRequest(text="not an SDP offer: it must start with 'v=0'")
    try:
        media = aiortc_sdp.SessionDescription.parse(text).media
    except (ValueError, IndexError, KeyError) as exc:
        raise web.HTTPBadRequest(text=f"unparsable SDP offer: {exc}") from exc
    kinds = [m.kind for m in media]
    if any(m.dtls is None or not m.dtls.fingerprints for m in media):
        raise web.HTTPBadRequest(text="unusable SDP offer: a media section has no DTLS fingerprint")
    for kind in ("audio", "video"):
        if kinds.count(kind) > 1:
            raise web.HTTPBadRequest(text=f"the offer has {kinds.count(kind)} {kind} sections; at most 1")
    return text
