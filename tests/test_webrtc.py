"""WebRTC ingest with real aiortc peers over loopback: WHIP publishers to livesafe, WHEP pulls from a server.

Publishers are aiortc peer connections with generated tracks (a moving gradient at 30 fps, a 440 Hz tone in
20 ms frames), encoded to VP8/Opus and decoded again by livesafe's side, exactly as from a browser.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer
from multidict import CIMultiDict

from livesafe.core.events import AudioChunk, MediaSample, VideoSample
from livesafe.ingest.source import IngestOptions, SourceError
from livesafe.ingest.webrtc import WebRTCSource
from livesafe.ingest.whep import WhepSource
from livesafe.ingest.whip import WhipEndpoint
from tests.builders import GradientTrack, ToneTrack, config, serve_app
from tests.media import make_clip

TOKEN = "secret-token"
# Test audio is a tone, not speech: fixed windows instead of voice-activity segmentation.
OPTIONS = IngestOptions(video_fps=5.0, audio_window_s=0.5, vad=False)
#: Generous bounds for waits on real media; a passing test takes a fraction of them.
WAIT_S = 15.0


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Every task a source or endpoint started is finished once the test and its fixtures are done."""
    yield
    leaked = [t for t in asyncio.all_tasks() if t.get_name().startswith("webrtc-") and not t.done()]
    assert not leaked


class Collector:
    """Consumes a source in a task, keeping every sample; tests wait on conditions over what arrived."""

    def __init__(self, source: WebRTCSource | WhepSource) -> None:
        self.source = source
        self.samples: list[MediaSample] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for sample in self.source.samples():
                self.samples.append(sample)
                self._changed.set()
        finally:
            self._changed.set()

    @property
    def video(self) -> list[VideoSample]:
        return [s for s in self.samples if isinstance(s, VideoSample)]

    @property
    def audio(self) -> list[AudioChunk]:
        return [s for s in self.samples if isinstance(s, AudioChunk)]

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                if self.task.done():
                    self.task.result()  # re-raise why it ended
                    raise AssertionError(f"source ended before {what}: {len(self.samples)} samples")
                self._changed.clear()
                await self._changed.wait()

    async def ended(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.task


@dataclass
class Whip:
    endpoint: WhipEndpoint
    base: str
    http: aiohttp.ClientSession
    sessions: asyncio.Queue[tuple[str, WebRTCSource, str]]
    publishers: list[RTCPeerConnection] = field(default_factory=list)

    def url(self, stream_id: str) -> str:
        return f"{self.base}/whip/{stream_id}"

    async def post(
        self, stream_id: str, body: str | bytes, *, token: str | None = TOKEN,
        content_type: str = "application/sdp",
    ) -> tuple[int, str, CIMultiDict[str]]:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.post(self.url(stream_id), data=body, headers=headers) as resp:
            return resp.status, await resp.text(), resp.headers.copy()

    async def publish(
        self, stream_id: str, *tracks: MediaStreamTrack
    ) -> tuple[RTCPeerConnection, WebRTCSource]:
        """A publisher connected to livesafe, and the source livesafe handed to on_session."""
        pc = RTCPeerConnection(config())
        self.publishers.append(pc)
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        status, answer, headers = await self.post(stream_id, pc.localDescription.sdp)
        assert status == 201, answer
        assert headers["Location"] == f"/whip/{stream_id}"
        assert headers["Content-Type"] == "application/sdp"
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        got_id, source, backend = self.sessions.get_nowait()  # on_session ran before the 201
        assert (got_id, backend) == (stream_id, "acme")
        return pc, source

    async def delete(self, stream_id: str, token: str = TOKEN) -> int:
        async with self.http.delete(self.url(stream_id), headers={"Authorization": f"Bearer {token}"}) as r:
            return r.status


@pytest.fixture
async def whip() -> AsyncIterator[Whip]:
    sessions: asyncio.Queue[tuple[str, WebRTCSource, str]] = asyncio.Queue()

    async def on_session(stream_id: str, source: WebRTCSource, backend: str) -> None:
        sessions.put_nowait((stream_id, source, backend))

    endpoint = WhipEndpoint({TOKEN: "acme", "other-token": "other"}, on_session, options=OPTIONS,
                            idle_timeout_s=5.0)
    runner, base = await serve_app(endpoint.app())
    async with aiohttp.ClientSession() as http:
        w = Whip(endpoint, base, http, sessions)
        try:
            yield w
        finally:
            await runner.cleanup()  # app shutdown closes every session still live
            assert not endpoint.sessions
            for pc in w.publishers:
                await pc.close()


def check_video_timing(video: list[VideoSample], fps: float) -> None:
    assert [v.index for v in video] == list(range(len(video)))
    gaps = [b.media_ts - a.media_ts for a, b in itertools.pairwise(video)]
    # sampled at fps in media time, on 30 fps source frames
    assert all(1 / fps - 0.04 <= g <= 1 / fps + 0.1 for g in gaps), gaps
    assert video[0].media_ts < 0.5
    assert video[0].image.shape == (120, 160, 3) and video[0].image.dtype == np.uint8


def check_audio(audio: list[AudioChunk]) -> None:
    assert all(a.sample_rate == 16000 and a.samples.dtype == np.float32 for a in audio)
    assert all(a.samples.ndim == 1 for a in audio)
    # a continuous tone is cut hard at 2 x window; windows follow each other in media time
    assert all(0.5 <= a.duration <= 1.0 + 1e-6 for a in audio[:-1]), [a.duration for a in audio]
    for prev, cur in itertools.pairwise(audio):
        assert cur.media_ts == pytest.approx(prev.end_ts, abs=1e-3)
    assert audio[0].media_ts < 0.5
    assert 0.1 < float(np.sqrt(np.mean(audio[0].samples**2))) < 0.4  # the tone came through


async def test_whip_publisher_audio_and_video_then_delete(whip: Whip) -> None:
    started = time.monotonic()
    _pc, source = await whip.publish("cam-1", GradientTrack(), ToneTrack())
    assert source.kinds == {"audio", "video"}
    assert set(whip.endpoint.sessions) == {"cam-1"}
    got = Collector(source)
    await got.wait_for(lambda: len(got.video) >= 8 and len(got.audio) >= 2, "8 frames and 2 audio chunks")
    elapsed = time.monotonic() - started
    # media time runs with the wall clock: at most what has elapsed since the offer
    assert got.video[-1].media_ts <= elapsed + 0.1
    assert await whip.delete("cam-1") == 200
    await got.ended()  # the consumer sees the end, no error
    assert source.ended and source.error is None
    assert not whip.endpoint.sessions
    check_video_timing(got.video, OPTIONS.video_fps)
    check_audio(got.audio)
    # audio and video share the connection's clock
    assert abs(got.audio[0].media_ts - got.video[0].media_ts) < 0.3
    stats = source.stats
    assert stats.frames_sampled == len(got.video) + stats.video_dropped
    assert stats.frames_decoded > stats.frames_sampled
    assert stats.audio_chunks == len(got.audio) + stats.audio_dropped
    assert await whip.delete("cam-1") == 404


async def test_whip_video_only(whip: Whip) -> None:
    _pc, source = await whip.publish("v", GradientTrack())
    assert source.kinds == {"video"}
    got = Collector(source)
    await got.wait_for(lambda: len(got.video) >= 5, "5 frames")
    await source.aclose()
    await got.ended()
    assert not got.audio
    check_video_timing(got.video, OPTIONS.video_fps)


async def test_whip_audio_only(whip: Whip) -> None:
    _pc, source = await whip.publish("a", ToneTrack())
    assert source.kinds == {"audio"}
    got = Collector(source)
    await got.wait_for(lambda: len(got.audio) >= 2, "2 audio chunks")
    await source.aclose()
    await got.ended()
    assert not got.video
    check_audio(got.audio)


async def test_publisher_that_disappears_ends_the_source(whip: Whip) -> None:
    pc, source = await whip.publish("gone", GradientTrack(), ToneTrack())
    got = Collector(source)
    await got.wait_for(lambda: len(got.video) >= 2, "2 frames")
    await pc.close()  # DTLS close_notify: livesafe's side closes too
    await got.ended()
    assert source.error is None and source.pc.connectionState == "closed"
    assert "gone" not in whip.endpoint.sessions
    # the stream id is free again
    _pc2, source2 = await whip.publish("gone", GradientTrack())
    assert source2 is not source


async def test_silent_publisher_times_out() -> None:
    """A peer that stops sending without closing (crash, network loss) ends the source with an error."""
    received: asyncio.Queue[WebRTCSource] = asyncio.Queue()

    async def on_session(stream_id: str, source: WebRTCSource, backend: str) -> None:
        received.put_nowait(source)

    endpoint = WhipEndpoint({TOKEN: "acme"}, on_session, options=OPTIONS, idle_timeout_s=1.0)
    runner, base = await serve_app(endpoint.app())
    publisher = RTCPeerConnection(config())
    try:
        track = GradientTrack()
        publisher.addTransceiver(track, direction="sendonly")
        await publisher.setLocalDescription(await publisher.createOffer())
        async with aiohttp.ClientSession() as http, http.post(
            f"{base}/whip/quiet", data=publisher.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 201
            answer = await resp.text()
        await publisher.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        got = Collector(received.get_nowait())
        await got.wait_for(lambda: len(got.video) >= 1, "a frame")
        track.stop()  # no more frames, connection stays up
        with pytest.raises(SourceError, match="no media for 1 s"):
            await got.ended()
    finally:
        await publisher.close()
        await runner.cleanup()


async def test_whip_refusals(whip: Whip) -> None:
    offer_pc = RTCPeerConnection(config())
    whip.publishers.append(offer_pc)
    offer_pc.addTransceiver(GradientTrack(), direction="sendonly")
    await offer_pc.setLocalDescription(await offer_pc.createOffer())
    offer = offer_pc.localDescription.sdp

    status, text, headers = await whip.post("s", offer, token=None)
    assert (status, text) == (401, "missing token: send 'Authorization: Bearer <token>'")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, text, _ = await whip.post("s", offer, token="wrong")
    assert (status, text) == (401, "invalid token")
    status, text, _ = await whip.post("s", offer, content_type="text/plain")
    assert status == 415 and "application/sdp" in text
    status, text, _ = await whip.post("s", "hello, this is not SDP")
    assert status == 400 and "SDP" in text
    status, text, _ = await whip.post("s", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n")
    assert status == 400 and "no audio or video" in text
    status, text, _ = await whip.post("s", offer.replace("a=fingerprint", "a=nothing"))
    assert (status, text) == (400, "unusable SDP offer: a media section has no DTLS fingerprint")
    status, text, _ = await whip.post("s", offer.replace("a=ice-ufrag", "a=nothing"))
    assert (status, text) == (400, "unusable SDP offer: ICE username fragment or password is missing")
    status, text, _ = await whip.post("s", b"v=0\r\n" + b"a=x\r\n" * 20000)
    assert status == 413
    status, text, _ = await whip.post("bad id!", offer)
    assert status == 400 and "is not allowed" in text
    assert not whip.endpoint.sessions and whip.sessions.empty()

    _pc, source = await whip.publish("dup", GradientTrack())
    status, text, _ = await whip.post("dup", offer)
    assert status == 409 and "already" in text
    assert whip.endpoint.sessions["dup"].source is source
    assert await whip.delete("dup", token="other-token") == 403  # not that backend's stream
    assert await whip.delete("nope") == 404
    assert await whip.delete("dup") == 200


async def test_on_session_can_refuse(whip: Whip) -> None:
    async def refuse(stream_id: str, source: WebRTCSource, backend: str) -> None:
        raise web.HTTPForbidden(text=f"{backend} may not publish {stream_id}")

    endpoint = WhipEndpoint({TOKEN: "acme"}, refuse, options=OPTIONS)
    runner, base = await serve_app(endpoint.app())
    pc = RTCPeerConnection(config())
    try:
        pc.addTransceiver(GradientTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"}
        async with whip.http.post(f"{base}/whip/x", data=pc.localDescription.sdp, headers=headers) as resp:
            assert resp.status == 403 and await resp.text() == "acme may not publish x"
        assert not endpoint.sessions
    finally:
        await pc.close()
        await runner.cleanup()


@dataclass
class WhepServer:
    base: str
    deleted: asyncio.Event
    peers: list[RTCPeerConnection]


@pytest.fixture
async def whep_server(tmp_path: Path) -> AsyncIterator[WhepServer]:
    """A minimal WHEP server: each POST gets a MediaPlayer of a generated clip (H.264 + AAC, re-encoded to
    VP8 + Opus by aiortc); ``/whep/forbidden`` answers 403 and ``/whep/hang`` never answers."""
    clip = make_clip(tmp_path / "clip.mp4", 6.0, fps=30)
    deleted, never = asyncio.Event(), asyncio.Event()
    peers: list[RTCPeerConnection] = []
    players: list[MediaPlayer] = []

    async def post(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "forbidden":
            raise web.HTTPForbidden(text="no such viewer")
        if name == "hang":
            await never.wait()  # until teardown; the client gave up long before
            raise web.HTTPServiceUnavailable
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        pc = RTCPeerConnection(config())
        peers.append(pc)
        player = MediaPlayer(str(clip))
        players.append(player)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        assert player.video is not None and player.audio is not None
        pc.addTrack(player.video)
        pc.addTrack(player.audio)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(
            status=201, text=pc.localDescription.sdp, content_type="application/sdp",
            headers={"Location": f"/whep/{name}/session-{len(peers)}"},
        )

    async def delete(request: web.Request) -> web.Response:
        for pc in peers:
            await pc.close()
        deleted.set()
        return web.Response(status=200)

    app = web.Application()
    app.add_routes([web.post("/whep/{name}", post), web.delete("/whep/{name}/{session}", delete)])
    runner, base = await serve_app(app)
    try:
        yield WhepServer(base, deleted, peers)
    finally:
        never.set()
        for pc in peers:
            await pc.close()
        await runner.cleanup()


async def test_whep_pull(whep_server: WhepServer) -> None:
    source = WhepSource("pulled", f"{whep_server.base}/whep/live", token=TOKEN, options=OPTIONS)
    got = Collector(source)
    await got.wait_for(lambda: len(got.video) >= 4 and len(got.audio) >= 1, "4 frames and an audio chunk")
    assert source.resource == f"{whep_server.base}/whep/live/session-1"
    got.task.cancel()  # the consumer goes away: the source closes and DELETEs its resource
    with pytest.raises(asyncio.CancelledError):
        await got.task
    assert whep_server.deleted.is_set()
    check_video_timing(got.video, OPTIONS.video_fps)
    assert got.audio[0].sample_rate == 16000 and got.audio[0].media_ts < 0.5
    assert source.stats.frames_decoded > 0


@pytest.mark.parametrize(
    ("path", "timeout_s", "message"),
    [
        ("/whep/forbidden", 5.0, r"WHEP http://\S+/whep/forbidden: HTTP 403 Forbidden: no such viewer"),
        ("/whep/hang", 0.3, r"WHEP http://\S+/whep/hang: no answer within 0.3 s"),
    ],
)
async def test_whep_http_errors(whep_server: WhepServer, path: str, timeout_s: float, message: str) -> None:
    source = WhepSource("x", whep_server.base + path, token=TOKEN, timeout_s=timeout_s)
    with pytest.raises(SourceError, match=message):
        await anext(aiter(source.samples()))
    assert source.stats.frames_decoded == 0


async def test_whep_unreachable() -> None:
    runner, base = await serve_app(web.Application())
    await runner.cleanup()  # nothing listens there any more
    source = WhepSource("x", f"{base}/whep/live")
    with pytest.raises(SourceError, match=r"WHEP http://127.0.0.1:\d+/whep/live: ClientConnectorError"):
        await anext(aiter(source.samples()))

