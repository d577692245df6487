"""The analyzers a worker runs (:class:`Analyzers`), built as a policy enables them, from packaged weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from livesafe.analyzers.base import SpeechRecognizer, TextAnalyzer, VisionAnalyzer
from livesafe.core.policy import Policy

if TYPE_CHECKING:
    from livesafe.analyzers.text import TextClassifier

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Analyzers:
    """The models a worker runs; loaded once per process and shared by every stream (thread-safe)."""

    vision: list[VisionAnalyzer] = field(default_factory=list)
    speech: SpeechRecognizer | None = None
    text: list[TextAnalyzer] = field(default_factory=list)

    @classmethod
    def load(cls, policy: Policy) -> Analyzers:
        """Load what the policy enables, from packaged weights (slow: call it off the event loop)."""
        vision, speech, text = load_analyzers(policy)
        return cls(vision, speech, text)


def load_analyzers(
    policy: Policy,
) -> tuple[list[VisionAnalyzer], SpeechRecognizer | None, list[TextAnalyzer]]:
    """Load vision, speech and text analyzers as the policy's ``analyzers`` section says (slow)."""
    vision: list[VisionAnalyzer] = []
    text: list[TextAnalyzer] = []
    speech: SpeechRecognizer | None = None
    cfg = policy.analyzers
    if cfg.nudity:
        from livesafe.analyzers.vision import NudityAnalyzer

        vision.append(NudityAnalyzer())
    if cfg.motion:
        from livesafe.analyzers.motion import MotionViolenceAnalyzer

        vision.append(MotionViolenceAnalyzer())
    if cfg.nudenet:  # optional extra under AGPL-3.0: imported only when a policy turns it on
        from livesafe.analyzers.nudenet import NudeNetAnalyzer

        vision.append(NudeNetAnalyzer())
    if cfg.weapons:  # optional extra (livesafe[weapons]): imported only when a policy turns it on
        from livesafe.analyzers.weapons import WeaponsAnalyzer

        vision.append(WeaponsAnalyzer())
    if cfg.hash_lists:
        from livesafe.analyzers.hashmatch import HashList, HashMatcher

        lists = [HashList(h.path, category=h.category, name=h.name or None) for h in cfg.hash_lists]
        vision.append(
            HashMatcher(lists, max_distance=cfg.hash_max_distance, min_quality=cfg.hash_min_quality)
        )
    if cfg.speech.enabled:
        from livesafe.analyzers.speech import SpeechOptions, load_recognizer

        speech = load_recognizer(
            SpeechOptions(
                backend=cfg.speech.backend,
                model=cfg.speech.model,
                language=cfg.speech.language,
                translate=cfg.speech.translate,
            )
        )
    classifier: TextClassifier | None = None
    if (cfg.text and speech is not None) or cfg.ocr:
        from livesafe.analyzers.text import TextClassifier, TextOptions

        classifier = TextClassifier(TextOptions(extra_terms=dict(cfg.extra_terms)))
    if cfg.text and speech is not None and classifier is not None:
        text.append(classifier)
    if cfg.ocr and classifier is not None:  # on-screen text shares the transcript classifier's models
        from livesafe.analyzers.ocr import OcrAnalyzer

        vision.append(OcrAnalyzer(classifier))
    log.info(
        "analyzers: vision=%s speech=%s text=%s",
        [a.name for a in vision], speech.name if speech else None, [a.name for a in text],
    )
    return vision, speech, text
