"""Structure + texture: Telea's smooth fill at low resolution carries the large-scale shading
and edges, PatchMatch supplies the fine texture on top (its detail layer only)."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from sdstudio.engine.fill._common import check_cancel, check_inputs, paste
from sdstudio.engine.fill.patchmatch import Progress, patchmatch

SCALE = 4
"""Telea runs at 1/SCALE size: smooth structure, no high-frequency smear."""
DETAIL_SIGMA = 3.0
"""Gaussian that splits PatchMatch's fill into its base (dropped) and its detail (kept)."""


def structure_texture(
    rgb: np.ndarray,
    mask: np.ndarray,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Low frequencies from a low-resolution Telea fill, high frequencies from PatchMatch."""
    hole = check_inputs(rgb, mask)
    check_cancel(cancel)
    if not hole.any():
        return rgb.copy()
    texture = patchmatch(rgb, mask, cancel, progress).astype(np.float32)
    h, w = hole.shape
    size = (max(1, w // SCALE), max(1, h // SCALE))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
    small = cv2.inpaint(small, small_hole.view(np.uint8), 3, cv2.INPAINT_TELEA)
    base = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    # Outside the hole the base must be the picture's own low frequencies, so the two layers
    # agree at the hole's edge.
    base[~hole] = rgb[~hole]
    base = cv2.GaussianBlur(base, (0, 0), DETAIL_SIGMA)
    detail = texture - cv2.GaussianBlur(texture, (0, 0), DETAIL_SIGMA)
    out = np.clip(np.rint(base + detail), 0, 255).astype(np.uint8)
    return paste(rgb, hole, out)
