"""Crop, resize, colour-match and paste back: the pixel side of the inpainting recipe.

The hard guarantee lives here: ``blend_patch`` returns every pixel whose blend weight is 0
bit-for-bit from the original, whatever the model did.
"""

from __future__ import annotations

import cv2
import numpy as np

from sdstudio.core.pixels import color_channels, rgb8_to_float_like


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    shrinking = width * height < rgb.shape[0] * rgb.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a 0/255 mask and keep it 0/255 (any pixel touched by the mask stays masked)."""
    if mask.shape[1] == width and mask.shape[0] == height:
        return mask
    shrinking = width * height < mask.shape[0] * mask.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR  # area: no pixel skipped
    resized = cv2.resize(mask, (width, height), interpolation=interpolation)
    return np.where(resized > 0, 255, 0).astype(np.uint8)


def color_ring(mask: np.ndarray, alpha: np.ndarray, width: int = 16) -> np.ndarray:
    """Pixels just outside the blend zone (``alpha`` 0) within ``width`` of it: where the result
    should look like the original. One distance transform, however wide the ring."""
    outside = (mask == 0).astype(np.uint8)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    zone = alpha > 0
    reach = float(distance[zone].max()) if zone.any() else 0.0
    return (distance <= reach + width) & ~zone


def match_colors(generated: np.ndarray, original: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Shift ``generated`` so its LAB mean and spread over ``ring`` match the original's.

    Corrects the colour cast a VAE round trip and the model leave on the region. Both images are
    H x W x 3 uint8 RGB of the same size; ``ring`` is a boolean H x W selection.
    """
    if ring.sum() < 16:
        return generated
    gen_lab = cv2.cvtColor(generated, cv2.COLOR_RGB2LAB).astype(np.float32)
    org_lab = cv2.cvtColor(original, cv2.COLOR_RGB2LAB).astype(np.float32)
    g, o = gen_lab[ring], org_lab[ring]
    g_mean, o_mean = g.mean(axis=0), o.mean(axis=0)
    g_std, o_std = g.std(axis=0), o.std(axis=0)
    ratio = np.clip((o_std + 1.0) / (g_std + 1.0), 0.5, 2.0)
    matched = (gen_lab - g_mean) * ratio + o_mean
    matched = np.clip(np.rint(matched), 0, 255).astype(np.uint8)
    return cv2.cvtColor(matched, cv2.COLOR_LAB2RGB)


def blend_patch(original: np.ndarray, generated: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend an 8-bit RGB result into a crop of the picture, in the picture's layout and depth.

    ``original`` is the crop as stored (grey/RGB/RGBA, 8 or 16 bits), ``generated`` H x W x 3
    uint8, ``alpha`` float32 0..1. Where ``alpha`` is 0 the original pixel is returned unchanged;
    alpha (transparency) channels are kept from the original.
    """
    colour = color_channels(original)
    current = colour.astype(np.float32)
    target = rgb8_to_float_like(generated, original)
    weight = alpha if colour.ndim == 2 else alpha[:, :, None]
    mixed = current + (target - current) * weight
    top = np.iinfo(original.dtype).max
    mixed = np.clip(np.rint(mixed), 0, top).astype(original.dtype)
    keep = alpha <= 0.0
    out = original.copy()
    out_colour = color_channels(out)
    out_colour[...] = np.where(keep if colour.ndim == 2 else keep[:, :, None], colour, mixed)
    return out
