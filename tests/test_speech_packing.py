"""Several utterances in one Whisper window (``speech_packing``, ``transcribe_batch``, ``BatchedSpeech``):
pure packing and splitting, then the real packaged model on the demo streams' spoken lines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from livesafe.analyzers.batching import BatchedSpeech, transcribe
from livesafe.analyzers.speech import FasterWhisperRecognizer, SpeechOptions
from livesafe.analyzers.speech_packing import pack, split
from livesafe.core.events import AudioChunk, Word
from tests.builders import decode_audio, normalise
from tests.test_speech import assert_well_formed

RATE = 16000


def _tone(seconds: float) -> np.ndarray:
    return np.full(round(seconds * RATE), 0.1, dtype=np.float32)


def test_pack_fills_windows_in_order_with_gaps() -> None:
    windows = pack([_tone(3), _tone(4), _tone(5), _tone(30), _tone(2)], rate=RATE, max_s=10, gap_s=1)
    assert [w.spans for w in windows] == [
        ((0, 0.0, 3.0), (1, 4.0, 8.0)),  # 3 + 1 + 4 = 8; the next would end at 14
        ((2, 0.0, 5.0),),
        ((3, 0.0, 30.0),),  # longer than a window: alone
        ((4, 0.0, 2.0),),
    ]
    assert len(windows[0].samples) == 8 * RATE  # the trailing gap is not kept
    assert not windows[0].samples[3 * RATE : 4 * RATE].any()


def test_split_hands_each_utterance_its_own_words_in_its_own_time() -> None:
    (window,) = pack([_tone(3), _tone(4)], rate=RATE, max_s=10, gap_s=1)  # spans 0-3 and 4-8
    words = [Word(0.1, 0.5, " Hello"), Word(0.6, 2.9, " there."), Word(3.05, 3.35, " Uh"),
             Word(4.1, 4.6, " Second"), Word(4.7, 5.0, " one."), Word(3.45, 3.55, " Ghost")]
    pieces = split([(0.0, 5.0, "Hello there. Uh Second one. Ghost", words)], window)
    first, second = ([p for _, p in own] for own in pieces)
    assert [p.text for p in first] == ["Hello there. Uh"]  # "Uh" ends 0.3 s into the gap: still the first
    assert (first[0].start, first[0].end) == (0.1, 3.35)
    assert [p.text for p in second] == ["Second one."]  # "Ghost", mid-gap, belongs to nobody
    assert second[0].start == pytest.approx(0.1) and second[0].words[-1].end == pytest.approx(1.0)
    # Without word timestamps, a whole segment goes to the utterance holding its middle.
    pieces = split([(0.0, 2.5, "Hello there.", ()), (4.5, 7.5, "Second one.", ())], window)
    assert [[p.text for _, p in own] for own in pieces] == [["Hello there."], ["Second one."]]


@pytest.fixture(scope="module")
def recognizer() -> FasterWhisperRecognizer:
    return FasterWhisperRecognizer(SpeechOptions(cpu_threads=1))


@pytest.fixture(scope="module")
def lines(demo_dir: Path) -> list[tuple[AudioChunk, str]]:
    """Every scripted line of both demo streams as its own utterance, at its time in its stream."""
    script = json.loads((demo_dir / "streams.json").read_text(encoding="utf-8"))
    out = []
    for name in ("benign", "threat"):
        audio = decode_audio(demo_dir / f"{name}.mp4")
        for line in script[name]["script"]:
            start, end = line["start"] - 0.3, line["end"] + 0.5
            samples = audio[round(start * RATE) : round(end * RATE)]
            out.append((AudioChunk(name, start, samples), line["text"]))
    return out


def _words(text: str) -> set[str]:
    return set(normalise(text).split())


@pytest.mark.models
def test_packed_utterances_are_heard_as_they_are_alone(
    recognizer: FasterWhisperRecognizer, lines: list[tuple[AudioChunk, str]]
) -> None:
    chunks = [c for c, _ in lines]
    alone = [recognizer.transcribe(c) for c in chunks]
    packed = recognizer.transcribe_batch(chunks)
    assert len(packed) == len(chunks)
    for chunk, (_, text), one, many in zip(chunks, lines, alone, packed, strict=True):
        assert_well_formed(many, chunk, recognizer.name)
        heard = " ".join(t.text for t in many)
        # The line is heard in its own chunk (tiny.en gets a few words wrong: "knead" -> "need"), and
        # nothing of its neighbours.
        assert len(_words(heard) & _words(text)) >= 0.75 * len(_words(text)), (heard, text)
        assert len(_words(heard) - _words(text)) <= 2, (heard, text)
        assert abs(many[0].media_ts - one[0].media_ts) <= 0.6
    # A chunk alone in its window is decoded exactly as transcribe() decodes it.
    assert recognizer.transcribe_batch(chunks[:1]) == alone[:1]
    assert recognizer.transcribe_batch([]) == []


@pytest.mark.models
def test_pack_s_0_transcribes_every_chunk_alone(lines: list[tuple[AudioChunk, str]]) -> None:
    chunks = [c for c, _ in lines[:3]]
    off = FasterWhisperRecognizer(SpeechOptions(cpu_threads=1, pack_s=0))
    assert off.transcribe_batch(chunks) == [off.transcribe(c) for c in chunks]
    with pytest.raises(ValueError, match="pack_s"):
        SpeechOptions(pack_s=29)


@pytest.mark.models
async def test_streams_share_windows_through_the_batched_recognizer(
    recognizer: FasterWhisperRecognizer, lines: list[tuple[AudioChunk, str]]
) -> None:
    async with BatchedSpeech(recognizer) as speech:
        results = await asyncio.gather(*(transcribe(speech, chunk) for chunk, _ in lines))
        stats = speech.batcher.stats
    assert stats.items == len(lines) and stats.largest > 1  # calls queued while a batch ran were packed
    for (chunk, text), heard in zip(lines, results, strict=True):
        assert all(t.stream_id == chunk.stream_id for t in heard)
        assert len(_words(" ".join(t.text for t in heard)) & _words(text)) >= 0.75 * len(_words(text))
    # Outside the batcher, the wrapper transcribes alone.
    assert speech.transcribe(lines[0][0]) == recognizer.transcribe(lines[0][0])
