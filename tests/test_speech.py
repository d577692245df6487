"""Speech recognition on real packaged weights and real audio: reference clips and the demo stream."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from livesafe.analyzers.base import ModelUnavailableError, SpeechRecognizer
from livesafe.analyzers.speech import (
    FasterWhisperRecognizer,
    OpenAIWhisperRecognizer,
    RawSegment,
    SpeechOptions,
    is_stock_phrase,
    keep_segment,
    load_recognizer,
    to_transcripts,
)
from livesafe.core.events import AudioChunk, Transcript, Word
from tests.builders import decode_audio, full_text, normalise, reference


def assert_well_formed(transcripts: list[Transcript], chunk: AudioChunk, model: str) -> None:
    """Media times inside the chunk, words monotonic and inside their transcript, fields filled in."""
    last_start = chunk.media_ts
    for t in transcripts:
        assert t.stream_id == chunk.stream_id
        assert t.model == model
        assert chunk.media_ts <= t.media_ts <= t.end_ts <= chunk.end_ts
        assert t.words, "word timestamps are on by default"
        for w in t.words:
            assert last_start <= w.start <= w.end
            assert t.media_ts <= w.start and w.end <= t.end_ts
            assert w.word.strip() == w.word and w.word
            last_start = w.start


@pytest.fixture(scope="module")
def faster() -> FasterWhisperRecognizer:
    return FasterWhisperRecognizer(SpeechOptions())


@pytest.fixture(scope="module")
def jfk(shared_data: Path) -> AudioChunk:
    """jfk.flac as a chunk that starts 100 s into a stream, so offsets are visible."""
    return AudioChunk("jfk", 100.0, decode_audio(shared_data / "audio" / "whisper" / "jfk.flac"))


# --- guards and time mapping, without a model --------------------------------------------------------


def seg(
    text: str,
    start: float = 0.0,
    end: float = 1.0,
    words: tuple[Word, ...] = (),
    no_speech_prob: float = 0.1,
    avg_logprob: float = -0.3,
    compression_ratio: float = 1.2,
) -> RawSegment:
    return RawSegment(start, end, text, no_speech_prob, avg_logprob, compression_ratio, words)


def test_guards_follow_whisper_rules() -> None:
    o = SpeechOptions()
    assert keep_segment(seg(" Hello there."), None, o)
    # no_speech high AND logprob low: Whisper's silence rule. Either alone is not enough.
    assert not keep_segment(seg("Hello", no_speech_prob=0.9, avg_logprob=-1.2), None, o)
    assert keep_segment(seg("Hello", no_speech_prob=0.9, avg_logprob=-0.5), None, o)
    assert keep_segment(seg("Hello", no_speech_prob=0.2, avg_logprob=-1.5), None, o)
    # ... but Whisper's stock "You" on noise goes on either (the stock-phrase guard, below).
    assert not keep_segment(seg("You", no_speech_prob=0.9, avg_logprob=-0.5), None, o)
    assert not keep_segment(seg("la la la la la la la la", compression_ratio=3.1), None, o)
    assert not keep_segment(seg(" ... !?"), None, o)
    assert not keep_segment(seg(""), None, o)
    assert not keep_segment(seg("Thank you."), seg(" thank you"), o)
    assert keep_segment(seg("Thank you."), seg("Thank you so much."), o)


# Stock outro phrases: (text, no_speech_prob, avg_logprob, voiced, kept). The weak rows are what tiny.en
# produced after "What joy there is in living." on speechbrain/spk2_snt2.wav: openai-whisper beam 5
# "Thank you for watching." (0.387, -1.188), faster-whisper greedy "Thank you." (0.377, -1.331).
STOCK_CASES = [
    ("Thank you for watching.", 0.387, -1.188, 1.0, False),
    ("Thank you.", 0.377, -1.331, 1.0, False),
    ("Thank you very much for watching!", 0.30, -0.40, 1.0, False),  # no_speech moderate alone
    ("Thanks for watching!", 0.05, -0.85, 1.0, False),  # low log-probability alone
    ("Please subscribe to my channel.", 0.05, -0.30, 0.2, False),  # mostly outside the voiced audio
    ("Subtitles by the Amara.org community", 0.20, -0.75, 1.0, False),
    ("Untertitel im Auftrag des ZDF, 2017", 0.28, -0.5, 1.0, False),
    # Said clearly (espeak-ng clip decoded by base: 0.015, -0.273): kept.
    ("Thank you for watching and please subscribe to my channel.", 0.015, -0.273, 1.0, True),
    ("Thank you.", 0.02, -0.25, 1.0, True),
    # Not a stock phrase: weak evidence alone is not a reason (Whisper's own rule handles silence).
    ("Thank you for coming to the stream.", 0.387, -1.188, 1.0, True),
    ("You watching this?", 0.30, -0.9, 0.2, True),
]


@pytest.mark.parametrize(("text", "no_speech", "logprob", "voiced", "kept"), STOCK_CASES)
def test_stock_phrases_are_dropped_only_on_weak_evidence(
    text: str, no_speech: float, logprob: float, voiced: float, kept: bool
) -> None:
    segment = RawSegment(0.0, 1.0, text, no_speech, logprob, 1.0, voiced=voiced)
    assert keep_segment(segment, None, SpeechOptions()) is kept


def test_stock_phrase_matching() -> None:
    assert is_stock_phrase(" THANKS FOR WATCHING!!")
    assert is_stock_phrase("ok so thank you so much for watching guys")
    assert is_stock_phrase("Sous-titres réalisés par la communauté d'Amara.org")
    assert not is_stock_phrase("thanks for watching-list tips")  # whole words only: "watchinglist"
    assert not is_stock_phrase("thank you for your help")
    assert not is_stock_phrase("you know")


def test_times_are_offset_clamped_and_monotonic() -> None:
    chunk = AudioChunk("s", 50.0, np.zeros(16000 * 4, dtype=np.float32))
    words = (Word(0.5, 0.9, " I"), Word(0.4, 1.2, " know"), Word(3.8, 4.6, " you."), Word(4.6, 4.7, " "))
    out = to_transcripts(chunk, [seg(" I know you.", 0.5, 4.6, words=words)], SpeechOptions(), "m")
    (t,) = out
    assert (t.media_ts, t.end_ts, t.text, t.model) == (50.5, 54.0, "I know you.", "m")
    assert [(w.word, w.start, w.end) for w in t.words] == [
        ("I", 50.5, 50.9),
        ("know", 50.5, 51.2),  # started before the previous word: moved up to it
        ("you.", 53.8, 54.0),  # ran past the chunk end: clamped
    ]


def test_options_and_missing_models() -> None:
    with pytest.raises(ValueError, match="backend"):
        SpeechOptions(backend="kaldi")
    with pytest.raises(ModelUnavailableError, match="never downloads"):
        FasterWhisperRecognizer(SpeechOptions(model="/nonexistent/whisper-base"))
    with pytest.raises(ModelUnavailableError, match="never downloads"):
        FasterWhisperRecognizer(SpeechOptions(model="base.en"))


# --- faster-whisper ----------------------------------------------------------------------------------


@pytest.mark.models
def test_protocol_and_input_checks(faster: FasterWhisperRecognizer) -> None:
    assert isinstance(faster, SpeechRecognizer)
    assert faster.name == "faster-whisper/tiny.en"
    assert faster.transcribe(AudioChunk("s", 0.0, np.zeros(0, dtype=np.float32))) == []
    with pytest.raises(ValueError, match="16000 Hz"):
        faster.transcribe(AudioChunk("s", 0.0, np.zeros(8000, dtype=np.float32), sample_rate=8000))


@pytest.mark.models
@pytest.mark.shared_data
def test_faster_whisper_transcribes_jfk(
    faster: FasterWhisperRecognizer, jfk: AudioChunk, shared_data: Path
) -> None:
    out = faster.transcribe(jfk)
    assert full_text(out) == normalise(reference(shared_data, "whisper/jfk.flac"))
    assert_well_formed(out, jfk, "faster-whisper/tiny.en")
    assert out[0].words[0].start < 100.5  # "And" is the first sound of the clip
    assert out[-1].words[-1].end > 110.0  # "country" ends just before the clip does


@pytest.mark.models
def test_threat_demo_sentence_is_found_at_its_time(faster: FasterWhisperRecognizer, demo_dir: Path) -> None:
    script = json.loads((demo_dir / "streams.json").read_text(encoding="utf-8"))["threat"]["script"]
    line = next(s for s in script if s["text"].startswith("I know where you live"))
    chunk = AudioChunk("threat", 0.0, decode_audio(demo_dir / "threat.mp4"))
    out = faster.transcribe(chunk)
    assert_well_formed(out, chunk, faster.name)
    (hit,) = [t for t in out if "i know where you live" in normalise(t.text)]
    assert normalise(hit.text) == normalise(line["text"])
    assert abs(hit.media_ts - line["start"]) <= 1.0
    kill = next(w for w in hit.words if normalise(w.word) == "kill")
    assert line["start"] <= kill.start <= line["end"] + 0.5
    # Every scripted line is heard, and nothing between them (the gaps are silence).
    assert len(out) == len(script)


@pytest.mark.models
def test_chunk_inside_a_stream_keeps_stream_times(faster: FasterWhisperRecognizer, demo_dir: Path) -> None:
    audio = decode_audio(demo_dir / "threat.mp4")
    chunk = AudioChunk("threat", 10.0, audio[10 * 16000 : 18 * 16000])
    (t,) = faster.transcribe(chunk)
    assert "where you live" in normalise(t.text)
    assert 11.0 <= t.media_ts <= 13.0
    assert_well_formed([t], chunk, faster.name)


def noise_cases() -> dict[str, npt.NDArray[np.float32]]:
    rng = np.random.default_rng(7)
    n = 16000 * 6
    t = np.arange(n) / 16000
    white = rng.standard_normal(n)
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.linspace(brown[0], brown[-1], n)
    cases = {
        "digital silence": np.zeros(n),
        "dither": white * 1e-5,
        "white noise": white * 0.1,
        "loud white noise": white * 0.3,
        "brown noise": 0.5 * brown / np.abs(brown).max(),
        "mains hum": 0.3 * np.sin(2 * np.pi * 60 * t),
        "clicks": (rng.random(n) < 0.001) * 0.8,
    }
    return {name: a.astype(np.float32) for name, a in cases.items()}


NOISE = noise_cases()


@pytest.mark.models
@pytest.mark.parametrize("name", sorted(NOISE))
def test_no_transcript_for_silence_or_noise(faster: FasterWhisperRecognizer, name: str) -> None:
    assert faster.transcribe(AudioChunk("s", 3.0, NOISE[name])) == []


@pytest.mark.models
@pytest.mark.shared_data
def test_outro_hallucination_after_speech_is_dropped(shared_data: Path) -> None:
    """tiny.en, greedy, adds "Thank you." after the sentence of spk2_snt2 (no_speech 0.38, logprob -1.3)."""
    chunk = AudioChunk("s", 0.0, decode_audio(shared_data / "audio" / "speechbrain" / "spk2_snt2.wav"))
    greedy = FasterWhisperRecognizer(SpeechOptions(beam_size=1))
    assert full_text(greedy.transcribe(chunk)) == "what joy there is in living"
    unguarded = SpeechOptions(
        beam_size=1, hallucination_no_speech=1.0, hallucination_log_prob=-100.0, hallucination_min_voiced=0.0
    )
    out = FasterWhisperRecognizer(unguarded).transcribe(chunk)
    assert full_text(out) == "what joy there is in living thank you"


@pytest.mark.models
def test_model_level_guards_alone_reject_noise() -> None:
    """Without the silence and VAD gates, Whisper itself runs on the noise and the segment guards hold."""
    bare = FasterWhisperRecognizer(SpeechOptions(vad_filter=False, silence_rms=0.0, beam_size=1))
    for name in ("white noise", "loud white noise"):
        assert bare.transcribe(AudioChunk("s", 0.0, NOISE[name])) == [], name


@pytest.mark.models
@pytest.mark.shared_data
def test_concurrent_calls_are_safe_and_deterministic(
    faster: FasterWhisperRecognizer, jfk: AudioChunk
) -> None:
    expected = faster.transcribe(jfk)
    results: list[list[Transcript]] = []
    threads = [threading.Thread(target=lambda: results.append(faster.transcribe(jfk))) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == [expected] * 3


# --- openai-whisper on converted weights -------------------------------------------------------------


@pytest.fixture(scope="module")
def openai(tmp_path_factory: pytest.TempPathFactory) -> OpenAIWhisperRecognizer:
    pytest.importorskip("whisper")
    cache = tmp_path_factory.getbasetemp() / "livesafe-cache"  # shared with tests/test_whisper_convert.py
    recognizer = load_recognizer(SpeechOptions(backend="openai-whisper", cache_dir=str(cache)))
    assert isinstance(recognizer, OpenAIWhisperRecognizer)
    return recognizer


@pytest.mark.models
@pytest.mark.shared_data
def test_openai_whisper_on_converted_weights_transcribes_jfk(
    openai: OpenAIWhisperRecognizer, jfk: AudioChunk, shared_data: Path
) -> None:
    out = openai.transcribe(jfk)
    assert full_text(out) == normalise(reference(shared_data, "whisper/jfk.flac"))
    assert_well_formed(out, jfk, "openai-whisper/tiny.en")
    assert out[0].words[0].start < 100.5


@pytest.mark.models
def test_openai_whisper_rejects_silence(openai: OpenAIWhisperRecognizer) -> None:
    for name in ("digital silence", "white noise", "mains hum"):
        assert openai.transcribe(AudioChunk("s", 0.0, NOISE[name])) == [], name
