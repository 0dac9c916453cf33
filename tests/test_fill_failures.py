"""The model-free fill's two visible failures of issue 13, on synthetic pictures that show them:
the smooth shading under the texture carried a neighbouring object's tone across the hole (a
glow in a dark garment beside a bright badge; a dark notch in a petal on a dark background)."""

import threading

import cv2
import numpy as np
import pytest

from sdstudio.engine.fill import fill
from sdstudio.engine.fill.hybrid import DETAIL_SIGMA
from sdstudio.engine.fill.patchmatch import exemplar, work_box
from sdstudio.engine.fill.regions import clusters
from sdstudio.engine.fill.smooth import solve
from sdstudio.engine.streaming import RunCancelled

FILLS = ["auto", "structure-texture"]
COAT, BADGE = (38, 40, 52), (235, 225, 200)
LEAVES, PETAL = (30, 50, 25), (225, 190, 40)


def grain(h, w, seed, sigma=1.0):
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    return noise / noise.std()


def coat_and_badge():
    """A dark woven coat with a bright badge, and a hole in the coat whose edge just reaches
    over the badge's edge (as a person paints round a thing pinned beside it)."""
    h, w = 240, 320
    image = np.empty((h, w, 3), np.float32)
    image[:] = COAT
    image += 6 * grain(h, w, 0)[..., None]
    badge = np.zeros((h, w), bool)
    badge[60:140, 150:230] = True
    image[badge] = BADGE
    image[badge] += 5 * grain(h, w, 1)[badge][:, None]
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (100, 110), (52, 60), 0, 0, 360, 255, -1)
    return np.clip(image, 0, 255).astype(np.uint8), mask, badge


def petal_edge():
    """A large grainy yellow petal on dark leaves, and a hole on the petal's edge, mostly in it."""
    h, w = 300, 300
    yy, xx = np.mgrid[0:h, 0:w]
    petal = (yy - 150) ** 2 + (xx - 40) ** 2 < 150**2
    image = np.empty((h, w, 3), np.float32)
    image[:] = LEAVES
    image += 10 * grain(h, w, 2, 1.5)[..., None]
    image[petal] = PETAL
    image[petal] += 12 * grain(h, w, 3)[petal][:, None]
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (175, 120), 40, 255, -1)
    return np.clip(image, 0, 255).astype(np.uint8), mask, petal


def away_from(region, pixels):
    """Pixels more than ``pixels`` from ``region``'s edge, inside it."""
    return cv2.distanceTransform(region.view(np.uint8), cv2.DIST_L2, 3) > pixels


@pytest.mark.parametrize("method", FILLS)
def test_a_hole_in_a_dark_coat_beside_a_bright_badge_stays_dark(method):
    """Before, the membrane under the texture took the badge's brightness from the few edge
    pixels on it and spread it over the hole as a grey glow (mean 60 against 43, a quarter of
    the coat's pixels in the hole more than 25 levels too bright; now 3%, next to the badge)."""
    image, mask, badge = coat_and_badge()
    coat = (mask > 0) & away_from(~badge, 8)
    out = fill(image, mask, method)[coat].astype(float).mean(axis=1)
    truth = image[coat].astype(float).mean(axis=1)
    assert abs(out.mean() - truth.mean()) < 5
    assert (out > truth.mean() + 25).mean() < 0.05


@pytest.mark.parametrize("method", FILLS)
def test_a_hole_on_a_petal_edge_keeps_the_petal_side_petal_coloured(method):
    """Before, the membrane carried the dark leaves into the petal's side of the hole as a dark
    notch (mean distance from the petal's colour 27, 8% of that side far from it)."""
    image, mask, petal = petal_edge()
    side = (mask > 0) & away_from(petal, 6)
    out = cv2.blur(fill(image, mask, method).astype(np.float32), (5, 5))
    distance = np.linalg.norm(out - np.float32(PETAL), axis=2)[side]
    assert distance.mean() < 15
    assert (distance < 40).mean() > 0.95


def test_the_leaves_side_of_the_petal_hole_stays_dark():
    image, mask, petal = petal_edge()
    side = (mask > 0) & away_from(~petal, 6)
    out = cv2.blur(fill(image, mask).astype(np.float32), (5, 5))
    distance = np.linalg.norm(out - np.float32(LEAVES), axis=2)[side]
    assert distance.mean() < 15


def test_the_edge_tones_are_found_as_clusters():
    rng = np.random.default_rng(0)
    one = np.float32(COAT) + rng.normal(0, 8, (500, 3))
    two = np.concatenate([one, np.float32(BADGE) + rng.normal(0, 8, (200, 3))])
    assert len(clusters(one)) == 1
    found = clusters(two)
    assert len(found) == 2
    for tone in (COAT, BADGE):
        assert np.linalg.norm(found - np.float32(tone), axis=1).min() < 5
    speck = np.concatenate([one, np.float32(BADGE) + rng.normal(0, 8, (5, 3))])
    assert len(clusters(speck)) == 1  # a few stray pixels are no tone of their own


def test_a_hole_in_one_tone_gets_the_former_blend_exactly():
    """One tone around the hole: the texture on the membrane's broad shading, as before."""
    image = np.clip(np.float32(COAT) + 8 * grain(120, 160, 4)[..., None], 0, 255)
    image = image.astype(np.uint8)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[40:80, 60:100] = 255
    y0, y1, x0, x1 = work_box(mask > 0)
    crop, hole = image[y0:y1, x0:x1].astype(np.float32), mask[y0:y1, x0:x1] > 0
    texture, smooth = exemplar(crop, hole), solve(crop, hole)
    blend = cv2.GaussianBlur(smooth, (0, 0), DETAIL_SIGMA) + (
        texture - cv2.GaussianBlur(texture, (0, 0), DETAIL_SIGMA)
    )
    expected = np.clip(np.rint(blend[hole]), 0, 255).astype(np.uint8)
    out = fill(image, mask, "structure-texture")
    assert np.array_equal(out[y0:y1, x0:x1][hole], expected)
    assert np.array_equal(out[mask == 0], image[mask == 0])


@pytest.mark.parametrize("scene", [coat_and_badge, petal_edge])
def test_the_per_region_fill_keeps_every_pixel_outside_the_hole(scene):
    image, mask, _ = scene()
    out = fill(image, mask, "structure-texture")
    assert np.array_equal(out[mask == 0], image[mask == 0])


def test_the_per_region_shading_stops_when_cancelled(monkeypatch):
    """Cancelled while the regions' membranes are solved, the fill stops there."""
    import sdstudio.engine.fill.regions as regions

    image, mask, _ = coat_and_badge()
    cancel = threading.Event()
    calls = []

    def solve_then_cancel(*args, **kwargs):
        calls.append(1)
        cancel.set()
        return solve(*args, **kwargs)

    monkeypatch.setattr(regions, "solve", solve_then_cancel)
    with pytest.raises(RunCancelled):
        fill(image, mask, "structure-texture", cancel)
    assert len(calls) == 1
