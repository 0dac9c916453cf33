"""Exemplar fill: multi-scale PatchMatch with EM voting (Wexler et al. 2007, Barnes et al. 2009).

Coarse to fine over an image pyramid. At the coarsest level the hole starts from a Telea fill
and a random nearest-neighbour field (NNF); at each finer level the NNF and the image come up from
the level below. At every level a few EM rounds alternate PatchMatch (jump propagation and
random search, all targets at once in numpy) with weighted voting of the matched 7 x 7 patches.

Patch distances use a compact descriptor per pixel instead of all 147 patch values: the blurred
luma at a 3 x 3 grid spread over the 7 x 7 patch plus the blurred chroma at its centre, which keeps
every candidate test one gather of 11 floats per target.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import cv2
import numpy as np

from sdstudio.engine.fill._common import check_cancel, check_inputs, paste

PATCH = 7
R = PATCH // 2
_GRID = [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2)]
_VOTE = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
CHROMA_WEIGHT = 2.0
COARSEST = 3.0
"""Stop shrinking once the hole is at most this many pixels from its edge."""
MIN_SIDE = 24
LOCALITY = 3000.0
"""Cost of a source one picture-diagonal away, in squared descriptor units (~11 x luma^2)."""

Progress = Callable[[int, int], None]


class _NoSources(Exception):
    pass


def patchmatch(
    rgb: np.ndarray,
    mask: np.ndarray,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Fill the hole with texture copied from the rest of the picture (deterministic for a seed)."""
    hole = check_inputs(rgb, mask)
    check_cancel(cancel)
    if not hole.any():
        return rgb.copy()
    if hole.all():
        raise ValueError("the mask covers the whole picture: nothing to copy from")
    y0, y1, x0, x1 = _work_box(hole)
    try:
        filled = _fill(rgb[y0:y1, x0:x1], hole[y0:y1, x0:x1], cancel, progress, seed)
    except _NoSources:  # the hole leaves no intact patch to copy: diffuse from the edge instead
        return cv2.inpaint(
            np.ascontiguousarray(rgb), hole.view(np.uint8) * 255, R, cv2.INPAINT_TELEA
        )
    out = rgb.copy()
    sub = out[y0:y1, x0:x1]
    sub[hole[y0:y1, x0:x1]] = filled[hole[y0:y1, x0:x1]]
    return out


def _work_box(hole: np.ndarray) -> tuple[int, int, int, int]:
    """The hole's bounding box grown by its own size (at least 48 px): where sources come from."""
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    margin = max(48, rows[-1] - rows[0], cols[-1] - cols[0])
    h, w = hole.shape
    return (
        max(0, rows[0] - margin),
        min(h, rows[-1] + 1 + margin),
        max(0, cols[0] - margin),
        min(w, cols[-1] + 1 + margin),
    )


def _pyramid(rgb: np.ndarray, hole: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    levels = [(rgb.astype(np.float32), hole)]
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


class _Level:
    """One pyramid level, padded by R (reflected) so border patches need no special case."""

    def __init__(self, img: np.ndarray, hole: np.ndarray):
        self.h, self.w = hole.shape
        self.img = cv2.copyMakeBorder(img, R, R, R, R, cv2.BORDER_REFLECT_101)
        pad_hole = cv2.copyMakeBorder(hole.view(np.uint8), R, R, R, R, cv2.BORDER_REFLECT_101)
        self.hp, self.wp = pad_hole.shape
        interior = np.zeros_like(pad_hole, bool)
        interior[R:-R, R:-R] = True
        touched = cv2.dilate(pad_hole, np.ones((PATCH, PATCH), np.uint8)) > 0
        self.valid = (interior & ~touched).ravel()
        self.targets = np.flatnonzero(interior & touched)
        self.hole_idx = np.flatnonzero(interior & (pad_hole > 0))
        self.sources = np.flatnonzero(self.valid)
        self.nnf = np.arange(self.hp * self.wp)
        self.locality = np.float32(LOCALITY / (self.h**2 + self.w**2))

    def descriptors(self) -> np.ndarray:
        ycc = cv2.cvtColor(self.img, cv2.COLOR_RGB2YCrCb)
        ycc = cv2.GaussianBlur(ycc, (0, 0), 1.0)
        luma = ycc[:, :, 0]
        desc = np.empty((self.hp, self.wp, len(_GRID) + 2), np.float32)
        for k, (dy, dx) in enumerate(_GRID):
            desc[:, :, k] = np.roll(luma, (-dy, -dx), axis=(0, 1))
        desc[:, :, -2:] = ycc[:, :, 1:] * CHROMA_WEIGHT
        return desc.reshape(-1, desc.shape[2])

    def vote(self, dist: np.ndarray) -> None:
        """Each hole pixel becomes the weighted mean of what the patches covering it propose."""
        weight = np.zeros(self.hp * self.wp, np.float32)
        sigma2 = max(float(np.median(dist)), 1.0)
        weight[self.targets] = np.exp(-dist / (2 * sigma2)) + 1e-6
        flat = self.img.reshape(-1, 3)
        acc = np.zeros((self.hole_idx.size, 3), np.float32)
        total = np.zeros(self.hole_idx.size, np.float32)
        for dy, dx in _VOTE:
            offset = dy * self.wp + dx
            t = self.hole_idx - offset
            w = weight[t]
            acc += w[:, None] * flat[self.nnf[t] + offset]
            total += w
        flat[self.hole_idx] = acc / total[:, None]
        inner = self.img[R:-R, R:-R]
        self.img = cv2.copyMakeBorder(inner, R, R, R, R, cv2.BORDER_REFLECT_101)


def _distance(desc, own, cand, level: _Level, ty, tx) -> np.ndarray:
    """Descriptor distance plus a penalty for far sources: nearby texture is the likelier fill."""
    diff = desc[cand] - own
    sy, sx = np.divmod(cand, level.wp)
    far = ((sy - ty) ** 2 + (sx - tx) ** 2) * level.locality
    return np.einsum("ij,ij->i", diff, diff) + far


def _search(level: _Level, rng: np.random.Generator, rounds: int) -> np.ndarray:
    """PatchMatch over all targets at once; returns each target's patch distance."""
    desc = level.descriptors()
    t = level.targets
    own = desc[t]
    ty, tx = np.divmod(t, level.wp)
    cur = level.nnf[t]
    dist = _distance(desc, own, cur, level, ty, tx)
    size = level.hp * level.wp
    for _ in range(rounds):
        for step in (8, 4, 2, 1):
            for delta in (step, -step, step * level.wp, -step * level.wp):
                cand = np.clip(level.nnf[np.clip(t - delta, 0, size - 1)] + delta, 0, size - 1)
                ok = level.valid[cand]
                d = np.where(ok, _distance(desc, own, cand, level, ty, tx), np.inf)
                better = d < dist
                cur = np.where(better, cand, cur)
                dist = np.where(better, d, dist)
                level.nnf[t] = cur
        radius = max(level.h, level.w)
        cy, cx = np.divmod(cur, level.wp)
        while radius >= 1:
            ny = np.clip(cy + rng.integers(-radius, radius + 1, cy.size), 0, level.hp - 1)
            nx = np.clip(cx + rng.integers(-radius, radius + 1, cx.size), 0, level.wp - 1)
            cand = ny * level.wp + nx
            d = np.where(level.valid[cand], _distance(desc, own, cand, level, ty, tx), np.inf)
            better = d < dist
            cur = np.where(better, cand, cur)
            dist = np.where(better, d, dist)
            radius //= 2
        level.nnf[t] = cur
    return dist


def _upsample_nnf(fine: _Level, coarse: _Level, rng: np.random.Generator) -> None:
    t = fine.targets
    y, x = np.divmod(t, fine.wp)
    y, x = y - R, x - R
    cy = np.minimum(y // 2, coarse.h - 1) + R
    cx = np.minimum(x // 2, coarse.w - 1) + R
    sy, sx = np.divmod(coarse.nnf[cy * coarse.wp + cx], coarse.wp)
    fy = np.clip(2 * (sy - R) + y % 2 + R, 0, fine.hp - 1)
    fx = np.clip(2 * (sx - R) + x % 2 + R, 0, fine.wp - 1)
    cand = fy * fine.wp + fx
    random = fine.sources[rng.integers(0, fine.sources.size, t.size)]
    fine.nnf[t] = np.where(fine.valid[cand], cand, random)


def _fill(rgb, hole, cancel, progress, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pyramid = _pyramid(rgb, hole)
    coarse_img, coarse_hole = pyramid[0]
    start = cv2.inpaint(
        np.clip(coarse_img, 0, 255).astype(np.uint8),
        coarse_hole.view(np.uint8),
        R,
        cv2.INPAINT_TELEA,
    )
    previous: _Level | None = None
    current = start.astype(np.float32)
    n = len(pyramid)
    for i, (img, h) in enumerate(pyramid):
        img = img.copy()
        if previous is not None:
            up = cv2.resize(previous.img[R:-R, R:-R], (h.shape[1], h.shape[0]), cv2.INTER_LINEAR)
            img[h] = up[h]
        else:
            img[h] = current[h]
        level = _Level(img, h)
        if level.sources.size == 0:  # no whole patch outside the hole at this scale
            raise _NoSources
        if previous is None:
            level.nnf[level.targets] = level.sources[
                rng.integers(0, level.sources.size, level.targets.size)
            ]
        else:
            _upsample_nnf(level, previous, rng)
        finest = i == n - 1
        em_rounds, pm_rounds = (2, 1) if finest else ((4, 2) if previous is None else (3, 1))
        for _ in range(em_rounds):
            check_cancel(cancel)
            dist = _search(level, rng, pm_rounds)
            level.vote(dist)
        previous = level
        if progress is not None:
            progress(i + 1, n)
    assert previous is not None
    out = np.clip(np.rint(previous.img[R:-R, R:-R]), 0, 255).astype(np.uint8)
    return paste(rgb, hole, out)
