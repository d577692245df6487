"""Audio files decoded for evaluation: 16 kHz float32, as the speech recognizer takes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from livesafe.analyzers.speech import SAMPLE_RATE

__all__ = ["decode_clip"]


def decode_clip(path: Path, channel: int | None) -> npt.NDArray[np.float32]:
    """A file's first audio stream at 16 kHz float32: ``channel`` of it, or all channels mixed to mono."""
    import av

    layout = "mono" if channel is None else "stereo"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
    parts: list[npt.NDArray[np.float32]] = []
    with av.open(str(path)) as container:
        frames = [*container.decode(audio=0), None]
        for frame in frames:
            for out in resampler.resample(frame):
                planes = np.asarray(out.to_ndarray(), dtype=np.float32)  # (channels, samples)
                parts.append(planes[0 if channel is None else channel])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
