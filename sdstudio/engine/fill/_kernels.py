"""The fills' inner loops, compiled with numba (cached on disk after the first run): the exemplar
fill's search and votes, and the membrane fill's sweeps.

Images are padded float32 H x W x C arrays (colour, then texture features: distances and votes use
every channel); a nearest-neighbour field (NNF) is two int64 H x W arrays giving, for each target
patch centre, the centre of the source patch it copies. Patches are ``_common.PATCH`` square.
Every kernel releases the GIL, so the GUI thread keeps running during a fill.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from sdstudio.engine.fill._common import R  # the patch radius, a compile-time constant


@nb.njit(cache=True, nogil=True)
def patch_distance(img, ty, tx, sy, sx, best):
    """Sum of squared differences of two patches; stops early once it passes ``best``."""
    d = 0.0
    for dy in range(-R, R + 1):
        for dx in range(-R, R + 1):
            for c in range(img.shape[2]):
                e = img[ty + dy, tx + dx, c] - img[sy + dy, sx + dx, c]
                d += e * e
        if d >= best:
            return d
    return d


@nb.njit(cache=True, nogil=True)
def rescore(img, ty_arr, tx_arr, nnf_y, nnf_x, dist):
    """Distances of the current matches (the image under the targets changed since)."""
    for k in range(ty_arr.size):
        ty, tx = ty_arr[k], tx_arr[k]
        dist[ty, tx] = patch_distance(img, ty, tx, nnf_y[ty, tx], nnf_x[ty, tx], 1e30)


@nb.njit(cache=True, nogil=True)
def search(img, valid, ty_arr, tx_arr, nnf_y, nnf_x, dist, rounds, seed, max_radius):
    """PatchMatch (Barnes et al. 2009): propagation from already-visited neighbours, then random
    search in windows halving from ``max_radius`` down to one pixel. Scan order alternates."""
    np.random.seed(seed)
    h, w = valid.shape
    n = ty_arr.size
    for it in range(rounds):
        step = 1 if it % 2 == 0 else -1
        for k0 in range(n):
            k = k0 if step == 1 else n - 1 - k0
            ty, tx = ty_arr[k], tx_arr[k]
            by, bx, bd = nnf_y[ty, tx], nnf_x[ty, tx], dist[ty, tx]
            for q in range(2):
                ny = ty - step if q == 0 else ty
                nx = tx if q == 0 else tx - step
                if ny < R or nx < R or ny >= h - R or nx >= w - R:
                    continue
                cy = nnf_y[ny, nx] + ty - ny
                cx = nnf_x[ny, nx] + tx - nx
                if cy < R or cx < R or cy >= h - R or cx >= w - R or not valid[cy, cx]:
                    continue
                d = patch_distance(img, ty, tx, cy, cx, bd)
                if d < bd:
                    by, bx, bd = cy, cx, d
            radius = min(max(h, w), max_radius)
            while radius >= 1:
                cy = by + np.random.randint(-radius, radius + 1)
                cx = bx + np.random.randint(-radius, radius + 1)
                if R <= cy < h - R and R <= cx < w - R and valid[cy, cx]:
                    d = patch_distance(img, ty, tx, cy, cx, bd)
                    if d < bd:
                        by, bx, bd = cy, cx, d
                radius //= 2
            nnf_y[ty, tx], nnf_x[ty, tx], dist[ty, tx] = by, bx, bd


@nb.njit(cache=True, nogil=True)
def vote(img, hole, ty_arr, tx_arr, nnf_y, nnf_x, dist, confidence, sigma2):
    """Each hole pixel becomes the weighted mean of what the patches covering it propose
    (Wexler et al. 2007). Weights favour close matches and patches near the intact edge."""
    h, w = hole.shape
    acc = np.zeros((h, w, img.shape[2]))
    total = np.zeros((h, w))
    for k in range(ty_arr.size):
        ty, tx = ty_arr[k], tx_arr[k]
        weight = np.exp(-dist[ty, tx] / (2.0 * sigma2)) * confidence[ty, tx] + 1e-12
        sy, sx = nnf_y[ty, tx], nnf_x[ty, tx]
        for dy in range(-R, R + 1):
            for dx in range(-R, R + 1):
                y, x = ty + dy, tx + dx
                if hole[y, x]:
                    for c in range(img.shape[2]):
                        acc[y, x, c] += weight * img[sy + dy, sx + dx, c]
                    total[y, x] += weight
    for y in range(h):
        for x in range(w):
            if hole[y, x] and total[y, x] > 0:
                for c in range(img.shape[2]):
                    img[y, x, c] = acc[y, x, c] / total[y, x]


@nb.njit(cache=True, nogil=True)
def best_vote(img, hole, ty_arr, tx_arr, nnf_y, nnf_x, dist, confidence):
    """Each hole pixel copies the pixel proposed by the best of the patches covering it (the one
    with the highest weight): no averaging, so the texture keeps its grain (Newson et al. 2014)."""
    h, w = hole.shape
    best = np.full((h, w), -1.0)
    out = img.copy()
    for k in range(ty_arr.size):
        ty, tx = ty_arr[k], tx_arr[k]
        weight = confidence[ty, tx] / (1.0 + dist[ty, tx])
        sy, sx = nnf_y[ty, tx], nnf_x[ty, tx]
        for dy in range(-R, R + 1):
            for dx in range(-R, R + 1):
                y, x = ty + dy, tx + dx
                if hole[y, x] and weight > best[y, x]:
                    best[y, x] = weight
                    for c in range(img.shape[2]):
                        out[y, x, c] = img[sy + dy, sx + dx, c]
    for y in range(h):
        for x in range(w):
            if hole[y, x]:
                for c in range(img.shape[2]):
                    img[y, x, c] = out[y, x, c]


@nb.njit(cache=True, nogil=True)
def jacobi(image, ys, xs, sweeps):
    """``sweeps`` Jacobi sweeps of Laplace's equation over the listed pixels of ``image`` (H x W x C
    float32): each becomes the mean of its four neighbours (edges replicated). Other pixels stay."""
    h, w, channels = image.shape
    update = np.empty((ys.size, channels), np.float32)
    for _ in range(sweeps):
        for k in range(ys.size):
            y, x = ys[k], xs[k]
            up, down = max(y - 1, 0), min(y + 1, h - 1)
            left, right = max(x - 1, 0), min(x + 1, w - 1)
            for c in range(channels):
                update[k, c] = 0.25 * (
                    image[up, x, c] + image[down, x, c] + image[y, left, c] + image[y, right, c]
                )
        for k in range(ys.size):
            for c in range(channels):
                image[ys[k], xs[k], c] = update[k, c]
