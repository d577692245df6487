"""Spoken German, Spanish and French, translated for the English text classifier
(``livesafe eval --dataset multilingual_speech``).

The sentences (``data/multilingual_speech.yaml``, our own, with our own English reference translations)
are synthesised with espeak-ng, each clip a stream of its own, and heard twice by the speech analyzer with
the same multilingual model: once with ``translate`` on (the text is Whisper's English translation, the
original kept), once off (plain transcription, the text as it was said). Both go through the real
:class:`~livesafe.analyzers.text.TextClassifier` (``analyze``, as the pipeline calls it); the reference
translation is scored too, as the classifier's ceiling on a perfect translation. Per language:

* how many ``threat`` sentences reach the threat floor of the policy, how many ``hate`` sentences the hate
  floor, how many of both reach either (``harmful``), and how many ``benign`` ones stay below the hate and
  threat floors (``benign clear``) and below every category's floor (``benign clear (all)``): for the
  translation, the untranslated transcript and the reference;
* the word error rate of the plain transcript against the written sentence (how well Whisper hears
  espeak's voice), the word F1 of the translation against the reference (bag of words, a crude measure of
  translation), how many clips came out translated (the rest fell back to the untranslated transcript:
  the hallucination guards dropped a looping translation), and with ``--speech-language auto`` how many
  clips were detected in the right language;
* CPU seconds per chunk (process time, all threads) and wall seconds, plain against translating.

espeak-ng's voice is robotic and harder to hear than a person: the figures are a floor on what real
speech gives, and their use is to compare settings and languages. Skipped, with the reason, where
espeak-ng or the multilingual model is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import yaml

from livesafe.core.policy import Policy
from livesafe.eval.audio import decode_clip
from livesafe.eval.metrics import edit_distance, normalize_words

if TYPE_CHECKING:
    from livesafe.analyzers.base import SpeechRecognizer
    from livesafe.analyzers.text import TextClassifier
    from livesafe.core.events import Transcript

__all__ = [
    "CLASSES",
    "SPOKEN_PATH",
    "SpokenItem",
    "SpokenSet",
    "eval_spoken",
    "load_multilingual_speech",
    "synthesize",
    "word_f1",
]

SPOKEN_PATH = Path(__file__).resolve().parent / "data" / "multilingual_speech.yaml"
#: The classes of the data file, and the category each harmful one must reach at its floor.
CLASSES = ("threat", "hate", "benign")
EXPECTED = {"threat": "threat", "hate": "hate"}
#: The categories whose flag makes an item harmful (as in ``heldout_suite``).
HARMFUL_CATEGORIES = ("hate", "threat")
#: Floor of a category the policy lacks (as :data:`livesafe.eval.runner.DEFAULT_FLOOR`).
DEFAULT_FLOOR = 0.5
PATHS = ("translated", "untranslated", "reference")


@dataclass(frozen=True, slots=True)
class SpokenItem:
    language: str
    label: str
    text: str
    #: Our English translation of ``text``.
    reference: str


@dataclass(frozen=True, slots=True)
class SpokenSet:
    items: list[SpokenItem]
    #: espeak-ng voice per language, and its speed in words per minute.
    voices: dict[str, str]
    speed: int

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> dict[str, list[int]]:
        """Per category a harmful class must reach, one 0/1 label per item (as :class:`TextSet` has)."""
        return {cat: [int(i.label == label) for i in self.items] for label, cat in EXPECTED.items()}

    def subset(self, keep: Sequence[int]) -> SpokenSet:
        return SpokenSet([self.items[i] for i in keep], self.voices, self.speed)


def load_multilingual_speech(data_dir: Path | None = None, path: Path = SPOKEN_PATH) -> SpokenSet:
    """The sentences of ``path`` in file order (``data_dir`` is not read: the data ships with livesafe)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    items = [
        SpokenItem(language, label, str(s["text"]), str(s["en"]))
        for language, classes in doc["sentences"].items()
        for label in CLASSES
        for s in classes[label]
    ]
    return SpokenSet(items, {str(k): str(v) for k, v in doc["espeak"]["voices"].items()},
                     int(doc["espeak"]["speed"]))


def espeak_path() -> str | None:
    return shutil.which("espeak-ng")


def synthesize(text: str, voice: str, speed: int, workdir: Path) -> npt.NDArray[np.float32]:
    """``text`` spoken by espeak-ng's ``voice`` at ``speed`` words per minute, as 16 kHz mono float32."""

    exe = espeak_path()
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = workdir / "speech.wav"
    subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(wav), text],
                   check=True, capture_output=True, timeout=60)
    return decode_clip(wav, None)


def word_f1(reference: str, hypothesis: str) -> float:
    """F1 of the words two texts share (bags of normalised words, counts clipped); 1.0 when both empty."""
    ref, hyp = Counter(normalize_words(reference)), Counter(normalize_words(hypothesis))
    if not ref and not hyp:
        return 1.0
    common = sum((ref & hyp).values())
    if not common:
        return 0.0
    precision, recall = common / sum(hyp.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def _floors(policy: Policy, categories: Sequence[str]) -> dict[str, float]:
    out = {}
    for category in categories:
        cat_policy = policy.category(category)
        out[category] = cat_policy.floor if cat_policy is not None else DEFAULT_FLOOR
    return out


def _max_scores(classifier: TextClassifier, transcripts: Sequence[Transcript]) -> dict[str, float]:
    """Per category, the highest score the classifier reports on a stream's transcripts (as the pipeline
    calls it: ``analyze``, in order; categories below its report floor count 0)."""
    out: dict[str, float] = dict.fromkeys(classifier.categories, 0.0)
    for signals in classifier.analyze_batch(list(transcripts)):
        for s in signals:
            out[s.category] = max(out[s.category], s.score)
    for t in transcripts[:1]:
        classifier.forget(t.stream_id)
    return out


def _timed(recognizer: SpeechRecognizer, chunk: Any) -> tuple[list[Transcript], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = recognizer.transcribe(chunk)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def _text(transcripts: Sequence[Transcript]) -> str:
    return " ".join(t.text.strip() for t in transcripts)


def _flags(scores: dict[str, float], floors: dict[str, float]) -> list[str]:
    return [c for c, f in floors.items() if scores.get(c, 0.0) >= f]


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-language figures of one language's items."""
    by_label = {label: [r for r in rows if r["label"] == label] for label in CLASSES}
    out: dict[str, Any] = {"n": {label: len(v) for label, v in by_label.items()}}
    for path in PATHS:
        flags = {label: [set(r["flags"][path]) for r in v] for label, v in by_label.items()}
        harmful = set(HARMFUL_CATEGORIES)
        out[path] = {
            "threat": sum(EXPECTED["threat"] in f for f in flags["threat"]),
            "hate": sum(EXPECTED["hate"] in f for f in flags["hate"]),
            "harmful": sum(bool(f & harmful) for f in flags["threat"] + flags["hate"]),
            "benign_clear": sum(not f & harmful for f in flags["benign"]),
            "benign_clear_all": sum(not f for f in flags["benign"]),
        }
    words = sum(r["words"] for r in rows)
    out["asr_wer"] = round(sum(r["errors"] for r in rows) / words, 4) if words else 0.0
    out["translation_word_f1"] = round(float(np.mean([r["word_f1"] for r in rows])), 4) if rows else 0.0
    out["clips_translated"] = sum(r["translated"] for r in rows)
    out["language_right"] = sum(r["detected"] == r["language"] for r in rows)
    for key in ("cpu_plain_s", "cpu_translate_s", "wall_plain_s", "wall_translate_s", "audio_s"):
        out[key] = round(float(np.mean([r[key] for r in rows])), 3) if rows else 0.0
    out["same_original"] = sum(r["same_original"] for r in rows)
    return out


def eval_spoken(
    data: SpokenSet,
    policy: Policy,
    classifier: TextClassifier,
    model: str = "base",
    language: str | None = None,
) -> dict[str, Any]:
    """Figures of ``data`` (see the module docstring); ``language`` ``"auto"`` detects each clip's language,
    otherwise each is decoded in its own. A dict with ``skipped`` (the reason) where it cannot run."""
    from livesafe.analyzers.base import ModelUnavailableError
    from livesafe.analyzers.speech import FasterWhisperRecognizer, SpeechOptions
    from livesafe.core.events import AudioChunk
    from livesafe.core.languages import AUTO, is_english_only

    if espeak_path() is None:
        return {"kind": "spoken", "skipped": "espeak-ng is not installed (apt-get install espeak-ng): "
                "multilingual_speech synthesises its speech with it"}
    if is_english_only(model):
        model = "base"
    auto = language == AUTO

    def recognizer(translate: bool, lang: str) -> FasterWhisperRecognizer:
        return FasterWhisperRecognizer(SpeechOptions(model=model, language=lang, translate=translate))

    try:
        # One pair of recognizers per configured language (or one pair detecting): translating and plain.
        langs = [AUTO] if auto else sorted({i.language for i in data.items})
        translating = {lang: recognizer(True, lang) for lang in langs}
        plain = {lang: recognizer(False, lang) for lang in langs}
    except ModelUnavailableError as exc:
        return {"kind": "spoken", "skipped": f"the multilingual speech model is not available: {exc}"}
    floors = _floors(policy, classifier.categories)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="livesafe-spoken-") as tmp:
        clips = [synthesize(i.text, data.voices[i.language], data.speed, Path(tmp)) for i in data.items]
        if clips:  # warm both up (first calls pay one-off allocations), untimed
            first = AudioChunk("warm-up", 0.0, clips[0])
            for r in (*translating.values(), *plain.values()):
                r.transcribe(first)
                r.forget("warm-up")
        for k, (item, samples) in enumerate(zip(data.items, clips, strict=True)):
            key = AUTO if auto else item.language
            stream = f"spoken-{k}"
            chunk = AudioChunk(stream, 0.0, samples)
            heard, cpu_plain, wall_plain = _timed(plain[key], chunk)
            translated, cpu_translate, wall_translate = _timed(translating[key], chunk)
            original = " ".join(t.original or t.text for t in translated if t.original or not t.translated)
            scores = {
                "translated": _max_scores(classifier, translated),
                "untranslated": _max_scores(classifier, heard),
                "reference": dict(classifier.scores(item.reference)),
            }
            ref_words = normalize_words(item.text)
            rows.append({
                "language": item.language,
                "label": item.label,
                "text": item.text,
                "reference": item.reference,
                "detected": heard[0].language if heard else (translated[0].language if translated else None),
                "transcript": _text(heard),
                "translation": _text(translated),
                "translated": bool(translated) and all(t.translated for t in translated),
                "same_original": original == _text(heard),
                "scores": {p: {c: round(s.get(c, 0.0), 4) for c in floors} for p, s in scores.items()},
                "flags": {p: _flags(s, floors) for p, s in scores.items()},
                "words": len(ref_words),
                "errors": edit_distance(ref_words, normalize_words(_text(heard))),
                "word_f1": round(word_f1(item.reference, _text(translated)), 4),
                "audio_s": len(samples) / 16000,
                "cpu_plain_s": cpu_plain,
                "cpu_translate_s": cpu_translate,
                "wall_plain_s": wall_plain,
                "wall_translate_s": wall_translate,
            })
            for r in (plain[key], translating[key]):
                r.forget(stream)
    languages = sorted({r["language"] for r in rows})
    name = next(iter(translating.values())).name
    return {
        "kind": "spoken",
        "model": name,
        "language": AUTO if auto else "configured",
        "n": len(rows),
        "floors": {c: floors[c] for c in HARMFUL_CATEGORIES if c in floors},
        "languages": {lang: _summary([r for r in rows if r["language"] == lang]) for lang in languages},
        "items": rows,
    }
