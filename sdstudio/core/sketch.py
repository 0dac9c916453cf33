"""The sketch layer: the brush's strokes above the picture, and what generation makes of them.

The Document keeps the sketch as **premultiplied** RGBA uint8 the picture's size (each colour
already multiplied by its alpha; all zero = no sketch), created at the first brush stroke. In that
form a brush stroke's mix toward ``(r, g, b, 255)`` is exactly "the colour over what was there",
compositing over the picture is ``picture * (1 - alpha) + colour``, and Qt draws it as it is.
Files hold straight (not premultiplied) alpha, as OpenRaster and PNG readers expect:
``unpremultiply`` then ``premultiply`` gives back the same bytes.

Generation uses the sketch two ways: as a scribble control image (``sketch_control_image``: the
strokes as light lines on black, as a scribble ControlNet expects) and as part of the picture for
img2img (``flatten_sketch``). Whether a hidden sketch is used is the caller's decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sdstudio.core.mask import bounding_box
from sdstudio.core.region import Box

if TYPE_CHECKING:
    from sdstudio.core.document import Document

LAYER = "sketch"
"""The sketch's name among the Document's layers (and in its undo history)."""
_ROWS = 256  # rows composited at a time: a 24 MP picture needs no full-size float copies


@dataclass(frozen=True, eq=False)
class SketchLayer:
    """A sketch as projects and autosaves carry it: premultiplied RGBA uint8 ``pixels`` the
    picture's size, and whether it is shown."""

    pixels: np.ndarray
    visible: bool = True

    def __post_init__(self) -> None:
        pixels = self.pixels
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3:
            got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else pixels
            raise ValueError(f"A sketch must be H x W x 4 uint8 (RGBA), not {got}.")
        if pixels.shape[2] != 4:
            raise ValueError(f"A sketch must be H x W x 4 uint8 (RGBA), not {pixels.shape}.")


def new_sketch(height: int, width: int) -> np.ndarray:
    """An empty (fully transparent) sketch."""
    return np.zeros((height, width, 4), np.uint8)


def premultiply(straight: np.ndarray) -> np.ndarray:
    """Straight RGBA uint8 (as files hold it) -> premultiplied, rounded."""
    out = np.empty_like(straight)
    for rows in _row_slices(straight.shape[0]):
        alpha = straight[rows, :, 3:].astype(np.uint32)
        colour = (straight[rows, :, :3].astype(np.uint32) * alpha + 127) // 255
        out[rows, :, :3] = colour
        out[rows, :, 3:] = alpha
    return out


def unpremultiply(premultiplied: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA uint8 -> straight, rounded (colour 0 where alpha is 0)."""
    out = np.empty_like(premultiplied)
    for rows in _row_slices(premultiplied.shape[0]):
        alpha = premultiplied[rows, :, 3:].astype(np.uint32)
        colour = premultiplied[rows, :, :3].astype(np.uint32) * 255
        straight = np.minimum((colour + alpha // 2) // np.maximum(alpha, 1), 255)
        out[rows, :, :3] = np.where(alpha > 0, straight, 0)
        out[rows, :, 3:] = alpha
    return out


def sketch_control_image(document: Document, box: Box | None = None) -> np.ndarray:
    """The sketch as a scribble control image: H x W x 3 uint8, white where the strokes are
    (weighted by their alpha), black elsewhere; all black where nothing was sketched.
    ``box``: only that part of the picture."""
    box = _box(document, box)
    sketch = document.sketch
    if sketch is None:
        return np.zeros((box.height, box.width, 3), np.uint8)
    alpha = sketch[box.slices][:, :, 3]
    return np.repeat(alpha[:, :, None], 3, axis=2)


def flatten_sketch(document: Document, box: Box | None = None) -> np.ndarray:
    """The picture (its own layout and dtype) with the sketch composited over it, within
    ``box`` (default: all of it). Pixels the sketch does not cover are the picture's, bit for
    bit; a copy of the picture when nothing was sketched."""
    box = _box(document, box)
    image = document.image[box.slices]
    if document.sketch is None:
        return image.copy()
    return composite(image, document.sketch[box.slices])


def composite(image: np.ndarray, sketch: np.ndarray) -> np.ndarray:
    """``sketch`` (premultiplied RGBA uint8, the same height and width) over ``image`` (uint8 or
    uint16; grey, RGB or RGBA), in ``image``'s layout and dtype; a new array. An RGBA picture's
    colours are mixed as if it were opaque, its alpha raised by the sketch's."""
    if sketch.shape[:2] != image.shape[:2]:
        raise ValueError(f"The sketch is {sketch.shape[:2]}, the picture {image.shape[:2]}.")
    out = image.copy()
    scale = np.float32(257.0 if image.dtype == np.uint16 else 1.0)
    for rows in _row_slices(image.shape[0]):
        covered = sketch[rows][:, :, 3] > 0  # only these pixels change: strokes are sparse
        if not covered.any():
            continue
        layer = sketch[rows][covered].astype(np.float32)  # N x 4
        keep = 1.0 - layer[:, 3:] / np.float32(255.0)
        colour = layer[:, :3] * scale
        if image.ndim == 2:  # luminance, as the brush paints on grey
            weights = np.array([0.299, 0.587, 0.114], np.float32)
            colour, keep = colour @ weights, keep[:, 0]
        elif image.shape[2] == 4:  # the picture's alpha: the sketch's over it
            colour = np.concatenate([colour, layer[:, 3:] * scale], axis=1)
        mixed = image[rows][covered].astype(np.float32) * keep + colour
        mixed += 0.5  # round half up
        out[rows][covered] = mixed.astype(image.dtype)  # in range: a convex mix plus rounding
    return out


def sketch_bounds(sketch: np.ndarray | None) -> Box | None:
    """The smallest box holding every pixel of ``sketch`` with any alpha; None when empty."""
    return None if sketch is None else bounding_box(sketch[:, :, 3])


def _box(document: Document, box: Box | None) -> Box:
    if box is None:
        return document.bounds
    if box.is_empty() or not box.inside(document.width, document.height):
        raise ValueError(f"The box {box} is empty or outside the picture.")
    return box


def _row_slices(height: int) -> list[slice]:
    return [slice(top, min(height, top + _ROWS)) for top in range(0, height, _ROWS)]


@dataclass(frozen=True, eq=False)
class AreaView:
    """Part of a document, maybe scaled down, that reads like a Document where generation reads
    one (``image``, ``sketch``, ``sketch_visible``, ``width``, ``height``): what live mode turns
    into a frame's request, so that a large picture is never copied at full size for it."""

    image: np.ndarray
    sketch: np.ndarray | None
    sketch_visible: bool

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def bounds(self) -> Box:
        return Box(0, 0, self.width, self.height)


def area_view(document: Document, box: Box, max_side: int | None = None) -> AreaView:
    """``box`` of ``document`` as an ``AreaView``; when its longer side exceeds ``max_side``,
    scaled down to it (area averaging: the premultiplied sketch averages correctly)."""
    import cv2

    image = document.image[box.slices]
    sketch = None if document.sketch is None else document.sketch[box.slices]
    longer = max(box.width, box.height)
    if max_side is not None and longer > max_side:
        width = max(1, round(box.width * max_side / longer))
        height = max(1, round(box.height * max_side / longer))

        def shrink(pixels: np.ndarray) -> np.ndarray:
            small = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
            return small.reshape(height, width, *pixels.shape[2:])  # cv2 drops a 1-channel axis

        image = shrink(image)
        sketch = None if sketch is None else shrink(sketch)
    else:
        image = image.copy()
        sketch = None if sketch is None else sketch.copy()
    return AreaView(image, sketch, document.sketch_visible)
