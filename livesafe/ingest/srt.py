"""SRT through the system ``ffmpeg``: PyAV's bundled FFmpeg is built without libsrt.

:class:`SrtBridge` runs ``ffmpeg -i srt://... -c copy -f mpegts pipe:1`` (listener or caller, as the URL's
``mode`` says) and is itself the file-like object PyAV reads the MPEG-TS from. Its ``read`` waits with
``select`` in short steps so that a stop request is honoured within a fraction of a second and silence on
the pipe longer than the allowed wait raises :class:`StallError` (PyAV re-raises what a read callback
raises), which is how a stalled SRT stream is detected: PyAV's own timeouts do not apply to Python I/O.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from typing import IO

from livesafe.ingest.source import SourceError

#: How often a blocked read looks at the stop flag.
POLL_S = 0.1


class StallError(TimeoutError):
    """No bytes arrived within the allowed time."""


@functools.cache
def ffmpeg_with_srt() -> str | None:
    """Path of a system ``ffmpeg`` that has the srt protocol, or None."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-hide_banner", "-protocols"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    inputs = out.split("Input:", 1)[-1].split("Output:", 1)[0].split()
    return exe if "srt" in inputs else None


class SrtBridge:
    """One ``ffmpeg`` process reading an SRT URL; a readable, non-seekable file object for PyAV."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        exe = ffmpeg_with_srt()
        if exe is None:
            raise SourceError(
                f"{url}: SRT needs the ffmpeg command with libsrt (PyAV's FFmpeg lacks it); install it, "
                "e.g. `apt install ffmpeg` on Debian/Ubuntu"
            )
        self.url = url
        self._stop = stop
        #: Longest wait for the next bytes before :class:`StallError`; the owner changes it once live.
        self.wait_s = 10.0
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", url,
             "-map", "0", "-c", "copy", "-f", "mpegts", "pipe:1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        assert self._proc.stdout is not None
        self._fd = self._proc.stdout.fileno()

    def read(self, size: int) -> bytes:
        deadline = time.monotonic() + self.wait_s
        while True:
            if self._stop.is_set():
                return b""
            ready, _, _ = select.select([self._fd], [], [], POLL_S)
            if ready:
                return os.read(self._fd, size)
            if time.monotonic() >= deadline:
                raise StallError(f"no data for {self.wait_s:g} s")

    def error_text(self) -> str:
        """What ffmpeg said on stderr (last line), for messages."""
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def close(self) -> None:
        """Stop ffmpeg (bounded) and release the pipes."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        self._stderr.close()
