"""OpenCV's diffusion inpainting (Telea; Navier-Stokes): fast, smooth, smears large holes."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from sdstudio.engine.fill._common import check_cancel, check_inputs, paste

RADIUS = 5


def _opencv(rgb: np.ndarray, mask: np.ndarray, flag: int, cancel: threading.Event | None):
    hole = check_inputs(rgb, mask)
    check_cancel(cancel)
    if not hole.any():
        return rgb.copy()
    filled = cv2.inpaint(np.ascontiguousarray(rgb), hole.view(np.uint8) * 255, RADIUS, flag)
    return paste(rgb, hole, filled)


def telea(rgb: np.ndarray, mask: np.ndarray, cancel: threading.Event | None = None) -> np.ndarray:
    """Telea's fast-marching fill (OpenCV)."""
    return _opencv(rgb, mask, cv2.INPAINT_TELEA, cancel)


def navier_stokes(
    rgb: np.ndarray, mask: np.ndarray, cancel: threading.Event | None = None
) -> np.ndarray:
    """Bertalmio's Navier-Stokes fill (OpenCV)."""
    return _opencv(rgb, mask, cv2.INPAINT_NS, cancel)
