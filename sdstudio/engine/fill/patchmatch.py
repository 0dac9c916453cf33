"""Exemplar fill: multi-scale PatchMatch with EM voting (Wexler et al. 2007, Barnes et al. 2009),
with the texture features and final best-match copy of Newson et al. (2014).

Coarse to fine over an image pyramid. The coarsest level starts from the membrane fill and a
random nearest-neighbour field (NNF); each finer level takes the image and the NNF up from the
level below. At every level a few EM rounds alternate a PatchMatch search (full 7 x 7 patch
distances over colour and two texture features, numba-compiled in ``_kernels``) with a vote of
the matched patches, weighted towards close matches and patches near the intact edge. The last
step copies each pixel from its single best match rather than averaging, which keeps the grain.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import cv2
import numpy as np

from sdstudio.engine.fill._common import (
    PATCH,
    Progress,
    R,
    Report,
    check_cancel,
    fill_in_box,
    hole_box,
)
from sdstudio.engine.fill.smooth import solve

COARSEST = 3.0
"""Stop shrinking once the hole is at most this many pixels from its edge."""
MIN_SIDE = 24
MIN_MARGIN = 48
"""The least picture, in pixels around a hole's bounding box, that the exemplar fills draw from."""
FINE_ROUNDS = 2
"""EM rounds at the finest level (coarser levels take 4, the coarsest 6); a third changed no
score on bench_fill.py and cost 20% more time."""
VOTE_PERCENTILE = 50.0
"""Patch distances are weighted by exp(-d / 2 s) with s this percentile of the level's distances:
lower trusts only the best matches (sharper, noisier), higher averages more (smoother)."""
EDGE_DECAY = 1.3
"""Vote weight falls by this factor per pixel of distance from the intact edge (Wexler)."""
FEATURE_WEIGHT = 3.0
"""Weight of the texture features against colour in patch distances. Without them a smooth patch
of the right mean colour beats every textured one, and the fill comes out smeared (the detail
score on bench_fill.py rose from 0.2-0.5 to 0.7-1.0 with them)."""
FEATURE_WINDOW = 5
"""Side of the box the texture features average the gradient over."""
FINE_RADIUS = 32
"""Random search radius on levels above the coarsest: their matches come up from the level below,
so a search across the whole level found nothing better (same scores) and cost 15% of the time."""


class NoSources(Exception):
    """No whole patch outside the hole to copy from."""


def patchmatch(
    rgb: np.ndarray,
    mask: np.ndarray,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    seed: int = 0,
    report: Report | None = None,
) -> np.ndarray:
    """Fill the hole with texture copied from the rest of the picture (deterministic for a seed).
    A part of the hole with no intact patch around it gets the membrane, noted in ``report``."""

    def fill(crop: np.ndarray, sub: np.ndarray, part: Progress | None) -> np.ndarray:
        texture = exemplar_or_none(crop, sub, cancel, part, seed, report)
        return solve(crop, sub, cancel) if texture is None else texture

    return fill_in_box(rgb, mask, cancel, work_box, fill, progress)


def margin(height: int, width: int) -> int:
    """How far around a hole's bounding box (``height`` x ``width``) the exemplar fills take
    sources from: the hole's own size, at least ``MIN_MARGIN``. Give a fill this much picture
    around the hole and it fills as it would from the whole picture."""
    return max(MIN_MARGIN, height - 1, width - 1)


def work_box(hole: np.ndarray) -> tuple[int, int, int, int]:
    """The hole's bounding box grown by ``margin``: where sources come from."""
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    return hole_box(hole, margin(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def exemplar_or_none(
    image: np.ndarray,
    hole: np.ndarray,
    cancel: threading.Event | None,
    progress: Progress | None,
    seed: int,
    report: Report | None,
) -> np.ndarray | None:
    """``exemplar``, or None when the hole leaves no intact patch to copy; ``report`` counts
    which it was."""
    try:
        texture = exemplar(image, hole, cancel, progress, seed)
    except NoSources:
        if report is not None:
            report.smoothed += 1
        return None
    if report is not None:
        report.textured += 1
    return texture


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
    pyramid = _pyramid(_with_features(image, hole), hole)
    previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    for index, (img, h) in enumerate(pyramid):
        check_cancel(cancel)
        img = img.copy()
        pad_hole = np.pad(h, R)
        if previous is None:
            img[h] = _by_threes(lambda part, h=h: solve(part, h, cancel), img)[h]
            nnf_y = np.full(pad_hole.shape, R, np.int64)
            nnf_x = np.full(pad_hole.shape, R, np.int64)
            em_rounds, search_rounds = 6, 2
        else:
            size = (h.shape[1], h.shape[0])
            up = _by_threes(
                lambda part, size=size: cv2.resize(part, size, interpolation=cv2.INTER_LINEAR),
                previous[0],
            )
            img[h] = up[h]
            # The hole asks for the texture of its surround at this level's scale, not for the
            # (smoother) texture of the coarser fill: its features restart from the membrane.
            img[..., 3:][h] = solve(np.ascontiguousarray(img[..., 3:]), h, cancel)[h]
            nnf_y, nnf_x = _upsample_nnf(previous[1], previous[2], pad_hole.shape)
            em_rounds, search_rounds = (FINE_ROUNDS, 1) if index == len(pyramid) - 1 else (4, 1)
        padded = np.pad(img, ((R, R), (R, R), (0, 0)), mode="reflect")
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
            radius = max(h.shape) if previous is None else FINE_RADIUS
            k.search(
                padded,
                valid,
                ty,
                tx,
                nnf_y,
                nnf_x,
                dist,
                search_rounds,
                rng.integers(2**30),
                radius,
            )
            sigma2 = max(float(np.percentile(dist[ty, tx], VOTE_PERCENTILE)), 1.0)
            k.vote(padded, pad_hole, ty, tx, nnf_y, nnf_x, dist, confidence, sigma2)
            # the reflected border follows the new hole pixels
            padded = np.pad(padded[R:-R, R:-R], ((R, R), (R, R), (0, 0)), mode="reflect")
        if index == len(pyramid) - 1:  # copy the best match outright: averaging blurs texture
            k.rescore(padded, ty, tx, nnf_y, nnf_x, dist)
            k.best_vote(padded, pad_hole, ty, tx, nnf_y, nnf_x, dist, confidence)
        previous = (np.ascontiguousarray(padded[R:-R, R:-R]), nnf_y, nnf_x)
        if progress is not None:
            progress(index + 1, len(pyramid))
    assert previous is not None
    return np.ascontiguousarray(previous[0][:, :, :3])


def _with_features(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Colour plus two texture features (Newson et al. 2014): the local means of |d/dx| and |d/dy|
    of grey over the intact pixels, H x W x 5 float32. They are computed once at full size and
    shrunk with the picture, so every level measures the same fine grain (per-level features let
    fine grass be filled from smoother distant grass: 0.29 of its detail against 0.68). Inside the
    hole they are filled and voted like the colour, so a grainy surround asks for a grainy fill."""
    grey = image.mean(axis=2).astype(np.float32)
    known = cv2.erode((~hole).view(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    size = (FEATURE_WINDOW, FEATURE_WINDOW)
    weight = np.maximum(cv2.blur(known, size), 1e-3)
    features = [
        cv2.blur(known * np.abs(cv2.Sobel(grey, cv2.CV_32F, dx, 1 - dx, ksize=1)), size) / weight
        for dx in (1, 0)
    ]
    return np.concatenate([image, FEATURE_WEIGHT * np.stack(features, axis=2)], axis=2)


def _by_threes(function: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """``function`` applied to up to three channels of ``image`` at a time (OpenCV's resize takes
    at most four), the results stacked back into H x W x C."""
    parts = [
        function(np.ascontiguousarray(image[..., c : c + 3])) for c in range(0, image.shape[2], 3)
    ]
    return np.concatenate([p if p.ndim == 3 else p[..., None] for p in parts], axis=2)


def _pyramid(image: np.ndarray, hole: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Levels coarse to fine: halve until the hole is thin or the level small."""
    levels = [(image, hole)]
    thickness = float(cv2.distanceTransform(hole.view(np.uint8), cv2.DIST_L2, 3).max())
    while thickness > COARSEST and min(levels[-1][1].shape) >= 2 * MIN_SIDE:
        img, h = levels[-1]
        size = ((h.shape[1] + 1) // 2, (h.shape[0] + 1) // 2)
        small = _by_threes(
            lambda part, size=size: cv2.resize(part, size, interpolation=cv2.INTER_AREA), img
        )
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
