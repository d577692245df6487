"""WHEP client: livesafe pulls a WebRTC stream from a WHEP server (RFC draft-ietf-wish-whep).

Signalling is one HTTP exchange: POST a recvonly offer with ICE gathering complete, get the answer and a
session resource (``Location``), DELETE that resource to leave. Media is then read exactly as from a
WHIP publisher, by :class:`~livesafe.ingest.webrtc.WebRTCSource`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from yarl import URL

from livesafe.core.events import MediaSample
from livesafe.ingest.source import IngestOptions, IngestStats, SourceError
from livesafe.ingest.webrtc import SDP_ERRORS, WebRTCSource, default_configuration

log = logging.getLogger(__name__)


class WhepSource:
    """A :class:`~livesafe.ingest.source.MediaSource` that pulls a stream from a WHEP server.

    On first iteration it POSTs a recvonly offer (one video, one audio transceiver; the server answers
    with what it has), applies the answer and then reads like
    :class:`~livesafe.ingest.webrtc.WebRTCSource`. On close it DELETEs
    the session resource named by the answer's ``Location`` header. HTTP failures and timeouts raise
    :class:`~livesafe.ingest.source.SourceError` naming the URL and the status.
    """

    def __init__(
        self,
        stream_id: str,
        url: str,
        *,
        token: str | None = None,
        options: IngestOptions | None = None,
        timeout_s: float = 10.0,
        idle_timeout_s: float | None = 20.0,
        configuration: RTCConfiguration | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.url = url
        self.token = token
        self.options = options or IngestOptions()
        self.stats = IngestStats()
        self.timeout_s = timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.configuration = configuration or default_configuration()
        #: The session resource on the server, once it answered.
        self.resource: str | None = None
        self._inner: WebRTCSource | None = None
        self._http: aiohttp.ClientSession | None = None
        self._started = False
        self._video_fps: float | None = None

    def set_video_fps(self, fps: float) -> None:
        """Change the video sampling rate (applies once connected, and from then on)."""
        self._video_fps = fps
        if self._inner is not None:
            self._inner.set_video_fps(fps)

    async def samples(self) -> AsyncIterator[MediaSample]:
        if self._started:
            raise RuntimeError("WhepSource.samples() can only be iterated once")
        self._started = True
        try:
            inner = await self._connect()
            async for sample in inner.samples():
                yield sample
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop media, DELETE the server's session resource (best effort) and release the HTTP client."""
        if self._inner is not None:
            await self._inner.aclose()
        http, resource = self._http, self.resource
        self._http = self.resource = None
        if http is None:
            return
        try:
            if resource is not None:
                await self._delete(http, resource)
        finally:
            await http.close()

    async def _connect(self) -> WebRTCSource:
        pc = RTCPeerConnection(self.configuration)
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        self._inner = WebRTCSource(
            self.stream_id, pc, self.options, stats=self.stats, idle_timeout_s=self.idle_timeout_s
        )
        if self._video_fps is not None:
            self._inner.set_video_fps(self._video_fps)
        await pc.setLocalDescription(await pc.createOffer())  # returns once ICE gathering is complete
        answer = await self._post(pc.localDescription.sdp)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except SDP_ERRORS as exc:
            raise SourceError(f"WHEP {self.url}: unusable SDP answer: {exc}") from exc
        if not self._inner.kinds:
            raise SourceError(f"WHEP {self.url}: the answer sends no audio or video")
        return self._inner

    async def _post(self, offer: str) -> str:
        headers = {"Content-Type": "application/sdp"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        try:
            async with self._http.post(self.url, data=offer.encode("utf-8"), headers=headers) as resp:
                body = await resp.text(errors="replace")
                if resp.status not in (200, 201):
                    reason = f"HTTP {resp.status} {resp.reason}: {body[:200].strip()}"
                    raise SourceError(f"WHEP {self.url}: {reason}")
                if resp.content_type != "application/sdp":
                    reason = f"HTTP {resp.status} answer is {resp.content_type!r}, not application/sdp"
                    raise SourceError(f"WHEP {self.url}: {reason}")
                if (location := resp.headers.get("Location")) is not None:
                    self.resource = str(resp.url.join(URL(location)))
                return body
        except TimeoutError as exc:
            raise SourceError(f"WHEP {self.url}: no answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise SourceError(f"WHEP {self.url}: {type(exc).__name__}: {exc}") from exc

    async def _delete(self, http: aiohttp.ClientSession, resource: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}
        try:
            timeout = aiohttp.ClientTimeout(total=5.0)
            async with http.delete(resource, headers=headers, timeout=timeout) as resp:
                if resp.status >= 400 and resp.status != 404:
                    log.warning("%s: WHEP DELETE %s: HTTP %d", self.stream_id, resource, resp.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("%s: WHEP DELETE %s failed: %s", self.stream_id, resource, exc)
