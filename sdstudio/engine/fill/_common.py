"""Shared parts of the fill methods: input validation, cancellation, and the crop-fill-paste frame."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
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


def hole_box(hole: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the hole's bounding box grown by ``margin``, clamped to the picture."""
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    h, w = hole.shape
    return (
        max(0, rows[0] - margin),
        min(h, rows[-1] + 1 + margin),
        max(0, cols[0] - margin),
        min(w, cols[-1] + 1 + margin),
    )


@dataclass
class Report:
    """What an exemplar fill did, part by part of the hole, so its label can say what ran:
    ``textured`` parts were filled from patches of the picture, ``smoothed`` ones got the
    membrane instead because no intact patch lay around them."""

    textured: int = 0
    smoothed: int = 0


PATCH = 7
"""Side of the exemplar fills' square patches."""
R = PATCH // 2
"""The patch radius (a compile-time constant of the numba kernels)."""

MAX_GROUPS = 16
"""Holes of up to this many separate parts are filled part by part (each in its own box, from
sources near it); more (dust, specks) are filled as one."""

Progress = Callable[[int, int], None]
Box = tuple[int, int, int, int]


def fill_in_box(
    rgb: np.ndarray,
    mask: np.ndarray,
    cancel: threading.Event | None,
    box: Callable[[np.ndarray], Box],
    fill: Callable[[np.ndarray, np.ndarray, Progress | None], np.ndarray],
    progress: Progress | None = None,
) -> np.ndarray:
    """The frame of the float fills: check the inputs, crop to ``box(hole)``, let
    ``fill(crop float32, crop hole, progress)`` fill it, round the hole's pixels back into a copy
    of ``rgb``. A hole in a few separate parts is filled part by part (parts whose boxes overlap
    together), so a fill works on the pixels around each part rather than the box around all."""
    hole = check_inputs(rgb, mask)
    check_cancel(cancel)
    if not hole.any():
        return rgb.copy()
    if hole.all():
        raise ValueError("the mask covers the whole picture: nothing to fill from")
    boxes = _group_boxes(hole, box)
    out = rgb.copy()
    for index, (y0, y1, x0, x1) in enumerate(boxes):
        check_cancel(cancel)
        sub = hole[y0:y1, x0:x1]
        part = None
        if progress is not None:
            part = _part_progress(progress, index, len(boxes))
        filled = fill(rgb[y0:y1, x0:x1].astype(np.float32), sub, part)
        out[y0:y1, x0:x1][sub] = np.clip(np.rint(filled[sub]), 0, 255).astype(np.uint8)
    return out


def _part_progress(progress: Progress, index: int, count: int) -> Progress:
    """Progress of part ``index`` of ``count``, reported as a share of the whole fill."""

    def report(done: int, total: int) -> None:
        progress(index * total + done, count * total)

    return report


def _group_boxes(hole: np.ndarray, box: Callable[[np.ndarray], Box]) -> list[Box]:
    """Boxes that cover the hole's parts, merged until no two boxes overlap (so no part's
    pixels fall inside another part's box)."""
    count, labels = cv2.connectedComponents(hole.view(np.uint8), connectivity=8)
    if count - 1 > MAX_GROUPS or count <= 2:
        return [box(hole)]
    groups = [labels == label for label in range(1, count)]
    boxes = [box(group) for group in groups]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _overlap(boxes[i], boxes[j]):
                    groups[i] |= groups.pop(j)
                    boxes.pop(j)
                    boxes[i] = box(groups[i])
                    merged = True
                    break
            if merged:
                break
    return boxes


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]
