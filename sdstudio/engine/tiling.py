"""One tiler for any tile -> tile function with an integer scale (DESIGN.md section 9): learned
upscaling today, high-resolution refine and large removals later (scale 1).

The picture is cut into overlapping tiles. Between two neighbouring tiles the overlap is shared
out by weights that sum to one: each tile's outer ``margin`` (a quarter of the overlap) gets no
weight, so a function that looks a few pixels around (a network's receptive field) never shows
what it did at a tile's cut edge; across the middle of the overlap the weight ramps linearly from
one tile to the next. The weights are separable (a ramp along y times a ramp along x) and are
normalised per axis, so they sum to exactly one everywhere, even where three tiles meet or the
last tile is pushed back to fit the picture. A local function whose reach is under ``margin``
gives the untiled result, within rounding.

Memory is bounded by the tile size: float32 is kept for one strip of tiles only (the rows a tile
row covers); rows no later tile reaches are rounded into the output (uint8 or uint16, like the
source) as soon as a tile row ends. Progress is reported per tile; ``cancel`` is checked before
each tile.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np

from sdstudio.engine.streaming import RunCancelled

TileFunction = Callable[[np.ndarray], np.ndarray]
"""float32 H x W x C in [0, 1] -> float32 (H * scale) x (W * scale) x C' (C' may differ)."""

MIN_TILE = 32
"""The smallest tile the tiler accepts (input pixels)."""


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side of ``length`` pixels begin: as few tiles of ``tile``
    pixels as cover it with neighbours overlapping by at least ``overlap``, spread evenly (the
    last ends at the edge). One tile when the side fits in one."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    span = length - tile
    return [round(span * k / (count - 1)) for k in range(count)]


def _ramps(starts: list[int], tile: int, length: int, margin: int) -> list[np.ndarray]:
    """Per tile, its weights along one axis (input pixels), normalised so that at every pixel
    of the side the weights of the tiles covering it sum to one."""
    raw = []
    for index, start in enumerate(starts):
        size = min(tile, length - start)
        weight = np.ones(size, np.float32)
        if index > 0:  # fade in across the overlap with the previous tile
            shared = starts[index - 1] + tile - start
            weight = np.minimum(weight, _ramp(size, shared, margin))
        if index < len(starts) - 1:  # fade out across the overlap with the next tile
            shared = start + size - starts[index + 1]
            weight = np.minimum(weight, _ramp(size, shared, margin)[::-1])
        raw.append(weight)
    total = np.zeros(length, np.float32)
    for start, weight in zip(starts, raw, strict=True):
        total[start : start + weight.size] += weight
    return [w / total[s : s + w.size] for s, w in zip(starts, raw, strict=True)]


def _ramp(size: int, shared: int, margin: int) -> np.ndarray:
    """0 over the first ``margin`` pixels, then rising linearly to 1 by ``shared - margin``."""
    inner = max(1, shared - 2 * margin)
    position = np.arange(size, dtype=np.float32) - margin + 0.5
    return np.clip(position / inner, 1e-6, 1.0).astype(np.float32)


def _upsample(weight: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(weight, scale) if scale > 1 else weight


def run_tiled(
    source: np.ndarray,
    function: TileFunction,
    *,
    scale: int = 1,
    tile: int = 512,
    overlap: int = 32,
    channels: int | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``function`` applied to ``source`` tile by tile, assembled without seams.

    ``source``: H x W x C, uint8 or uint16 (tiles reach ``function`` as float32 in [0, 1] of
    the full range) or float32 (passed as it is). The result has ``source``'s dtype, shape
    (H * scale, W * scale, ``channels`` or C); integer results are rounded and clipped.
    ``tile`` and ``overlap`` are in input pixels. Raises ``RunCancelled`` when ``cancel`` is
    set (checked before each tile); ``progress(done, total)`` after each tile."""
    if source.ndim != 3:
        raise ValueError(f"The tiler takes H x W x C pictures, not {source.shape}.")
    if tile < MIN_TILE:
        raise ValueError(f"A tile must be at least {MIN_TILE} pixels, not {tile}.")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"The overlap must be between 0 and half the tile, not {overlap}.")
    if scale < 1:
        raise ValueError(f"The scale must be a whole number >= 1, not {scale}.")
    height, width, depth = source.shape
    channels = channels or depth
    top = float(np.iinfo(source.dtype).max) if source.dtype.kind in "ui" else None
    margin = overlap // 4
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    wy, wx = _ramps(ys, tile, height, margin), _ramps(xs, tile, width, margin)
    out = np.empty((height * scale, width * scale, channels), source.dtype)
    total, done = len(ys) * len(xs), 0
    carry: np.ndarray | None = None  # rows of the last strip that the next one also reaches
    for row, y0 in enumerate(ys):
        rows = min(tile, height - y0)
        strip = np.zeros((rows * scale, width * scale, channels), np.float32)
        if carry is not None:
            strip[: carry.shape[0]] = carry
        weight_y = _upsample(wy[row], scale)[:, None, None]
        for column, x0 in enumerate(xs):
            if cancel is not None and cancel.is_set():
                raise RunCancelled()
            cols = min(tile, width - x0)
            piece = source[y0 : y0 + rows, x0 : x0 + cols].astype(np.float32)
            if top is not None:
                piece /= top
            result = np.asarray(function(piece), np.float32)
            expected = (rows * scale, cols * scale, channels)
            if result.shape != expected:
                raise ValueError(f"The tile function gave {result.shape}, not {expected}.")
            weight = weight_y * _upsample(wx[column], scale)[None, :, None]
            strip[:, x0 * scale : (x0 + cols) * scale] += result * weight
            done += 1
            if progress is not None:
                progress(done, total)
        finished = (ys[row + 1] - y0) * scale if row + 1 < len(ys) else strip.shape[0]
        carry = strip[finished:].copy() if finished < strip.shape[0] else None
        _round_into(out[y0 * scale : y0 * scale + finished], strip[:finished], top)
        del strip  # before the next strip is made: one strip in memory at a time
    return out


def _round_into(target: np.ndarray, rows: np.ndarray, top: float | None, block: int = 64) -> None:
    """``rows`` (float32, overwritten) written into ``target``, rounded and clipped to ``top``
    for integer pictures, ``block`` rows at a time so that no temporary the size of a strip is
    made (a 4x strip of a 12 MP photo is 200 MB)."""
    for start in range(0, rows.shape[0], block):
        part = rows[start : start + block]
        if top is not None:
            np.multiply(part, top, out=part)
            np.rint(part, out=part)
            np.clip(part, 0, top, out=part)
        target[start : start + block] = part
