import pytest

from sdstudio.core.region import Box, generation_size, plan_region


def check(region, bbox, width, height, native):
    box = region.box
    assert box.inside(width, height)
    assert box.contains(bbox)
    assert region.gen_width % 8 == 0 and region.gen_height % 8 == 0
    assert region.gen_width >= 64 and region.gen_height >= 64
    for side, limit in ((box.width, width), (box.height, height)):
        assert side % 8 == 0 or side == limit  # snapped unless the image itself is the limit
    # about native^2 pixels at generation time, same aspect as the crop (within snapping)
    assert 0.8 < region.gen_width * region.gen_height / native**2 < 1.25
    assert abs(region.gen_width / region.gen_height - box.width / box.height) < 0.1


def test_small_mask_in_big_photo_gets_native_context():
    bbox = Box(1000, 700, 1030, 720)
    region = plan_region(bbox, 4000, 3000, padding=32, native=512)
    check(region, bbox, 4000, 3000, 512)
    assert (region.box.width, region.box.height) == (512, 512)
    assert (region.gen_width, region.gen_height) == (512, 512)
    # centred on the mask
    assert abs((region.box.x0 + region.box.x1) / 2 - 1015) <= 4


@pytest.mark.parametrize(
    "bbox",
    [Box(0, 0, 1, 1), Box(3999, 2999, 4000, 3000), Box(0, 2990, 12, 3000), Box(3990, 0, 4000, 5)],
    ids=["top-left pixel", "bottom-right pixel", "bottom-left", "top-right"],
)
def test_masks_at_corners_stay_inside(bbox):
    region = plan_region(bbox, 4000, 3000, padding=32, native=512)
    check(region, bbox, 4000, 3000, 512)


def test_one_pixel_mask():
    bbox = Box(50, 40, 51, 41)
    region = plan_region(bbox, 300, 200, padding=0, native=512)
    check(region, bbox, 300, 200, 512)


def test_full_mask_uses_whole_image_downscaled():
    bbox = Box(0, 0, 4000, 3000)
    region = plan_region(bbox, 4000, 3000, padding=32, native=512)
    assert region.box == bbox
    check(region, bbox, 4000, 3000, 512)
    assert region.gen_width > region.gen_height


def test_image_smaller_than_native_is_upscaled_for_generation():
    bbox = Box(10, 10, 50, 50)
    region = plan_region(bbox, 301, 203, padding=8, native=512)
    assert region.box == Box(0, 0, 301, 203)  # whole image; 301 cannot snap to 8 inside it
    check(region, bbox, 301, 203, 512)


def test_thin_strip_grows_to_max_aspect():
    bbox = Box(0, 1000, 4000, 1004)  # a scratch across the photo
    region = plan_region(bbox, 4000, 3000, padding=8, native=512, max_aspect=2.0)
    assert region.box.width / region.box.height <= 2.0
    check(region, bbox, 4000, 3000, 512)


def test_sdxl_native_size():
    bbox = Box(100, 100, 200, 150)
    region = plan_region(bbox, 2000, 2000, padding=32, native=1024)
    assert (region.gen_width, region.gen_height) == (1024, 1024)


def test_rejects_empty_or_outside_box():
    with pytest.raises(ValueError):
        plan_region(Box(5, 5, 5, 9), 100, 100, padding=0, native=512)
    with pytest.raises(ValueError):
        plan_region(Box(90, 90, 110, 95), 100, 100, padding=0, native=512)


def test_generation_size_keeps_aspect():
    assert generation_size(1024, 512, 512) == (728, 360)  # 512^2 px at 2:1, in 8s
    w, h = generation_size(3000, 4000, 1024)
    assert w % 8 == 0 and h % 8 == 0 and abs(w / h - 0.75) < 0.02
