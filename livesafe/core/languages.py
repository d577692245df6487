"""Speech languages and model names a policy may name (pure: validated before any model loads)."""

from __future__ import annotations

from pathlib import PurePath

TINY_EN = "tiny.en"
BASE = "base"
#: Model names livesafe resolves itself; anything else must be a local model directory (or ``.pt``).
PACKAGED_MODELS: tuple[str, ...] = (TINY_EN, BASE)
#: ``language`` value that means "detect the language of the stream".
AUTO = "auto"

#: The 99 language codes of Whisper's multilingual models (tiny to large-v2), in token order.
WHISPER_LANGUAGES: tuple[str, ...] = tuple(
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr "
    "bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn "
    "yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su"
    .split()
)
#: The language Whisper's ``translate`` task produces (and the only one the text classifiers score).
ENGLISH = "en"


def is_english_only(model: str) -> bool:
    """True for Whisper's English-only models: ``tiny.en`` and any name or directory ending in ``.en``."""
    return PurePath(model.rstrip("/")).name.endswith(".en")


def check_language(model: str, language: str) -> str | None:
    """Why ``language`` cannot be used with ``model`` (a sentence), or None when it can."""
    if language != AUTO and language not in WHISPER_LANGUAGES:
        return f"unknown language {language!r}: use 'auto' or a Whisper language code (en, de, es, ...)"
    if language != ENGLISH and is_english_only(model):
        return (
            f"model {model!r} is English-only and cannot transcribe language {language!r}; "
            f"use model {BASE!r} (multilingual) for other languages or language detection"
        )
    return None


def check_translate(model: str, translate: bool) -> str | None:
    """Why ``translate`` cannot be used with ``model`` (a sentence), or None when it can.

    Only multilingual Whisper models translate (to English, Whisper's ``translate`` task); an English-only
    model has no such task."""
    if translate and is_english_only(model):
        return (
            f"model {model!r} is English-only and cannot translate; use model {BASE!r} (multilingual) "
            "with translate, or set translate: false"
        )
    return None
