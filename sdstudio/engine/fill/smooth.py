"""Membrane (harmonic) fill: the smoothest surface that meets the hole's edge.

Each hole pixel becomes the mean of its four neighbours (Laplace's equation with the intact
pixels as the boundary). Solved coarse to fine: a pyramid of weighted averages of the intact
pixels gives every level a starting guess, and a few Jacobi sweeps per level (numba-compiled,
over the hole's pixels only) settle it. Only the hole's bounding box plus one pixel is touched,
since nothing farther affects the answer.

It is the best of the smooth fills by PSNR on bench_fill.py (1.1-1.8 dB above Telea on every mask
shape) and the fastest (about half Telea's time): it has no streaks, so it is both the default for
thin scratches and the low-frequency base under the exemplar fill's texture.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from sdstudio.engine.fill._common import check_cancel, fill_in_box, hole_box

COARSE_SWEEPS, MIDDLE_SWEEPS, FINE_SWEEPS = 200, 60, 30
MIN_SIDE = 8


def harmonic(
    rgb: np.ndarray, mask: np.ndarray, cancel: threading.Event | None = None
) -> np.ndarray:
    """Fill the hole with the smooth (harmonic) interpolation of its edge."""
    return fill_in_box(
        rgb,
        mask,
        cancel,
        lambda hole: hole_box(hole, 1),
        lambda crop, sub, _progress: solve(crop, sub, cancel),
    )


def solve(image: np.ndarray, hole: np.ndarray, cancel: threading.Event | None = None):
    """``image`` (float32, H x W x C) with its hole replaced by the membrane; the rest unchanged.

    Pixels outside the hole must hold real values; those inside are ignored.
    """
    from sdstudio.engine.fill import _kernels as k  # numba: loaded on first use

    levels = [(image, hole)]
    while min(levels[-1][1].shape) > MIN_SIDE:
        img, h = levels[-1]
        size = ((h.shape[1] + 1) // 2, (h.shape[0] + 1) // 2)
        known = (~h).astype(np.float32)
        weight = cv2.resize(known, size, interpolation=cv2.INTER_AREA)
        total = cv2.resize(img * _expand(known, img), size, interpolation=cv2.INTER_AREA)
        small = total / _expand(np.maximum(weight, 1e-6), total)
        small_hole = weight < 1e-3  # no intact pixel under this one
        levels.append((small, small_hole))
        if not small_hole.any():
            break
    img, h = levels[-1]
    current = img.copy()
    if h.any():
        current[h] = img[~h].mean(axis=0) if (~h).any() else 0
    last = len(levels) - 1
    for index in range(last, -1, -1):
        check_cancel(cancel)
        img, h = levels[index]
        if index != last:
            up = cv2.resize(current, (h.shape[1], h.shape[0]), interpolation=cv2.INTER_LINEAR)
            current = img.copy()
            current[h] = up.reshape(current.shape)[h]
        sweeps = COARSE_SWEEPS if index == last else (FINE_SWEEPS if index == 0 else MIDDLE_SWEEPS)
        # Jacobi settles a hole t pixels deep in about t^2 sweeps: thin holes (scratches, dust)
        # need only a few, which keeps a scan with a thousand specks fast.
        depth = float(cv2.distanceTransform(h.view(np.uint8), cv2.DIST_L2, 3).max())
        sweeps = int(min(sweeps, max(4, 2 * depth * depth)))
        ys, xs = np.nonzero(h)
        k.jacobi(current.reshape(*h.shape, -1), ys.astype(np.int64), xs.astype(np.int64), sweeps)
    return current


def _expand(weight: np.ndarray, like: np.ndarray) -> np.ndarray:
    return weight[..., None] if like.ndim == 3 else weight


__all__ = ["harmonic", "solve"]
