"""Pixel layouts. The document keeps a picture as loaded: H x W (grey), H x W x 3 (RGB) or
H x W x 4 (RGBA), 8 or 16 bits per channel. Models see 8-bit RGB; results go back in the
picture's own layout so that untouched pixels stay bit-exact and grey stays grey.
"""

from __future__ import annotations

import numpy as np


def to_8bit(array: np.ndarray) -> np.ndarray:
    """uint8 or uint16 pixels -> uint8 (16-bit values rounded to nearest; uint8 returned as is)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        # Round to nearest: 65535 -> 255, 257 * k -> k exactly.
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {array.dtype}")


def to_rgb8(array: np.ndarray) -> np.ndarray:
    """Any supported layout -> H x W x 3 uint8 RGB (alpha dropped, grey repeated)."""
    array = to_8bit(array)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise ValueError(f"unsupported pixel layout {array.shape}")


def rgb8_to_float_like(rgb: np.ndarray, like: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> float32 in ``like``'s layout and value range (alpha not included).

    Grey pictures get the luminance (ITU-R 601, as Pillow's "L" conversion) so that a grey
    photo stays grey; 16-bit pictures are scaled by 257 (255 -> 65535).
    """
    values = rgb.astype(np.float32)
    if like.dtype == np.uint16:
        values *= 257.0
    if like.ndim == 2:
        return values @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return values


def color_channels(array: np.ndarray) -> np.ndarray:
    """The colour part of a picture (grey or RGB), without alpha, as a view."""
    return array if array.ndim == 2 else array[:, :, :3]


def to_rgba8(array: np.ndarray) -> np.ndarray:
    """Any supported layout -> H x W x 4 uint8 RGBA for display (opaque unless it has alpha)."""
    array8 = to_8bit(array)
    out = np.empty((*array8.shape[:2], 4), np.uint8)
    out[:, :, :3] = to_rgb8(array8)
    out[:, :, 3] = array8[:, :, 3] if array8.ndim == 3 and array8.shape[2] == 4 else 255
    return out
