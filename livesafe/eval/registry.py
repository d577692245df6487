"""The data sets ``livesafe eval`` knows: :data:`DATASETS`, by name, with the loader of each.

Data sets (:data:`DATASETS`):

* ``davidson``: the held-out 20 % of Davidson et al. 2017 that ``scripts/train_text_heads.py`` does not
  train on (same tweet cleaning, same ``train_test_split(test_size=0.2, random_state=0, stratify=class)``);
  class 0 (hate) is ``hate``;
* ``ethos_binary``: the held-out 30 % of ETHOS binary (``train_test_split(test_size=0.3, random_state=0,
  stratify=label)``); the training script trains on part of the other 70 % and calibrates on the rest,
  never on these rows; ``isHate >= 0.5`` is ``hate``;
* ``ethos_violence``: the held-out half of the 433 hateful comments of ETHOS multi-label (a fixed split,
  ``train_test_split(test_size=0.5, random_state=0, stratify=label)``, see
  :func:`~livesafe.eval.datasets.ethos_violence_split`); ``violence >= 0.5`` (inciting violence, 142
  comments in all) is ``threat``, the rest (hateful without a call to violence) are negatives. The other
  half (:func:`~livesafe.eval.datasets.ethos_violence_dev`) is the development half: the threat rules in
  ``text_patterns.yaml`` may be designed by reading it, never by reading the held-out half. The threat
  head never trains on ETHOS; every item is hateful, so this measures whether ``threat`` separates calls to
  violence from other hate, not its false-alarm rate on ordinary talk;
* ``cssrs``: the held-out 20 % of C-SSRS Reddit users (the script's user split); a user is positive for
  ``self_harm`` when labelled Ideation, Behavior or Attempt (Supportive and Indicator are negatives, as in
  the script's evaluation), and scores the maximum of their posts' scores;
* ``functional``: the project's own functional tests of live-stream talk
  (``livesafe/analyzers/data/text_functional.yaml``, shipped with the package, in the spirit of HateCheck):
  short utterances labelled ``hate`` and ``threat``, each tagged with the functionality it tests (explicit
  derogation, dehumanisation, implicit hate, threats against a group, slurs, and hard negatives: gaming
  trash talk, counter-speech, quoting, victims' reports, neutral and positive identity mentions, reclaimed
  terms, untargeted swearing, negated hate). Besides the per-category figures, the accuracy per tag (an item
  is right when every labelled category is flagged as labelled). Evaluation only: nothing trains or
  calibrates on it;
* ``heldout_suite``: the project's HELD-OUT functional test suite (:mod:`livesafe.eval.suite`, generated
  deterministically from our own templates in ``livesafe/eval/data/heldout_suite.yaml``, shipped with the
  package; ``data_dir`` is not read): over 2,000 short utterances, about 2/3 hateful, each labelled
  ``hateful`` or not and tagged with its functionality (explicit derogation, dehumanisation, implicit
  derogation, direct and normative threats against a group, slurs, hateful profanity, pronoun reference,
  questions, opinions, five spelling variations; and not hateful: negated hate, neutral and positive group
  mentions, counter-speech, abuse of objects, of individuals and of non-protected groups, untargeted
  swearing, reclaimed and look-alike slur words, gaming and sports trash talk), about eight protected
  groups. RIGHT means: an item is predicted hateful when ``hate`` or ``threat`` is flagged at its policy
  floor (what a platform acts on), and the prediction equals the label. Reported: overall accuracy, the
  accuracy on the hateful and on the non-hateful part, and the accuracy per functionality. NEVER used for
  training, calibration or rule tuning (``text_functional.yaml`` is the development set for that);
 the labelled rows of detoxify's Jigsaw ``test.csv``: threat -> ``threat``, insult ->
  ``harassment``, obscene -> ``profanity``, identity_hate -> ``hate``;
* ``speech_refs``: ``audio/refs.tsv`` rows whose reference quality is good or medium, decoded with PyAV to
  16 kHz mono (a row with channel 0 or 1 takes that channel of a stereo file). WER normalisation
  lower-cases and strips punctuation only: numbers are not spelled out, so a reference "in eighteen
  thirteen" against "In 1813." counts as errors.
* ``multilingual_speech``: our own German, Spanish and French sentences (threats, hateful statements,
  benign everyday and gaming talk; ``livesafe/eval/data/multilingual_speech.yaml``, shipped with the
  package; ``data_dir`` is not read) synthesised with espeak-ng and heard by Whisper base translating to
  English, then scored by the text classifier at the policy floors, beside the untranslated transcript and
  our reference translation; per language, with the CPU cost of translating (:mod:`livesafe.eval.spoken`).
  Skipped, with the reason, without espeak-ng or the multilingual model;
* ``fight_clips``: the held-out 25 % of ``video/fight_train`` (two-second CCTV clips, fight / noFight) that
  ``scripts/train_motion.py`` does not train on (both read :func:`livesafe.eval.video.fight_split`);
  a fight clip is ``violence``. Each clip is sampled at 8 fps and fed to the motion analyzer as a stream;
  it scores the maximum of the signals emitted (0 when the clip is too short for a window), so "flagged"
  means the risk engine would have taken violence evidence from it at the policy's floor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from livesafe.eval.datasets import (
    SpeechClip,
    TextSet,
    load_cssrs,
    load_davidson,
    load_ethos_binary,
    load_ethos_violence,
    load_functional,
    load_jigsaw_sample,
    load_speech_refs,
)
from livesafe.eval.spoken import SpokenSet, load_multilingual_speech
from livesafe.eval.suite import load_heldout_suite
from livesafe.eval.video import ClipSet, load_fight_clips

__all__ = ["DATASETS", "Dataset", "Loaded"]


Loaded = TextSet | list[SpeechClip] | ClipSet | SpokenSet


@dataclass(frozen=True, slots=True)
class Dataset:
    """A registered data set: its ``loader`` reads it from the shared data directory."""

    name: str
    kind: Literal["text", "speech", "video"]
    loader: Callable[[Path], Loaded]


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("davidson", "text", load_davidson),
        Dataset("ethos_binary", "text", load_ethos_binary),
        Dataset("ethos_violence", "text", load_ethos_violence),
        Dataset("cssrs", "text", load_cssrs),
        Dataset("jigsaw_sample", "text", load_jigsaw_sample),
        Dataset("functional", "text", load_functional),
        Dataset("heldout_suite", "text", load_heldout_suite),
        Dataset("speech_refs", "speech", load_speech_refs),
        Dataset("multilingual_speech", "speech", load_multilingual_speech),
        Dataset("fight_clips", "video", load_fight_clips),
    )
}
