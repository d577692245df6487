"""Backend tokens: which bearer token authenticates which backend, reloadable while running.

Tokens come from two places, merged: fixed ones given at start (``--token NAME=TOKEN``,
``LIVESAFE_TOKENS``) and a tokens file (``--tokens-file FILE``, ``LIVESAFE_TOKENS_FILE``), YAML or
JSON, mapping each backend name to its tokens::

    acme: [tok-2025-06, tok-2025-01]   # both valid while acme's clients move to the new one
    globex: tok-globex                 # a single token may be written as a string

Several tokens per backend are valid at once, so a token is rotated without downtime: add the new
one, move the clients to it, remove the old one. The file is re-read when its modification time, size
or inode changes (:meth:`TokenSet.watch`, run by the gateway every ``tokens_reload_s``); write it
atomically (write a temporary file, then rename it over the old one) so a reload never reads half a
file. A file that does not parse or validate is refused at start with a :class:`TokenError` naming the
problem; on a reload it is logged and the tokens already loaded stay in force. Listeners
(:meth:`TokenSet.subscribe`) hear of every change: the gateway closes the connections whose token was
removed.

Lookups (:meth:`TokenSet.lookup`) compare the given token with every known token in constant time
(``hmac.compare_digest``, no early exit), so response timing does not reveal a near match.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TokenError", "TokenSet", "load_tokens_file"]

logger = logging.getLogger(__name__)

#: How often the gateway checks the tokens file for changes, in seconds.
RELOAD_EVERY_S = 2.0


class TokenError(ValueError):
    """A tokens file (or token mapping) that cannot be used; the message says why and where."""


def _parse(data: Any, where: str) -> dict[str, str]:
    """``{token: backend}`` from the parsed file, or :class:`TokenError`."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise TokenError(f"{where}: expected a mapping of backend name -> list of tokens, got {got}")
    tokens: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not name.strip():
            raise TokenError(f"{where}: backend names must be non-empty strings, got {name!r}")
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            raise TokenError(f"{where}: backend {name!r}: expected a token or a non-empty list of tokens")
        for i, token in enumerate(values):
            if not isinstance(token, str) or not token.strip() or token != token.strip():
                raise TokenError(f"{where}: backend {name!r}: token #{i + 1} must be a non-empty string "
                                 "without surrounding whitespace")
            other = tokens.get(token)
            if other is not None and other != name:
                raise TokenError(f"{where}: one token is listed for both {other!r} and {name!r}")
            tokens[token] = name
    if not tokens:
        raise TokenError(f"{where}: no tokens: no backend could connect")
    return tokens


def load_tokens_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a tokens file (YAML or JSON: backend name -> tokens) into ``{token: backend}``."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"{where}: cannot read tokens file: {exc}") from exc
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON: both formats parse here
    except yaml.YAMLError as exc:
        raise TokenError(f"{where}: not valid YAML or JSON: {exc}") from exc
    return _parse(data, where)


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size, st.st_ino


class TokenSet(Mapping[str, str]):
    """The accepted tokens, ``token -> backend name``: fixed ones plus those of a reloadable file.

    A read-only mapping (so it can stand wherever a ``{token: backend}`` dict was accepted) whose
    contents change when the file does. Use :meth:`lookup` to authenticate, not ``[]``.
    """

    def __init__(self, tokens: Mapping[str, str] | None = None, *, file: str | os.PathLike[str] | None = None
                 ) -> None:
        self._fixed = dict(tokens or {})
        for token, name in self._fixed.items():
            if not token or not name:
                raise TokenError(f"empty token or backend name in {name!r}={token!r}")
        self.file = Path(file) if file is not None else None
        self._from_file: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None
        #: Bumped at every change of the accepted tokens.
        self.version = 0
        self._listeners: list[Callable[[], None]] = []
        self._merged: dict[str, str] = {}
        if self.file is not None:
            stamp = self._stat()
            self._from_file = load_tokens_file(self.file)
            self._stamp = stamp
        self._merged = self._merge(self._from_file)

    def _stat(self) -> tuple[int, int, int]:
        assert self.file is not None
        try:
            return _stamp(self.file)
        except OSError as exc:
            raise TokenError(f"{self.file}: cannot read tokens file: {exc}") from exc

    def _merge(self, from_file: Mapping[str, str]) -> dict[str, str]:
        merged = dict(self._fixed)
        for token, name in from_file.items():
            if merged.get(token, name) != name:
                raise TokenError(f"{self.file}: a token of {name!r} is also given for {merged[token]!r} "
                                 "on the command line or in LIVESAFE_TOKENS")
            merged[token] = name
        return merged

    # -- the mapping -----------------------------------------------------------------------------

    def __getitem__(self, token: str) -> str:
        return self._merged[token]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._merged))

    def __len__(self) -> int:
        return len(self._merged)

    def backends(self) -> dict[str, int]:
        """How many tokens each backend has (for logs; never the tokens themselves)."""
        counts: dict[str, int] = {}
        for name in self._merged.values():
            counts[name] = counts.get(name, 0) + 1
        return counts

    def lookup(self, token: str) -> str | None:
        """The backend ``token`` authenticates, or None; constant time over all tokens."""
        given, found = token.encode("utf-8"), None
        for known, name in list(self._merged.items()):
            if hmac.compare_digest(given, known.encode("utf-8")):
                found = name
        return found

    # -- reloading -------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after each change of the tokens; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _read_if_changed(self) -> tuple[tuple[int, int, int], dict[str, str] | TokenError] | None:
        """(new stamp, tokens or the error) if the file changed since last read, else None. No state."""
        assert self.file is not None
        try:
            stamp = self._stat()
        except TokenError as exc:
            return (0, 0, 0), exc  # the file went away: an error, reported once
        if stamp == self._stamp:
            return None
        try:
            return stamp, self._merge(load_tokens_file(self.file))
        except TokenError as exc:
            return stamp, exc

    def _apply(self, result: tuple[tuple[int, int, int], dict[str, str] | TokenError] | None) -> bool:
        if result is None:
            return False
        stamp, loaded = result
        if stamp == self._stamp:
            return False
        self._stamp = stamp  # a bad version is reported once, not at every check
        if isinstance(loaded, TokenError):
            logger.error("tokens file not reloaded, the previous tokens stay in force: %s", loaded)
            return False
        if loaded == self._merged:
            return False
        removed = sum(1 for token in self._merged if token not in loaded)
        added = sum(1 for token in loaded if token not in self._merged)
        self._merged = loaded
        self._from_file = {t: n for t, n in loaded.items() if t not in self._fixed}
        self.version += 1
        logger.info("tokens file %s reloaded: %d token(s) added, %d removed; tokens per backend: %s",
                    self.file, added, removed, self.backends())
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                logger.exception("token change listener failed")
        return True

    def reload(self) -> bool:
        """Re-read the file if it changed; True if the accepted tokens changed. Never raises for a bad
        file: it is logged and the tokens in force are kept."""
        if self.file is None:
            return False
        return self._apply(self._read_if_changed())

    async def watch(self, every_s: float = RELOAD_EVERY_S) -> None:
        """Check the file every ``every_s`` seconds until cancelled (reading it off the event loop)."""
        if self.file is None:
            return
        while True:
            await asyncio.sleep(every_s)
            self._apply(await asyncio.to_thread(self._read_if_changed))
