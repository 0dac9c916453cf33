import math

import numpy as np
import pytest

from sdstudio.core import brush
from sdstudio.core.brush import BrushSettings, Stroke, Tool, dab_alpha
from sdstudio.core.history import History
from sdstudio.core.mask import bounding_box
from sdstudio.core.region import Box


def stroke_once(array, tool, points, settings=None, color=None, history=None):
    stroke = Stroke(array, tool, settings or BrushSettings(), color, history)
    boxes = [stroke.add(*p) for p in points]
    stroke.end()
    return boxes


# -- settings and footprints ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", 0.5), ("size", 2001), ("hardness", 1.5), ("opacity", -0.1), ("spacing", 0)],
)
def test_settings_are_validated(field, value):
    with pytest.raises(ValueError, match=f"Brush {field} must be between"):
        BrushSettings(**{field: value})
    with pytest.raises(ValueError, match="size"):
        BrushSettings(size=float("nan"))


def test_with_size_clamps():
    brush = BrushSettings(hardness=0.3)
    assert brush.with_size(0).size == 1.0
    assert brush.with_size(10_000).size == 2000.0
    assert brush.with_size(55).size == 55 and brush.with_size(55).hardness == 0.3


def test_dab_is_round_opaque_inside_and_zero_past_the_radius():
    alpha = dab_alpha(40, 0.8, (0.5, 0.5))  # centred on a pixel centre
    half = alpha.shape[0] // 2
    assert alpha.dtype == np.float32 and alpha[half, half] == 1.0
    i, j = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]]
    dist = np.hypot(i - half, j - half)
    assert (alpha[dist <= 15.5] == 1.0).all()  # hard core: 0.8 of the radius (16 px)
    assert (alpha[dist >= 20] == 0.0).all()
    ring = alpha[(dist > 16.5) & (dist < 19.5)]
    assert ((ring > 0) & (ring < 1)).all()  # anti-aliased falloff
    np.testing.assert_array_equal(alpha, alpha.T)
    np.testing.assert_array_equal(alpha, alpha[::-1])


def test_softer_dab_falls_off_earlier_and_footprints_are_cached():
    hard, soft = dab_alpha(40, 1.0, (0.5, 0.5)), dab_alpha(40, 0.0, (0.5, 0.5))
    half = hard.shape[0] // 2
    assert hard[half, half + 12] == 1.0 and soft[half, half + 12] < 0.5
    assert dab_alpha(40, 0.8, (0.5, 0.5)) is dab_alpha(40.01, 0.8, (0.49, 0.51))
    with pytest.raises(ValueError):
        hard[0, 0] = 1.0  # shared: read-only


def test_footprint_cache_stays_within_its_byte_budget(monkeypatch):
    monkeypatch.setattr(brush, "FOOTPRINT_CACHE_BYTES", 2 * dab_alpha(700, 0.5).nbytes)
    brush.clear_footprint_cache()
    kept = [dab_alpha(size, 0.5) for size in (300, 400, 500, 600, 700)][-2:]
    cached = list(brush._footprints.values())  # the most recent ones, within the budget
    assert len(cached) == 2 and all(a is b for a, b in zip(cached, kept, strict=True))
    assert sum(a.nbytes for a in kept) <= brush.FOOTPRINT_CACHE_BYTES
    brush.clear_footprint_cache()


# -- erase / restore --------------------------------------------------------------------------


def test_first_add_stamps_one_dab():
    mask = np.zeros((200, 200), np.uint8)
    stroke = Stroke(mask, Tool.ERASE, BrushSettings(size=20, hardness=1.0))
    box = stroke.add(100.5, 50.5)
    assert mask[50, 100] == 255 and mask[50, 89] == 0 and mask[50, 111] == 0
    assert bounding_box(mask) == Box(91, 41, 110, 60)
    assert box.contains(bounding_box(mask))


def test_fast_stroke_leaves_no_gap():
    mask = np.zeros((700, 1000), np.uint8)
    (a, b) = (10.0, 20.0), (950.0, 640.0)
    stroke_once(mask, Tool.ERASE, [a, b], BrushSettings(size=12, hardness=0.5, spacing=0.25))
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    for t in np.linspace(0.0, 1.0, int(length * 4)):
        x, y = a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t
        assert mask[int(y), int(x)] == 255, (x, y)
    assert mask[600, 100] == 0  # and nothing far off the path


def test_dirty_boxes_cover_every_changed_pixel():
    mask = np.zeros((300, 400), np.uint8)
    stroke = Stroke(mask, Tool.ERASE, BrushSettings(size=30))
    before = mask.copy()
    for x, y in [(50, 50), (120, 80), (300, 250)]:
        box = stroke.add(x, y)
        changed = bounding_box(mask != before)
        assert box.contains(changed)
        before = mask.copy()
    stroke.end()


def test_lower_pressure_makes_a_smaller_fainter_dab():
    full, light = np.zeros((200, 200), np.uint8), np.zeros((200, 200), np.uint8)
    settings = BrushSettings(size=40, hardness=0.8)
    Stroke(full, Tool.ERASE, settings).add(100.5, 100.5, pressure=1.0)
    Stroke(light, Tool.ERASE, settings).add(100.5, 100.5, pressure=0.2)
    assert np.count_nonzero(light) < 0.35 * np.count_nonzero(full)
    assert full.max() == 255 and 45 <= light.max() <= 55  # 255 * 0.2


def test_opacity_does_not_build_up_within_a_stroke_but_does_across_strokes():
    mask = np.zeros((200, 300), np.uint8)
    settings = BrushSettings(size=40, opacity=0.5, spacing=0.05)
    path = [(50, 100), (250, 100), (50, 100), (250, 100)]  # many overlapping dabs
    stroke_once(mask, Tool.ERASE, path, settings)
    assert mask.max() in (127, 128) and mask[100, 150] in (127, 128)
    stroke_once(mask, Tool.ERASE, path, settings)
    assert mask[100, 150] in (191, 192)  # 128 + 0.5 * (255 - 128)


def test_restore_half_opacity_twice_builds_down():
    mask = np.full((100, 100), 255, np.uint8)
    for _ in range(2):
        stroke_once(mask, Tool.RESTORE, [(10, 50), (90, 50)], BrushSettings(size=30, opacity=0.5))
    assert mask[50, 50] in (63, 64)


def test_restore_after_erase_returns_the_mask_to_zero():
    mask = np.zeros((200, 200), np.uint8)
    path = [(40, 40), (160, 160)]
    stroke_once(mask, Tool.ERASE, path, BrushSettings(size=30))
    assert mask[100, 100] == 255
    stroke_once(mask, Tool.RESTORE, path, BrushSettings(size=60, hardness=1.0))
    assert not mask.any()


def test_restore_with_half_opacity_lowers_but_does_not_raise():
    mask = np.full((100, 100), 255, np.uint8)
    mask[:, :50] = 0
    stroke_once(mask, Tool.RESTORE, [(5, 50), (95, 50)], BrushSettings(size=20, opacity=0.5))
    assert mask[50, 70] in (127, 128) and mask[50, 20] == 0 and mask[5, 70] == 255


# -- paint ------------------------------------------------------------------------------------


def test_paint_rgb_mixes_toward_the_colour_only_under_the_brush():
    image = np.full((100, 120, 3), (10, 20, 30), np.uint8)
    stroke_once(image, Tool.PAINT, [(60.5, 50.5)], BrushSettings(size=20), color=(200, 100, 0))
    assert tuple(image[50, 60]) == (200, 100, 0)
    assert tuple(image[5, 5]) == (10, 20, 30)
    edge = image[50, 69]  # on the soft rim: between the two
    assert 10 < edge[0] < 200 and 20 < edge[1] < 100 and 0 < edge[2] < 30


def test_paint_half_opacity_rounds_in_the_array_dtype():
    image = np.full((60, 60, 3), 100, np.uint8)
    stroke_once(image, Tool.PAINT, [(30.5, 30.5)], BrushSettings(size=20, opacity=0.5), (201, 0, 0))
    assert tuple(image[30, 30]) == (151, 50, 50)  # 100 + 0.5 * 101 = 150.5 -> 151


def test_paint_grey_uses_luminance():
    image = np.zeros((50, 50), np.uint8)
    stroke_once(image, Tool.PAINT, [(25.5, 25.5)], BrushSettings(size=10), color=(255, 0, 0))
    assert image[25, 25] == round(0.299 * 255)


def test_paint_rgba_leaves_alpha_alone():
    image = np.zeros((50, 50, 4), np.uint8)
    image[..., 3] = np.arange(50, dtype=np.uint8)[None, :]
    alpha = image[..., 3].copy()
    stroke_once(image, Tool.PAINT, [(25.5, 25.5)], BrushSettings(size=30), color=(0, 255, 9))
    assert tuple(image[25, 25, :3]) == (0, 255, 9)
    np.testing.assert_array_equal(image[..., 3], alpha)


def test_paint_with_alpha_is_colour_over_a_premultiplied_layer():
    layer = np.zeros((50, 50, 4), np.uint8)
    half = BrushSettings(size=20, hardness=1.0, opacity=0.5)
    history = History()
    stroke = Stroke(layer, Tool.PAINT, half, (200, 100, 0), history, paint_alpha=True)
    stroke.add(25.5, 25.5)
    stroke.end()
    assert tuple(layer[25, 25]) == (100, 50, 0, 128)  # premultiplied: the colour at half alpha
    assert not layer[0, 0].any() and history.entries == 1
    stroke_half = Stroke(layer, Tool.PAINT, half, (0, 0, 255), paint_alpha=True)
    stroke_half.add(25.5, 25.5)
    assert tuple(layer[25, 25]) == (50, 25, 128, 192)  # over: alpha 1 - (1 - 0.5)^2


@pytest.mark.parametrize(
    ("array", "tool"),
    [
        (np.zeros((9, 9, 3), np.uint8), Tool.PAINT),
        (np.zeros((9, 9, 4), np.uint16), Tool.PAINT),
        (np.zeros((9, 9, 4), np.uint8), Tool.ERASE),
    ],
)
def test_paint_with_alpha_needs_an_rgba8_layer_and_the_brush(array, tool):
    with pytest.raises(ValueError, match="H x W x 4 uint8"):
        Stroke(array, tool, BrushSettings(), (1, 2, 3), paint_alpha=True)


def test_paint_uint16_scales_the_colour():
    image = np.zeros((50, 50, 3), np.uint16)
    stroke_once(image, Tool.PAINT, [(25.5, 25.5)], BrushSettings(size=10), color=(255, 128, 1))
    assert tuple(image[25, 25]) == (65535, 128 * 257, 257)


def test_paint_needs_a_colour():
    with pytest.raises(ValueError, match="colour"):
        Stroke(np.zeros((10, 10, 3), np.uint8), Tool.PAINT, BrushSettings())
    with pytest.raises(ValueError, match="colour"):
        Stroke(np.zeros((10, 10, 3), np.uint8), Tool.PAINT, BrushSettings(), (256, 0, 0))


# -- clipping and history ---------------------------------------------------------------------


def test_stroke_partly_outside_clips_and_entirely_outside_returns_none():
    mask = np.zeros((100, 100), np.uint8)
    history = History()
    stroke = Stroke(mask, Tool.ERASE, BrushSettings(size=20), history=history)
    box = stroke.add(-3, 50)
    assert box.x0 == 0 and box.x1 < 15 and mask[50, 0] == 255
    assert stroke.add(-500, -500).x0 == 0  # the path's first dabs are still inside
    assert stroke.add(-600, -500) is None
    stroke.end()

    untouched = np.zeros((100, 100), np.uint8)
    stroke = Stroke(untouched, Tool.ERASE, BrushSettings(size=20), history=history)
    assert stroke.add(-200, -200) is None and stroke.add(-50, 300) is None
    stroke.end()
    assert not untouched.any() and history.entries == 1


def test_one_stroke_is_one_undo_entry_and_undo_is_bit_exact():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    original = image.copy()
    history = History()
    stroke = Stroke(image, Tool.PAINT, BrushSettings(size=25), (1, 2, 3), history, "Sketch")
    for x in range(20, 380, 7):
        stroke.add(x, 150 + 60 * math.sin(x / 40), pressure=0.6)
    painted = image.copy()
    assert history.entries == 0  # recorded only at the end
    stroke.end()
    stroke.end()  # idempotent
    assert history.entries == 1 and history.undo_label == "Sketch"
    history.undo({"image": image})
    np.testing.assert_array_equal(image, original)
    history.redo({"image": image})
    np.testing.assert_array_equal(image, painted)
    with pytest.raises(RuntimeError, match="ended"):
        stroke.add(1, 1)


def test_stroke_over_already_erased_area_records_nothing():
    mask = np.full((100, 100), 255, np.uint8)
    history = History()
    stroke_once(mask, Tool.ERASE, [(10, 10), (90, 90)], history=history)
    assert history.entries == 0
