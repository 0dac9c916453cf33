"""The one tiler (engine/tiling.py): weights summing to one, tiled equal to untiled for a local
function, the source's dtype kept, cancel and progress per tile."""

import threading

import cv2
import numpy as np
import pytest

from sdstudio.engine.streaming import RunCancelled
from sdstudio.engine.tiling import _ramps, run_tiled, tile_starts


def local_upscale(scale: int):
    """A local function (reach: 2 px) with a scale: a 5 x 5 blur, a non-linear curve, then
    nearest-neighbour enlargement."""

    def run(piece: np.ndarray) -> np.ndarray:
        blurred = cv2.blur(piece, (5, 5), borderType=cv2.BORDER_REFLECT)
        if blurred.ndim == 2:
            blurred = blurred[:, :, None]
        curved = np.sqrt(np.clip(blurred, 0, 1))
        return np.repeat(np.repeat(curved, scale, axis=0), scale, axis=1)

    return run


@pytest.mark.parametrize("length,tile,overlap", [(300, 64, 16), (65, 64, 16), (1000, 128, 32), (100, 64, 30)])
def test_tiles_cover_the_side_and_their_weights_sum_to_one(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and min(tile, length - starts[-1]) + starts[-1] == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))
    total = np.zeros(length)
    for start, weight in zip(starts, _ramps(starts, tile, length, overlap // 4), strict=True):
        total[start : start + weight.size] += weight
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_tiled_equals_untiled_for_a_local_function(dtype, scale):
    rng = np.random.default_rng(scale)
    top = np.iinfo(dtype).max
    source = rng.integers(0, top, (150, 203, 3), dtype=dtype, endpoint=True)
    function = local_upscale(scale)
    whole = function(source.astype(np.float32) / top)
    expected = np.clip(np.rint(whole * top), 0, top).astype(dtype)
    tiled = run_tiled(source, function, scale=scale, tile=64, overlap=16)
    assert tiled.dtype == dtype and tiled.shape == (150 * scale, 203 * scale, 3)
    assert int(np.abs(tiled.astype(np.int64) - expected).max()) <= 1  # rounding only


def test_without_overlap_the_seams_show():
    """The test above can fail: with no overlap the blur sees the tiles' cut edges."""
    rng = np.random.default_rng(1)
    source = rng.integers(0, 255, (150, 203, 3), dtype=np.uint8)
    function = local_upscale(1)
    expected = np.rint(function(source / np.float32(255)) * 255)
    tiled = run_tiled(source, function, tile=64, overlap=0)
    assert np.abs(tiled - expected).max() > 1


def test_a_function_may_change_the_channels():
    source = np.full((70, 90, 3), 200, np.uint8)
    def grey(piece):
        return np.repeat(np.repeat(piece.mean(axis=2, keepdims=True), 2, axis=0), 2, axis=1)

    out = run_tiled(source, grey, scale=2, tile=32, overlap=8, channels=1)
    assert out.shape == (140, 180, 1) and (out == 200).all()


def test_progress_per_tile_and_cancel_between_tiles():
    source = np.zeros((100, 100, 3), np.uint8)
    seen = []
    run_tiled(source, lambda p: p, tile=40, overlap=8, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(k, 9) for k in range(1, 10)]

    cancel = threading.Event()
    calls = []

    def function(piece):
        calls.append(1)
        if len(calls) == 2:
            cancel.set()
        return piece

    with pytest.raises(RunCancelled):
        run_tiled(source, function, tile=40, overlap=8, cancel=cancel)
    assert len(calls) == 2


def test_bad_arguments_are_refused():
    source = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="at least"):
        run_tiled(source, lambda p: p, tile=8)
    with pytest.raises(ValueError, match="overlap"):
        run_tiled(source, lambda p: p, tile=64, overlap=40)
    with pytest.raises(ValueError, match="gave"):
        run_tiled(source, lambda p: p, scale=2, tile=64)
