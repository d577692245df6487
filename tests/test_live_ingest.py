"""Live ingest against real peers on 127.0.0.1: PyAV and ffmpeg publishers, a local HLS server.

Publishers written with PyAV run in subprocesses: PyAV holds the GIL while an output container connects
and writes its header, which would freeze a listener in the same process (its timeout callback needs the
GIL). Ports are chosen free at run time; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from livesafe.core.events import AudioChunk, MediaSample, VideoSample
from livesafe.ingest.av_source import AVSource
from livesafe.ingest.ffmpeg import LiveSource, LiveState, ReconnectPolicy, open_source
from livesafe.ingest.source import IngestOptions, SourceError
from livesafe.ingest.srt import ffmpeg_with_srt
from tests.media import make_clip
from tests.waiting import until

FAST = ReconnectPolicy(initial_s=0.1, max_s=0.3, give_up_after_s=8.0)
# Test audio is a tone, not speech: fixed windows instead of voice-activity segmentation.
OPTS = IngestOptions(video_fps=5.0, audio_window_s=1.0, vad=False)

#: A live publisher: h264 + aac (or one of them) at 10 fps, paced in real time, to an FLV URL.
PUBLISHER = """
import sys, time, av, numpy as np
from fractions import Fraction
url, seconds, what = sys.argv[1], float(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 10
while True:
    try:
        out = av.open(url, "w", format="flv")
        if "v" in what:
            vs = out.add_stream("libx264", rate=10, options={"tune": "zerolatency", "preset": "ultrafast"})
            vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        if "a" in what:
            as_ = out.add_stream("aac", rate=44100)
            as_.layout = "stereo"
        out.start_encoding()
        break
    except (ConnectionRefusedError, av.error.ConnectionRefusedError):
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
start = time.monotonic()
for i in range(int(seconds * 10)):
    if "v" in what:
        img = np.zeros((120, 160, 3), np.uint8)
        img[..., 0] = i * 10 % 256
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = i, Fraction(1, 10)
        for p in vs.encode(f):
            out.mux(p)
    if "a" in what:
        t = (np.arange(4410) + i * 4410) / 44100
        pcm = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], 2, axis=0)
        a = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="stereo")
        a.sample_rate, a.pts, a.time_base = 44100, i * 4410, Fraction(1, 44100)
        for p in as_.encode(a):
            out.mux(p)
    delay = start + (i + 1) * 0.1 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
out.close()
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def publish(url: str, seconds: float, what: str = "va") -> list[str]:
    return [sys.executable, "-c", PUBLISHER, url, str(seconds), what]


class States:
    """Records ``on_state`` reports and lets a test wait for one."""

    def __init__(self) -> None:
        self.seen: list[LiveState] = []
        self.details: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, stream_id: str, state: LiveState, detail: str) -> None:
        self.seen.append(state)
        self.details.append(detail)
        self._changed.set()

    async def wait_for(self, state: LiveState, count: int = 1) -> None:
        while self.seen.count(state) < count:
            self._changed.clear()
            await self._changed.wait()


class Consumer:
    """Drains a source in a task; tests wait for conditions on what arrived."""

    def __init__(self, source: LiveSource) -> None:
        self.source = source
        self.samples: list[MediaSample] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for sample in self.source.samples():
                self.samples.append(sample)
                self._changed.set()
        except SourceError as exc:
            self.error = exc
        self._changed.set()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            if self.task.done():
                raise AssertionError(f"source finished first (error: {self.error})")
            self._changed.clear()
            await self._changed.wait()

    def video(self) -> list[VideoSample]:
        return [s for s in self.samples if isinstance(s, VideoSample)]

    def audio(self) -> list[AudioChunk]:
        return [s for s in self.samples if isinstance(s, AudioChunk)]


@asynccontextmanager
async def consuming(source: LiveSource) -> AsyncIterator[Consumer]:
    consumer = Consumer(source)
    try:
        yield consumer
    finally:
        await source.aclose()
        await consumer.task


@pytest.fixture(autouse=True)
def no_leaked_decoders() -> Iterator[None]:
    yield
    assert not [t.name for t in threading.enumerate() if t.name.startswith("decode-")]


def assert_increasing(samples: list[VideoSample]) -> None:
    times = [s.media_ts for s in samples]
    assert times == sorted(times) and len(set(times)) == len(times), times
    assert [s.index for s in samples] == list(range(len(samples)))


# -- RTMP --------------------------------------------------------------------------------------------


async def test_rtmp_listener_receives_a_pushed_stream() -> None:
    url = f"rtmp://127.0.0.1:{free_port()}/live/key"
    states = States()
    src = LiveSource("s", url, OPTS, listen=True, reconnect=FAST, on_state=states)
    async with consuming(src) as c, asyncio.timeout(20):
        with process(publish(url, 4.0)):
            await c.wait(lambda: len(c.video()) >= 10 and len(c.audio()) >= 1)
    assert states.seen[:2] == ["connecting", "live"]
    assert_increasing(c.video())
    assert c.video()[-1].media_ts >= 1.8
    assert all(a.sample_rate == 16000 for a in c.audio())


@pytest.mark.parametrize("what", ["v", "a"])
async def test_rtmp_video_only_and_audio_only(what: str) -> None:
    url = f"rtmp://127.0.0.1:{free_port()}/live/key"
    src = LiveSource("s", url, OPTS, listen=True, reconnect=FAST)
    async with consuming(src) as c, asyncio.timeout(20):
        with process(publish(url, 4.0, what)):
            await c.wait(lambda: len(c.samples) >= (5 if what == "v" else 2))
    kinds = {type(s) for s in c.samples}
    assert kinds == ({VideoSample} if what == "v" else {AudioChunk})


async def test_publisher_dies_and_another_takes_over_media_time_keeps_increasing() -> None:
    url = f"rtmp://127.0.0.1:{free_port()}/live/key"
    states = States()
    src = LiveSource("s", url, OPTS, listen=True, reconnect=FAST, on_state=states)
    async with consuming(src) as c, asyncio.timeout(30):
        with process(publish(url, 30.0)) as first:
            await c.wait(lambda: len(c.video()) >= 5)
            first.kill()  # dies mid-stream, no goodbye
            await states.wait_for("degraded")
        before = len(c.video())
        last_before = c.video()[-1].media_ts
        with process(publish(url, 4.0)):
            await states.wait_for("live", 2)
            await c.wait(lambda: len(c.video()) >= before + 5)
    assert states.seen[:4] == ["connecting", "live", "degraded", "live"]
    assert_increasing(c.video())
    assert c.video()[before].media_ts > last_before
    assert src.live_stats.reconnects == 1 and src.stats.as_dict()["reconnects"] == 1


async def test_rtmp_pull_from_an_ffmpeg_rtmp_server(tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("needs the ffmpeg command as an RTMP server (PyAV cannot pass `listen` to an output)")
    clip = make_clip(tmp_path / "c.mp4", 6.0)
    url = f"rtmp://127.0.0.1:{free_port()}/live/key"
    states = States()
    src = LiveSource("s", url, OPTS, reconnect=FAST, on_state=states)
    server = [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
              "-f", "flv", "-listen", "1", url]
    async with consuming(src) as c, asyncio.timeout(20):
        with process(server):  # connection refused until it listens: the source retries
            await c.wait(lambda: len(c.video()) >= 8)
    assert "live" in states.seen
    assert_increasing(c.video())


async def test_rtsp_listener_receives_an_ffmpeg_publisher(tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("needs the ffmpeg command as an RTSP publisher (PyAV cannot pass protocol options)")
    clip = make_clip(tmp_path / "c.mp4", 4.0)
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    states = States()
    src = LiveSource("s", url, OPTS, listen=True, reconnect=FAST, on_state=states)
    publisher = [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
                 "-f", "rtsp", "-rtsp_transport", "tcp", url]
    async with consuming(src) as c, asyncio.timeout(20):
        await states.wait_for("connecting")
        await asyncio.sleep(0.2)  # the publisher does not retry a refused connection
        with process(publisher):
            await c.wait(lambda: len(c.video()) >= 8 and len(c.audio()) >= 1)
    assert states.seen[:2] == ["connecting", "live"]
    assert_increasing(c.video())


# -- SRT ---------------------------------------------------------------------------------------------


async def test_srt_listener_receives_an_ffmpeg_caller(tmp_path: Path) -> None:
    ffmpeg = ffmpeg_with_srt()
    if ffmpeg is None:
        pytest.skip("the ffmpeg command with libsrt is not installed")
    clip = make_clip(tmp_path / "c.mp4", 4.0)
    port = free_port(socket.SOCK_DGRAM)
    states = States()
    src = LiveSource("s", f"srt://127.0.0.1:{port}", OPTS, listen=True, reconnect=FAST, on_state=states)
    caller = [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
              "-f", "mpegts", f"srt://127.0.0.1:{port}?mode=caller"]
    async with consuming(src) as c, asyncio.timeout(20):
        await asyncio.sleep(0)  # let the listener start; the caller retries its handshake for 3 s anyway
        with process(caller):
            await c.wait(lambda: len(c.video()) >= 8 and len(c.audio()) >= 1)
    assert states.seen[:2] == ["connecting", "live"]
    assert_increasing(c.video())


async def test_srt_without_ffmpeg_says_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    ffmpeg_with_srt.cache_clear()
    try:
        src = LiveSource("s", f"srt://127.0.0.1:{free_port(socket.SOCK_DGRAM)}", listen=True)
        async with consuming(src) as c, asyncio.timeout(10):
            await c.task
    finally:
        ffmpeg_with_srt.cache_clear()
    assert isinstance(c.error, SourceError) and "install" in str(c.error)


# -- HLS ---------------------------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server(directory: Path, port: int = 0) -> Iterator[int]:
    """Serves ``directory`` on ``port`` (0: a free one); once the block ends, connections are refused."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)  # SO_REUSEADDR: port reusable
    thread = threading.Thread(target=server.serve_forever, name="hls-http", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def write_live_hls(directory: Path, seconds: float, stop: threading.Event) -> None:
    """A live HLS playlist of 1 s segments written in real time by PyAV's hls muxer (ENDLIST on close)."""
    out = av.open(str(directory / "live.m3u8"), "w", format="hls",
                  options={"hls_time": "1", "hls_list_size": "6", "hls_flags": "delete_segments"})
    x264 = {"preset": "ultrafast", "x264-params": "keyint=10:scenecut=0"}
    vs = out.add_stream("libx264", rate=10, options=x264)
    vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
    with out:
        for i in range(int(seconds * 10)):
            if stop.wait(0.1):
                break
            img = np.zeros((120, 160, 3), np.uint8)
            img[..., 1] = i * 7 % 256
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)


async def test_hls_live_playlist_is_followed_until_it_ends(tmp_path: Path) -> None:
    stop = threading.Event()
    writer = threading.Thread(target=write_live_hls, args=(tmp_path, 5.0, stop), name="hls-writer")
    writer.start()
    states = States()
    try:
        with http_server(tmp_path) as port:
            # Opened before the first segment exists: 404s until then, which the source retries.
            src = LiveSource("s", f"http://127.0.0.1:{port}/live.m3u8", OPTS, reconnect=FAST,
                             on_state=states, stall_timeout_s=5.0)
            async with consuming(src) as c, asyncio.timeout(20):
                await c.task
    finally:
        stop.set()
        writer.join(10)
    assert c.error is None
    assert states.seen == ["connecting", "live", "ended"]
    assert_increasing(c.video())
    assert c.video()[-1].media_ts >= 3.0  # followed segments that appeared after it opened


async def test_hls_server_goes_away_and_comes_back(tmp_path: Path) -> None:
    """The playlist's HTTP server stops (connections refused) while the writer goes on; a new server on the
    same port serves the same directory: the source goes degraded, then live again, media time increasing."""
    stop = threading.Event()
    writer = threading.Thread(target=write_live_hls, args=(tmp_path, 60.0, stop), name="hls-writer")
    writer.start()
    port = free_port()
    states = States()
    src = LiveSource("s", f"http://127.0.0.1:{port}/live.m3u8", OPTS, reconnect=FAST, on_state=states,
                     stall_timeout_s=3.0)
    try:
        async with consuming(src) as c, asyncio.timeout(20):
            with http_server(tmp_path, port):
                await c.wait(lambda: len(c.video()) >= 5)
            down = time.monotonic()  # the server is gone: connections to the port are refused
            await states.wait_for("degraded")
            degraded_at, attempts = time.monotonic(), src.live_stats.reconnect_attempts
            # down for 2 s, with at least two refused attempts; the writer goes on meanwhile
            await until(lambda: src.live_stats.reconnect_attempts >= attempts + 2
                        and time.monotonic() - down >= 2.0)
            before, last_before = len(c.video()), c.video()[-1].media_ts
            with http_server(tmp_path, port):
                up = time.monotonic()
                await states.wait_for("live", 2)
                await c.wait(lambda: len(c.video()) >= before + 5)
    finally:
        stop.set()
        writer.join(10)
    assert c.error is None
    assert states.seen == ["connecting", "live", "degraded", "live"], states.details
    assert src.live_stats.reconnects == 1 and src.live_stats.reconnect_attempts >= 2
    assert_increasing(c.video())
    # the new session's media time starts after the old one's plus the outage's wall-clock length (which
    # ran from before the degraded report to after the server was back)
    assert c.video()[before].media_ts > last_before + (up - degraded_at)


# -- failures ----------------------------------------------------------------------------------------


async def test_gives_up_after_the_time_limit_and_reports_lost() -> None:
    states = States()
    policy = ReconnectPolicy(initial_s=0.05, max_s=0.2, give_up_after_s=1.0)
    src = LiveSource("s", f"rtmp://127.0.0.1:{free_port()}/live/key", reconnect=policy, on_state=states)
    async with consuming(src) as c, asyncio.timeout(10):
        await c.task
    assert isinstance(c.error, SourceError) and "gave up" in str(c.error)
    assert states.seen == ["connecting", "lost"]
    assert src.live_stats.reconnect_attempts >= 3


@contextmanager
def garbage_server() -> Iterator[int]:
    """Accepts connections and answers each with 64 KB of random bytes."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()
    junk = np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8).tobytes()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.sendall(junk)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, name="garbage", daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        sock.close()


@pytest.mark.parametrize("template", ["rtmp://127.0.0.1:{}/live/key", "rtsp://127.0.0.1:{}/live",
                                      "http://127.0.0.1:{}/live.m3u8"])
async def test_garbage_from_a_live_peer_ends_in_lost_never_hangs(template: str) -> None:
    states = States()
    policy = ReconnectPolicy(initial_s=0.05, max_s=0.2, give_up_after_s=1.5)
    with garbage_server() as port:
        src = LiveSource("s", template.format(port), reconnect=policy, on_state=states,
                         open_timeout_s=1.0, stall_timeout_s=1.0)
        async with consuming(src) as c, asyncio.timeout(15):
            await c.task
    assert isinstance(c.error, SourceError)
    assert states.seen[-1] == "lost" and not c.samples


async def test_listener_stops_promptly_while_waiting_for_a_publisher() -> None:
    states = States()
    src = LiveSource("s", f"rtmp://127.0.0.1:{free_port()}/live/key", listen=True, on_state=states)
    async with consuming(src), asyncio.timeout(10):
        await states.wait_for("connecting")
        await asyncio.sleep(0.3)
    assert states.seen == ["connecting"]


# -- files and dispatch ------------------------------------------------------------------------------


async def test_a_file_through_live_source_ends_cleanly(tmp_path: Path) -> None:
    states = States()
    src = LiveSource("s", str(make_clip(tmp_path / "f.mp4", 2.0)), OPTS, on_state=states)
    async with consuming(src) as c, asyncio.timeout(10):
        await c.task
    assert states.seen == ["connecting", "live", "ended"] and c.error is None
    assert_increasing(c.video())
    assert len(c.video()) == 10


def test_open_source_picks_the_class_by_scheme(tmp_path: Path) -> None:
    path = str(tmp_path / "a.mp4")
    assert type(open_source("s", path)) is AVSource
    assert type(open_source("s", Path(path).as_uri())) is AVSource
    assert type(open_source("s", "https://example.com/a.mp4")) is AVSource
    for url in ("rtmp://h/live/k", "rtsp://h/x", "srt://h:9000", "https://h/live/index.m3u8?t=1"):
        assert type(open_source("s", url, listen=False)) is LiveSource
    with pytest.raises(SourceError, match="'ftp'"):
        open_source("s", "ftp://h/a.mp4")
    with pytest.raises(SourceError, match="listen"):
        open_source("s", path, listen=True)


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    import random

    policy = ReconnectPolicy(initial_s=0.5, max_s=4.0, give_up_after_s=60.0, jitter=0.2)
    rng = random.Random(1)
    delays = [policy.delay(a, rng) for a in range(8)]
    for attempt, d in enumerate(delays):
        base = min(4.0, 0.5 * 2**attempt)
        assert 0.8 * base <= d <= 1.2 * base
    assert ReconnectPolicy(jitter=0.0).delay(3) == 4.0
