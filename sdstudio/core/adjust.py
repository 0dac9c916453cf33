"""Non-generative photo fixes: levels, white balance, denoise, and telling monochrome photos.

Each fix is a pure function: a new array in the input's dtype and layout (grey, RGB or RGBA;
8 or 16 bits); an alpha channel is never changed.
"""

from __future__ import annotations

import threading
from typing import Literal

import cv2
import numpy as np

from sdstudio.core.jobs import Progress, checkpoint
from sdstudio.core.pixels import color_channels, to_rgb8

GREY_CHROMA = 3.0
"""Largest typical channel spread (8-bit levels) of an RGB picture that still looks grey."""
TONE_RESIDUAL = 4.0
"""Largest typical colour deviation from the picture's own tone curve for a sepia (toned) photo."""
_SAMPLE = 250_000
H16_SCALE = 1.0
"""16-bit (L1) strength relative to 8-bit, so one ``strength`` removes about as much noise."""
DENOISE_BAND = 256
"""Rows denoised per step (for progress and cancel)."""
_DENOISE_REACH = 16
"""Rows of context each band needs on each side: search radius 10 + template radius 3, rounded
up. With it every pixel sees exactly what it would in one whole-picture call."""


def _check(image: np.ndarray) -> None:
    if image.dtype not in (np.uint8, np.uint16) or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))
    ):
        raise ValueError(f"unsupported picture {image.dtype} {image.shape}")


def _with_colour(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """A copy of ``image`` whose colour channels are ``colour`` (float), rounded and clipped."""
    out = image.copy()
    top = np.iinfo(image.dtype).max
    color_channels(out)[...] = np.clip(np.rint(colour), 0, top).astype(image.dtype)
    return out


def _sample(array: np.ndarray) -> np.ndarray:
    step = max(1, int(np.sqrt(array.shape[0] * array.shape[1] / _SAMPLE)))
    return array[::step, ::step] if step > 1 else array


def auto_levels(image: np.ndarray, clip: float = 0.005) -> np.ndarray:
    """Stretch the tones so the darkest ``clip`` and brightest ``clip`` fraction just saturate.

    All colour channels share one stretch, so hues (and a sepia tone) are kept.
    """
    _check(image)
    if not 0.0 <= clip < 0.5:
        raise ValueError(f"clip must be in [0, 0.5), not {clip}")
    colour = color_channels(image)
    top = np.iinfo(image.dtype).max
    counts = np.bincount(_sample(colour).ravel(), minlength=top + 1)
    cumulative = np.cumsum(counts) / counts.sum()
    low = int(np.searchsorted(cumulative, clip, side="right"))
    high = int(np.searchsorted(cumulative, 1.0 - clip, side="left"))
    if high <= low:
        return image.copy()
    scale = top / (high - low)
    return _with_colour(image, (colour.astype(np.float32) - low) * scale)


def white_balance(image: np.ndarray) -> np.ndarray:
    """Grey-world correction of a colour cast (faded colour prints); grey pictures unchanged.

    Each channel is scaled so its mean (over pixels neither nearly black nor clipped) equals the
    mean of the three; gains are kept within 0.5-2 so a strongly coloured scene is not ruined.
    """
    _check(image)
    if image.ndim == 2:
        return image.copy()
    colour = color_channels(image)
    top = float(np.iinfo(image.dtype).max)
    sample = _sample(colour).reshape(-1, 3).astype(np.float32)
    usable = (sample.max(axis=1) < 0.98 * top) & (sample.min(axis=1) > 0.02 * top)
    if usable.sum() < 64:
        usable = np.ones(len(sample), bool)
    means = sample[usable].mean(axis=0)
    if np.any(means <= 0):
        return image.copy()
    gains = np.clip(means.mean() / means, 0.5, 2.0).astype(np.float32)
    return _with_colour(image, colour.astype(np.float32) * gains)


def denoise(
    image: np.ndarray,
    strength: float = 0.5,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """Non-local-means denoising; ``strength`` 0..1 (0 = none, 1 = strong, ~ h of 16 levels).

    16-bit pictures are filtered at 16 bits (OpenCV's L1 variant), keeping their precision.
    Works in bands of ``DENOISE_BAND`` rows (the same result as one call): ``progress(done,
    total)`` after each, and ``cancel`` set raises ``Cancelled``.
    """
    _check(image)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, not {strength}")
    if strength == 0.0:
        return image.copy()
    h = 2.0 + 14.0 * strength
    colour = np.ascontiguousarray(color_channels(image))
    out = image.copy()
    target = color_channels(out)
    height = colour.shape[0]
    starts = range(0, height, DENOISE_BAND)
    stop = "Denoise cancelled"
    for done, y0 in enumerate(starts):
        checkpoint(done, len(starts), progress, cancel, stop)
        y1 = min(height, y0 + DENOISE_BAND)
        top, bottom = max(0, y0 - _DENOISE_REACH), min(height, y1 + _DENOISE_REACH)
        result = _nl_means(np.ascontiguousarray(colour[top:bottom]), h, image.dtype)
        target[y0:y1] = result[y0 - top : y0 - top + (y1 - y0)]
    checkpoint(len(starts), len(starts), progress, cancel, stop)
    return out


def _nl_means(colour: np.ndarray, h: float, dtype: np.dtype) -> np.ndarray:
    if dtype == np.uint8 and colour.ndim == 3:
        return cv2.fastNlMeansDenoisingColored(
            colour, h=h, hColor=h, templateWindowSize=7, searchWindowSize=21
        )
    if dtype == np.uint8:
        return cv2.fastNlMeansDenoising(colour, h=h, templateWindowSize=7, searchWindowSize=21)
    return cv2.fastNlMeansDenoising(
        colour,
        h=[h * 257.0 * H16_SCALE],
        templateWindowSize=7,
        searchWindowSize=21,
        normType=cv2.NORM_L1,
    )


def tone_curve(rgb8: np.ndarray) -> tuple[np.ndarray, float]:
    """The picture's colour as a function of luminance: a 256 x 3 table, and how well it fits.

    Returns ``(table, residual)``: ``table[y]`` is the mean RGB of pixels with luminance ``y``
    (interpolated where no pixel has it) and ``residual`` the typical distance, in 8-bit levels, of
    most pixels (the 75th percentile) from the table. A black-and-white or toned (sepia) photo fits closely.
    """
    sample = _sample(rgb8).reshape(-1, 3).astype(np.float64)
    luma = cv2.cvtColor(_sample(rgb8).reshape(1, -1, 3), cv2.COLOR_RGB2GRAY)[0].astype(np.intp)
    inliers = np.ones(len(luma), bool)
    for _ in range(2):  # the second pass leaves out stains and marks far from the first curve
        table = _table(sample[inliers], luma[inliers])
        distance = np.sqrt(np.sum((sample - table[luma]) ** 2, axis=1) / 3.0)
        residual = float(np.percentile(distance, 75))  # robust to stains and coloured marks
        inliers = distance <= max(3.0 * residual, 6.0)
    return table, residual


def _table(sample: np.ndarray, luma: np.ndarray) -> np.ndarray:
    counts = np.bincount(luma, minlength=256).astype(np.float64)
    present = np.flatnonzero(counts)
    table = np.empty((256, 3), np.float32)
    for c in range(3):
        sums = np.bincount(luma, weights=sample[:, c], minlength=256)
        table[:, c] = np.interp(np.arange(256), present, sums[present] / counts[present])
    return table


def is_monochrome(image: np.ndarray) -> Literal["grey", "sepia"] | None:
    """ "grey" for grey pictures or RGB with near-equal channels, "sepia" for a toned photo
    (colour fixed by luminance), None for a colour photo."""
    _check(image)
    if image.ndim == 2:
        return "grey"
    rgb8 = to_rgb8(_sample(image))
    spread = rgb8.max(axis=2).astype(np.int16) - rgb8.min(axis=2)
    if float(np.percentile(spread, 95)) <= GREY_CHROMA:
        return "grey"
    _, residual = tone_curve(rgb8)
    return "sepia" if residual <= TONE_RESIDUAL else None


def tone_table(image: np.ndarray) -> np.ndarray | None:
    """For an RGB picture that looks grey or sepia, its 256 x 3 tone curve; else None (colour
    photos, and grey pictures, which have no colour to keep)."""
    if image.ndim == 2 or is_monochrome(image) is None:
        return None
    return tone_curve(to_rgb8(image))[0]


def on_tone_curve(rgb8: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Keep the luminance of ``rgb8`` (H x W x 3 uint8), take the colour the photo whose tone
    curve is ``table`` has at that luminance: no colour creeps into a black-and-white photo."""
    luma = cv2.cvtColor(np.ascontiguousarray(rgb8), cv2.COLOR_RGB2GRAY)
    return np.clip(np.rint(table[luma]), 0, 255).astype(np.uint8)
