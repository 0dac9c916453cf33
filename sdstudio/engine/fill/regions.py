"""Shading solved per region of similar colour around a hole, for the structure + texture fill.

The membrane under the exemplar's texture interpolates the whole edge of the hole: where the hole
borders two objects of different tone (a dark coat and a bright badge, a yellow petal and the
dark leaves behind it), it carries the tone of one across the other, as a glow or a dark notch.
Here the hole's edge is split into a few colour clusters (k-means over the ring of intact pixels
around it); every cluster gets its own membrane, solved from its own edge pixels only; each hole
pixel takes the clusters in the shares the hole's edge near it has them (the harmonic
interpolation of the edge's tones, raised to ``PRIOR_POWER`` so the tone that surrounds a pixel
wins it); and the exemplar's shading is corrected towards that with a blur that stays inside
each cluster.

Tried and dropped: letting the exemplar's colour pick each hole pixel's cluster (``SPREAD`` is
the width of that likelihood; 1e6 switches it off). It fixes the synthetic coat and petal of
tests/test_fill_failures.py completely, but on photos the exemplar copies a wrong object often
enough that it lost 0.4-0.8 dB on bench_fill.py (2 dB on one object hole); the edge's geometry
alone gained 0.0-0.15 dB. An edge of a single tone gives one cluster, and then exactly the
former blend (the exemplar's detail on the membrane's broad shading).

Also tried and dropped: keeping the exemplar's source patches to the side of the edge each hole
pixel lies on (its tone where that tone held 80% of the edge around it, from labels smoothed over
4 px so that grain is no edge). With the patch's centre deciding a source's side it changed
bench_fill.py by +0.06 dB (19.31 against 19.25 over all holes; object holes +0.05) and made the
synthetic petal's notch deeper (9.6 px against 8.5); with the whole patch deciding it, the petal
side's mean distance from the petal's colour rose from 8.5 to 18. What remains of the petal's notch is geometry: the edge is
continued straight across the hole, and a 150 px circle's arc over an 80 px hole lies 5.4 px
outside its chord.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from sdstudio.engine.fill._common import check_cancel, hole_box
from sdstudio.engine.fill.smooth import solve

RING = 6
"""Width, in pixels, of the ring of intact pixels around the hole whose colours are clustered."""
PAD = 16
"""Pixels past the hole's bounding box that a cluster's membrane reads its edge from."""
MAX_CLUSTERS = 3
SEPARATION = 40.0
"""Clusters whose centres lie closer than this (RGB distance, 0-255) are one tone: merged."""
MIN_SHARE = 0.05
"""A cluster holding less of the ring than this is merged into its nearest neighbour."""
LABEL_SIGMA = 1.5
"""Blur applied before each pixel is given its nearest cluster, so film grain flips no labels."""
SOFT_SIGMA = 2.0
SPREAD = 1e6
"""Width of the exemplar-colour likelihood in a hole pixel's cluster shares: off (see above)."""
PRIOR_POWER = 3.0
"""Sharpens the edge's shares: 1 is close to the single membrane, 4 cut too hard on photos."""
"""The blur that softens the labels into weights, so no seam shows where the label changes."""


def clusters(colours: np.ndarray) -> np.ndarray:
    """The distinct tones among ``colours`` (N x 3 float): k x 3 centres, k from 1 to
    ``MAX_CLUSTERS``. Deterministic: k-means from a farthest-point start."""
    colours = colours.astype(np.float64)
    centres = [np.median(colours, axis=0)]
    for _ in range(MAX_CLUSTERS - 1):
        near = np.min([np.linalg.norm(colours - c, axis=1) for c in centres], axis=0)
        # the 99th percentile rather than the farthest: a stray pixel is no tone
        centres.append(colours[np.argsort(near)[int(0.99 * (near.size - 1))]])
    centres = np.array(centres)
    while True:
        centres = _lloyd(colours, centres)
        labels = _nearest(colours, centres)
        shares = np.bincount(labels, minlength=len(centres)) / labels.size
        gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)
        np.fill_diagonal(gaps, np.inf)
        if len(centres) == 1:
            return centres
        small = int(np.argmin(shares))
        if shares[small] < MIN_SHARE:
            centres = np.delete(centres, small, axis=0)
        elif gaps.min() < SEPARATION:
            i, j = np.unravel_index(np.argmin(gaps), gaps.shape)
            merged = (centres[i] * shares[i] + centres[j] * shares[j]) / (shares[i] + shares[j])
            centres = np.vstack([np.delete(centres, [i, j], axis=0), merged])
        else:
            return centres


def _lloyd(colours: np.ndarray, centres: np.ndarray, rounds: int = 8) -> np.ndarray:
    for _ in range(rounds):
        labels = _nearest(colours, centres)
        centres = np.array(
            [
                colours[labels == k].mean(0) if (labels == k).any() else c
                for k, c in enumerate(centres)
            ]
        )
    return centres


def _nearest(colours: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.argmin(((colours[..., None, :] - centres) ** 2).sum(-1), axis=-1)


def shaded(
    image: np.ndarray,
    hole: np.ndarray,
    texture: np.ndarray,
    sigma: float,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """``texture`` (the exemplar fill of ``image``'s hole, float32 H x W x 3) with its shading
    corrected towards the membrane, per region of similar colour around the hole: the correction
    is the membrane minus the texture, blurred by ``sigma`` within each region."""
    ring = cv2.dilate(hole.view(np.uint8), np.ones((2 * RING + 1,) * 2, np.uint8)) > 0
    ring &= ~hole
    centres = clusters(image[ring]) if ring.any() else np.zeros((1, 3))
    if len(centres) == 1:
        smooth = solve(image, hole, cancel)
        return cv2.GaussianBlur(smooth, (0, 0), sigma) + (
            texture - cv2.GaussianBlur(texture, (0, 0), sigma)
        )
    labels, weights = _weights(image, hole, texture, centres, cancel)
    y0, y1, x0, x1 = hole_box(hole, PAD)
    correction = np.zeros_like(texture)
    for k, weight in enumerate(weights):
        check_cancel(cancel)
        box = (slice(y0, y1), slice(x0, x1))
        own = ~hole[box] & (labels[box] == k)
        if not own.any():
            continue
        delta = np.zeros_like(texture)
        membrane = solve(np.ascontiguousarray(image[box]), ~own, cancel)
        delta[box] = np.where(hole[box][..., None], membrane - texture[box], 0)
        spread = cv2.GaussianBlur(weight, (0, 0), sigma)
        local = cv2.GaussianBlur(delta * weight[..., None], (0, 0), sigma)
        correction += weight[..., None] * local / np.maximum(spread, 1e-6)[..., None]
    return texture + correction


def _weights(image, hole, texture, centres, cancel) -> tuple[np.ndarray, list[np.ndarray]]:
    """The intact pixels' tones (H x W), and each pixel's share in each tone (they sum to 1): intact pixels by their colour; hole
    pixels by the exemplar's colour (likelihood, its tone within ``SPREAD``) times how much of
    the hole's edge near them has that tone (the prior: the harmonic interpolation of the edge's
    tones), so a patch of one tone copied far from any edge of it stays uncertain."""
    labels = _nearest(cv2.GaussianBlur(image, (0, 0), LABEL_SIGMA), centres)
    hard = np.stack([(labels == k) for k in range(len(centres))], axis=2).astype(np.float32)
    prior = np.clip(solve(hard, hole, cancel), 1e-3, 1)
    tone = cv2.GaussianBlur(texture, (0, 0), LABEL_SIGMA)
    gap = ((tone[..., None, :] - centres.astype(np.float32)) ** 2).sum(-1)
    likelihood = np.exp(-(gap - gap.min(-1, keepdims=True)) / (2 * SPREAD**2))
    posterior = prior**PRIOR_POWER * likelihood
    posterior /= posterior.sum(-1, keepdims=True)
    soft = np.where(hole[..., None], posterior, hard)
    return labels, [cv2.GaussianBlur(soft[..., k], (0, 0), SOFT_SIGMA) for k in range(len(centres))]


__all__ = ["clusters", "shaded"]
