"""The livesafe service: Redis, the backend gateway, and one worker per monitored stream.

Each stream's worker runs in its own task, owned by the service: a stream that fails (corrupt media, a
source that cannot be opened) ends with an error recorded for that stream only; ``stream.ended`` or
shutdown cancels the task and waits for it. Every start of a stream id is a new session of it; every event
its worker produces goes to the session's timeline (:mod:`livesafe.timeline`); interventions and lifts also
go to the durable outbox, from which the gateway and webhooks deliver them to the backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import redis.asyncio
from aiohttp import web

from livesafe.analyzers.batching import Batched, BatchedSpeech, BatchedTextAnalyzer
from livesafe.analyzers.capacity import LoadEstimate, estimate
from livesafe.analyzers.registry import Analyzers
from livesafe.board.server import Board
from livesafe.core.events import (
    Event,
    Intervention,
    InterventionLifted,
    ReviewVerdict,
    StreamState,
    VideoSample,
    delivery_key,
    to_dict,
)
from livesafe.core.ids import check_stream_id
from livesafe.core.monitor import Monitor
from livesafe.core.policy import Policy
from livesafe.ingest.av_source import AVSource
from livesafe.ingest.opener import SourceRules, is_live_source, open_stream_source
from livesafe.ingest.source import MediaSource, Pacing, SourceError, ingest_options
from livesafe.ingest.webrtc import WebRTCSource
from livesafe.ingest.whip import WhipEndpoint
from livesafe.interventions.gateway import Gateway, StreamEnded, StreamStarted
from livesafe.interventions.outbox import Outbox, reraise_swallowed_cancel
from livesafe.interventions.webhooks import WebhookDispatcher, WebhookEndpoint
from livesafe.pipeline import StreamSummary, StreamWorker, analyzer_models
from livesafe.tasks import cancel_and_wait
from livesafe.timeline.entries import SessionEnd, SessionStart
from livesafe.timeline.evidence import thumbnail_jpeg
from livesafe.timeline.sessions import new_session_id
from livesafe.timeline.store import TimelineStore

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a cancelled worker may take to wind down before the service stops waiting.
STOP_TIMEOUT_S = 10.0
#: How often changed known-bad hash lists (and anything else reloadable) are re-read, in seconds.
RELOAD_EVERY_S = 30.0
#: Backoff while Redis is unreachable: first retry after this many seconds, doubling up to the maximum.
REDIS_RETRY_INITIAL_S = 0.1
REDIS_RETRY_MAX_S = 5.0
#: Summaries of ended streams kept for ``wait()`` and the CLI (oldest forgotten first).
KEEP_SUMMARIES = 1000


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    #: token -> backend name
    tokens: Mapping[str, str] = field(default_factory=dict)
    prefix: str = "livesafe"
    pacing: Pacing = "realtime"
    ack_timeout_s: float = 10.0
    #: Backends that take interventions as signed HTTP POSTs (Standard Webhooks) instead of a websocket.
    webhooks: tuple[WebhookEndpoint, ...] = ()
    #: What sources backends may name (files only under configured directories; URL schemes allowed).
    sources: SourceRules = field(default_factory=SourceRules)


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[StreamSummary]
    worker: StreamWorker
    metadata: dict[str, Any]
    started: float
    started_by: str = ""


class Service:
    """Runs streams under one policy and delivers their interventions."""

    def __init__(
        self,
        policy: Policy,
        analyzers: Analyzers,
        redis_client: redis.asyncio.Redis,
        options: ServiceOptions,
        *,
        board: Board | None = None,
        outbox: Outbox | None = None,
        timeline: TimelineStore | None = None,
    ) -> None:
        """``outbox`` and ``timeline``: the deployment's (:mod:`livesafe.app` builds one of each); made
        here from ``redis_client`` when not given."""
        self.policy = policy
        self.analyzers = analyzers
        self.options = options
        #: The record of every session: inputs and decisions of the core, states, acks, evidence.
        self.timeline = timeline or TimelineStore(redis_client, prefix=options.prefix,
                                                  retention=policy.retention)
        self.outbox = outbox or Outbox(redis_client, prefix=options.prefix,
                                       redeliver_after_s=options.ack_timeout_s)
        self.gateway = Gateway(
            redis_client,
            options.tokens,
            host=options.host,
            port=options.port,
            prefix=options.prefix,
            ack_timeout_s=options.ack_timeout_s,
            on_stream_started=self._on_started,
            on_stream_ended=self._on_ended,
            outbox=self.outbox,
            timeline=self.timeline,
        )
        self.board = board
        #: WHIP publishers (OBS, browsers...) push here; mount ``whip.routes()`` on the HTTP API.
        self.whip = WhipEndpoint(
            options.tokens, self._on_whip_session, options=ingest_options(policy.sampling, "realtime")
        )
        self.summaries: dict[str, StreamSummary] = {}
        self._running: dict[str, _Running] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reloader: asyncio.Task[None] | None = None
        self.webhooks = [WebhookDispatcher(self.outbox, endpoint) for endpoint in options.webhooks]
        #: The planned CPU load of one stream, from the analyzers' declared costs (analyzers.capacity).
        self.capacity: LoadEstimate = estimate(policy.sampling, analyzers)
        self._plain_analyzers = analyzers
        #: How many times a worker found Redis unreachable (each outage counted once per event held).
        self.redis_outages = 0

    async def __aenter__(self) -> Service:
        # Text analysis is batched across streams where the analyzer supports it (analyzers.batching).
        batched = [BatchedTextAnalyzer(a) if hasattr(a, "analyze_batch") else a for a in self.analyzers.text]
        # Speech is packed: the utterances queued from all streams share Whisper windows.
        speech = self.analyzers.speech
        if speech is not None and hasattr(speech, "transcribe_batch"):
            speech = BatchedSpeech(speech)
        self.analyzers = dataclasses.replace(self.analyzers, text=batched, speech=speech)
        for analyzer in [*batched, speech]:
            if isinstance(analyzer, Batched):
                analyzer.batcher.start()
        await self.gateway.start()
        for dispatcher in self.webhooks:
            await dispatcher.start()
        parts = ", ".join(f"{k} {v:.3f}" for k, v in self.capacity.parts.items())
        log.info("capacity: about %.3f CPU s per media second per stream (%s), ~%.0f live streams on %d "
                 "cores", self.capacity.per_stream_s, parts, self.capacity.streams, self.capacity.cores)
        if any(hasattr(a, "reload") for a in self.analyzers.vision):
            self._reloader = asyncio.create_task(self._reload_forever(), name="reload-analyzers")
        return self

    async def _reload_forever(self) -> None:
        """Re-read data files that analyzers load (hash lists) when they change; keep the old on error."""
        while True:
            await asyncio.sleep(RELOAD_EVERY_S)
            for analyzer in self.analyzers.vision:
                reload = getattr(analyzer, "reload", None)
                if reload is None:
                    continue
                try:
                    changed = await asyncio.to_thread(reload)
                except (OSError, ValueError) as exc:
                    log.error("%s: reload failed, keeping what was loaded: %s", analyzer.name, exc)
                else:
                    if changed:
                        log.info("%s: reloaded %s", analyzer.name, changed)

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await cancel_and_wait(self._reloader)
        for stream_id in list(self._running):
            await self.stop_stream(stream_id)
        await self.whip.aclose()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_TIMEOUT_S)
        for dispatcher in self.webhooks:
            await dispatcher.aclose()
        await self.gateway.aclose()
        for analyzer in [*self.analyzers.text, self.analyzers.speech]:
            if isinstance(analyzer, Batched):
                await analyzer.batcher.aclose()
        self.analyzers = self._plain_analyzers

    @property
    def streams(self) -> list[str]:
        return sorted(self._running)

    def start_stream(
        self, stream_id: str, source: str, metadata: Mapping[str, Any] | None = None, *,
        trusted: bool = False, started_by: str = "",
    ) -> None:
        """Start monitoring ``source`` (a file, URL or ``whep+http(s)://`` address) as ``stream_id``: a new
        session of that stream id.

        ValueError (with the reason) if the stream id is invalid, the stream is already running, or the
        source is not allowed (``trusted``: the operator's own ``--stream``, not held to
        :attr:`ServiceOptions.sources`) or unusable.
        """
        check_stream_id(stream_id)
        if not trusted and (problem := self.options.sources.problem(source)) is not None:
            raise ValueError(problem)
        if not source:
            raise ValueError("stream.started needs a non-empty source")
        if stream_id in self._running:
            raise ValueError(f"stream {stream_id!r} is already being monitored")
        live = is_live_source(source)
        # Live media is never paced and never waited for: a slow consumer drops the oldest samples.
        ingest = ingest_options(self.policy.sampling, "realtime" if live else self.options.pacing)
        try:
            media = open_stream_source(stream_id, source, ingest, on_state=self._on_source_state)
        except SourceError as exc:
            raise ValueError(str(exc)) from exc
        self.start_source(stream_id, media, metadata, url=source, started_by=started_by)

    def _on_source_state(self, stream_id: str, state: str, detail: str) -> None:
        """A live source's connection state (connecting, live, degraded, lost...), on the event loop."""
        if state in ("live", "ended") and stream_id in self._running:
            return  # the worker reports these itself
        task = asyncio.create_task(self.publish_state(stream_id, state, detail), name=f"state-{stream_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_source(
        self, stream_id: str, source: MediaSource, metadata: Mapping[str, Any] | None = None, *,
        url: str = "", started_by: str = "",
    ) -> None:
        """Start monitoring a ready :class:`MediaSource` (e.g. a WHIP session) as a new session of
        ``stream_id``."""
        check_stream_id(stream_id)
        if stream_id in self._running:
            raise ValueError(f"stream {stream_id!r} is already being monitored")
        live = self.options.pacing == "realtime" or not isinstance(source, AVSource) or is_live_source(url)
        session = new_session_id()
        sink = functools.partial(self._deliver, stream_id, session)
        evidence = functools.partial(self._keep_evidence, stream_id, session)
        worker = StreamWorker(source, self.analyzers, Monitor(self.policy), sink, url=url, adaptive=live,
                              lanes=live, session=session, evidence=evidence)
        task = asyncio.create_task(self._run_worker(worker), name=f"stream-{stream_id}")
        self._running[stream_id] = _Running(task, worker, dict(metadata or {}), time.monotonic(), started_by)
        task.add_done_callback(functools.partial(self._finished, stream_id))
        if self.capacity.over(len(self._running)):
            log.warning("%d streams need about %.2f CPU s per second, more than planned for %d cores "
                        "(%.0f streams): analysis may fall behind live and drop samples",
                        len(self._running), len(self._running) * self.capacity.per_stream_s,
                        self.capacity.cores, self.capacity.streams)
        log.info("stream %s session %s started: %s %s", stream_id, session, url, dict(metadata or {}))

    async def _run_worker(self, worker: StreamWorker) -> StreamSummary:
        """Run a worker inside its session: recorded start, states to the timeline, the backends and the
        board, recorded end."""
        stream_id, session = worker.stream_id, worker.session
        run = self._running[stream_id]
        start = SessionStart(
            stream_id=stream_id, session=session, source=worker.summary.source, policy=self.policy.name,
            policy_hash=self.policy.hash, metadata=run.metadata, analyzers=analyzer_models(self.analyzers),
            started_by=run.started_by,
        )
        await self._until_redis(lambda: self.timeline.open_session(start, self.policy), stream_id, "session")
        await self.publish_state(stream_id, "live", worker.summary.source)
        state, detail = "ended", ""
        try:
            summary = await worker.run()
            if summary.error:
                state, detail = "failed", summary.error
        except asyncio.CancelledError:
            state = "stopped"
            raise
        except Exception as exc:  # a bug in one stream's worker must not take the others down
            worker.summary.error = f"worker failed: {type(exc).__name__}: {exc}"
            log.exception("stream %s worker failed", stream_id)
            state, detail = "failed", worker.summary.error
            summary = worker.summary
        finally:
            await self.publish_state(stream_id, state, detail)
            end = SessionEnd(stream_id, session, worker.summary.media_seconds, state, detail)
            try:
                await self.timeline.close_session(end)
            except redis.RedisError as exc:
                log.error("stream %s session %s: could not record its end: %s", stream_id, session, exc)
        return summary

    async def publish_state(self, stream_id: str, state: str, detail: str = "") -> None:
        """Record a stream state change in its session and tell every connected backend and the board."""
        run = self._running.get(stream_id)
        media_ts = run.worker.summary.media_seconds if run is not None else 0.0
        session = run.worker.session if run is not None else ""
        event = StreamState(stream_id, media_ts, state, detail, session)
        if session:
            try:
                await self.timeline.append(stream_id, session, event)
            except redis.RedisError as exc:
                log.warning("could not record %s state %s: %s", stream_id, state, exc)
        else:
            log.info("stream %s (no session running): %s %s", stream_id, state, detail)
        self.gateway.notify(to_dict(event))
        if self.board is not None:
            self.board.stream_state(stream_id, state, detail)

    async def stop_stream(self, stream_id: str) -> StreamSummary | None:
        """Cancel a stream's worker and wait for it (bounded); returns its summary."""
        run = self._running.get(stream_id)
        if run is None:
            return self.summaries.get(stream_id)
        run.task.cancel()
        done, _ = await asyncio.wait([run.task], timeout=STOP_TIMEOUT_S)
        if not done:
            log.error("stream %s did not stop within %.0f s", stream_id, STOP_TIMEOUT_S)
        return self.summaries.get(stream_id)

    async def wait(self, stream_id: str) -> StreamSummary | None:
        """Wait until a stream's worker ends by itself."""
        run = self._running.get(stream_id)
        if run is not None:
            await asyncio.wait([run.task])
        return self.summaries.get(stream_id)

    def _finished(self, stream_id: str, task: asyncio.Task[StreamSummary]) -> None:
        run = self._running.pop(stream_id)
        summary = run.worker.summary
        self.summaries[stream_id] = summary
        while len(self.summaries) > KEEP_SUMMARIES:
            del self.summaries[next(iter(self.summaries))]
        how = "stopped" if task.cancelled() else summary.error or "end of media"
        log.info("stream %s session %s ended: %s", stream_id, run.worker.session, how)

    async def _deliver(self, stream_id: str, session: str, event: Event) -> None:
        """A worker's event: into its session's timeline; decisions also into the outbox; to the board."""
        await self._until_redis(lambda: self.timeline.append(stream_id, session, event), stream_id,
                                event.type)
        if isinstance(event, Intervention | InterventionLifted):
            fresh = await self._until_redis(lambda: self.outbox.publish(event), stream_id, "publish")
            if not fresh:  # only a retried publish whose first reply was lost: said, not silently dropped
                log.warning("stream %s: %s %s was already in the outbox; not queued twice", stream_id,
                            event.type, delivery_key(event))
        reraise_swallowed_cancel()  # redis-py may swallow a cancel of this worker (see outbox)
        if self.board is not None:
            self.board.publish(event)

    async def _keep_evidence(self, stream_id: str, session: str, ref: str, sample: VideoSample) -> None:
        """Keep the thumbnail of a frame that scored, beside the session's timeline (best effort: a failure
        is logged, the stream goes on)."""
        try:
            jpeg = await asyncio.to_thread(thumbnail_jpeg, sample.image)
            await self.timeline.put_evidence(stream_id, session, ref, jpeg)
        except (redis.RedisError, ValueError, OSError) as exc:
            log.warning("stream %s: could not keep the thumbnail %s: %s", stream_id, ref, exc)

    async def _until_redis(self, call: Callable[[], Awaitable[T]], stream_id: str, what: str) -> T:
        """``await call()``, retried with backoff while Redis is unreachable, so a Redis outage holds a
        stream's worker (live media meanwhile drops at its bounded lanes, counted) instead of failing it or
        losing a decision. Publishing is idempotent; an append whose reply was lost may be recorded twice.
        """
        delay, waited = REDIS_RETRY_INITIAL_S, 0.0
        while True:
            try:
                result = await call()
            except redis.RedisError as exc:
                reraise_swallowed_cancel()
                if waited == 0.0:
                    log.error("stream %s: Redis unavailable, holding its events until it is back (%s): %s",
                              stream_id, what, exc)
                    self.redis_outages += 1
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, REDIS_RETRY_MAX_S)
                continue
            if waited:
                log.warning("stream %s: Redis is back after %.1f s; resuming", stream_id, waited)
            return result

    async def overturn(
        self, stream_id: str, intervention_id: str, reviewer: str, note: str = ""
    ) -> InterventionLifted:
        """A reviewer overturned an intervention in force: the verdict is recorded and the lift delivered,
        in order with the stream's own decisions (through its worker).

        ValueError (with the reason) if the stream is not monitored or the intervention not in force.
        """
        run = self._running.get(stream_id)
        if run is None:
            raise ValueError(f"stream {stream_id!r} is not being monitored")
        worker = run.worker
        verdict = ReviewVerdict(stream_id, worker.monitor.clock(stream_id), intervention_id, "overturn",
                                reviewer, note)
        [lift] = await worker.review(verdict)
        log.info("%s overturned %s on stream %s", reviewer, intervention_id, stream_id)
        return lift

    def find_stream(self, intervention_id: str) -> str | None:
        """The monitored stream on which ``intervention_id`` is in force, if any."""
        for stream_id, run in self._running.items():
            if any(iv.intervention_id == intervention_id for iv in run.worker.monitor.active(stream_id)):
                return stream_id
        return None

    async def _on_started(self, message: StreamStarted) -> None:
        self.start_stream(message.stream_id, message.source, message.metadata, started_by=message.backend)

    async def _on_whip_session(self, stream_id: str, source: WebRTCSource, backend: str) -> None:
        if stream_id in self._running:
            raise web.HTTPConflict(text=f"stream {stream_id!r} is already being monitored")
        self.start_source(stream_id, source, {"ingest": "whip", "backend": backend}, url=f"whip:{stream_id}",
                          started_by=backend)

    async def _on_ended(self, message: StreamEnded) -> None:
        await self.stop_stream_by_request(message.stream_id)

    async def stop_stream_by_request(self, stream_id: str) -> None:
        """``stream.ended`` from a backend: ValueError if the stream is not being monitored."""
        if stream_id not in self._running:
            raise ValueError(f"stream {stream_id!r} is not being monitored")
        await self.stop_stream(stream_id)

    def metrics(self) -> list[dict[str, Any]]:
        """Every running stream: its metadata, tier, risk and ingest counters, its lag behind live (ingest),
        and how far its speech recognition is behind ingest (``speech_lag_s``)."""
        out = []
        now = time.monotonic()
        for stream_id, run in sorted(self._running.items()):
            summary = run.worker.summary
            elapsed = now - run.started
            out.append({
                "stream_id": stream_id,
                "source": summary.source,
                "metadata": run.metadata,
                "session": run.worker.session,
                "tier": run.worker.monitor.tier(stream_id),
                "risk": {k: round(v, 4) for k, v in run.worker.monitor.levels(stream_id).items()},
                "media_seconds": round(summary.media_seconds, 3),
                "lag_s": round(max(0.0, elapsed - summary.media_seconds), 3)
                if self.options.pacing == "realtime" else None,
                "speech_lag_s": round(run.worker.speech_lag_s, 3),
                "transcripts": summary.transcripts,
                "interventions": len(summary.interventions),
                "ingest": run.worker.source.stats.as_dict(),
            })
        return out
