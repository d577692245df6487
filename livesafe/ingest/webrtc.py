"""WebRTC ingest: samples from the remote tracks of a live peer connection.

A WebRTC peer cannot be paused, so unlike a file there is no back-pressure: frames arrive on the event
loop (aiortc decodes in its own threads and hands over decoded PyAV frames through ``track.recv()``), are
turned into samples there by one :class:`~livesafe.ingest.av_source.FrameSampler` per source, and go into
a :class:`LiveChannel` that always applies the live policy (newest video wins, audio bounded, every drop
counted) whatever ``options.pacing`` says.

Media time is seconds since the first frame received on the connection. Within a track it comes from the
frame's RTP-derived ``pts * time_base`` (aiortc: 90 kHz video, 48 kHz audio), so network jitter does not
move it; each track's origin is placed by the arrival time of its first frame relative to the
connection's first frame, which keeps audio and video consistent to within their decode latency (tens of
milliseconds; RTCP sender reports would do better, aiortc does not expose them).
``options.keyframes_only`` does not apply: aiortc's decoders decode every frame.

A source ends when every track has ended (the peer went away: aiortc then closes the connection and its
receivers stop), when the connection closes or fails, when no frame has arrived for ``idle_timeout_s``
(a peer that vanished without closing; ICE consent would only notice after about 30 s), or on
:meth:`WebRTCSource.aclose`. Buffered samples are still delivered; an idle timeout ends the iteration
with :class:`~livesafe.ingest.source.SourceError`. Signalling lives beside this module: the WHIP endpoint
(publishers push to livesafe) in :mod:`livesafe.ingest.whip`, the WHEP client (livesafe pulls) in
:mod:`livesafe.ingest.whep`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import av
from aiortc import (
    InvalidAccessError,
    InvalidStateError,
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
)
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError

from livesafe.core.events import MediaSample
from livesafe.ingest.av_source import FrameSampler
from livesafe.ingest.source import ChannelClosedError, IngestOptions, IngestStats, SampleChannel, SourceError

log = logging.getLogger(__name__)

#: Errors aiortc raises for a session description it cannot use.
SDP_ERRORS: tuple[type[Exception], ...] = (ValueError, InvalidAccessError, InvalidStateError, OperationError)


def default_configuration() -> RTCConfiguration:
    """No STUN/TURN servers: aiortc's default would query a public STUN server, which a server with a
    reachable address does not need and which stalls ICE gathering where there is no internet."""
    return RTCConfiguration(iceServers=[])


class LiveChannel(SampleChannel):
    """A :class:`SampleChannel` fed from the event loop: :meth:`put_nowait` never waits.

    It always uses the ``realtime`` policy with the options' live limits (``video_slots``, audio water
    marks, ``queue_size`` as the absolute bound), in which :meth:`SampleChannel.put` drops instead of
    waiting, so calling it on the loop thread is safe (its lock is only held for a few list operations).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, options: IngestOptions, stats: IngestStats) -> None:
        super().__init__(
            loop, options.queue_size, "realtime", stats, video_slots=options.video_slots,
            audio_high_s=options.audio_high_s, audio_low_s=options.audio_low_s,
        )

    def put_nowait(self, item: MediaSample) -> bool:
        """Queue ``item`` (dropping the oldest video, then audio, when full); False once the consumer left."""
        try:
            self.put(item)
        except ChannelClosedError:
            return False
        return True


class WebRTCSource:
    """A :class:`~livesafe.ingest.source.MediaSource` for the remote tracks of one live RTCPeerConnection.

    Create it, on the event loop, *before* applying the remote description (it listens for the
    connection's ``track`` events; tracks already present are picked up too). It owns the connection and
    closes it when it ends. At most one audio and one video track are read; more are ignored with a
    warning. One reader task per track and one supervisor task; :meth:`aclose` stops all of them.
    """

    def __init__(
        self,
        stream_id: str,
        pc: RTCPeerConnection,
        options: IngestOptions | None = None,
        *,
        stats: IngestStats | None = None,
        idle_timeout_s: float | None = 20.0,
    ) -> None:
        self.stream_id = stream_id
        self.pc = pc
        self.options = options or IngestOptions()
        self.stats = stats if stats is not None else IngestStats()
        self.idle_timeout_s = idle_timeout_s
        #: Why the source ended, if it failed (set once it has ended).
        self.error: SourceError | None = None
        self._loop = asyncio.get_running_loop()
        self._channel = LiveChannel(self._loop, self.options, self.stats)
        self._sampler = FrameSampler(stream_id, self.options, self.stats)  # only ever used on the loop
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._epoch: float | None = None
        self._last_frame = self._loop.time()
        self._closing = False
        self._changed = asyncio.Event()
        self._iterated = False
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        for receiver in pc.getReceivers():
            if receiver.track is not None:
                self._on_track(receiver.track)
        self._supervisor = self._loop.create_task(self._supervise(), name=f"webrtc-{stream_id}")

    def set_video_fps(self, fps: float) -> None:
        """Change the video sampling rate from now on (adaptive sampling)."""
        if fps <= 0:
            raise ValueError(f"video fps must be > 0, got {fps}")
        self._sampler.video_fps = fps

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of track being read (``audio``, ``video``)."""
        return frozenset(self._readers)

    @property
    def ended(self) -> bool:
        """Media has stopped (buffered samples may still be waiting for the consumer)."""
        return self._supervisor.done()

    def add_end_callback(self, callback: Callable[[WebRTCSource], None]) -> None:
        """Call ``callback(self)`` on the loop once media has stopped, for whatever reason."""
        self._supervisor.add_done_callback(lambda _task: callback(self))

    async def wait_ended(self) -> None:
        """Wait until media has stopped; does not stop it."""
        await asyncio.wait([self._supervisor])

    async def samples(self) -> AsyncIterator[MediaSample]:
        if self._iterated:
            raise RuntimeError("WebRTCSource.samples() can only be iterated once")
        self._iterated = True
        try:
            while (item := await self._channel.get()) is not None:
                yield item
        finally:
            self._channel.close()
            await self.aclose()

    async def aclose(self) -> None:
        """Stop reading, close the connection and wait for every task; the consumer still gets the
        samples already buffered, then the end. Idempotent; safe to call from any task."""
        self._closing = True
        self._changed.set()
        # wait() rather than await: our own cancellation propagates, the supervisor is not cancelled
        await asyncio.wait([self._supervisor])

    # -- event loop callbacks -------------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind not in ("audio", "video"):
            return
        if track.kind in self._readers:
            log.warning("%s: ignoring extra %s track %s", self.stream_id, track.kind, track.id)
            return
        if self._closing:
            return
        self._readers[track.kind] = self._loop.create_task(
            self._read(track), name=f"webrtc-{self.stream_id}-{track.kind}"
        )
        self._changed.set()

    def _on_state(self) -> None:
        if self.pc.connectionState in ("closed", "failed"):
            log.info("%s: peer connection %s", self.stream_id, self.pc.connectionState)
            self._closing = True
            self._changed.set()

    # -- tasks ----------------------------------------------------------------------------------------
    async def _read(self, track: MediaStreamTrack) -> None:
        """Frames of one track into the sampler; ends when the track does."""
        origin: float | None = None
        first_pts = 0
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.VideoFrame | av.AudioFrame):  # a packet: not a decoded track
                    raise SourceError(f"{track.kind} track gives {type(frame).__name__}, not decoded frames")
                now = self._loop.time()
                self._last_frame = now
                if self._epoch is None:
                    self._epoch = now
                pts, time_base = frame.pts, frame.time_base
                if pts is None or time_base is None:  # not from aiortc's decoders: arrival time
                    media_ts = now - self._epoch
                else:
                    if origin is None:
                        origin, first_pts = now - self._epoch, pts
                    media_ts = max(0.0, origin + float((pts - first_pts) * time_base))
                for sample in self._sampler.frame(frame, media_ts):
                    self._channel.put_nowait(sample)
        except MediaStreamError:
            log.info("%s: %s track ended", self.stream_id, track.kind)
        finally:
            self._changed.set()

    async def _supervise(self) -> None:
        try:
            error = await self._watch()
        except asyncio.CancelledError:  # the loop is going away: no time for a graceful end
            for task in self._readers.values():
                task.cancel()
            self._channel.finish(None)
            raise
        await self._shutdown(error)

    async def _watch(self) -> SourceError | None:
        while not self._closing:
            readers = list(self._readers.values())
            for task in readers:
                if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                    return SourceError(f"WebRTC {self.stream_id}: {type(exc).__name__}: {exc}")
            if readers and all(task.done() for task in readers):
                return None
            timeout = None
            if self.idle_timeout_s is not None:
                timeout = self._last_frame + self.idle_timeout_s - self._loop.time()
                if timeout <= 0:
                    return SourceError(f"WebRTC {self.stream_id}: no media for {self.idle_timeout_s:g} s")
            self._changed.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass
        return None

    async def _shutdown(self, error: SourceError | None) -> None:
        self._closing = True
        self.error = error
        try:
            for task in self._readers.values():
                task.cancel()
            await asyncio.gather(*self._readers.values(), return_exceptions=True)
            for sample in self._sampler.flush():
                self._channel.put_nowait(sample)
            await self.pc.close()
        finally:
            self._channel.finish(error)
        log.info("%s: WebRTC source ended (%s)", self.stream_id, error or "ok")
