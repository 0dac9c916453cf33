"""Shared checks for the fill methods: input validation and cancellation."""

from __future__ import annotations

import threading

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
