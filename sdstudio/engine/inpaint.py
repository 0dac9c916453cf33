"""The inpainting recipe (DESIGN.md section 3), shared by every engine that fills a mask.

``prepare`` crops the region around the mask and makes the masks the model and the paste-back
need; an engine turns ``crop.model_rgb`` into new pixels of the same size; ``finish`` colour-
matches them and blends them into the picture's own pixels. Pixels outside the blend mask come
back bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdstudio.core.mask import blend_alpha, blend_reach, bounding_box, grow, require_bounding_box
from sdstudio.core.pixels import to_rgb8
from sdstudio.core.region import Box, Region, plan_region
from sdstudio.core.request import GenerationRequest
from sdstudio.engine.compositing import (
    blend_patch,
    color_ring,
    match_colors,
    resize_mask,
    resize_rgb,
)

CONTEXT = 16
"""Pixels of untouched context kept around the blend zone of a model-free fill."""


@dataclass(frozen=True, eq=False)
class InpaintCrop:
    region: Region
    rgb: np.ndarray
    """The crop as 8-bit RGB (box size)."""
    mask: np.ndarray
    """The request's mask, cropped (box size)."""
    fill_mask: np.ndarray
    """What the model repaints: the mask grown by the blur, so new content covers the seam."""
    alpha: np.ndarray
    """Paste-back weights, float32 0..1 (box size)."""

    @property
    def box(self) -> Box:
        return self.region.box

    def at_model_size(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rgb`` (box size) and the fill mask, resized to the generation size."""
        w, h = self.region.gen_width, self.region.gen_height
        return resize_rgb(rgb, w, h), resize_mask(self.fill_mask, w, h)


def prepare(request: GenerationRequest, native: int | None) -> InpaintCrop:
    """Crop around the mask. ``native``: the model's size (None: no model, no resizing)."""
    image, mask = request.image, request.mask
    assert image is not None and mask is not None  # guaranteed by GenerationRequest
    height, width = mask.shape
    bbox = require_bounding_box(mask)
    reach = blend_reach(request.mask_blur)
    if native is None:
        box = bbox.expand(reach + CONTEXT).clamp(width, height)
        region = Region(box, box.width, box.height)
    else:
        region = plan_region(
            bbox, width, height, padding=max(request.padding, reach), native=native
        )
    crop_mask = np.ascontiguousarray(mask[region.box.slices])
    return InpaintCrop(
        region=region,
        rgb=to_rgb8(image[region.box.slices]),
        mask=crop_mask,
        fill_mask=grow(crop_mask, request.mask_blur),
        alpha=blend_alpha(crop_mask, request.mask_blur),
    )


def finish(request: GenerationRequest, crop: InpaintCrop, generated: np.ndarray) -> np.ndarray:
    """New pixels (any size, 8-bit RGB) -> the patch for ``crop.box`` in the picture's layout."""
    box = crop.box
    generated = resize_rgb(generated, box.width, box.height)
    assert request.image is not None
    original = request.image[box.slices]
    # Only the blend zone changes: colour-match and blend there, not over the whole crop.
    zone = bounding_box((crop.alpha > 0).view(np.uint8))
    if zone is None:
        return original.copy()
    if request.color_match:
        ring = color_ring(crop.mask, crop.alpha)
        window = zone.union(bounding_box(ring.view(np.uint8)) or zone).slices
        generated = generated.copy()
        generated[window] = match_colors(generated[window], crop.rgb[window], ring[window])
    patch = original.copy()
    patch[zone.slices] = blend_patch(
        original[zone.slices], generated[zone.slices], crop.alpha[zone.slices]
    )
    return patch
