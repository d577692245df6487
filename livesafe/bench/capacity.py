"""How many live streams this machine follows in real time, measured from the outside on the real service.

For each level N: ``livesafe run --stream bench-01=... --stream bench-NN=...`` starts as a subprocess (real
time pacing, as live; embedded Redis in a temporary directory unless ``REDIS_URL`` is set, under a key
prefix of its own; free ports; no board, no backend), each stream playing the workload from its own offset
(:func:`livesafe.bench.workload.playlist`). Once it says it is running, ``GET /v1/streams`` is polled every
``interval_s`` for ``duration_s`` seconds, and the service's process tree is read from ``/proc`` beside
each poll; then the service is stopped with SIGINT (killed only if it does not stop) and the polls are
judged (:mod:`livesafe.bench.judge`). A scan stops at the first level that did not keep up.

The service's own planned estimate (:mod:`livesafe.analyzers.capacity`, logged at start) is read from its
log and reported beside the measured figures.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from livesafe.bench import judge, procfs
from livesafe.bench.judge import Criteria, LevelResult, Poll
from livesafe.bench.workload import Workload, playlist

DEFAULT_LEVELS = (1, 2, 4, 8, 12, 16, 20, 24)
#: Media beyond the polled duration, so that no stream ends before the service is stopped.
MEDIA_MARGIN_S = 60.0

_CAPACITY_LOG = re.compile(
    r"capacity: about (?P<per>[\d.]+) CPU s per media second per stream \((?P<parts>[^)]*)\), "
    r"~(?P<streams>[\d.]+) live streams on (?P<cores>\d+) cores")
_ENDED_LOG = re.compile(r"stream (?P<id>\S+) session \S+ ended: (?P<how>.*)$")


@dataclass(frozen=True, slots=True)
class CapacityOptions:
    levels: tuple[int, ...] = DEFAULT_LEVELS
    duration_s: float = 60.0
    interval_s: float = 1.0
    criteria: Criteria = field(default_factory=Criteria)
    #: A policy file for the service (None: the bundled default).
    policy: Path | None = None
    #: Stream i starts the clip i * stagger_s seconds in (rounded down to a key frame).
    stagger_s: float = 14.0
    startup_timeout_s: float = 600.0
    #: Go on to the next level even when one did not keep up.
    keep_going: bool = False
    #: Where playlists, Redis data and service logs go (None: a temporary directory, removed after).
    work_dir: Path | None = None
    #: More arguments for ``livesafe run``.
    service_args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Planned:
    """The service's own estimate, as logged when it starts."""

    per_stream_cpu_s: float
    streams: float
    cores: int
    parts: dict[str, float]
    target_utilisation: float


@dataclass(slots=True)
class CapacityReport:
    workload: Workload
    options: CapacityOptions
    levels: list[LevelResult] = field(default_factory=list)
    planned: Planned | None = None
    #: Stopped by Ctrl-C: the levels so far are reported.
    interrupted: bool = False

    @property
    def streams_kept_up(self) -> int:
        return judge.capacity(self.levels)

    def measured_cpu_per_stream(self) -> float | None:
        """CPU s per media second per stream at the largest level that kept up (else the first level)."""
        ok = [lv for lv in self.levels if lv.ok and lv.cpu_per_media_s is not None]
        chosen = max(ok, key=lambda lv: lv.streams) if ok else (self.levels[0] if self.levels else None)
        return chosen.cpu_per_media_s if chosen is not None else None

    def as_dict(self) -> dict[str, Any]:
        per = self.measured_cpu_per_stream()
        cores = os.cpu_count() or 1
        util = self.planned.target_utilisation if self.planned else _target_utilisation()
        options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.options).items()}
        return {
            "type": "capacity",
            "machine": {"cores": cores, "load_avg": [round(x, 2) for x in os.getloadavg()]},
            "workload": self.workload.as_dict(),
            "options": options,
            "planned": asdict(self.planned) if self.planned else None,
            "measured": {
                "streams_kept_up": self.streams_kept_up,
                "per_stream_cpu_s": round(per, 4) if per is not None else None,
                # The measured cost with the planner's arithmetic: what the estimate would say if its
                # declared costs were right.
                "streams_at_planned_utilisation": round(cores * util / per, 1) if per else None,
                "rss_per_extra_stream_mb": {
                    str(k): round(v, 1) for k, v in judge.rss_per_extra_stream(self.levels).items()},
            },
            "levels": [lv.as_dict() for lv in self.levels],
            "interrupted": self.interrupted,
        }


def _target_utilisation() -> float:
    """The planner's default utilisation (:func:`livesafe.analyzers.capacity.estimate`)."""
    from livesafe.analyzers.capacity import estimate

    default = inspect.signature(estimate).parameters["target_utilisation"].default
    return float(default)


def parse_planned(log_text: str) -> Planned | None:
    """The capacity line a starting service logs, or None if the log has none."""
    match = _CAPACITY_LOG.search(log_text)
    if match is None:
        return None
    parts: dict[str, float] = {}
    for item in match["parts"].split(", "):
        name, _, value = item.rpartition(" ")
        with contextlib.suppress(ValueError):
            parts[name] = float(value)
    return Planned(float(match["per"]), float(match["streams"]), int(match["cores"]), parts,
                   _target_utilisation())


class ServiceProcess:
    """``livesafe run`` with the given streams, as a subprocess in its own process group."""

    def __init__(self, streams: Sequence[tuple[str, Path]], work: Path, options: CapacityOptions) -> None:
        self.work = work
        self.token = secrets.token_urlsafe(18)
        self.prefix = f"bench-{secrets.token_hex(4)}"
        self.log_path = work / "service.log"
        args = [sys.executable, "-m", "livesafe.cli", "run", "--port", "0", "--http-port", "0",
                "--no-board", "--prefix", self.prefix, "--data-dir", str(work / "data")]
        if options.policy is not None:
            args += ["--policy", str(options.policy)]
        args += list(options.service_args)
        args += [f"--stream={stream_id}={path}" for stream_id, path in streams]
        self.args = args
        self.api_url: str | None = None
        self._running = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        env = dict(os.environ, LIVESAFE_TOKENS=f"bench={self.token}", PYTHONUNBUFFERED="1")
        env.pop("LIVESAFE_TOKENS_FILE", None)
        self.work.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self._proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                          cwd=self.work, start_new_session=True)
        self._reader = threading.Thread(target=self._read_stdout, name="bench-service-stdout", daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self._proc.stdout as lines, (self.work / "service.out").open("w") as out:
            for line in lines:
                out.write(line)
                if line.startswith("control API: "):
                    self.api_url = line.split()[2].rstrip(",").removesuffix("/v1/streams")
                elif line.startswith("running;"):
                    self._running.set()
        self._running.set()  # ended: wake up the waiter

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def wait_running(self, timeout_s: float) -> float:
        """Seconds until the service says it is running; RuntimeError if it exits or takes too long."""
        started = time.monotonic()
        if not self._running.wait(timeout_s):
            raise RuntimeError(f"the service did not start within {timeout_s:.0f} s")
        if self.exit_code() is not None or self.api_url is None:
            self._wait_exit(5.0)
            raise RuntimeError(f"the service exited ({self.exit_code()}) while starting: {self.log_tail()}")
        return time.monotonic() - started

    def streams(self) -> tuple[dict[str, dict[str, Any]], float] | None:
        """``GET /v1/streams`` by stream id, and how long it took; None if it failed."""
        request = urllib.request.Request(f"{self.api_url}/v1/streams",
                                         headers={"Authorization": f"Bearer {self.token}"})
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=10) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return {s["stream_id"]: s for s in body.get("streams", [])}, time.monotonic() - started

    def stop(self, timeout_s: float) -> tuple[float, bool]:
        """SIGINT, then wait; SIGKILL to the process group only if it hangs. (seconds taken, killed)."""
        if self._proc is None:
            return 0.0, False
        started, killed = time.monotonic(), False
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            if not self._wait_exit(timeout_s):
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(5.0)
        return time.monotonic() - started, killed

    def _wait_exit(self, timeout_s: float) -> bool:
        assert self._proc is not None
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def ended(self) -> dict[str, str]:
        """Why streams ended, by stream id, from the service's log."""
        out = {}
        for line in self.log_text().splitlines():
            if (match := _ENDED_LOG.search(line)) is not None:
                out[match["id"]] = match["how"]
        return out

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(60.0)


def _drop_keys(prefix: str) -> None:
    """Remove a run's keys from a shared Redis (``REDIS_URL``); the embedded one goes with its directory."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return
    import redis

    try:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()
    except redis.RedisError as exc:
        print(f"bench: could not remove keys {prefix}* from REDIS_URL: {exc}", file=sys.stderr)


def _poll(service: ServiceProcess, t0: float, options: CapacityOptions) -> tuple[list[Poll], int, str]:
    """Polls until ``duration_s``: (polls answered, polls not answered, error)."""
    polls: list[Poll] = []
    failures = 0
    tick = t0
    while True:
        if (code := service.exit_code()) is not None:
            return polls, failures, f"the service exited ({code}) during the run: {service.log_tail()}"
        got = service.streams()  # an overloaded service may answer late or not at all: counted, not fatal
        tree = procfs.sample(service.pid)
        t = time.monotonic() - t0
        if got is None:
            failures += 1
        else:
            streams, api_s = got
            polls.append(Poll(t, streams, tree.cpu_s if tree else None, tree.rss if tree else None,
                              tree.root_peak_rss if tree else None, api_s))
        if t >= options.duration_s:
            return polls, failures, ""
        tick += options.interval_s
        time.sleep(max(0.0, tick - time.monotonic()))


def run_level(
    workload: Workload, n: int, work: Path, options: CapacityOptions
) -> tuple[LevelResult, Planned | None]:
    """One level: N streams through a fresh service for ``duration_s`` seconds; with the service's own
    estimate."""
    ids = [f"bench-{i + 1:02d}" for i in range(n)]
    media_s = options.duration_s + MEDIA_MARGIN_S
    sources = [(sid, playlist(workload, work, sid, media_s, i * options.stagger_s))
               for i, sid in enumerate(ids)]
    service = ServiceProcess(sources, work, options)
    startup = shutdown = 0.0
    polls: list[Poll] = []
    failures, error = 0, ""
    try:
        service.start()
        try:
            startup = service.wait_running(options.startup_timeout_s)
        except RuntimeError as exc:
            error = str(exc)
        else:
            polls, failures, error = _poll(service, time.monotonic(), options)
    finally:
        shutdown, killed = service.stop(timeout_s=30.0 + 2.0 * n)
        if killed:
            error = error or f"the service did not stop within {30 + 2 * n} s and was killed"
        _drop_keys(service.prefix)
    if not polls and not error:
        error = "no poll answered"
    result = judge.judge_level(ids, polls, options.criteria, ended=service.ended(), startup_s=startup,
                               shutdown_s=shutdown, api_failures=failures, error=error)
    return result, parse_planned(service.log_text())


@contextlib.contextmanager
def _work_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    path = Path(tempfile.mkdtemp(prefix="livesafe-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def scan(
    workload: Workload, options: CapacityOptions = CapacityOptions(),
    on_level: Callable[[LevelResult], None] | None = None,
) -> CapacityReport:
    """Every level in turn (stopping after the first that did not keep up unless ``keep_going``; Ctrl-C
    stops the scan, with the service of the level in progress, and reports the levels done)."""
    report = CapacityReport(workload, options)
    with _work_dir(options.work_dir) as work:
        for n in options.levels:
            try:
                result, planned = run_level(workload, n, work / f"n{n:03d}", options)
            except KeyboardInterrupt:
                report.interrupted = True
                break
            report.levels.append(result)
            report.planned = report.planned or planned
            if on_level is not None:
                on_level(result)
            if not result.ok and not options.keep_going:
                break
    return report
