"""``livesafe bench``: ``capacity`` (how many live streams this machine keeps up with) and ``workload``
(make the bench clip only).

    livesafe bench capacity                      # levels 1,2,4,8,12,16,20,24, 60 s each
    livesafe bench capacity --streams 1,4,8 --duration 30 --json capacity.json
    livesafe bench capacity --streams 8 --soak   # 10 minutes: memory growth, lag not growing
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from livesafe.bench.capacity import DEFAULT_LEVELS, CapacityOptions, CapacityReport, scan
from livesafe.bench.judge import Criteria, LevelResult
from livesafe.bench.workload import Workload, WorkloadSpec, make_workload

SOAK_S = 600.0
_SPEC = WorkloadSpec()
_CRITERIA = Criteria()


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2,4, got {text!r}") from None
    if not levels or any(n < 1 for n in levels):
        raise argparse.ArgumentTypeError("stream counts must be 1 or more")
    return levels


def _workload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip-s", type=float, default=_SPEC.seconds,
                   help="length of the generated clip, looped as needed (default: %(default)s)")
    p.add_argument("--video", type=Path, help="the picture's source (default: Big Buck Bunny from "
                   "../shared/data if present, else the bundled demo streams upscaled)")
    p.add_argument("--no-espeak", action="store_true", help="use the bundled demo's voice even where "
                   "espeak-ng is installed")
    p.add_argument("--cache-dir", type=Path, help="where generated clips are kept "
                   "(default: ~/.cache/livesafe/bench)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livesafe bench", description="Measure livesafe on this machine.")
    sub = p.add_subparsers(dest="bench", required=True)
    c = sub.add_parser("capacity", help="how many concurrent live 720p30 streams with speech keep up")
    c.add_argument("--streams", type=_levels, default=DEFAULT_LEVELS, metavar="N,N,...",
                   help=f"stream counts to try in turn (default: {','.join(map(str, DEFAULT_LEVELS))}); "
                        "stops at the first that "
                        "does not keep up")
    c.add_argument("--duration", type=float, default=60.0, help="seconds each level runs (default: 60)")
    c.add_argument("--soak", action="store_true", help=f"run each level {SOAK_S:.0f} s (memory growth)")
    c.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default: 1)")
    c.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON here")
    c.add_argument("--policy", type=Path, help="policy YAML for the service (default: the bundled one)")
    c.add_argument("--max-lag", type=float, default=_CRITERIA.max_lag_s,
                   help="a stream keeps up while its lag behind live stays under this (default: 3 s)")
    c.add_argument("--max-growth", type=float, default=_CRITERIA.max_growth_s,
                   help="... and its lag rises less than this over the last third (default: 1 s)")
    c.add_argument("--warmup", type=float, default=_CRITERIA.warmup_s,
                   help="seconds left out of CPU and memory figures at the start (default: 5)")
    c.add_argument("--keep-going", action="store_true", help="run every level even after one fails")
    c.add_argument("--work-dir", type=Path, help="keep playlists, Redis data and service logs here")
    c.add_argument("--service-arg", action="append", default=[], metavar="ARG",
                   help="pass ARG to `livesafe run` (repeatable; e.g. --service-arg=-v)")
    _workload_args(c)
    w = sub.add_parser("workload", help="make (or find in the cache) the bench clip and print its path")
    _workload_args(w)
    return p


def _spec(args: argparse.Namespace) -> WorkloadSpec:
    return WorkloadSpec(seconds=args.clip_s, video=args.video, espeak=not args.no_espeak)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


HEADER = (f"{'streams':>7} {'kept up':>8} {'lag p50':>8} {'lag max':>8} {'final':>7} {'CPU s/media s':>14} "
          f"{'cores':>6} {'peak RSS':>9} {'video':>7} {'API p50':>8}")
UNITS = (f"{'':>7} {'':>8} {'s':>8} {'s':>8} {'lag s':>7} {'per stream':>14} {'used':>6} {'MB':>9} "
         f"{'dropped':>7} {'ms':>8}")


def level_row(lv: LevelResult) -> str:
    dropped = sum(s.video_dropped for s in lv.per_stream)
    kept = f"{lv.kept_up}/{lv.streams}"
    row = (f"{lv.streams:>7} {kept:>8} {_fmt(lv.lag_p50_s):>8} {_fmt(lv.lag_max_s):>8} "
           f"{_fmt(lv.final_lag_max_s):>7} {_fmt(lv.cpu_per_media_s, '.3f'):>14} {_fmt(lv.cores_used):>6} "
           f"{_fmt(lv.peak_rss_mb, '.0f'):>9} {dropped:>7} {_fmt(lv.api_p50_ms, '.0f'):>8}")
    if lv.api_failures:
        row += f"  ({lv.api_failures} polls unanswered)"
    return row + (f"  error: {lv.error.splitlines()[0]}" if lv.error else "")


def describe(workload: Workload) -> str:
    w = workload
    return (f"workload: {w.width}x{w.height} {w.fps} fps H.264, GOP {w.gop_s:g} s, {w.bframes} B-frames, "
            f"{w.seconds:g} s looped, speech {w.speech_fraction:.0%} ({w.speech_source}), picture from "
            f"{w.video_source}\n  {w.path}")


def summary(report: CapacityReport) -> list[str]:
    data = report.as_dict()
    measured, planned = data["measured"], report.planned
    lines = []
    if planned is not None:
        lines.append(f"planned (service log): {planned.per_stream_cpu_s:.3f} CPU s per media s per stream, "
                     f"~{planned.streams:.0f} streams on {planned.cores} cores "
                     f"(at {planned.target_utilisation:.0%} utilisation)")
    else:
        lines.append("planned: the service logged no capacity estimate")
    per = measured["per_stream_cpu_s"]
    lines.append(f"measured: {measured['streams_kept_up']} streams kept up; "
                 f"{_fmt(per, '.3f')} CPU s per media s per stream "
                 f"(~{_fmt(measured['streams_at_planned_utilisation'], '.1f')} streams with the planner's "
                 "arithmetic)")
    if extra := measured["rss_per_extra_stream_mb"]:
        lines.append("memory per extra stream (final RSS): "
                     + ", ".join(f"{n} streams {mb:.0f} MB" for n, mb in extra.items()))
    return lines


def capacity_main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    duration = SOAK_S if args.soak else args.duration
    criteria = Criteria(max_lag_s=args.max_lag, max_growth_s=args.max_growth, warmup_s=args.warmup)
    options = CapacityOptions(
        levels=args.streams, duration_s=duration, interval_s=args.interval, criteria=criteria,
        policy=args.policy, keep_going=args.keep_going, work_dir=args.work_dir,
        service_args=tuple(args.service_arg),
    )
    print("making the workload...", file=out, flush=True)
    workload = make_workload(_spec(args), args.cache_dir)
    print(describe(workload), file=out, flush=True)
    print(f"levels {','.join(map(str, options.levels))}, {duration:g} s each, realtime pacing; kept up: "
          f"lag < {criteria.max_lag_s:g} s at the end and rising < {criteria.max_growth_s:g} s over the last "
          "third",
          file=out, flush=True)
    print(HEADER, UNITS, sep="\n", file=out, flush=True)
    report = scan(workload, options, on_level=lambda lv: print(level_row(lv), file=out, flush=True))
    if report.interrupted:
        print("interrupted: the levels above are reported", file=out, flush=True)
    for line in summary(report):
        print(line, file=out, flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"JSON: {args.json}", file=out, flush=True)
    return 1 if any(lv.error for lv in report.levels) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.bench == "workload":
            workload = make_workload(_spec(args), args.cache_dir)
            print(describe(workload))
            print(json.dumps(workload.as_dict(), indent=2))
            return 0
        return capacity_main(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
