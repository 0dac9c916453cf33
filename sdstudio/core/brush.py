"""Brushes as plain functions over numpy arrays: erase (mark to regenerate), restore, paint.

A stroke stamps round, anti-aliased dabs along the pointer's path. Within one stroke the dabs
combine with ``max`` into a float coverage, so overlapping dabs never build up past the opacity;
the layer is recomputed from the pixels it had before the stroke, mixed toward the tool's target
by the coverage: ``before + (target - before) * coverage``, where the target is 255 (full) for
ERASE, 0 for RESTORE and the colour for PAINT; a second stroke mixes further, so it builds up.
On a premultiplied RGBA layer (the sketch, ``paint_alpha``) the target is the colour with alpha
255, and that same mix is exactly "colour over what was there".
Coverage and "before" pixels are kept only for the tiles the stroke touched; the "before" tiles
are the stroke's undo entry.

Coordinates are image pixels; pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, so its centre
is ``(j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from sdstudio.core.history import TILE, History, tile_box, tiles_of
from sdstudio.core.region import Box

MIN_SIZE, MAX_SIZE = 1.0, 2000.0
OFFSET_STEPS = 4  # centres of dabs up to 64 px are quantised to 1/4 pixel, larger to 1 pixel
FOOTPRINT_CACHE_BYTES = 64 * 2**20  # a 2000 px footprint alone takes 16 MB
_footprints: OrderedDict[tuple[float, float, float, float], np.ndarray] = OrderedDict()


class Tool(Enum):
    ERASE = "erase"  # raise the mask toward 255: this area is regenerated
    RESTORE = "restore"  # lower the mask toward 0: keep this area
    PAINT = "paint"  # paint a colour (the Document paints on its sketch layer)


@dataclass(frozen=True)
class BrushSettings:
    """``size``: diameter in image pixels; ``spacing``: distance between dabs as a fraction of it."""

    size: float = 40.0
    hardness: float = 0.8
    opacity: float = 1.0
    spacing: float = 0.15

    def __post_init__(self) -> None:
        checks = [
            ("size", self.size, MIN_SIZE, MAX_SIZE, " pixels"),
            ("hardness", self.hardness, 0.0, 1.0, ""),
            ("opacity", self.opacity, 0.0, 1.0, ""),
            ("spacing", self.spacing, 0.01, 10.0, " (a fraction of the size)"),
        ]
        for name, value, lo, hi, unit in checks:
            if not (isinstance(value, numbers.Real) and lo <= value <= hi):
                raise ValueError(
                    f"Brush {name} must be between {lo:g} and {hi:g}{unit}, not {value!r}."
                )

    def with_size(self, size: float) -> BrushSettings:
        """The same brush at ``size``, clamped to 1..2000 pixels."""
        return replace(self, size=min(MAX_SIZE, max(MIN_SIZE, float(size))))

    def spacing_px(self, size: float | None = None) -> float:
        return max(0.5, self.spacing * (self.size if size is None else size))


def _quantise_diameter(diameter: float) -> float:
    """1/4 px below 32 px, then steps under 1/64 of the diameter (pressure varies it smoothly)."""
    step = max(0.25, 2.0 ** (math.floor(math.log2(max(diameter, 1.0))) - 6))
    return max(MIN_SIZE, round(diameter / step) * step)


def _footprint(diameter: float, hardness: float, dx: float, dy: float) -> np.ndarray:
    radius = max(diameter / 2.0, 1.0)  # below 2 px the shape stays 2 px wide, faint at the rim
    half = math.ceil(radius + 0.5)
    cells = np.arange(2 * half + 1, dtype=np.float32) + np.float32(0.5 - half)
    dist = np.hypot((cells - np.float32(dy))[:, None], (cells - np.float32(dx))[None, :])
    falloff = max(radius * (1.0 - hardness), 1.0)  # at least 1 px: anti-aliased edge
    t = np.clip((np.float32(radius) - dist) / np.float32(falloff), 0.0, 1.0, out=dist)
    alpha = t * t * (3.0 - 2.0 * t)
    alpha.setflags(write=False)
    return alpha


def dab_alpha(
    diameter: float, hardness: float, offset: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """A round dab's alpha (float32, 0..1, read-only, cached).

    The array is ``(2R + 1)`` square; the dab's centre is at ``(R + dx, R + dy)`` in its pixel
    coordinates (cell ``(R, R)`` spans ``[R, R + 1)``), ``offset = (dx, dy)`` in [0, 1).
    Alpha is 1 inside the hard core (``hardness`` of the radius) and falls smoothly to 0 at the
    radius. Diameter and offset are quantised so that repeated dabs reuse the same array; the
    cache keeps the most recently used footprints within ``FOOTPRINT_CACHE_BYTES``.
    """
    diameter = _quantise_diameter(diameter)
    steps = OFFSET_STEPS if diameter <= 64 else 1
    dx, dy = (round(v * steps) / steps for v in offset)
    key = (diameter, round(hardness, 2), dx, dy)
    alpha = _footprints.get(key)
    if alpha is not None:
        _footprints.move_to_end(key)
        return alpha
    alpha = _footprints[key] = _footprint(*key)
    used = sum(a.nbytes for a in _footprints.values())
    while used > FOOTPRINT_CACHE_BYTES and len(_footprints) > 1:
        used -= _footprints.popitem(last=False)[1].nbytes
    return alpha


def clear_footprint_cache() -> None:
    _footprints.clear()


def _place(x: float, y: float, diameter: float, hardness: float) -> tuple[np.ndarray, int, int]:
    """The dab's alpha and the image pixel of its top-left cell, for a centre at (x, y)."""
    qx, qy = round(x * OFFSET_STEPS) / OFFSET_STEPS, round(y * OFFSET_STEPS) / OFFSET_STEPS
    ix, iy = math.floor(qx), math.floor(qy)
    alpha = dab_alpha(diameter, hardness, (qx - ix, qy - iy))
    half = alpha.shape[0] // 2
    return alpha, ix - half, iy - half


def _paint_value(array: np.ndarray, color: tuple[int, int, int] | None) -> np.ndarray:
    if color is None or len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
        raise ValueError(f"Painting needs a colour of three values 0-255, not {color!r}.")
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"Painting works on uint8 or uint16 pictures, not {array.dtype}.")
    rgb = np.array(color, np.float32) * (257.0 if array.dtype == np.uint16 else 1.0)
    if array.ndim == 2:
        return np.float32(rgb @ np.array([0.299, 0.587, 0.114], np.float32))
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return rgb
    raise ValueError(
        f"Painting works on H x W, H x W x 3 or H x W x 4 pictures, not {array.shape}."
    )


class Stroke:
    """One press-drag-release of a tool over one layer array; ``end()`` records one undo entry."""

    def __init__(
        self,
        array: np.ndarray,
        tool: Tool,
        settings: BrushSettings,
        color: tuple[int, int, int] | None = None,
        history: History | None = None,
        label: str | None = None,
        *,
        layer: str | None = None,
        on_change: Callable[[Box], None] | None = None,
        on_end: Callable[[Box | None], None] | None = None,
        paint_alpha: bool = False,
    ) -> None:
        """``paint_alpha``: PAINT on a premultiplied RGBA uint8 layer (the sketch), raising its
        alpha with the colour; otherwise an RGBA picture's alpha is left as it is."""
        if paint_alpha:
            if tool is not Tool.PAINT or array.dtype != np.uint8 or array.shape[2:] != (4,):
                raise ValueError(
                    f"Painting with alpha needs the brush on an H x W x 4 uint8 layer, not "
                    f"{tool.value} on {array.shape} {array.dtype}."
                )
            target = np.append(_paint_value(array, color), np.float32(255))
        elif tool is Tool.PAINT:
            target = _paint_value(array, color)
        elif array.ndim == 2 and array.dtype in (np.uint8, np.uint16):
            target = np.float32(np.iinfo(array.dtype).max if tool is Tool.ERASE else 0)
        else:
            raise ValueError(
                f"Erase and restore work on H x W uint8 or uint16 masks, not {array.shape} "
                f"{array.dtype}."
            )
        # Scratch for composing one tile, allocated once: fresh large temporaries cost page
        # faults, and numpy broadcasting over a 3-channel axis is several times slower.
        self._channels = 4 if paint_alpha else 1 if array.ndim == 2 else 3
        self._targets = np.tile(np.atleast_1d(target).astype(np.float32), TILE * TILE)
        self._base, self._mix, self._spread = (
            np.empty(TILE * TILE * self._channels, np.float32) for _ in range(3)
        )
        self.array = array
        self.tool = tool
        self.settings = settings
        self.history = history
        self.label = label or tool.value.capitalize()
        self.layer = layer or ("image" if tool is Tool.PAINT else "mask")
        self._on_change = on_change
        self._on_end = on_end
        self._before: dict[tuple[int, int], np.ndarray] = {}
        self._coverage: dict[tuple[int, int], np.ndarray] = {}
        self._last: tuple[float, float, float] | None = None
        self._to_next = 0.0  # distance along the path to the next dab
        self.dirty: Box | None = None  # everything this stroke has touched so far
        self.finished = False

    # -- path --------------------------------------------------------------------------------

    def add(self, x: float, y: float, pressure: float = 1.0) -> Box | None:
        """Extend the stroke to (x, y); the area that changed (clipped), or None."""
        if self.finished:
            raise RuntimeError("This stroke has ended; begin a new one.")
        pressure = min(1.0, max(0.0, float(pressure)))
        dirty: Box | None = None
        if self._last is None:
            dirty = self._dab(x, y, pressure)
            self._to_next = self._spacing(pressure)
        else:
            x0, y0, p0 = self._last
            length = math.hypot(x - x0, y - y0)
            pos = self._to_next
            while pos <= length:
                t = pos / length
                p = p0 + (pressure - p0) * t
                box = self._dab(x0 + (x - x0) * t, y0 + (y - y0) * t, p)
                if box is not None:
                    dirty = box if dirty is None else dirty.union(box)
                pos += self._spacing(p)
            self._to_next = pos - length
        self._last = (x, y, pressure)
        if dirty is not None:
            self.dirty = dirty if self.dirty is None else self.dirty.union(dirty)
            if self._on_change is not None:
                self._on_change(dirty)
        return dirty

    def end(self) -> None:
        """Record the stroke as one undo entry (changed tiles only). Calling it again does nothing."""
        if self.finished:
            return
        self.finished = True
        changed = None
        if self.history is not None and self._before:
            changed = self.history.record(self.label, self.layer, self._before, self.array)
        self._coverage.clear()
        if self._on_end is not None:
            self._on_end(changed)

    def _dab_size(self, pressure: float) -> float:
        return max(MIN_SIZE, self.settings.size * (0.3 + 0.7 * pressure))

    def _spacing(self, pressure: float) -> float:
        return self.settings.spacing_px(self._dab_size(pressure))

    # -- pixels ------------------------------------------------------------------------------

    def _dab(self, x: float, y: float, pressure: float) -> Box | None:
        opacity = self.settings.opacity * pressure
        if opacity <= 0.0:
            return None
        alpha, left, top = _place(x, y, self._dab_size(pressure), self.settings.hardness)
        size = alpha.shape[0]
        height, width = self.array.shape[:2]
        box = Box(left, top, left + size, top + size).clamp(width, height)
        if box.is_empty():
            return None
        for index in tiles_of(box):
            tile = tile_box(index, self.array)
            part = Box(
                max(box.x0, tile.x0),
                max(box.y0, tile.y0),
                min(box.x1, tile.x1),
                min(box.y1, tile.y1),
            )
            local = (
                slice(part.y0 - tile.y0, part.y1 - tile.y0),
                slice(part.x0 - tile.x0, part.x1 - tile.x0),
            )
            dab = alpha[part.y0 - top : part.y1 - top, part.x0 - left : part.x1 - left]
            if opacity < 1.0:
                dab = dab * np.float32(opacity)
            coverage = self._tile_coverage(index, tile)[local]
            # Recompose only the rows and columns where this dab raises the coverage: along a
            # stroke most of a dab lies over coverage the previous dabs already reached.
            grew = dab > coverage
            rows, cols = np.flatnonzero(grew.any(axis=1)), np.flatnonzero(grew.any(axis=0))
            if rows.size == 0:
                continue
            sub = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            coverage, dab = coverage[sub], dab[sub]
            np.maximum(coverage, dab, out=coverage)
            pixels = (
                slice(part.y0 + sub[0].start, part.y0 + sub[0].stop),
                slice(part.x0 + sub[1].start, part.x0 + sub[1].stop),
            )
            self._compose(self._before[index][local][sub], coverage, self.array[pixels])
        return box

    def _tile_coverage(self, index: tuple[int, int], tile: Box) -> np.ndarray:
        coverage = self._coverage.get(index)
        if coverage is None:
            self._before[index] = self.array[tile.slices].copy()
            coverage = np.zeros((tile.height, tile.width), np.float32)
            self._coverage[index] = coverage
        return coverage

    def _compose(self, before: np.ndarray, coverage: np.ndarray, out: np.ndarray) -> None:
        """Write ``before + (target - before) * coverage``, rounded, into ``out`` (one tile)."""
        if out.ndim == 3 and out.shape[2] > self._channels:  # a picture's alpha stays as it is
            before, out = before[:, :, :3], out[:, :, :3]
        shape = out.shape
        size = coverage.size * self._channels
        base = self._base[:size].reshape(shape)
        mix = self._mix[:size].reshape(shape)
        np.copyto(base, before)
        np.subtract(self._targets[:size].reshape(shape), base, out=mix)
        if self._channels > 1:
            spread = self._spread[:size].reshape(shape)
            for channel in range(self._channels):
                spread[:, :, channel] = coverage
            coverage = spread
        mix *= coverage
        mix += base
        mix += 0.5  # round half up; exact where coverage is 0 or 1
        np.copyto(out, mix, casting="unsafe")
