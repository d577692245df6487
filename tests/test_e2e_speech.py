"""End to end from speech: clips synthesised with espeak-ng go through the real pipeline (PyAV decode,
Silero VAD, faster-whisper tiny.en, the shipped text heads and rules, the risk engine and the ladder).

A spoken threat and spoken hate against a group each bring an intervention (warn or above) within a
few seconds of media time after the offending words; benign talk about the same groups (news, support,
condemnation of hate) brings none. Skipped where espeak-ng is not installed (Debian: ``apt-get install
espeak-ng``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livesafe.analyzers.registry import Analyzers
from livesafe.core.events import Intervention, Signal, Transcript
from livesafe.core.monitor import Monitor
from livesafe.core.policy import load_policy
from livesafe.ingest.av_source import AVSource
from livesafe.pipeline import StreamWorker

pytestmark = [
    pytest.mark.models,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

#: Largest media delay allowed from the end of the offending words to the decision (the end of the
#: utterance whose signal triggered the intervention).
MAX_DELAY_S = 5.0
#: Actions that count as an intervention (``observe`` only records).
ACTIONS = ("warn", "restrict", "cut")
RATE = 22050  # espeak-ng's output rate


@dataclass(frozen=True, slots=True)
class Part:
    """A stretch of a clip: spoken ``text`` (None: ``pause_s`` of silence); ``offending`` marks the
    words the test times the intervention against."""

    text: str | None = None
    pause_s: float = 0.0
    offending: bool = False


@dataclass(frozen=True, slots=True)
class Clip:
    path: Path
    #: Media span of the offending words, if any.
    offending: tuple[float, float] | None


CLIPS: dict[str, list[Part]] = {
    "threat": [
        Part(pause_s=2.0),
        Part("Okay chat, welcome back. Let me read some of the messages."),
        Part(pause_s=1.5),
        Part("I know where you live. I am going to find you and kill you.", offending=True),
        Part(pause_s=7.0),
    ],
    "hate": [
        Part(pause_s=2.0),
        Part("Hi everyone, thanks for joining the stream tonight."),
        Part(pause_s=1.5),
        # "Immigrants are animals." alone is heard by tiny.en as "This is our animals." (espeak-ng 1.51)
        Part("All immigrants are animals. They should all be deported.", offending=True),
        Part(pause_s=7.0),
    ],
    # "I am going to <violent verb> <a member of a group>", phrased three ways (issue 10).
    "threat_group_shoot": [
        Part(pause_s=2.0),
        Part("Okay, quick break from the game."),
        Part(pause_s=1.0),
        Part("I am going to shoot the next Muslim I see.", offending=True),
        Part(pause_s=7.0),
    ],
    "threat_group_stab": [
        Part(pause_s=2.0),
        Part("Thanks for the follows, everyone."),
        Part(pause_s=1.0),
        Part("I will stab every gay man who walks into my shop.", offending=True),
        Part(pause_s=7.0),
    ],
    "threat_group_run_over": [
        Part(pause_s=2.0),
        Part("Let me tell you about my day."),
        Part(pause_s=1.0),
        Part("Tomorrow I am going to run over some immigrant kids with my truck.", offending=True),
        Part(pause_s=7.0),
    ],
    "benign": [
        Part(pause_s=2.0),
        Part("Hi everyone, thanks for joining the stream tonight."),
        Part(pause_s=1.0),
        Part("In the news today, police are investigating attacks on immigrants and Muslims."),
        Part(pause_s=1.0),
        Part("Immigrants are welcome in this community, and hate against them is unacceptable."),
        Part(pause_s=1.0),
        Part("We stand with our Muslim and Jewish neighbours against bigotry."),
        Part(pause_s=3.0),
    ],
}


def speak(text: str, path: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True, timeout=60)
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def synthesise(name: str, parts: list[Part], folder: Path) -> Clip:
    pieces: list[np.ndarray[Any, np.dtype[np.int16]]] = []
    at, offending = 0, None
    for k, part in enumerate(parts):
        if part.text is None:
            samples = np.zeros(round(part.pause_s * RATE), dtype=np.int16)
        else:
            samples = speak(part.text, folder / f"{name}-{k}.wav")
        if part.offending:
            offending = (at / RATE, (at + len(samples)) / RATE)
        pieces.append(samples)
        at += len(samples)
    path = folder / f"{name}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.concatenate(pieces).tobytes())
    return Clip(path, offending)


@dataclass
class Run:
    transcripts: list[Transcript]
    signals: dict[str, Signal]
    interventions: list[Intervention]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Clip, Run]]:
    folder = tmp_path_factory.mktemp("speech")
    policy = load_policy()
    analyzers = Analyzers.load(policy)
    out: dict[str, tuple[Clip, Run]] = {}
    for name, parts in CLIPS.items():
        clip = synthesise(name, parts, folder)
        run = Run([], {}, [])

        async def sink(event: Any, run: Run = run) -> None:
            if isinstance(event, Transcript):
                run.transcripts.append(event)
            elif isinstance(event, Signal):
                run.signals[event.signal_id] = event
            elif isinstance(event, Intervention):
                run.interventions.append(event)

        source = AVSource(name, str(clip.path))
        asyncio.run(StreamWorker(source, analyzers, Monitor(policy), sink).run())
        out[name] = (clip, run)
    return out


def first_intervention(run: Run) -> Intervention:
    said = " | ".join(t.text for t in run.transcripts)
    acted = [iv for iv in run.interventions if iv.action in ACTIONS]
    assert acted, f"no intervention; heard: {said}; signals: {list(run.signals.values())}"
    return acted[0]


@pytest.mark.parametrize(("name", "category"), [
    ("threat", "threat"), ("hate", "hate"), ("threat_group_shoot", "threat"), ("threat_group_stab", "threat"),
    ("threat_group_run_over", "threat"),
])
def test_offending_speech_brings_an_intervention_within_seconds(
    runs: dict[str, tuple[Clip, Run]], name: str, category: str
) -> None:
    clip, run = runs[name]
    assert clip.offending is not None
    start, end = clip.offending
    first = first_intervention(run)
    assert first.category == category, first
    triggering = [run.signals[i] for i in first.signal_ids if i in run.signals]
    assert triggering, first
    decided_at = max(s.end_ts if s.end_ts is not None else s.media_ts for s in triggering)
    # The decision rests on the offending words (not on the benign talk before them) and comes within
    # MAX_DELAY_S of media time after they end.
    assert start - 1.0 <= first.media_ts <= end, (first, clip.offending)
    assert decided_at - end <= MAX_DELAY_S, (decided_at, clip.offending)


def test_benign_speech_about_the_same_groups_brings_no_intervention(
    runs: dict[str, tuple[Clip, Run]],
) -> None:
    _, run = runs["benign"]
    assert len(run.transcripts) >= 3, run.transcripts
    heard = " ".join(t.text.lower() for t in run.transcripts)
    assert "immigrants" in heard and "muslim" in heard, heard
    acted = [iv for iv in run.interventions if iv.action in ACTIONS]
    assert acted == [], (acted, [(s.category, s.score, s.evidence.get("text")) for s in run.signals.values()])
