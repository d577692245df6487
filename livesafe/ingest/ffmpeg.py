"""Live sources through FFmpeg (RTMP, RTSP, HLS, SRT), with stall detection and reconnects.

:class:`LiveSource` is an :class:`~livesafe.ingest.av_source.AVSource` whose decoder thread runs
*sessions*: open (connect, or listen for a publisher), decode until the stream stops, then decide. A clean
end (a file, an HLS playlist with ``#EXT-X-ENDLIST``) ends the source; anything else on a live URL (the
publisher went away, no packet for ``stall_timeout_s``, an error) is an outage: the source reports
``degraded`` and opens a new session after an exponential, jittered backoff, until the outage has lasted
``give_up_after_s``; then it reports ``lost`` and the channel ends with :class:`SourceError`.

Media time never goes backwards: a new session's timestamps are shifted to start after the last media
time seen, plus the wall-clock length of the outage, so risk that decays over media time also decays
while the stream was away. A large backward jump inside a session (a publisher resetting its clock) is
absorbed the same way.

PyAV's open/read timeouts interrupt FFmpeg's network I/O (including waiting for a publisher in listen
mode), so a stalled stream raises instead of hanging; stopping a source that is waiting for a publisher
connects to its own port once to wake FFmpeg up. SRT goes through the system ``ffmpeg``
(:mod:`livesafe.ingest.srt`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal

import av

from livesafe.core.events import MediaSample, VideoSample
from livesafe.ingest.av_source import AVSource
from livesafe.ingest.source import IngestOptions, IngestStats, MediaSource, SourceError
from livesafe.ingest.srt import SrtBridge, StallError

log = logging.getLogger(__name__)

LiveState = Literal["connecting", "live", "degraded", "lost", "ended"]
#: ``on_state(stream_id, state, detail)``, always called on the event loop.
StateCallback = Callable[[str, LiveState, str], None]

LIVE_SCHEMES = ("rtmp", "rtmps", "rtsp", "rtsps", "srt")
#: A backward jump larger than this inside a session is a clock reset, not B-frame/interleave jitter.
MAX_BACKWARD_S = 1.0


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Backoff between reconnect attempts: ``initial_s``, doubling up to ``max_s``, each delay randomised
    by ±``jitter`` (so that many streams cut by one network failure do not reconnect in lockstep); the
    source gives up once an outage (or the wait for the first connection) has lasted ``give_up_after_s``."""

    initial_s: float = 0.5
    max_s: float = 10.0
    give_up_after_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt))
        return max(0.0, base * (1.0 + (rng or random).uniform(-self.jitter, self.jitter)))


@dataclass(slots=True)
class LiveStats(IngestStats):
    """:class:`IngestStats` plus what only live sources have."""

    #: Sessions that went live again after an outage.
    reconnects: int = 0
    #: Connection attempts after the first (successful or not).
    reconnect_attempts: int = 0
    #: Outages detected as "no packet for stall_timeout_s".
    stalls: int = 0
    #: Drift behind real time in the current session: wall seconds since its first frame minus media
    #: seconds decoded since then (>= 0). Not the distance to the live edge, which FFmpeg does not expose.
    lag_s: float = 0.0



def is_live_url(url: str) -> bool:
    """Whether ``url`` is a live stream (rtmp, rtsp, srt, HLS) rather than a file."""
    scheme = _scheme(url)
    return scheme in LIVE_SCHEMES or (scheme in ("http", "https") and _is_hls(url))


def _scheme(url: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    return "" if len(scheme) <= 1 else scheme  # "C:\\clip.mp4" is a path


def _is_hls(url: str) -> bool:
    return urllib.parse.urlsplit(url).path.lower().endswith(".m3u8")


class _Outage(Exception):
    """A session ended without a clean end of stream."""

    def __init__(self, detail: str, stall: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.stall = detail, stall


class LiveSource(AVSource):
    """A live URL (or a file) with stall detection, reconnects and state reports; see the module doc."""

    def __init__(
        self, stream_id: str, url: str, options: IngestOptions | None = None, *, listen: bool = False,
        reconnect: ReconnectPolicy | None = None, on_state: StateCallback | None = None,
        open_timeout_s: float = 10.0, stall_timeout_s: float = 10.0, probe_s: float = 1.0,
    ) -> None:
        super().__init__(stream_id, url, options)
        #: The same object as ``stats`` (typed as the protocol's IngestStats), with the live counters.
        self.live_stats = LiveStats()
        self.stats = self.live_stats
        self.scheme = _scheme(url)
        self.live = self.scheme in LIVE_SCHEMES or (self.scheme in ("http", "https") and _is_hls(url))
        if listen and self.scheme not in ("rtmp", "rtsp", "srt"):
            raise SourceError(f"{url}: listen mode needs an rtmp://, rtsp:// or srt:// URL")
        self.listen = listen
        self.reconnect = reconnect or ReconnectPolicy()
        self.on_state = on_state
        self.open_timeout_s = open_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.probe_s = probe_s
        self.state: LiveState | None = None
        self._offset = 0.0
        self._media_end = 0.0
        self._last_ts = 0.0
        self._wall_end: float | None = None
        self._index = 0
        self._bridge: SrtBridge | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def samples(self) -> AsyncIterator[MediaSample]:
        self._loop = asyncio.get_running_loop()
        async for sample in super().samples():
            yield sample

    async def aclose(self) -> None:
        """Stop; a listener blocked waiting for a publisher is woken by connecting to it (bounded)."""
        self._stop.set()
        thread = self._thread
        if self.listen and self.scheme != "srt" and thread is not None:
            deadline = time.monotonic() + 5.0
            while thread.is_alive() and time.monotonic() < deadline:
                await asyncio.to_thread(self._poke)
                await asyncio.to_thread(thread.join, 0.1)
        await super().aclose()

    # -- state reports ---------------------------------------------------------------------------------
    def _report(self, state: LiveState, detail: str = "") -> None:
        if state == self.state:
            return
        self.state = state
        log.info("%s: %s %s", self.stream_id, state, detail)
        callback, loop = self.on_state, self._loop
        if callback is None or loop is None:
            return
        try:
            loop.call_soon_threadsafe(callback, self.stream_id, state, detail)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    # -- decoder thread: sessions and reconnects -------------------------------------------------------
    def _decode(self) -> Generator[MediaSample, None, None]:
        policy, rng = self.reconnect, random.Random()
        outage_since, attempt = time.monotonic(), 0
        self._report("connecting", self.url)
        while not self._stop.is_set():
            went_live = False
            try:
                went_live = yield from self._session(outage_since)
                if self._stop.is_set():
                    return
                if not self.live or self._ended():
                    self._report("ended", "end of stream")
                    return
                raise _Outage("end of stream from a live source")
            except _Outage as outage:
                if self._stop.is_set():
                    return
                if not self.live:
                    raise SourceError(f"{self.url}: {outage.detail}") from outage
                detail = outage.detail
                self.live_stats.stalls += outage.stall
            now = time.monotonic()
            if went_live:
                outage_since, attempt = now, 0
            if self.state == "live" or went_live:
                self._report("degraded", detail)
            waited = now - outage_since
            if waited >= policy.give_up_after_s:
                self._report("lost", detail)
                raise SourceError(f"{self.url}: lost ({detail}); gave up after {waited:.1f} s")
            # A listener re-listens at once after a publisher left; backoff is for failing attempts.
            pause = 0.0 if self.listen and went_live else policy.delay(attempt, rng)
            self._stop.wait(min(pause, policy.give_up_after_s - waited))
            attempt += 1
            self.live_stats.reconnect_attempts += 1

    def _session(self, outage_since: float) -> Generator[MediaSample, None, bool]:
        """One connection: yields its samples; returns whether it went live; raises _Outage."""
        container = self._open_live(outage_since)
        went_live = False
        sampler = self._new_sampler()
        try:
            streams = self._streams(container)
            if not streams:
                raise _Outage("no audio or video stream")
            origin: float | None = None
            wall0 = time.monotonic()
            outage: _Outage | None = None
            try:
                def media_time(t: float) -> float | None:
                    return None if origin is None else self._offset + max(0.0, t - origin)

                for frame, t in self._decoded(container, streams, sampler, media_time):
                    if origin is None:
                        origin, wall0 = t, time.monotonic()
                        if self._wall_end is not None:
                            self._offset = self._media_end + max(0.001, wall0 - self._wall_end)
                    if not went_live:
                        went_live = True
                        self.live_stats.reconnects += int(self._wall_end is not None)
                        self._report("live", self.url)
                    ts = self._offset + max(0.0, t - origin)
                    if ts < self._last_ts - MAX_BACKWARD_S:  # the publisher reset its clock
                        self._offset += self._last_ts - ts
                        ts = self._last_ts
                    elif not self.live and self.options.pacing == "realtime":
                        self._pace(wall0, ts)
                    self._advance(frame, ts, wall0)
                    yield from self._renumber(sampler.frame(frame, ts))
                if self._stop.is_set():
                    return went_live
            except av.error.ExitError as exc:
                outage = _Outage(f"no data for {self.stall_timeout_s:g} s", stall=True)
                outage.__cause__ = exc
            except StallError as exc:
                outage = _Outage(str(exc), stall=True)
            except (av.error.FFmpegError, OSError) as exc:
                outage = _Outage(f"{type(exc).__name__}: {exc}")
            if went_live:  # what the sampler holds belongs to this session's clock
                self._wall_end = time.monotonic()
                yield from self._renumber(sampler.flush())
            if outage is not None:
                raise outage
            return went_live
        finally:
            self._close_container(container)

    def _advance(self, frame: av.VideoFrame | av.AudioFrame, ts: float, wall0: float) -> None:
        self._last_ts = max(self._last_ts, ts)
        end = ts
        if isinstance(frame, av.AudioFrame) and frame.sample_rate:
            end += frame.samples / frame.sample_rate
        self._media_end = max(self._media_end, end)
        if self.live:
            self.live_stats.lag_s = max(0.0, (time.monotonic() - wall0) - (ts - self._offset))

    def _renumber(self, samples: Any) -> Generator[MediaSample, None, None]:
        """Video sample indexes continue across sessions (each session has its own FrameSampler)."""
        for sample in samples:
            if isinstance(sample, VideoSample):
                if sample.index != self._index:
                    sample = dataclasses.replace(sample, index=self._index)
                self._index += 1
            yield sample

    # -- opening -----------------------------------------------------------------------------------------
    def _open_live(self, outage_since: float) -> Any:
        remaining = max(0.5, self.reconnect.give_up_after_s - (time.monotonic() - outage_since))
        open_s = remaining if self.listen else self.open_timeout_s
        probe = {"analyzeduration": str(int(self.probe_s * 1e6))} if self.live else {}
        try:
            if self.scheme == "srt":
                return self._open_srt(open_s, probe)
            options: dict[str, str] = dict(probe)
            fmt: str | None = None
            if self.scheme.startswith("rtmp"):
                fmt = "flv"
                if self.listen:
                    options["listen"] = "1"
            elif self.scheme.startswith("rtsp"):
                if self.listen:  # FFmpeg's default listen_timeout (-1) fails with ERANGE: give one
                    options.update(rtsp_flags="listen", listen_timeout=str(math.ceil(open_s)))
                else:
                    options["rtsp_transport"] = "tcp"
            elif _is_hls(self.url):
                options["live_start_index"] = "-3"
            timeout = (open_s, self.stall_timeout_s) if self.live else (self.open_timeout_s, 30.0)
            return av.open(self.url, mode="r", format=fmt, options=options, timeout=timeout)
        except av.error.ExitError as exc:
            raise _Outage(f"not connected within {open_s:.3g} s") from exc
        except (av.error.FFmpegError, OSError, StallError) as exc:
            if not self.live:
                raise SourceError(f"cannot open {self.url}: {exc}") from exc
            raise _Outage(f"cannot open: {type(exc).__name__}: {exc}") from exc

    def _open_srt(self, open_s: float, probe: dict[str, str]) -> Any:
        url = self.url
        if self.listen and "mode=" not in url:
            url += ("&" if "?" in url else "?") + "mode=listener"
        bridge = SrtBridge(url, self._stop)
        bridge.wait_s = open_s
        try:
            container = av.open(bridge, mode="r", format="mpegts", options=probe)
        except BaseException as exc:
            said = bridge.error_text()
            bridge.close()
            if said and isinstance(exc, av.error.FFmpegError | OSError):
                raise _Outage(f"cannot open: {said}") from exc
            raise
        bridge.wait_s = self.stall_timeout_s
        self._bridge = bridge
        return container

    def _close_container(self, container: Any) -> None:
        container.close()
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    def _poke(self) -> None:
        """Wake an FFmpeg listener blocked in accept() by connecting to it once (then it fails and sees
        the stop flag); SRT listeners are ffmpeg processes, stopped by the bridge instead."""
        parts = urllib.parse.urlsplit(self.url)
        if self.scheme == "srt" or parts.port is None:
            return
        host = parts.hostname or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        try:
            with socket.create_connection((host, parts.port), timeout=0.5):
                pass
        except OSError:
            pass

    def _ended(self) -> bool:
        """A clean end of stream is the end only where the source says so: an HLS playlist with
        ``#EXT-X-ENDLIST`` (FFmpeg returns the same EOF when a live playlist's server goes away)."""
        if not _is_hls(self.url):
            return False
        try:
            with urllib.request.urlopen(self.url, timeout=5.0) as resp:
                text = resp.read(1 << 20).decode(errors="replace")
            if "#EXT-X-STREAM-INF" in text:  # a master playlist: look at its first variant
                variant = next(line for line in text.splitlines() if line and not line.startswith("#"))
                with urllib.request.urlopen(urllib.parse.urljoin(self.url, variant), timeout=5.0) as resp:
                    text = resp.read(1 << 20).decode(errors="replace")
        except (OSError, ValueError, StopIteration):
            return False
        return "#EXT-X-ENDLIST" in text


def open_source(stream_id: str, url: str, options: IngestOptions | None = None, **live: Any) -> MediaSource:
    """The source for ``url``: files (paths, ``file://``) and plain HTTP(S) media are read by
    :class:`AVSource`; ``rtmp(s)``, ``rtsp(s)``, ``srt`` and HTTP(S) ``.m3u8`` by :class:`LiveSource`,
    which takes the keyword arguments (``listen``, ``reconnect``, ``on_state``, timeouts)."""
    scheme = _scheme(url)
    if is_live_url(url):
        return LiveSource(stream_id, url, options, **live)
    if live.get("listen"):
        raise SourceError(f"{url}: listen mode needs an rtmp://, rtsp:// or srt:// URL")
    if scheme == "file":
        return AVSource(stream_id, urllib.request.url2pathname(urllib.parse.urlsplit(url).path), options)
    if scheme in ("", "http", "https"):
        return AVSource(stream_id, url, options)
    raise SourceError(
        f"{url}: unsupported source scheme {scheme!r} (use a file, http(s), rtmp(s), rtsp(s) or srt URL)"
    )
