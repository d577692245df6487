"""Opening a stream's source by its address, and which addresses a backend may ask for.

One opener for the service and ``livesafe watch``: ``whep://[TOKEN@]host/path`` (``wheps://`` for HTTPS,
``whep+http(s)://`` too) pulls WebRTC over WHEP; everything else goes to FFmpeg (:func:`open_source`: files,
HTTP(S) and HLS, RTMP, RTSP, SRT).

:class:`SourceRules` decide what a *backend* may name over the websocket or the HTTP API (the operator's own
``--stream`` and the demo are trusted): URL schemes from an allowlist, and files only under configured
directories (after resolving ``..`` and symbolic links), so a request cannot make livesafe open
``/etc/shadow``.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from livesafe.ingest.ffmpeg import is_live_url, open_source
from livesafe.ingest.source import IngestOptions, MediaSource
from livesafe.ingest.whep import WhepSource

#: URL schemes a backend may name by default (no files: those need a configured directory).
DEFAULT_SCHEMES: tuple[str, ...] = (
    "http", "https", "rtmp", "rtmps", "rtsp", "rtsps", "srt", "whep", "wheps", "whep+http", "whep+https",
)
#: Longest source address accepted from a backend.
MAX_SOURCE = 4096

StateCallback = Callable[[str, str, str], None]


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


def is_live_source(source: str) -> bool:
    """Whether ``source`` is live (WHEP, RTMP, RTSP, SRT, HLS) rather than a file."""
    return whep_url(source) is not None or is_live_url(source)


def open_stream_source(
    stream_id: str, source: str, options: IngestOptions, *, on_state: StateCallback | None = None,
    listen: bool = False,
) -> MediaSource:
    """The :class:`MediaSource` for ``source``; :class:`~livesafe.ingest.source.SourceError` naming the
    problem when it cannot be used."""
    whep = whep_url(source)
    if whep is not None:
        return WhepSource(stream_id, whep[0], token=whep[1], options=options)
    return open_source(stream_id, source, options, listen=listen, on_state=on_state)


def _scheme(source: str) -> str:
    if "://" not in source and not source.startswith("file:"):
        return ""
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    return "" if len(scheme) <= 1 else scheme  # "C:\\clip.mp4" is a path


@dataclass(frozen=True, slots=True)
class SourceRules:
    """What sources a backend may ask livesafe to open."""

    #: Directories whose files (at any depth) may be named; none by default.
    dirs: tuple[Path, ...] = ()
    #: URL schemes that may be named.
    schemes: tuple[str, ...] = DEFAULT_SCHEMES

    def problem(self, source: object) -> str | None:
        """Why a backend may not name ``source`` (a sentence), or None if it may."""
        if not isinstance(source, str) or not source:
            return "source must be a non-empty string"
        shown = repr(source[:80]) + ("..." if len(source) > 80 else "")
        if len(source) > MAX_SOURCE:
            return f"source {shown} is {len(source)} characters long; at most {MAX_SOURCE} are allowed"
        if any(ord(c) < 32 or ord(c) == 127 for c in source):
            return f"source {shown} contains control characters"
        try:
            scheme = _scheme(source)
            path = source
            if scheme == "file":
                path = urllib.request.url2pathname(urllib.parse.urlsplit(source).path)
        except ValueError as exc:  # e.g. "x://[": an unterminated IPv6 host
            return f"source {shown} is not a valid URL: {exc}"
        if scheme and scheme != "file":
            if scheme not in self.schemes:
                return (f"source {shown}: scheme {scheme!r} is not allowed here (allowed: "
                        f"{', '.join(self.schemes) or 'none'})")
            return None
        if not self.dirs:
            return (f"source {shown} is a file; files may be named only under a configured source directory "
                    "(livesafe run --source-dir DIR), and none is configured")
        resolved = Path(os.path.realpath(path))
        for base in self.dirs:
            if resolved.is_relative_to(Path(os.path.realpath(base))):
                return None
        return (f"source {shown} is not under a configured source directory "
                f"({', '.join(str(d) for d in self.dirs)})")
