"""Model files: where one is inside its installed wheel (with the size and sha256 its RECORD promises), and
the cache directory that models assembled or converted from them are installed into, whole or not at all."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from livesafe.analyzers.base import ModelUnavailableError


@dataclass(frozen=True, slots=True)
class PackagedFile:
    """One file of an installed distribution, with what its RECORD says of it (None where it says nothing)."""

    package: str  # the pip name, for error messages
    path: Path
    version: str
    size: int | None
    sha256: str | None  # hex


def packaged_file(package: str, relpath: str, missing: str) -> PackagedFile:
    """The file ``relpath`` of the installed distribution ``package``. ModelUnavailableError with
    ``missing`` (what to install) when the package is absent, or naming the file when it is gone."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelUnavailableError(missing) from exc
    size: int | None = None
    sha256: str | None = None
    for record in dist.files or ():
        if record.as_posix() == relpath:
            size = record.size
            if record.hash is not None and record.hash.mode == "sha256":
                value = record.hash.value
                sha256 = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    path = Path(str(dist.locate_file(relpath)))
    if not path.is_file():
        raise ModelUnavailableError(
            f"{path} is missing from {package} {dist.version}: pip install --force-reinstall {package}"
        )
    return PackagedFile(package, path, dist.version, size, sha256)


_CHUNK = 1 << 22


def default_cache_dir() -> Path:
    """``$LIVESAFE_CACHE_DIR`` or ``~/.cache/livesafe``: where assembled and converted models are kept."""
    env = os.environ.get("LIVESAFE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "livesafe"


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def install_dir(tmp: Path, final: Path, complete: Callable[[Path], bool]) -> None:
    """Move the built directory ``tmp`` to ``final`` atomically. An existing ``final`` (incomplete or corrupt:
    the caller found it so) is moved aside and deleted first; losing a race to another process that
    installed a ``complete`` one is fine, any other failure to rename is raised."""
    if final.exists():
        trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
        os.replace(final, trash / "x")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:
        if not complete(final):  # not another process winning the race: a real failure
            raise
