"""Speech for the bench workload: espeak-ng sentences when it is on PATH, else the bundled demo's speech.

Either way the result is a list of utterances (16 kHz mono float32), which :func:`speech_track` lays out
over a clip with silent gaps so that about ``fraction`` of the clip is speech. The sentences are benign
chatter: the workload measures the cost of monitoring, not of escalating (the threatening demo stream is
not used for that reason).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

RATE = 16000
DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"

Audio = npt.NDArray[np.float32]

#: What a streamer says between games, in the kitchen, or chatting with viewers.
SENTENCES = (
    "Hi everyone, welcome back to the stream, it is so good to see you all again tonight.",
    "Okay chat, we are going to try this level one more time and see if we can beat the boss.",
    "Thank you so much for the follow, I really appreciate every single one of you.",
    "First we mix the flour and the eggs, then we knead the dough for about ten minutes.",
    "Let me check the settings real quick, I think the audio was a little too loud before.",
    "If you are new here, I stream every Tuesday and Friday, usually around eight in the evening.",
    "That was close, I almost fell off the bridge, my hands are shaking right now.",
    "Somebody asked what keyboard I use, it is the same one I have had for three years.",
    "We are going to take a short break after this round, grab some water and stretch.",
    "The weather outside is terrible today, so it is the perfect day to stay in and play.",
    "Who wants to join the next match, drop your name in the chat and I will pick someone.",
    "Alright, that is it for the tutorial part, now let us see how it works in a real game.",
)


@dataclass(frozen=True, slots=True)
class Speech:
    utterances: list[Audio]
    #: "espeak-ng" or "demo:<file>": where the voice came from.
    source: str


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _resample(pcm: Audio, rate: int) -> Audio:
    if rate == RATE or len(pcm) == 0:
        return pcm
    x_old = np.linspace(0.0, 1.0, num=len(pcm), endpoint=False)
    x_new = np.linspace(0.0, 1.0, num=int(len(pcm) * RATE / rate), endpoint=False)
    return np.interp(x_new, x_old, pcm).astype(np.float32)


def _speak(text: str, path: Path, voice: str) -> Audio:
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True,
                   capture_output=True, timeout=60)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return _resample(raw.astype(np.float32) / 32768.0, rate)


def espeak_speech(
    sentences: tuple[str, ...] = SENTENCES, voices: tuple[str, ...] = ("en-us", "en")
) -> Speech:
    """One utterance per sentence, alternating voices (CalledProcessError if espeak-ng fails)."""
    with tempfile.TemporaryDirectory(prefix="livesafe-bench-") as tmp:
        utterances = [_speak(s, Path(tmp) / "line.wav", voices[i % len(voices)])
                      for i, s in enumerate(sentences)]
    return Speech(utterances, "espeak-ng")


def decode_audio(path: Path) -> Audio:
    """A file's first audio stream as 16 kHz mono float32."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    parts: list[Audio] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1).astype(np.float32))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1).astype(np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def demo_speech(name: str = "benign") -> Speech:
    """The bundled demo stream's spoken lines, cut at the times its manifest records."""
    manifest = json.loads((DEMO_DIR / "streams.json").read_text())[name]
    audio = decode_audio(DEMO_DIR / manifest["file"])
    utterances = []
    for line in manifest["script"]:
        start, end = int(float(line["start"]) * RATE), int((float(line["end"]) + 0.2) * RATE)
        if end - start > RATE // 2:
            utterances.append(audio[start:end].copy())
    if not utterances:
        raise ValueError(f"demo stream {name!r} has no speech")
    return Speech(utterances, f"demo:{manifest['file']}")


def load_speech(prefer_espeak: bool = True) -> Speech:
    """espeak-ng sentences when espeak-ng is on PATH (and works), else the bundled demo's speech."""
    if prefer_espeak and espeak_available():
        try:
            return espeak_speech()
        except (OSError, subprocess.SubprocessError):
            pass
    return demo_speech()


def speech_track(
    utterances: list[Audio], seconds: float, fraction: float = 0.7, *, lead_s: float = 1.0,
    noise: float = 0.002, seed: int = 11,
) -> tuple[Audio, float]:
    """A ``seconds``-long 16 kHz track: the utterances in turn (repeated as needed), each followed by a gap
    sized so that about ``fraction`` of the track is speech, over a faint noise floor; with the seconds of
    speech actually placed."""
    if not utterances or not 0.0 < fraction < 1.0:
        raise ValueError("speech_track needs utterances and 0 < fraction < 1")
    n = int(seconds * RATE)
    rng = np.random.default_rng(seed)
    track = (rng.standard_normal(n) * noise).astype(np.float32)
    pos, voiced, i = int(lead_s * RATE), 0, 0
    while pos < n:
        utt = utterances[i % len(utterances)]
        peak = float(np.max(np.abs(utt))) or 1.0
        part = utt[: n - pos] * (0.5 / peak)
        track[pos : pos + len(part)] += part
        voiced += len(part)
        pos += len(utt) + int(len(utt) * (1.0 - fraction) / fraction)
        i += 1
    return np.clip(track, -1.0, 1.0), voiced / RATE
