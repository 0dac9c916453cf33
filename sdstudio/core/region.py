"""Region geometry: which part of the picture a generation works on, and at what size.

Inpainting works on a crop, not the whole photo: the mask's bounding box plus padding (context),
grown to at least the model's native size (or the whole image when that is smaller), to an aspect
the model handles (at most ``max_aspect``:1), snapped to multiples of 8 and clamped to the image.
The crop is then resized to a generation size of about ``native``^2 pixels with the same aspect,
also in multiples of 8, so a 24 MP photo with a small mask costs what a 512^2 image costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    """A pixel rectangle; ``x1``/``y1`` are exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index a H x W (x C) array: ``array[box.slices]``."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def inside(self, width: int, height: int) -> bool:
        return 0 <= self.x0 < self.x1 <= width and 0 <= self.y0 < self.y1 <= height

    def contains(self, other: Box) -> bool:
        return (
            self.x0 <= other.x0
            and self.y0 <= other.y0
            and other.x1 <= self.x1
            and other.y1 <= self.y1
        )

    def expand(self, pixels: int) -> Box:
        return Box(self.x0 - pixels, self.y0 - pixels, self.x1 + pixels, self.y1 + pixels)

    def union(self, other: Box) -> Box:
        return Box(
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )

    def clamp(self, width: int, height: int) -> Box:
        return Box(max(0, self.x0), max(0, self.y0), min(width, self.x1), min(height, self.y1))

    def __str__(self) -> str:
        return f"{self.width}x{self.height} at ({self.x0}, {self.y0})"


@dataclass(frozen=True)
class Region:
    """Where to crop (``box``, image pixels) and the size to generate at (multiples of 8)."""

    box: Box
    gen_width: int
    gen_height: int


def _snap_up(value: int, multiple: int, limit: int) -> int:
    snapped = -(-value // multiple) * multiple
    return snapped if snapped <= limit else limit


def _grow_span(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
    """A span of ``size`` (>= hi - lo) containing [lo, hi), centred on it, inside [0, limit)."""
    start = lo - math.ceil((size - (hi - lo)) / 2)
    start = min(max(start, 0), limit - size)
    return start, start + size


def generation_size(width: int, height: int, native: int, multiple: int = 8) -> tuple[int, int]:
    """About ``native``^2 pixels with the aspect of ``width`` x ``height``, in multiples of 8."""
    scale = native / math.sqrt(width * height)

    def snap(v: float) -> int:
        return max(64, int(round(v * scale / multiple)) * multiple)

    return snap(width), snap(height)


def plan_region(
    bbox: Box,
    width: int,
    height: int,
    *,
    padding: int,
    native: int,
    multiple: int = 8,
    max_aspect: float = 2.0,
) -> Region:
    """Plan the crop around ``bbox`` (the mask's bounding box) in a ``width`` x ``height`` image."""
    if bbox.is_empty() or not bbox.inside(width, height):
        raise ValueError(f"bounding box {bbox} is empty or outside the {width}x{height} image")
    box = bbox.expand(padding).clamp(width, height)
    # Context: at least the model's native size, or the whole image when that is smaller.
    target_w = max(box.width, min(native, width))
    target_h = max(box.height, min(native, height))
    # Aspect: grow the short side so the model never sees a strip thinner than 1:max_aspect.
    if target_w > target_h * max_aspect:
        target_h = min(height, math.ceil(target_w / max_aspect))
    elif target_h > target_w * max_aspect:
        target_w = min(width, math.ceil(target_h / max_aspect))
    target_w = _snap_up(target_w, multiple, width)
    target_h = _snap_up(target_h, multiple, height)
    x0, x1 = _grow_span(box.x0, box.x1, target_w, width)
    y0, y1 = _grow_span(box.y0, box.y1, target_h, height)
    crop = Box(x0, y0, x1, y1)
    gen_w, gen_h = generation_size(crop.width, crop.height, native, multiple)
    return Region(crop, gen_w, gen_h)
