"""Evidence thumbnails: a small JPEG of a sampled frame that produced a signal at or above its floor."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

#: Longest side of a thumbnail, in pixels, and its JPEG quality.
THUMB_MAX_SIDE = 320
THUMB_QUALITY = 70


def thumbnail_jpeg(image: npt.NDArray[np.uint8], max_side: int = THUMB_MAX_SIDE) -> bytes:
    """A JPEG of an RGB ``uint8`` frame (height, width, 3), scaled down to at most ``max_side`` pixels."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (h, w, 3), got {image.shape}")
    picture = Image.fromarray(np.ascontiguousarray(image), "RGB")
    picture.thumbnail((max_side, max_side))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=THUMB_QUALITY)
    return out.getvalue()
