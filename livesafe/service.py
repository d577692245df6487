"""The livesafe service: Redis, the backend gateway, and one worker per monitored stream.

Each stream's worker runs in its own task, owned by the service: a stream that fails (corrupt media, a
source that cannot be opened) ends with an error recorded for that stream only; ``stream.ended`` or
shutdown cancels the task and waits for it. Every event a worker produces goes to the Redis event log;
interventions also go to the durable outbox, from which the gateway delivers them to the backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from aiohttp import web

from livesafe.analyzers.batching import BatchedTextAnalyzer
from livesafe.analyzers.capacity import LoadEstimate, estimate
from livesafe.board.server import Board
from livesafe.core.events import Event, Intervention, InterventionLifted, ReviewVerdict, StreamState, to_dict
from livesafe.core.policy import Policy
from livesafe.ingest.av_source import AVSource
from livesafe.ingest.ffmpeg import is_live_url, open_source
from livesafe.ingest.source import MediaSource, Pacing, SourceError, ingest_options
from livesafe.ingest.webrtc import WebRTCSource
from livesafe.ingest.whep import WhepSource
from livesafe.ingest.whip import WhipEndpoint
from livesafe.interventions.gateway import Gateway, StreamEnded, StreamStarted
from livesafe.interventions.lifts import LiftRelay, RelayMonitor
from livesafe.interventions.outbox import EventLog, Outbox, reraise_swallowed_cancel
from livesafe.interventions.webhooks import WebhookDispatcher, WebhookEndpoint
from livesafe.pipeline import Analyzers, StreamSummary, StreamWorker
from livesafe.tasks import cancel_and_wait

log = logging.getLogger(__name__)

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


def whep_url(source: str) -> tuple[str, str | None] | None:
    """The HTTP(S) address and bearer token of a ``whep://[TOKEN@]host/path`` source (``wheps://`` for
    HTTPS; ``whep+http(s)://`` also accepted), or None for any other source."""
    for prefix, scheme in (("whep+http://", "http"), ("whep+https://", "https"),
                           ("whep://", "http"), ("wheps://", "https")):
        if source.startswith(prefix):
            parts = urllib.parse.urlsplit(scheme + "://" + source.removeprefix(prefix))
            token = urllib.parse.unquote(parts.username) if parts.username else None
            host = parts.netloc.rpartition("@")[2]
            return urllib.parse.urlunsplit((scheme, host, parts.path, parts.query, "")), token
    return None


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[StreamSummary]
    worker: StreamWorker
    metadata: dict[str, Any]
    started: float


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
    ) -> None:
        self.policy = policy
        self.analyzers = analyzers
        self.options = options
        #: Lifts (expired, risk fell) reach the sink through the relay, in order per stream.
        self.lifts = LiftRelay(self._deliver)
        self.monitor = RelayMonitor(policy, self.lifts)
        self._lifter: asyncio.Task[None] | None = None
        self.events = EventLog(redis_client, prefix=options.prefix)
        self.outbox = Outbox(redis_client, prefix=options.prefix, redeliver_after_s=options.ack_timeout_s)
        self.gateway = Gateway(
            redis_client,
            options.tokens,
            host=options.host,
            port=options.port,
            prefix=options.prefix,
            ack_timeout_s=options.ack_timeout_s,
            on_stream_started=self._on_started,
            on_stream_ended=self._on_ended,
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
        self.analyzers = dataclasses.replace(self.analyzers, text=batched)
        for analyzer in batched:
            if isinstance(analyzer, BatchedTextAnalyzer):
                analyzer.batcher.start()
        await self.gateway.start()
        for dispatcher in self.webhooks:
            await dispatcher.start()
        parts = ", ".join(f"{k} {v:.3f}" for k, v in self.capacity.parts.items())
        log.info("capacity: about %.3f CPU s per media second per stream (%s), ~%.0f live streams on %d "
                 "cores", self.capacity.per_stream_s, parts, self.capacity.streams, self.capacity.cores)
        if any(hasattr(a, "reload") for a in self.analyzers.vision):
            self._reloader = asyncio.create_task(self._reload_forever(), name="reload-analyzers")
        self._lifter = asyncio.create_task(self.lifts.run(), name="deliver-lifts")
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
        await cancel_and_wait(self._lifter)
        for dispatcher in self.webhooks:
            await dispatcher.aclose()
        await self.gateway.aclose()
        for analyzer in self.analyzers.text:
            if isinstance(analyzer, BatchedTextAnalyzer):
                await analyzer.batcher.aclose()
        self.analyzers = self._plain_analyzers

    @property
    def streams(self) -> list[str]:
        return sorted(self._running)

    def start_stream(self, stream_id: str, source: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Start monitoring ``source`` (a file, URL or ``whep+http(s)://`` address) as ``stream_id``.

        ValueError (with the reason) if the stream is already running or the source is unusable.
        """
        if not stream_id or not source:
            raise ValueError("stream.started needs a non-empty stream_id and source")
        if stream_id in self._running:
            raise ValueError(f"stream {stream_id!r} is already being monitored")
        whep = whep_url(source)
        live = whep is not None or is_live_url(source)
        # Live media is never paced and never waited for: a slow consumer drops the oldest samples.
        ingest = ingest_options(self.policy.sampling, "realtime" if live else self.options.pacing)
        media: MediaSource
        if whep is not None:
            media = WhepSource(stream_id, whep[0], token=whep[1], options=ingest)
        else:
            try:
                media = open_source(stream_id, source, ingest, on_state=self._on_source_state)
            except SourceError as exc:
                raise ValueError(str(exc)) from exc
        self.start_source(stream_id, media, metadata, url=source)

    def _on_source_state(self, stream_id: str, state: str, detail: str) -> None:
        """A live source's connection state (connecting, live, degraded, lost...), on the event loop."""
        if state in ("live", "ended") and stream_id in self._running:
            return  # the worker reports these itself
        task = asyncio.create_task(self.publish_state(stream_id, state, detail), name=f"state-{stream_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_source(
        self, stream_id: str, source: MediaSource, metadata: Mapping[str, Any] | None = None, *, url: str = ""
    ) -> None:
        """Start monitoring a ready :class:`MediaSource` (e.g. a WHIP session) as ``stream_id``."""
        if stream_id in self._running:
            raise ValueError(f"stream {stream_id!r} is already being monitored")
        live = self.options.pacing == "realtime" or not isinstance(source, AVSource) or is_live_url(url)
        worker = StreamWorker(source, self.analyzers, self.monitor, self._sink, url=url,
                              adaptive=live, lanes=live)
        task = asyncio.create_task(self._run_worker(worker), name=f"stream-{stream_id}")
        self._running[stream_id] = _Running(task, worker, dict(metadata or {}), time.monotonic())
        task.add_done_callback(functools.partial(self._finished, stream_id))
        if self.capacity.over(len(self._running)):
            log.warning("%d streams need about %.2f CPU s per second, more than planned for %d cores "
                        "(%.0f streams): analysis may fall behind live and drop samples",
                        len(self._running), len(self._running) * self.capacity.per_stream_s,
                        self.capacity.cores, self.capacity.streams)
        log.info("stream %s started: %s %s", stream_id, url, dict(metadata or {}))

    async def _run_worker(self, worker: StreamWorker) -> StreamSummary:
        """Run a worker, reporting its state to the event log, the backends and the board."""
        stream_id = worker.stream_id
        await self.publish_state(stream_id, "live", worker.summary.source)
        try:
            summary = await worker.run()
        except asyncio.CancelledError:
            await self.publish_state(stream_id, "stopped")
            raise
        except Exception as exc:  # a bug in one stream's worker must not take the others down
            worker.summary.error = f"worker failed: {type(exc).__name__}: {exc}"
            log.exception("stream %s worker failed", stream_id)
            await self.publish_state(stream_id, "failed", worker.summary.error)
            return worker.summary
        if summary.error:
            await self.publish_state(stream_id, "failed", summary.error)
        else:
            await self.publish_state(stream_id, "ended")
        return summary

    async def publish_state(self, stream_id: str, state: str, detail: str = "") -> None:
        """Record a stream state change and tell every connected backend and the board."""
        run = self._running.get(stream_id)
        media_ts = run.worker.summary.media_seconds if run is not None else 0.0
        event = StreamState(stream_id, media_ts, state, detail)
        try:
            await self.events.append(event)
        except redis.RedisError as exc:
            log.warning("could not log %s state %s: %s", stream_id, state, exc)
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
        summary = self._running.pop(stream_id).worker.summary
        self.monitor.forget(stream_id)
        self.lifts.forget(stream_id)
        self.summaries[stream_id] = summary
        while len(self.summaries) > KEEP_SUMMARIES:
            del self.summaries[next(iter(self.summaries))]
        how = "stopped" if task.cancelled() else summary.error or "end of media"
        log.info("stream %s ended: %s", stream_id, how)

    async def _sink(self, event: Event) -> None:
        async with self.lifts.ordered(event.stream_id):  # lifts decided earlier go first
            await self._deliver(event)

    async def _deliver(self, event: Event) -> None:
        await self._until_redis(self.events.append, event, what="log")
        if isinstance(event, Intervention | InterventionLifted):
            await self._until_redis(self.outbox.publish, event, what="publish")
        reraise_swallowed_cancel()  # redis-py may swallow a cancel of this worker (see outbox)
        if self.board is not None:
            self.board.publish(event)

    async def _until_redis(
        self, call: Callable[[Any], Awaitable[object]], event: Event, *, what: str
    ) -> None:
        """``await call(event)``, retried with backoff while Redis is unreachable, so a Redis outage holds
        a stream's worker (live media meanwhile drops at its bounded lanes, counted) instead of failing it
        or losing a decision. Publishing is idempotent; an append whose reply was lost may be logged twice.
        """
        delay, waited = REDIS_RETRY_INITIAL_S, 0.0
        while True:
            try:
                await call(event)
            except redis.RedisError as exc:
                reraise_swallowed_cancel()
                if waited == 0.0:
                    log.error("stream %s: Redis unavailable, holding its events until it is back (%s %s): %s",
                              event.stream_id, what, event.type, exc)
                    self.redis_outages += 1
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, REDIS_RETRY_MAX_S)
                continue
            if waited:
                log.warning("stream %s: Redis is back after %.1f s; resuming", event.stream_id, waited)
            return

    async def overturn(
        self, stream_id: str, intervention_id: str, reviewer: str, note: str = ""
    ) -> InterventionLifted:
        """A reviewer overturned an intervention in force: record the verdict and deliver the lift.

        ValueError (with the reason) if the stream is not monitored or the intervention not in force.
        """
        if stream_id not in self._running:
            raise ValueError(f"stream {stream_id!r} is not being monitored")
        verdict = ReviewVerdict(stream_id, self.monitor.clock(stream_id), intervention_id, "overturn",
                                reviewer, note)
        async with self.lifts.ordered(stream_id):
            [lift] = self.monitor.review(verdict)
            self.lifts.push((lift,))  # from here on it is delivered, whatever fails below
            await self.events.append(verdict)  # before the lift it causes, so replay sees the cause
        async with self.lifts.ordered(stream_id):  # delivers it now
            pass
        log.info("%s overturned %s on stream %s", reviewer, intervention_id, stream_id)
        return lift

    def find_stream(self, intervention_id: str) -> str | None:
        """The monitored stream on which ``intervention_id`` is in force, if any."""
        for stream_id in self._running:
            if any(iv.intervention_id == intervention_id for iv in self.monitor.active(stream_id)):
                return stream_id
        return None

    async def _on_started(self, message: StreamStarted) -> None:
        self.start_stream(message.stream_id, message.source, message.metadata)

    async def _on_whip_session(self, stream_id: str, source: WebRTCSource, backend: str) -> None:
        if stream_id in self._running:
            raise web.HTTPConflict(text=f"stream {stream_id!r} is already being monitored")
        self.start_source(stream_id, source, {"ingest": "whip", "backend": backend}, url=f"whip:{stream_id}")

    async def _on_ended(self, message: StreamEnded) -> None:
        await self.stop_stream_by_request(message.stream_id)

    async def stop_stream_by_request(self, stream_id: str) -> None:
        """``stream.ended`` from a backend: ValueError if the stream is not being monitored."""
        if stream_id not in self._running:
            raise ValueError(f"stream {stream_id!r} is not being monitored")
        await self.stop_stream(stream_id)

    def metrics(self) -> list[dict[str, Any]]:
        """Every running stream: its metadata, tier, risk and ingest counters, and lag behind live."""
        out = []
        now = time.monotonic()
        for stream_id, run in sorted(self._running.items()):
            summary = run.worker.summary
            elapsed = now - run.started
            out.append({
                "stream_id": stream_id,
                "source": summary.source,
                "metadata": run.metadata,
                "tier": self.monitor.tier(stream_id),
                "risk": {k: round(v, 4) for k, v in self.monitor.levels(stream_id).items()},
                "media_seconds": round(summary.media_seconds, 3),
                "lag_s": round(max(0.0, elapsed - summary.media_seconds), 3)
                if self.options.pacing == "realtime" else None,
                "transcripts": summary.transcripts,
                "interventions": len(summary.interventions),
                "ingest": run.worker.source.stats.as_dict(),
            })
        return out
