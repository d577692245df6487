"""Shared helpers of the tests, imported by test modules (which never import each other):

- :func:`intervention`, the one builder of :class:`~livesafe.core.events.Intervention`, and
  :data:`RESTRICT`, the overrides that make it a restriction;
- the backend credentials of the gateway tests (:data:`TOKEN`, :data:`TOKENS`);
- webhook secrets (:data:`NEW`, :data:`OLD`), a verifying :class:`Receiver` and :func:`receiver_servers`;
- WebRTC media tracks (:class:`GradientTrack`, :class:`ToneTrack`), :func:`config` and :func:`serve_app`;
- speech references: :func:`decode_audio`, :func:`normalise`, :func:`reference`, :func:`full_text`;
- reading back what the timeline recorded: :func:`recorded_acks`, :func:`records`.
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web
from aiortc import AudioStreamTrack, RTCConfiguration, VideoStreamTrack

from livesafe.core.events import Ack, Intervention, Transcript, make_id
from livesafe.interventions.webhooks import WebhookRejectedError, verify
from livesafe.timeline.entries import Record
from livesafe.timeline.store import TimelineStore

# -- Interventions ------------------------------------------------------------------------------------


def intervention(n: int = 1, stream_id: str = "s1", **overrides: Any) -> Intervention:
    """The ``n``-th decision of a stream (``seq`` ``n`` at media time ``n`` s, id from both).

    By default a warning over violence with its notice, rule, evidence and message filled in;
    ``overrides`` replace any field (``**RESTRICT`` for a restriction).
    """
    fields: dict[str, Any] = {
        "stream_id": stream_id,
        "media_ts": float(n),
        "intervention_id": make_id("iv", stream_id, str(n)),
        "seq": n,
        "action": "warn",
        "tier": "warn",
        "tier_level": 1,
        "category": "violence",
        "score": 0.7,
        "effects": ("notice",),
        "reason": "violence risk 0.70 >= 0.55",
        "policy": "default",
        "policy_hash": "abc123",
        "rule": {"rule": "tier.enter", "enter": 0.55},
        "signal_ids": ("sig_1", "sig_2"),
        "message": "Please keep it civil",
    }
    fields.update(overrides)
    return Intervention(**fields)


#: Overrides of :func:`intervention` for a restriction over violence (age gate and blur), without
#: evidence ids or message: ``intervention(n, stream_id, **RESTRICT)``.
RESTRICT: Mapping[str, Any] = MappingProxyType({
    "action": "restrict",
    "tier": "restrict",
    "tier_level": 2,
    "category": "violence",
    "score": 0.8,
    "effects": ("age_gate", "blur"),
    "reason": "violence risk 0.80 >= 0.75",
    "rule": {"rule": "tier.enter", "enter": 0.75},
    "signal_ids": (),
    "message": "",
})

# -- Backends -----------------------------------------------------------------------------------------

#: A backend's token, and the gateway's token table (token -> backend name).
TOKEN = "t0ken-acme"
TOKENS = {TOKEN: "acme"}

# -- Webhooks -----------------------------------------------------------------------------------------

#: Webhook signing secrets: the current one, and the previous one (still accepted while rotating).
OLD = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdef").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-0123456789abcdef").decode()


@dataclass
class Receiver:
    """A backend's webhook endpoint: verifies every request with its secret, records what it accepted."""

    secret: str
    fail_first: int = 0
    refuse_with: int | None = None
    accepted: list[dict[str, Any]] = field(default_factory=list)
    seen_ids: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    requests: int = 0
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if self.requests <= self.fail_first:
            return web.Response(status=503, text="busy")
        if self.refuse_with is not None:
            return web.Response(status=self.refuse_with, text="no")
        try:
            payload = verify(self.secret, body, request.headers)
        except WebhookRejectedError as exc:
            self.refused.append(str(exc))
            return web.Response(status=401, text=str(exc))
        msg_id = request.headers["webhook-id"]
        if msg_id not in self.seen_ids:  # duplicate deliveries are recognised by webhook-id
            self.seen_ids.append(msg_id)
            self.accepted.append(payload)
        self.got.set()
        return web.Response(status=204)


@asynccontextmanager
async def receiver_servers() -> AsyncIterator[Callable[[Receiver], Awaitable[str]]]:
    """``url = await start(receiver)``: the receiver at ``/hook`` on a free port, until the block ends.

    Test modules wrap it in their ``serve`` fixture.
    """
    runners: list[web.AppRunner] = []

    async def start(receiver: Receiver) -> str:
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


# -- WebRTC -------------------------------------------------------------------------------------------


class GradientTrack(VideoStreamTrack):
    """A moving gradient, 160x120 at 30 fps, paced in real time by aiortc's clock."""

    def __init__(self) -> None:
        super().__init__()
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        img = np.zeros((120, 160, 3), dtype=np.uint8)
        img[..., 0] = (np.arange(160) + self._n * 5) % 256
        img[..., 1] = 128
        self._n += 1
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(AudioStreamTrack):
    """A 440 Hz tone at 48 kHz in 20 ms frames, paced in real time."""

    RATE = 48000
    SAMPLES = 960

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._t0 is None:
            self._t0 = time.time()
        await asyncio.sleep(self._t0 + self._pts / self.RATE - time.time())
        t = (self._pts + np.arange(self.SAMPLES)) / self.RATE
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts = self.RATE, self._pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        self._pts += self.SAMPLES
        return frame


def config() -> RTCConfiguration:
    """A peer connection's configuration for loopback: no ICE servers."""
    return RTCConfiguration(iceServers=[])


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """``app`` on a free port of 127.0.0.1: its runner (to clean up) and base URL."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


# -- Speech -------------------------------------------------------------------------------------------


def decode_audio(path: Path) -> npt.NDArray[np.float32]:
    """A media file's first audio stream as 16 kHz mono float32, decoded and resampled by PyAV."""
    av = pytest.importorskip("av")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    parts: list[npt.NDArray[np.float32]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(parts).astype(np.float32)


def normalise(text: str) -> str:
    """Lower case, letters, digits and single spaces only: transcripts compared as words."""
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def reference(shared_data: Path, clip: str) -> str:
    """The reference transcript of an audio clip of the shared data (``audio/refs.tsv``)."""
    for line in (shared_data / "audio" / "refs.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        path, _channel, _lang, text, *_ = line.split("\t")
        if path == clip:
            return text
    raise LookupError(clip)


def full_text(transcripts: list[Transcript]) -> str:
    """The transcripts' text, joined and normalised."""
    return normalise(" ".join(t.text for t in transcripts))


# -- Timeline -----------------------------------------------------------------------------------------


async def recorded_acks(timeline: TimelineStore, stream_id: str | None = None) -> list[Ack]:
    """Every ack, nack and applied recorded in the audit trails (of one stream, or all), in entry order."""
    if stream_id is not None:
        keys = [timeline.audit_key(stream_id)]
    else:
        keys = [k async for k in timeline.redis.scan_iter(match=f"{timeline.prefix}:s:*:audit")]
    found: list[tuple[tuple[int, int], Ack]] = []
    for key in keys:
        sid = str(key).split("{", 1)[1].split("}", 1)[0]
        for entry in await timeline.audit(sid, limit=100_000):
            if isinstance(entry.event, Ack):
                ms, _, seq = entry.entry_id.partition("-")
                found.append(((int(ms), int(seq or 0)), entry.event))
    return [ack for _, ack in sorted(found, key=lambda x: x[0])]


async def records(timeline: TimelineStore, stream_id: str, session: str | None = None) -> list[Record]:
    """The records of a stream's session (default: its latest), oldest first; [] if none."""
    session = session or await timeline.latest_session(stream_id)
    if session is None:
        return []
    return [e.record for e in await timeline.read_all(stream_id, session)]
