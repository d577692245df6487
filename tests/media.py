"""Test media made with PyAV in a temp dir: no binary fixtures, no external tools."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_clip(
    path: Path, seconds: float, *, video: bool = True, audio: bool = True, fps: int = 10,
    tone_hz: float = 440.0, rate: int = 48000, size: tuple[int, int] = (160, 120), gop: int = 0,
) -> Path:
    """An MP4 (or any container by suffix) with moving-gradient video and/or a tone on stereo audio."""
    with av.open(str(path), "w") as out:
        vs = None
        if video:
            vs = out.add_stream("libx264" if path.suffix == ".mp4" else "mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
            if gop:
                vs.codec_context.gop_size = gop
                vs.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        as_ = None
        if audio:
            as_ = out.add_stream("aac" if path.suffix in (".mp4", ".m4a") else "pcm_s16le", rate=rate)
            as_.layout = "stereo"
        if vs is not None:
            for i in range(int(seconds * fps)):
                img = np.zeros((size[1], size[0], 3), dtype=np.uint8)
                img[..., 0] = (np.arange(size[0]) + i * 5) % 256
                img[..., 1] = i * 3 % 256
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                for packet in vs.encode(frame):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
        if as_ is not None:
            total = int(seconds * rate)
            t = np.arange(total) / rate
            pcm = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            step = 1024
            for j in range(0, total, step):
                block = np.repeat(pcm[j : j + step].reshape(1, -1), 2, axis=0)
                af = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = rate, j, Fraction(1, rate)
                for packet in as_.encode(af):
                    out.mux(packet)
            for packet in as_.encode():
                out.mux(packet)
    return path
