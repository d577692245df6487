"""One stream, end to end: source -> analyzers -> pure core -> sink.

The worker processes samples in the order the source yields them, running every model off the event loop
(``asyncio.to_thread``), and feeds each signal to the :class:`~livesafe.core.monitor.Monitor` in that order.
The sink receives every transcript, signal, risk update and intervention, in the order they happened, so a
recording of the sink is a complete, replayable timeline.


Which samples go to which vision analyzer, and the adaptive rate, are decided by the pure
:mod:`livesafe.core.sampling`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from livesafe.analyzers.batching import analyze_text, transcribe
from livesafe.analyzers.registry import Analyzers
from livesafe.core.events import (
    AudioChunk,
    Event,
    Intervention,
    InterventionLifted,
    ReviewVerdict,
    Signal,
    Tick,
    Transcript,
    VideoSample,
)
from livesafe.core.monitor import Decision, Monitor
from livesafe.core.risk import thumbnail_ref
from livesafe.core.sampling import AdaptiveRate, VideoFeeds
from livesafe.ingest.source import KeyframeControl, MediaSource, SourceError

log = logging.getLogger(__name__)

Sink = Callable[[Event], Awaitable[None]]
#: Receives a frame whose signals reached their floor, with the reference the signals give it (``frame:42``).
EvidenceSink = Callable[[str, VideoSample], Awaitable[None]]
#: Media seconds past a deadline, with no input, before the stall timer ticks the core itself.
STALL_SLACK_S = 0.5


def analyzer_models(analyzers: Analyzers) -> dict[str, str]:
    """Each loaded analyzer's name and the model it runs (its ``model_id``, ``model`` or ``version``
    attribute, or its class), as a session's start records them."""
    out: dict[str, str] = {}
    for analyzer in [*analyzers.vision, analyzers.speech, *analyzers.text]:
        if analyzer is None:
            continue
        model = next((getattr(analyzer, attr) for attr in ("model_id", "model", "version")
                      if isinstance(getattr(analyzer, attr, None), str)), type(analyzer).__name__)
        out[analyzer.name] = str(model)[:200]
    return out


@dataclass(slots=True)
class StreamSummary:
    stream_id: str
    source: str
    media_seconds: float = 0.0
    wall_seconds: float = 0.0
    transcripts: int = 0
    signals: Counter[str] = field(default_factory=Counter)
    max_risk: dict[str, float] = field(default_factory=dict)
    interventions: list[Intervention] = field(default_factory=list)
    final_tier: str = "none"
    ingest: dict[str, float] = field(default_factory=dict)
    #: Video samples each vision analyzer was given (its feed), by analyzer name.
    vision_samples: Counter[str] = field(default_factory=Counter)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        tiers = [iv for iv in self.interventions if iv.action != "escalate"]
        return {
            "type": "summary",
            "stream_id": self.stream_id,
            "source": self.source,
            "media_seconds": round(self.media_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "speed": round(self.media_seconds / self.wall_seconds, 2) if self.wall_seconds else None,
            "transcripts": self.transcripts,
            "signals": dict(sorted(self.signals.items())),
            "max_risk": {k: round(v, 4) for k, v in sorted(self.max_risk.items())},
            "interventions": dict(Counter(iv.action for iv in self.interventions)),
            "highest_tier": max(tiers, key=lambda iv: iv.tier_level).tier if tiers else "none",
            "final_tier": self.final_tier,
            "ingest": self.ingest,
            "vision_samples": dict(sorted(self.vision_samples.items())),
            "error": self.error,
        }


def unheard(transcript: Transcript, heard_until: float) -> Transcript | None:
    """The part of ``transcript`` after ``heard_until`` (audio that overlapped the previous chunk).

    Words whose middle lies before ``heard_until`` were transcribed with the previous chunk and are
    dropped; the text is rebuilt from the words kept. None if nothing new is left.
    """
    if transcript.media_ts >= heard_until:
        return transcript
    if not transcript.words:
        return None if transcript.end_ts <= heard_until else transcript
    words = tuple(w for w in transcript.words if (w.start + w.end) / 2 >= heard_until)
    if not words:
        return None
    text = " ".join(w.word.strip() for w in words)
    return dataclasses.replace(transcript, media_ts=words[0].start, words=words, text=text)


#: Audio chunks (utterances) waiting for speech recognition on a live stream before the oldest is dropped.
AUDIO_LANE = 8

T = TypeVar("T")


class _Lane(Generic[T]):
    """A bounded single-consumer lane on the event loop: a full lane drops its oldest item."""

    def __init__(self, size: int) -> None:
        self._items: deque[T] = deque()
        self._size = size
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, item: T) -> list[T]:
        """Add ``item``; returns what was dropped to make room."""
        dropped = []
        while len(self._items) >= self._size:
            dropped.append(self._items.popleft())
        self._items.append(item)
        self._ready.set()
        return dropped

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> T | None:
        """The oldest item, or None once closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


#: Media seconds of samples the video lane holds when an analyzer has a dense feed (motion: 4 samples), so
#: one slow model call does not make the dense feed lose frames; without one the lane holds 1 sample.
DENSE_LANE_S = 0.5
class StreamWorker:
    """Monitors one stream until its source ends, fails, or the worker is cancelled."""

    def __init__(
        self, source: MediaSource, analyzers: Analyzers, monitor: Monitor, sink: Sink, *, url: str = "",
        adaptive: bool = False, lanes: bool = False, session: str = "", evidence: EvidenceSink | None = None,
    ) -> None:
        """``adaptive``: vary the video rate with risk and speech; ``lanes``: analyse video and audio
        concurrently and tick at the core's deadlines when the source stalls (both for live streams; off for
        files, whose runs then repeat exactly). ``session``: this broadcast of the stream (its interventions'
        ids depend on it); ``evidence``: given the frames whose signals reached their category's floor."""
        self.source = source
        self.stream_id = source.stream_id
        self.analyzers = analyzers
        self.monitor = monitor
        self.sink = sink
        self.session = session
        self.evidence = evidence
        self.summary = StreamSummary(self.stream_id, url)
        self.lanes = lanes
        #: End of the audio already transcribed: overlapping audio is not transcribed twice.
        self._heard_until = 0.0
        #: Live streams: the end times of the audio chunks queued for speech recognition or being transcribed,
        #: oldest first (see :attr:`speech_lag_s`).
        self._speech_pending: deque[float] = deque()
        sampling = monitor.policy.sampling
        self._rate = AdaptiveRate(sampling) if adaptive and sampling.adaptive else None
        self._fps = sampling.video_fps
        self.feeds = VideoFeeds(analyzers.vision, sampling.video_fps)
        #: One door out of the core: each input and what it caused go to the sink together, in the order
        #: the core saw them, even with video and audio analysed concurrently (or a reviewer's verdict).
        self._core = asyncio.Lock()
        #: Wall-clock time and media time of the latest input (the stall timer's estimate of media time).
        self._last_input = (time.monotonic(), 0.0)
        monitor.open(self.stream_id, session)

    async def run(self) -> StreamSummary:
        """Run to the end of the source. A source error ends this stream (recorded in the summary) only."""
        started = time.monotonic()
        try:
            self._open_feeds()
            if self.lanes:
                await self._run_lanes()
            else:
                async for sample in self.source.samples():
                    if isinstance(sample, VideoSample):
                        await self._video(sample)
                    elif isinstance(sample, AudioChunk):
                        await self._audio(sample)
        except SourceError as exc:
            self.summary.error = str(exc)
            log.error("stream %s stopped: %s", self.stream_id, exc)
        finally:
            await self.source.aclose()
            stateful: list[object] = [*self.analyzers.vision, self.analyzers.speech, *self.analyzers.text]
            for analyzer in stateful:  # stateful analyzers keep per-stream buffers and languages
                forget = getattr(analyzer, "forget", None)
                if forget is not None:
                    forget(self.stream_id)
            self.summary.wall_seconds = time.monotonic() - started
            self.summary.ingest = self.source.stats.as_dict()
            self.summary.final_tier = self.monitor.tier(self.stream_id)
        return self.summary

    @property
    def speech_lag_s(self) -> float:
        """How long the oldest audio still waiting for speech recognition has waited, in media seconds
        ingested since it ended (0 when nothing waits): how far speech analysis is behind ingest."""
        if not self._speech_pending:
            return 0.0
        return max(0.0, self.summary.media_seconds - self._speech_pending[0])

    def _open_feeds(self) -> None:
        """An analyzer declaring its own rate: sample at the highest rate asked for, decoding every frame."""
        if not self.feeds.dense:
            return
        needs = {a.name: self.feeds.fps(i) for i, a in enumerate(self.feeds.analyzers)}
        log.info("stream %s: video sampled at %.3g fps for %s", self.stream_id, self.feeds.source_fps, needs)
        self.source.set_video_fps(self.feeds.source_fps)
        if isinstance(self.source, KeyframeControl):
            self.source.set_keyframes_only(False)

    async def _run_lanes(self) -> None:
        """Live streams: one task group per stream, so slow speech recognition never holds up vision.

        A reader task takes samples from the source; video goes to a one-slot lane where the newest
        sample wins, audio to a bounded lane that drops its oldest chunk when full; every drop is
        counted in the source's stats. The first lane to fail cancels the others.
        """
        dense = self.feeds.dense_fps
        video = _Lane[VideoSample](max(1, math.ceil(dense * DENSE_LANE_S)))
        audio = _Lane[AudioChunk](AUDIO_LANE)
        stats = self.source.stats

        async def read() -> None:
            try:
                async for sample in self.source.samples():
                    if isinstance(sample, VideoSample):
                        stats.video_dropped += len(video.put(sample))
                    elif isinstance(sample, AudioChunk):
                        dropped = audio.put(sample)
                        stats.audio_dropped += len(dropped)
                        stats.audio_dropped_s += sum(c.duration for c in dropped)
                        for chunk in dropped:
                            self._speech_pending.remove(chunk.end_ts)
                        self._speech_pending.append(sample.end_ts)
            finally:
                video.close()
                audio.close()

        async def drain_video() -> None:
            while (sample := await video.get()) is not None:
                await self._video(sample)

        async def drain_audio() -> None:
            while (chunk := await audio.get()) is not None:
                try:
                    await self._audio(chunk)
                finally:
                    self._speech_pending.remove(chunk.end_ts)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(read(), name=f"{self.stream_id}-read")
                drains = [group.create_task(drain_video(), name=f"{self.stream_id}-video"),
                          group.create_task(drain_audio(), name=f"{self.stream_id}-audio")]
                timer = group.create_task(self._deadlines(), name=f"{self.stream_id}-deadlines")
                await asyncio.wait(drains)  # the media is done: the timer alone must not keep the group
                timer.cancel()
        except* SourceError as errors:
            raise errors.exceptions[0] from None  # the stream's own failure, as in sequential mode

    async def _deadlines(self) -> None:
        """Live streams: tick at the core's next deadline (a restriction expiring, risk low enough to step
        down) when no sample reaches it first, e.g. while the source is stalled. Media time is estimated from
        the wall clock since the latest input; the tick is recorded like any other, so replay stays exact."""
        while True:
            deadline = self.monitor.next_deadline(self.stream_id)
            wall, media = self._last_input
            now_media = media + (time.monotonic() - wall)
            if deadline is not None and now_media >= deadline + STALL_SLACK_S:
                if self.monitor.clock(self.stream_id) < deadline:
                    log.info("stream %s: no input reached media time %.2f s; ticking there", self.stream_id,
                             deadline)
                    await self._tick(deadline, stalled=True)
                    continue
            wait = 1.0 if deadline is None else deadline + STALL_SLACK_S - now_media
            await asyncio.sleep(min(1.0, max(0.05, wait)))

    async def review(self, verdict: ReviewVerdict) -> tuple[InterventionLifted, ...]:
        """A reviewer's verdict on this stream (``overturn`` lifts the intervention): recorded, and its lift
        delivered, through the same door as the worker's own decisions. ValueError (nothing recorded) if
        the verdict is unknown or the intervention is not in force."""
        async with self._core:
            lifted = self.monitor.review(verdict)
            await self.sink(verdict)
            for lift in lifted:
                await self.sink(lift)
        return lifted

    async def _video(self, sample: VideoSample) -> None:
        self._advance(sample.media_ts)
        kept: set[str] = set()  # one thumbnail per frame reference, whichever analyzers flag it
        for analyzer in self.feeds.due(sample.media_ts):
            self.summary.vision_samples[analyzer.name] += 1
            signals = await asyncio.to_thread(analyzer.analyze, sample)
            if self.evidence is not None:
                await self._keep_evidence(sample, signals, kept)
            for signal in signals:
                await self._signal(signal)
        await self._tick(sample.media_ts)

    async def _keep_evidence(self, sample: VideoSample, signals: Sequence[Signal], kept: set[str]) -> None:
        """Hand the frame to the evidence sink, before its signals reach the core, under each reference a
        signal at or above its floor gives it and that is not in ``kept`` yet (then added there)."""
        assert self.evidence is not None
        refs = set()
        for signal in signals:
            category = self.monitor.policy.category(signal.category)
            if category is not None and signal.score >= category.floor and (ref := thumbnail_ref(signal)):
                refs.add(ref)
        for ref in sorted(refs - kept):
            kept.add(ref)
            await self.evidence(ref, sample)

    async def _audio(self, chunk: AudioChunk) -> None:
        self._advance(chunk.end_ts)
        if self.analyzers.speech is None:
            return
        heard_until, self._heard_until = self._heard_until, max(self._heard_until, chunk.end_ts)
        for transcript in await transcribe(self.analyzers.speech, chunk):  # packed across streams
            if (kept := unheard(transcript, heard_until)) is not None:
                await self._transcript(kept)
        await self._tick(chunk.end_ts)

    async def _transcript(self, transcript: Transcript) -> None:
        self.summary.transcripts += 1
        if self._rate is not None:
            self._rate.speech(transcript.end_ts)
        await self.sink(transcript)
        for analyzer in self.analyzers.text:  # batched across streams where the analyzer allows it
            for signal in await analyze_text(analyzer, transcript):
                await self._signal(signal)

    async def _signal(self, signal: Signal) -> None:
        self.summary.signals[signal.category] += 1
        async with self._core:
            decision = self.monitor.step(signal)
            await self.sink(signal)
            await self.sink(decision.risk)
            await self._emit(decision)
        level = self.monitor.levels(self.stream_id).get(signal.category, 0.0)
        self.summary.max_risk[signal.category] = max(self.summary.max_risk.get(signal.category, 0.0), level)

    async def _tick(self, media_ts: float, *, stalled: bool = False) -> None:
        async with self._core:
            decision = self.monitor.tick(self.stream_id, media_ts)
            await self.sink(Tick(self.stream_id, media_ts))
            await self._emit(decision)
        if stalled:
            return
        if self._rate is not None:
            fps = self._rate.fps(media_ts, decision.risk.overall)
            if fps != self._fps:
                log.debug("stream %s: video sampling %.2f -> %.2f fps", self.stream_id, self._fps, fps)
                before = self.feeds.source_fps
                self._fps = fps
                self.feeds.set_base_fps(fps)
                if not self.feeds.dense or self.feeds.source_fps != before:
                    self.source.set_video_fps(self.feeds.source_fps)

    async def _emit(self, decision: Decision) -> None:
        """A decision's lifts (decided first), then its interventions, to the sink."""
        for lift in decision.lifted:
            await self.sink(lift)
        for intervention in decision.interventions:
            self.summary.interventions.append(intervention)
            await self.sink(intervention)

    def _advance(self, media_ts: float) -> None:
        self.summary.media_seconds = max(self.summary.media_seconds, media_ts)
        self._last_input = (time.monotonic(), max(self._last_input[1], media_ts))
