"""Masks: H x W uint8 arrays where 255 means "repaint" and 0 means "keep".

Grow, shrink and feather act on the whole array given; callers crop first when the picture is
large (the engine works on the region around the mask, never on a 24 MP array).
"""

from __future__ import annotations

import cv2
import numpy as np

from sdstudio.core.errors import MaskError
from sdstudio.core.region import Box

REPAINT = 255


def mask_from_image(array: np.ndarray) -> np.ndarray:
    """Any loaded image -> a 0/255 mask. White (or, for RGBA with transparency, opaque) = repaint."""
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 4 and array[:, :, 3].min() < 255:
        values = array[:, :, 3]
    elif array.ndim == 3:
        values = cv2.cvtColor(np.ascontiguousarray(array[:, :, :3]), cv2.COLOR_RGB2GRAY)
    else:
        values = array
    return np.where(values >= 128, REPAINT, 0).astype(np.uint8)


def bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box holding every non-zero pixel, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def require_bounding_box(mask: np.ndarray) -> Box:
    box = bounding_box(mask)
    if box is None:
        raise MaskError(
            "The mask is empty: paint the area to repaint (white in a mask file) first."
        )
    return box


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask.copy()
    return cv2.dilate(mask, _disk(pixels), borderType=cv2.BORDER_CONSTANT, borderValue=0)


def shrink(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask.copy()
    return cv2.erode(mask, _disk(pixels), borderType=cv2.BORDER_CONSTANT, borderValue=255)


def invert(mask: np.ndarray) -> np.ndarray:
    return (REPAINT - mask).astype(np.uint8)


def feather(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Soften the edge over ``pixels``: the result is non-zero at most ``pixels`` past the mask."""
    if pixels <= 0:
        return mask.copy()
    size = 2 * pixels + 1
    return cv2.GaussianBlur(
        mask, (size, size), sigmaX=pixels / 2.0, borderType=cv2.BORDER_REPLICATE
    )


def blend_alpha(mask: np.ndarray, blur: int) -> np.ndarray:
    """Float32 0..1 weights for pasting a result back.

    1 on every masked pixel, fading to 0 over ``blur`` pixels past the mask grown by ``blur``;
    exactly 0 beyond ``2 * blur`` pixels from the mask, where the original stays bit-exact.
    """
    soft = feather(grow(mask, blur), blur).astype(np.float32) / 255.0
    return np.maximum(soft, (mask > 0).astype(np.float32))


def blend_reach(blur: int) -> int:
    """How far past the mask ``blend_alpha`` can be non-zero."""
    return 2 * blur
