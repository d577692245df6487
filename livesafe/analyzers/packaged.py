"""Model files inside installed wheels: where one is, and the size and sha256 its wheel's RECORD promises."""

from __future__ import annotations

import base64
import importlib.metadata
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
