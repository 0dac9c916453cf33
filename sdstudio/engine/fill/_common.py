"""Shared parts of the fill methods: input validation, cancellation, and the crop-fill-paste frame."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from sdstudio.engine.streaming import RunCancelled


def check_inputs(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Validate ``rgb`` (H x W x 3 uint8) and ``mask`` (H x W, non-zero = fill); the hole as bool."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"fill needs H x W x 3 uint8 pixels, not {rgb.dtype} {rgb.shape}")
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the image {rgb.shape[:2]}")
    return mask > 0


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise RunCancelled


def paste(rgb: np.ndarray, hole: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """``rgb`` with the hole's pixels taken from ``filled``: nothing outside the hole changes."""
    out = rgb.copy()
    out[hole] = filled[hole]
    return out


def hole_box(hole: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the hole's bounding box grown by ``margin``, clamped to the picture."""
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    h, w = hole.shape
    return (
        max(0, rows[0] - margin),
        min(h, rows[-1] + 1 + margin),
        max(0, cols[0] - margin),
        min(w, cols[-1] + 1 + margin),
    )


def fill_in_box(
    rgb: np.ndarray,
    mask: np.ndarray,
    cancel: threading.Event | None,
    box: Callable[[np.ndarray], tuple[int, int, int, int]],
    fill: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """The frame of the float fills: check the inputs, crop to ``box(hole)``, let
    ``fill(crop float32, crop hole)`` fill it, round the hole's pixels back into a copy of ``rgb``."""
    hole = check_inputs(rgb, mask)
    check_cancel(cancel)
    if not hole.any():
        return rgb.copy()
    if hole.all():
        raise ValueError("the mask covers the whole picture: nothing to fill from")
    y0, y1, x0, x1 = box(hole)
    sub = hole[y0:y1, x0:x1]
    filled = fill(rgb[y0:y1, x0:x1].astype(np.float32), sub)
    out = rgb.copy()
    out[y0:y1, x0:x1][sub] = np.clip(np.rint(filled[sub]), 0, 255).astype(np.uint8)
    return out
