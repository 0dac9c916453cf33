"""Exemplar fill: multi-scale PatchMatch with EM voting (Wexler et al. 2007, Barnes et al. 2009).

Coarse to fine over an image pyramid. The coarsest level starts from the membrane fill and a
random nearest-neighbour field (NNF); each finer level takes the image and the NNF up from the
level below. At every level a few EM rounds alternate a PatchMatch search (full 7 x 7 RGB patch
distances, numba-compiled in ``_kernels``) with a vote of the matched patches, weighted towards
close matches and patches near the intact edge.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import cv2
import numpy as np

from sdstudio.engine.fill._common import check_cancel, fill_in_box, hole_box
from sdstudio.engine.fill.smooth import solve

PATCH = 7
R = PATCH // 2
COARSEST = 3.0
"""Stop shrinking once the hole is at most this many pixels from its edge."""
MIN_SIDE = 24
FINE_ROUNDS = 2
"""EM rounds at the finest level (coarser levels take 4, the coarsest 6); a third changed no
score on bench_fill.py and cost 20% more time."""
VOTE_PERCENTILE = 50.0
"""Patch distances are weighted by exp(-d / 2 s) with s this percentile of the level's distances:
lower trusts only the best matches (sharper, noisier), higher averages more (smoother)."""
EDGE_DECAY = 1.3
"""Vote weight falls by this factor per pixel of distance from the intact edge (Wexler)."""

Progress = Callable[[int, int], None]


class NoSources(Exception):
    """No whole patch outside the hole to copy from."""


def patchmatch(
    rgb: np.ndarray,
    mask: np.ndarray,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Fill the hole with texture copied from the rest of the picture (deterministic for a seed)."""

    def fill(crop: np.ndarray, sub: np.ndarray) -> np.ndarray:
        try:
            return exemplar(crop, sub, cancel, progress, seed)
        except NoSources:  # the hole leaves no intact patch to copy: smooth fill instead
            return solve(crop, sub, cancel)

    return fill_in_box(rgb, mask, cancel, work_box, fill)


def work_box(hole: np.ndarray) -> tuple[int, int, int, int]:
    """The hole's bounding box grown by its own size (at least 48 px): where sources come from."""
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    return hole_box(hole, max(48, rows[-1] - rows[0], cols[-1] - cols[0]))


def exemplar(
    image: np.ndarray,
    hole: np.ndarray,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``image`` (float32 H x W x 3) with the hole filled from patches of the rest of it."""
    from sdstudio.engine.fill import _kernels as k  # numba: loaded on first use

    rng = np.random.default_rng(seed)
    pyramid = _pyramid(image, hole)
    previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    for index, (img, h) in enumerate(pyramid):
        check_cancel(cancel)
        img = img.copy()
        pad_hole = np.pad(h, R)
        if previous is None:
            img[h] = solve(img, h, cancel)[h]
            nnf_y = np.full(pad_hole.shape, R, np.int64)
            nnf_x = np.full(pad_hole.shape, R, np.int64)
            em_rounds, search_rounds = 6, 2
        else:
            up = cv2.resize(previous[0], (h.shape[1], h.shape[0]), interpolation=cv2.INTER_LINEAR)
            img[h] = up[h]
            nnf_y, nnf_x = _upsample_nnf(previous[1], previous[2], pad_hole.shape)
            em_rounds, search_rounds = (FINE_ROUNDS, 1) if index == len(pyramid) - 1 else (4, 1)
        padded = cv2.copyMakeBorder(img, R, R, R, R, cv2.BORDER_REFLECT_101)
        interior = np.zeros_like(pad_hole)
        interior[R:-R, R:-R] = True
        touched = cv2.dilate(pad_hole.view(np.uint8), np.ones((PATCH, PATCH), np.uint8)) > 0
        valid = interior & ~touched
        sy, sx = np.nonzero(valid)
        if sy.size == 0:
            raise NoSources
        ty, tx = (a.astype(np.int64) for a in np.nonzero(interior & touched))
        stale = ~valid[nnf_y[ty, tx], nnf_x[ty, tx]]
        pick = rng.integers(0, sy.size, int(stale.sum()))
        nnf_y[ty[stale], tx[stale]], nnf_x[ty[stale], tx[stale]] = sy[pick], sx[pick]
        edge = cv2.distanceTransform(pad_hole.view(np.uint8), cv2.DIST_L2, 3)
        confidence = EDGE_DECAY ** -edge.astype(np.float64)
        dist = np.zeros(pad_hole.shape)
        for _ in range(em_rounds):
            check_cancel(cancel)
            k.rescore(padded, ty, tx, nnf_y, nnf_x, dist)
            k.search(padded, valid, ty, tx, nnf_y, nnf_x, dist, search_rounds, rng.integers(2**30))
            sigma2 = max(float(np.percentile(dist[ty, tx], VOTE_PERCENTILE)), 1.0)
            k.vote(padded, pad_hole, ty, tx, nnf_y, nnf_x, dist, confidence, sigma2)
            padded = cv2.copyMakeBorder(  # the reflected border follows the new hole pixels
                padded[R:-R, R:-R], R, R, R, R, cv2.BORDER_REFLECT_101
            )
        previous = (padded[R:-R, R:-R], nnf_y, nnf_x)
        if progress is not None:
            progress(index + 1, len(pyramid))
    assert previous is not None
    return previous[0]


def _pyramid(image: np.ndarray, hole: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Levels coarse to fine: halve until the hole is thin or the level small."""
    levels = [(image, hole)]
    thickness = float(cv2.distanceTransform(hole.view(np.uint8), cv2.DIST_L2, 3).max())
    while thickness > COARSEST and min(levels[-1][1].shape) >= 2 * MIN_SIDE:
        img, h = levels[-1]
        size = ((h.shape[1] + 1) // 2, (h.shape[0] + 1) // 2)
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        small_hole = cv2.resize(h.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        if small_hole.all():
            break
        levels.append((small, small_hole))
        thickness /= 2
    return levels[::-1]


def _upsample_nnf(nnf_y: np.ndarray, nnf_x: np.ndarray, shape: tuple[int, int]):
    """A coarse NNF doubled to the next level: each pixel keeps its parent's offset."""
    hp, wp = shape
    yy, xx = np.mgrid[0:hp, 0:wp]
    cy = np.clip((yy - R) // 2 + R, 0, nnf_y.shape[0] - 1)
    cx = np.clip((xx - R) // 2 + R, 0, nnf_y.shape[1] - 1)
    fine_y = np.clip(2 * (nnf_y[cy, cx] - R) + (yy - R) % 2 + R, 0, hp - 1)
    fine_x = np.clip(2 * (nnf_x[cy, cx] - R) + (xx - R) % 2 + R, 0, wp - 1)
    return fine_y.astype(np.int64), fine_x.astype(np.int64)
