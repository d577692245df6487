"""Voice-activity segmentation of live audio with Silero VAD (ONNX, no torch), so silence never reaches
speech recognition and utterances reach it whole.

Audio is scored in 32 ms frames (512 samples at 16 kHz) by the Silero model that ships inside
faster-whisper, carrying the model's recurrent state and a 64-sample context from push to push, so a
stream is scored exactly as if it arrived in one piece. An utterance starts at the first frame scoring
``threshold`` or more (padded back by ``pad_s``) and ends after ``min_silence_s`` below
``threshold - 0.15`` (padded forward); one longer than ``max_utterance_s`` is cut at its quietest frame
and the next one starts ``overlap_s`` earlier, so a word on the cut is heard whole at least once.
Audio outside utterances is dropped and counted, never transcribed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from livesafe.core.events import AudioChunk

RATE = 16000
FRAME = 512
CONTEXT = 64
FRAME_S = FRAME / RATE


@dataclass(frozen=True, slots=True)
class VadOptions:
    threshold: float = 0.5
    min_silence_s: float = 0.3
    pad_s: float = 0.2
    min_utterance_s: float = 0.25
    max_utterance_s: float = 12.0
    #: Audio repeated at the start of the next utterance when a long one is cut mid-speech.
    overlap_s: float = 1.0


def _model_path() -> Path:
    import faster_whisper

    path = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"Silero VAD model not found at {path} (reinstall faster-whisper)")
    return path


class _Model:
    """One ONNX Runtime session shared by every stream (sessions are thread-safe); state is per stream."""

    _lock = threading.Lock()
    _session: Any = None

    @classmethod
    def session(cls) -> Any:
        with cls._lock:
            if cls._session is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.inter_op_num_threads = 1
                opts.intra_op_num_threads = 1
                opts.log_severity_level = 4
                cls._session = ort.InferenceSession(
                    str(_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            return cls._session


class VadScorer:
    """Speech probability per 32 ms frame of one continuous stream."""

    def __init__(self) -> None:
        self._session = _Model.session()
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def score(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Probabilities for ``frames`` (a multiple of 512 samples), in order."""
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        batch = frames.reshape(-1, FRAME)
        contexts = np.concatenate([self._context[None, :], batch[:-1, -CONTEXT:]], axis=0)
        windows = np.concatenate([contexts, batch], axis=1).astype(np.float32, copy=False)
        probs, self._h, self._c = self._session.run(None, {"input": windows, "h": self._h, "c": self._c})
        self._context = batch[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)


class VadSegmenter:
    """Turns a continuous 16 kHz mono signal into utterance chunks; same interface as AudioWindower."""

    def __init__(self, stream_id: str, options: VadOptions | None = None) -> None:
        self.stream_id = stream_id
        self.options = options or VadOptions()
        self.rate = RATE
        #: Seconds handed on as speech, and seconds scored so far.
        self.voiced_seconds = 0.0
        self.scored_seconds = 0.0
        self._scorer = VadScorer()
        self._pad = round(self.options.pad_s / FRAME_S)
        self._overlap = round(self.options.overlap_s / FRAME_S)
        self._carried = 0  # frames at the buffer's start already handed on (overlap)
        self._pending = np.zeros(0, dtype=np.float32)  # samples not yet scored (< one frame)
        self._audio = np.zeros(0, dtype=np.float32)  # scored frames still buffered
        self._probs: list[float] = []
        self._start: float | None = None  # media time of _audio[0]
        self._speech_from: int | None = None  # frame (in the buffer) where the current utterance began
        self._silent = 0

    def push(self, media_ts: float, samples: npt.NDArray[np.float32]) -> Iterator[AudioChunk]:
        if self._start is None:
            self._start = media_ts
        self._pending = np.concatenate([self._pending, samples])
        usable = len(self._pending) // FRAME * FRAME
        if usable == 0:
            return
        frames, self._pending = self._pending[:usable], self._pending[usable:]
        self._audio = np.concatenate([self._audio, frames])
        self.scored_seconds += usable / RATE
        for p in self._scorer.score(frames):
            self._probs.append(float(p))
            yield from self._step(float(p))

    @property
    def dropped_seconds(self) -> float:
        """Seconds scored as non-speech (or too short to be an utterance) and never handed on."""
        return max(0.0, self.scored_seconds - self.voiced_seconds - len(self._probs) * FRAME_S)

    def flush(self) -> Iterator[AudioChunk]:
        """End of stream: the utterance in progress, if any."""
        if self._start is None:
            return
        n = len(self._probs)
        if self._speech_from is not None:
            yield from self._emit(n)
        self._drop(n)

    def _step(self, prob: float) -> Iterator[AudioChunk]:
        o = self.options
        n = len(self._probs)
        if self._speech_from is None:
            if prob >= o.threshold:
                self._speech_from = max(0, n - 1 - self._pad)
                self._silent = 0
            elif n > self._pad + 1:
                self._drop(n - self._pad - 1)  # silence older than the padding is never needed
            return
        self._silent = self._silent + 1 if prob < o.threshold - 0.15 else 0
        if self._silent * FRAME_S >= o.min_silence_s:
            end = n - self._silent + self._pad + 1
            yield from self._emit(end)
            self._drop(end)
        elif (n - self._speech_from) * FRAME_S >= o.max_utterance_s:
            half = self._speech_from + (n - self._speech_from) // 2
            cut = half + int(np.argmin(self._probs[half:])) + 1
            yield from self._emit(cut)
            # Still speaking: the next utterance starts ``overlap_s`` before the cut, so a word cut in
            # two is heard whole once; the pipeline drops words it already has (by word timestamps).
            keep = min(cut, self._overlap)
            self._drop(cut - keep)
            self._carried = keep
            self._speech_from = 0

    def _emit(self, end: int) -> Iterator[AudioChunk]:
        """Hand on frames [speech_from, end) as an utterance (or drop it if too short)."""
        assert self._start is not None and self._speech_from is not None
        begin = self._speech_from
        seconds = (end - begin) * FRAME_S
        carried, self._carried = self._carried, 0
        self._speech_from = None
        self._silent = 0
        if seconds < self.options.min_utterance_s:
            return
        self.voiced_seconds += seconds - carried * FRAME_S
        yield AudioChunk(
            self.stream_id, round(self._start + begin * FRAME_S, 6),
            self._audio[begin * FRAME : end * FRAME].copy(), RATE,
        )

    def _drop(self, frames: int) -> None:
        """Forget the first ``frames`` frames of the buffer (already emitted or counted)."""
        assert self._start is not None
        self._audio = self._audio[frames * FRAME :]
        self._probs = self._probs[frames:]
        self._start += frames * FRAME_S
        if self._speech_from is not None:
            self._speech_from = max(0, self._speech_from - frames)
