import numpy as np

from sdstudio.core.mask import blend_alpha
from sdstudio.engine.compositing import blend_patch, color_ring, match_colors, resize_mask


def scene():
    rng = np.random.default_rng(1)
    original = np.clip(rng.normal(120, 20, (80, 100, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((80, 100), np.uint8)
    mask[30:50, 40:60] = 255
    return original, mask


def test_colour_match_removes_a_cast_measured_on_the_ring():
    original, mask = scene()
    cast = np.clip(original.astype(int) + (30, -10, 15), 0, 255).astype(
        np.uint8
    )  # a VAE-like shift
    alpha = blend_alpha(mask, 3)
    ring = color_ring(mask, alpha)
    assert ring.any() and not (ring & (alpha > 0)).any()
    fixed = match_colors(cast, original, ring)
    before = np.abs(cast[ring].mean(axis=0) - original[ring].mean(axis=0)).max()
    after = np.abs(fixed[ring].mean(axis=0).astype(float) - original[ring].mean(axis=0)).max()
    assert before > 9 and after < 2


def test_blend_patch_alpha_zero_is_exact_alpha_one_is_generated():
    original, mask = scene()
    generated = np.zeros_like(original)
    alpha = blend_alpha(mask, 3)
    out = blend_patch(original, generated, alpha)
    np.testing.assert_array_equal(out[alpha == 0], original[alpha == 0])
    assert (out[mask > 0] == 0).all()
    soft = (alpha > 0) & (alpha < 1)
    assert soft.any() and (out[soft] <= original[soft]).all()


def test_blend_patch_grey_16_bit_stays_grey_16_bit():
    original = np.full((10, 10), 1000, np.uint16)
    generated = np.full((10, 10, 3), (255, 255, 255), np.uint8)
    alpha = np.zeros((10, 10), np.float32)
    alpha[2:5, 2:5] = 1.0
    out = blend_patch(original, generated, alpha)
    assert out.dtype == np.uint16 and out.shape == (10, 10)
    assert (out[2:5, 2:5] == 65535).all() and (out[alpha == 0] == 1000).all()


def test_resize_mask_keeps_every_masked_pixel():
    mask = np.zeros((100, 100), np.uint8)
    mask[50, 50] = 255
    small = resize_mask(mask, 20, 20)
    assert set(np.unique(small)) <= {0, 255} and small.any()
