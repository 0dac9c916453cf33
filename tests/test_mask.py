import numpy as np
import pytest

from sdstudio.core.errors import MaskError
from sdstudio.core.mask import (
    blend_alpha,
    blend_reach,
    bounding_box,
    feather,
    grow,
    invert,
    mask_from_image,
    require_bounding_box,
    shrink,
)
from sdstudio.core.region import Box


def square(size=40, lo=15, hi=25):
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    return mask


def test_mask_from_white_rgb_and_from_alpha():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = 255
    rgb[2, 3] = 100  # dark grey: keep
    assert bounding_box(mask_from_image(rgb)) == Box(2, 1, 3, 2)
    rgba = np.zeros((4, 5, 4), np.uint8)  # black everywhere; alpha marks the area
    rgba[3, 0, 3] = 255
    assert mask_from_image(rgba)[3, 0] == 255 and mask_from_image(rgba).sum() == 255
    grey16 = np.zeros((3, 3), np.uint16)
    grey16[0, 0] = 65535
    assert mask_from_image(grey16)[0, 0] == 255 and mask_from_image(grey16).sum() == 255


def test_opaque_rgba_mask_uses_colour():
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[:, :, 3] = 255
    rgba[1, 1, :3] = 255
    assert mask_from_image(rgba).sum() == 255


def test_bounding_box_and_empty_mask():
    assert bounding_box(square()) == Box(15, 15, 25, 25)
    empty = np.zeros((10, 10), np.uint8)
    assert bounding_box(empty) is None
    with pytest.raises(MaskError, match="empty"):
        require_bounding_box(empty)


def test_grow_shrink_invert():
    mask = square()
    assert bounding_box(grow(mask, 3)) == Box(12, 12, 28, 28)
    assert bounding_box(shrink(mask, 3)) == Box(18, 18, 22, 22)
    inverted = invert(mask)
    assert inverted[0, 0] == 255 and inverted[20, 20] == 0
    assert (invert(inverted) == mask).all()


def test_shrink_keeps_mask_touching_image_edge():
    mask = np.zeros((20, 20), np.uint8)
    mask[:, 15:] = 255  # touches the right edge
    assert shrink(mask, 2)[10, 19] == 255


def test_feather_softens_within_reach():
    soft = feather(square(), 4)
    assert soft[20, 20] == 255
    assert 0 < soft[20, 26] < 255
    assert soft[20, 30] == 0  # more than 4 px past the mask


def test_blend_alpha_is_one_inside_and_zero_beyond_reach():
    mask = square(60, 25, 35)
    alpha = blend_alpha(mask, 4)
    assert alpha.dtype == np.float32
    assert (alpha[mask > 0] == 1.0).all()
    assert bounding_box((alpha > 0).astype(np.uint8)) == Box(25, 25, 35, 35).expand(blend_reach(4))
    assert (blend_alpha(mask, 0) == (mask > 0)).all()
