"""Removals through the product's own path (``ClassicalFillEngine``) get the picture around the
hole that the fills need, and the result's parameters name the fill that really ran."""

import threading

import cv2
import numpy as np
import pytest

from sdstudio.core.mask import grow
from sdstudio.core.metadata import parse_parameters
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine.classical import HALO, ClassicalFillEngine
from sdstudio.engine.events import Finished
from sdstudio.engine.fill import LABELS, SMOOTHED_LABEL, fill


def grain(h, w, seed=0):
    """Film-grain-like texture: blurred noise on a flat colour, no two patches alike."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.0)
    return np.clip((120, 110, 90) + 35 * (noise / noise.std())[..., None], 0, 255).astype(np.uint8)


def square(h, w, y0, x0, side):
    mask = np.zeros((h, w), np.uint8)
    mask[y0 : y0 + side, x0 : x0 + side] = 255
    return mask


def detail(image, where):
    """Fine-detail energy (what a Gaussian of sigma 2 removes) over ``where``."""
    image = image.astype(np.float32)
    return float(((image - cv2.GaussianBlur(image, (0, 0), 2.0))[where] ** 2).mean())


def remove(image, mask, method):
    request = GenerationRequest(mode=Mode.REMOVE, image=image, mask=mask)  # default mask blur
    done = list(ClassicalFillEngine(method).run(request, threading.Event()))[-1]
    assert isinstance(done, Finished), done
    return done, parse_parameters(done.parameters)["Sampler"]


@pytest.mark.parametrize(
    ("method", "ran"),
    [
        ("patchmatch", "patchmatch"),
        ("structure-texture", "structure-texture"),
        ("auto", "structure-texture"),
    ],
)
def test_a_large_removal_keeps_the_texture_and_names_the_exemplar_fill(method, ran):
    image = grain(400, 600)
    mask = square(400, 600, 120, 220, 160)
    done, sampler = remove(image, mask, method)
    out = done.composite(image)
    assert detail(out, mask > 0) > 0.5 * detail(image, mask == 0)
    assert sampler == LABELS[ran]


def test_the_removal_fills_as_from_the_whole_picture():
    image = grain(300, 420, seed=1)
    mask = square(300, 420, 90, 150, 110)
    done, _ = remove(image, mask, "patchmatch")
    whole = fill(image, grow(grow(mask, 4), HALO), "patchmatch")
    hole = mask > 0
    np.testing.assert_array_equal(done.composite(image)[hole], whole[hole])


def test_the_result_still_covers_the_crop_around_the_mask_only():
    image = grain(300, 420, seed=2)
    mask = square(300, 420, 100, 160, 60)
    done, _ = remove(image, mask, "patchmatch")
    reach = 2 * 4 + 16  # blend reach of the default blur, and the crop's context
    assert (done.box.x0, done.box.y0) == (160 - reach, 100 - reach)
    assert (done.box.x1, done.box.y1) == (220 + reach, 160 + reach)


@pytest.mark.parametrize(
    ("method", "y0", "y1", "x0", "x1"),
    [("structure-texture", 900, 930, 1400, 1430), ("harmonic", 1000, 1003, 200, 2800)],
)
def test_a_fill_reads_only_the_pixels_near_the_hole_it_needs(monkeypatch, method, y0, y1, x0, x1):
    """A small hole in a large photo converts a small window, and a long thin stroke (which the
    membrane fills from its edge) no more than the crop around it."""
    from sdstudio.engine import classical

    seen = []
    real = classical.to_rgb8
    monkeypatch.setattr(classical, "to_rgb8", lambda a: seen.append(a.shape[:2]) or real(a))
    image = np.zeros((2000, 3000, 3), np.uint8)
    image[...] = grain(200, 300)[np.arange(2000) % 200][:, np.arange(3000) % 300]
    mask = np.zeros((2000, 3000), np.uint8)
    mask[y0:y1, x0:x1] = 255
    done, _ = remove(image, mask, method)
    assert max((h * w for h, w in seen), default=0) < 0.01 * 2000 * 3000
    if method == "structure-texture":
        assert seen  # a wider window than the crop was read


@pytest.mark.parametrize("method", ["patchmatch", "structure-texture", "auto"])
def test_a_hole_with_no_intact_patch_around_it_is_labelled_as_the_smooth_fill(method):
    image = grain(64, 64)
    mask = np.full((64, 64), 255, np.uint8)
    mask[:, :12] = 0  # grown by the blur and the halo, 6 px stay intact: too few at coarse levels
    done, sampler = remove(image, mask, method)
    assert sampler == SMOOTHED_LABEL
    assert "smooth" in sampler.lower() and "too little picture" in sampler


def test_a_fill_that_smoothed_only_some_parts_says_so():
    from sdstudio.engine.fill import label
    from sdstudio.engine.fill._common import Report

    assert label("patchmatch", Report(textured=2)) == LABELS["patchmatch"]
    assert label("patchmatch", Report(smoothed=1)) == SMOOTHED_LABEL
    mixed = label("structure-texture", Report(textured=1, smoothed=1))
    assert mixed.startswith("Smooth shading + PatchMatch texture") and "smooth where" in mixed


def test_restore_fills_a_large_loss_with_texture_from_around_it():
    """Old-photo repair fills through the same fills: a 160 px loss gets the grain around it,
    and thin scratches stay cheap (their window is the one around them, as before)."""
    from sdstudio.engine.restore import restore

    image = grain(400, 600, seed=3)
    mask = square(400, 600, 120, 220, 160)
    mask[20:22, 30:500] = 255  # a scratch
    out = restore(image, mask)
    loss = square(400, 600, 120, 220, 160) > 0
    assert detail(out, loss) > 0.5 * detail(image, mask == 0)
    np.testing.assert_array_equal(out[grow(mask, 3) == 0], image[grow(mask, 3) == 0])


def test_the_model_removal_pre_fill_reads_beyond_its_crop_too():
    """Remove with a model pre-fills the hole before denoising it partly: a hole about as large
    as the model's crop must be pre-filled with texture, not smoothed for want of sources."""
    from sdstudio.engine.diffusion.engine import _pipeline_inputs

    image = grain(900, 1300, seed=3)
    mask = square(900, 1300, 230, 430, 440)
    request = GenerationRequest(mode=Mode.REMOVE, image=image, mask=mask)
    box, crop, inputs = _pipeline_inputs(request, native=512)
    pre_filled = np.asarray(inputs["image"])
    original = cv2.resize(image[box.slices], pre_filled.shape[1::-1], interpolation=cv2.INTER_AREA)
    hole = cv2.resize(crop.mask, pre_filled.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
    assert detail(pre_filled, hole) > 0.5 * detail(original, ~hole)


def test_auto_judges_a_stroke_thin_by_what_was_painted_not_the_grown_removal_mask():
    """A removal grows the mask by the blur and a halo before filling; a 7 px scratch is still a
    thin stroke ("auto" gives it the membrane), and a 30 px blot still a thick one."""
    image = grain(200, 300, seed=4)
    scratch = np.zeros((200, 300), np.uint8)
    cv2.line(scratch, (20, 50), (280, 150), 255, 7)
    _, ran = remove(image, scratch, "auto")
    assert ran == LABELS["harmonic"]
    blot = square(200, 300, 80, 120, 30)
    _, ran = remove(image, blot, "auto")
    assert ran == LABELS["structure-texture"]
