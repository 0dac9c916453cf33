"""Model-free fills: every method is ``fill(rgb, mask, cancel=None) -> rgb``.

``rgb`` is H x W x 3 uint8, ``mask`` H x W uint8 (non-zero = fill). Pixels outside the mask come
back unchanged; a set ``cancel`` event raises ``sdstudio.engine.streaming.RunCancelled``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import cv2
import numpy as np

from sdstudio.engine.fill.hybrid import structure_texture
from sdstudio.engine.fill.opencv import navier_stokes, telea
from sdstudio.engine.fill.patchmatch import patchmatch
from sdstudio.engine.fill.smooth import harmonic

FillMethod = Callable[..., np.ndarray]

THIN = 6.0
"""Holes no more than this many pixels from their edge (scratches, strokes) count as thin."""


def choose(mask: np.ndarray) -> str:
    """What "auto" runs: the membrane for thin holes (too narrow to hold texture; it scores best
    there), structure + texture for larger ones."""
    hole = (mask > 0).view(np.uint8)
    if hole.any() and cv2.distanceTransform(hole, cv2.DIST_L2, 3).max() > THIN:
        return "structure-texture"
    return "harmonic"


def auto(rgb: np.ndarray, mask: np.ndarray, cancel: threading.Event | None = None, progress=None):
    if choose(mask) == "structure-texture":
        return structure_texture(rgb, mask, cancel, progress)
    return harmonic(rgb, mask, cancel)


METHODS: dict[str, FillMethod] = {
    "telea": telea,
    "navier-stokes": navier_stokes,
    "harmonic": harmonic,
    "patchmatch": patchmatch,
    "structure-texture": structure_texture,
    "auto": auto,
}
LABELS = {
    "telea": "OpenCV Telea (no model)",
    "navier-stokes": "OpenCV Navier-Stokes (no model)",
    "harmonic": "Smooth membrane fill (no model)",
    "patchmatch": "PatchMatch exemplar fill (no model)",
    "structure-texture": "Smooth shading + PatchMatch texture (no model)",
    "auto": "Texture fill, or smooth for thin holes (no model)",
}
PROGRESSIVE = {"patchmatch", "structure-texture", "auto"}
"""Methods that take a ``progress(i, n)`` callback (one call per pyramid level)."""
DEFAULT_METHOD = "auto"
"""Chosen by bench_fill.py (8 photos at 1 megapixel, blobs, strokes and blocks): structure + texture
beats Telea on PSNR and SSIM over large holes (not on SSIM over the ring around them), the
membrane does on thin ones, while plain PatchMatch, sharper still, loses to Telea on both. The figures are in the
closing note of issue 5 and the docstrings of ``smooth`` and ``hybrid``."""


def resolve(name: str, mask: np.ndarray) -> str:
    """The concrete method ``name`` runs for this mask (only "auto" depends on the mask)."""
    get_method(name)
    return choose(mask) if name == "auto" else name


def get_method(name: str) -> FillMethod:
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(METHODS)
        raise ValueError(f"unknown fill method {name!r}; choose one of {known}") from None


def fill(
    rgb: np.ndarray,
    mask: np.ndarray,
    method: str = DEFAULT_METHOD,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    return get_method(method)(rgb, mask, cancel)


__all__ = ["DEFAULT_METHOD", "LABELS", "METHODS", "PROGRESSIVE", "fill", "get_method", "resolve"]
