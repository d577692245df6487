"""Regenerate the bundled demo streams in ``livesafe/demo/`` (needs Debian's espeak-ng).

Each stream is a short MP4 (H.264 320x240 at 10 fps + AAC mono) with synthetic moving video and
speech spoken by espeak-ng at known media times. ``livesafe/demo/streams.json`` records the script:
what is said and when, so tests can check that decisions land near the right media time.

    python scripts/make_demo_media.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "livesafe" / "demo"
RATE = 16000
FPS = 10
W, H = 320, 240

STREAMS: dict[str, dict[str, object]] = {
    "benign": {
        "title": "cooking stream",
        "duration": 40.0,
        "hue": 0.55,
        "lines": [
            (1.0, "Hi everyone, welcome back to the stream. Today we are making fresh pasta from scratch."),
            (10.0, "First we mix the flour and the eggs, then we knead the dough for ten minutes."),
            (19.0, "Thank you so much for the follow. I really love this community."),
            (28.0, "Let the dough rest while we chop the tomatoes and the basil for the sauce."),
        ],
    },
    "threat": {
        "title": "gaming stream that turns threatening",
        "duration": 45.0,
        "hue": 0.02,
        "lines": [
            (1.0, "Okay chat, we are back in the game. Let's try this level one more time."),
            (12.0, "I know where you live. I am going to find you and kill you."),
            (20.0, "You are going to die tonight. I will hurt you and your whole family."),
            (30.0, "I will shoot you all. Nobody is safe from me."),
        ],
    },
}


def speak(text: str, path: Path) -> np.ndarray:
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True, capture_output=True
    )
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    if rate != RATE:
        x_old = np.linspace(0.0, 1.0, num=len(pcm), endpoint=False)
        x_new = np.linspace(0.0, 1.0, num=int(len(pcm) * RATE / rate), endpoint=False)
        pcm = np.interp(x_new, x_old, pcm).astype(np.float32)
    return pcm


def frame_image(t: float, hue: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    phase = 2 * np.pi * (xx / W + 0.1 * t)
    base = np.stack(
        [
            128 + 100 * np.sin(phase + hue * 6.28),
            128 + 100 * np.sin(phase + 2.1 + yy / H),
            128 + 100 * np.sin(phase + 4.2),
        ],
        axis=-1,
    )
    cx = int((W - 40) * (0.5 + 0.45 * np.sin(t * 0.9)))
    cy = int((H - 40) * (0.5 + 0.45 * np.cos(t * 0.7)))
    base[cy : cy + 40, cx : cx + 40] = (240, 240, 240)
    image: np.ndarray = np.clip(base, 0, 255).astype(np.uint8)
    return image


def make(name: str, spec: dict[str, object], tmp: Path) -> dict[str, object]:
    duration = float(spec["duration"])  # type: ignore[arg-type]
    audio = np.zeros(int(duration * RATE), dtype=np.float32)
    script = []
    for start, text in spec["lines"]:  # type: ignore[attr-defined]
        pcm = speak(text, tmp / "line.wav")
        i = int(start * RATE)
        audio[i : i + len(pcm)] += pcm[: len(audio) - i]
        script.append({"start": start, "end": round(start + len(pcm) / RATE, 2), "text": text})
    path = OUT / f"{name}.mp4"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.options = {"crf": "30", "preset": "veryslow", "g": str(FPS * 2)}
        a = out.add_stream("aac", rate=RATE)
        a.layout = "mono"
        a.bit_rate = 32000
        for i in range(int(duration * FPS)):
            frame = av.VideoFrame.from_ndarray(frame_image(i / FPS, float(spec["hue"])), format="rgb24")  # type: ignore[arg-type]
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        step = 1024
        for j in range(0, len(audio), step):
            block = audio[j : j + step]
            af = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
            af.sample_rate = RATE
            af.pts = j
            af.time_base = Fraction(1, RATE)
            for packet in a.encode(af):
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    return {"file": path.name, "title": spec["title"], "duration": duration, "script": script}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {}
    with tempfile.TemporaryDirectory() as d:
        for name, spec in STREAMS.items():
            manifest[name] = make(name, spec, Path(d))
    (OUT / "streams.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name in STREAMS:
        print(name, (OUT / f"{name}.mp4").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
