"""The sketch in project files: an ordinary OpenRaster layer named "Sketch" above the picture.

It is stored as 8-bit RGBA with straight alpha (what Krita, GIMP and MyPaint read and write),
at (0, 0) and the picture's size, with its visibility; the Document's premultiplied form is made
on reading. A sketch layer another program moved, cropped, stored in 16 bits, grey or without
alpha is still taken: placed at its offsets and clipped to the picture, converted to 8-bit RGBA,
with a note. The pixels come through the project loader's checks (sizes, decompression bombs).
"""

from __future__ import annotations

import numpy as np

from sdstudio.core.pixels import to_8bit
from sdstudio.core.sketch import SketchLayer, new_sketch, premultiply, unpremultiply

SKETCH_LAYER, SKETCH_SRC = "Sketch", "data/sketch.png"
HIDDEN = "hidden"


def sketch_for_file(layer: SketchLayer) -> np.ndarray:
    """The pixels to store: straight RGBA uint8."""
    return unpremultiply(layer.pixels)


def sketch_from_file(
    pixels: np.ndarray, x: int, y: int, shape: tuple[int, ...], visibility: str | None
) -> tuple[SketchLayer, list[str]]:
    """The sketch of a picture of ``shape`` (H, W) from a decoded layer at (``x``, ``y``), and
    notes on what was changed to take it."""
    notes = []
    height, width = shape[:2]
    rgba = _rgba8(pixels)
    if rgba is not pixels:
        notes.append(
            "The sketch was stored in grey, without alpha or in 16 bits; it was converted."
        )
    if (x, y) != (0, 0) or rgba.shape[:2] != (height, width):
        placed = new_sketch(height, width)
        top, left = max(0, y), max(0, x)
        bottom, right = min(height, y + rgba.shape[0]), min(width, x + rgba.shape[1])
        if top < bottom and left < right:
            placed[top:bottom, left:right] = rgba[top - y : bottom - y, left - x : right - x]
        if y < 0 or x < 0 or y + rgba.shape[0] > height or x + rgba.shape[1] > width:
            notes.append("Part of the sketch lay outside the picture; it was cut off.")
        rgba = placed
    return SketchLayer(premultiply(rgba), visibility != HIDDEN), notes


def _rgba8(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as 8-bit RGBA; the same array when it already is."""
    if pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 4:
        return pixels
    eight = to_8bit(pixels)
    if eight.ndim == 2:
        eight = np.repeat(eight[:, :, None], 3, axis=2)
    if eight.shape[2] == 3:
        eight = np.dstack([eight, np.full(eight.shape[:2], 255, np.uint8)])
    return np.ascontiguousarray(eight)
