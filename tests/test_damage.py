"""Damage detection on synthetic scans, and the non-generative fixes of sdstudio.core.adjust."""

import cv2
import numpy as np
import pytest

from sdstudio.core.adjust import auto_levels, denoise, is_monochrome, white_balance
from sdstudio.core.damage import detect_damage

SEPIA = np.array([1.0, 0.85, 0.65])


def scene(h=240, w=320, seed=0) -> np.ndarray:
    """Grey scene with strong real edges: sky over a horizon, two rectangles, a disc; film grain."""
    y, x = np.mgrid[0:h, 0:w]
    image = (90 + 60 * y / h).astype(np.float32)
    image[: h // 3] = 200 - 30 * x[: h // 3] / w
    cv2.rectangle(image, (30, 120), (120, 210), 40, -1)
    cv2.rectangle(image, (200, 100), (270, 225), 230, -1)
    cv2.circle(image, (160, 160), 30, 160, -1)
    image += np.random.default_rng(seed).normal(0, 3, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def scratch(image, seed=1):
    """Draw light and dark scratches (1-3 px, straight and curved) and dust: (damaged, truth)."""
    out, truth = image.copy(), np.zeros(image.shape[:2], np.uint8)
    for p0, p1, width, value in [
        ((10, 15), (310, 95), 1, 250),
        ((40, 230), (240, 10), 2, 10),
        ((295, 20), (285, 230), 3, 235),
    ]:
        cv2.line(out, p0, p1, value, width, cv2.LINE_AA)
        cv2.line(truth, p0, p1, 255, width)
    cv2.ellipse(out, (160, 120), (140, 320), 0, 250, 290, 20, 2, cv2.LINE_AA)
    cv2.ellipse(truth, (160, 120), (140, 320), 0, 250, 290, 255, 2)
    rng = np.random.default_rng(seed)
    for k in range(12):
        centre = (int(rng.integers(10, 310)), int(rng.integers(10, 230)))
        radius = int(rng.integers(1, 4))
        cv2.circle(out, centre, radius, 255 if k % 2 else 0, -1)
        cv2.circle(truth, centre, radius, 255, -1)
    return out, truth


def within(mask, truth, tol=2) -> float:
    """Share of ``truth`` pixels within ``tol`` px of ``mask``."""
    near = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tol + 1,) * 2))
    return np.count_nonzero((truth > 0) & (near > 0)) / np.count_nonzero(truth)


def test_finds_scratches_and_dust_in_grey():
    damaged, truth = scratch(scene())
    report = detect_damage(damaged)
    assert report.mask.dtype == np.uint8 and report.mask.shape == truth.shape
    assert set(np.unique(report.mask)) <= {0, 255}
    assert within(report.mask, truth) >= 0.8  # recall
    assert within(truth, report.mask) >= 0.8  # precision
    assert report.counts["dust"] >= 6
    assert report.counts["scratch"] + report.counts["crease"] >= 1


def test_each_kind_of_line_is_found_on_its_own():
    clean = scene()
    for width, value in ((1, 245), (1, 15), (3, 250), (2, 5)):
        damaged, truth = clean.copy(), np.zeros_like(clean)
        cv2.line(damaged, (20, 200), (300, 30), value, width, cv2.LINE_AA)
        cv2.line(truth, (20, 200), (300, 30), 255, width)
        assert within(detect_damage(damaged).mask, truth) >= 0.8, (width, value)


def test_real_edges_and_texture_are_not_damage():
    clean = scene()
    mask = detect_damage(clean).mask
    assert np.count_nonzero(mask) <= 0.002 * mask.size
    # Even at the highest sensitivity, step edges give at most a sprinkle.
    assert np.count_nonzero(detect_damage(clean, sensitivity=1.0).mask) <= 0.01 * mask.size


def test_sensitivity_orders_faint_scratches():
    damaged, truth = scene(), np.zeros((240, 320), np.uint8)
    faint = damaged.astype(np.int16)
    line = np.zeros_like(truth)
    cv2.line(line, (10, 60), (310, 230), 255, 1)
    faint[line > 0] += 14
    faint = np.clip(faint, 0, 255).astype(np.uint8)
    low = within(detect_damage(faint, sensitivity=0.0).mask, line)
    high = within(detect_damage(faint, sensitivity=1.0).mask, line)
    assert high >= 0.8 and low < high


@pytest.mark.parametrize("layout", ["rgb8", "sepia16", "rgba8"])
def test_colour_and_16_bit_inputs(layout):
    damaged, truth = scratch(scene())
    if layout == "rgb8":
        image = np.repeat(damaged[:, :, None], 3, axis=2)
    elif layout == "sepia16":
        image = np.rint(damaged[:, :, None] * SEPIA * 257).astype(np.uint16)
    else:
        image = np.dstack([damaged, damaged, damaged, np.full_like(damaged, 255)])
    assert within(detect_damage(image).mask, truth) >= 0.8


def test_rejects_bad_sensitivity():
    with pytest.raises(ValueError):
        detect_damage(scene(), sensitivity=1.5)


# --------------------------------------------------------------------------- adjust


def test_is_monochrome():
    grey = scene()
    assert is_monochrome(grey) == "grey"
    assert is_monochrome(np.repeat(grey[:, :, None], 3, axis=2)) == "grey"
    sepia = np.rint(grey[:, :, None] * SEPIA).astype(np.uint8)
    assert is_monochrome(sepia) == "sepia"
    assert is_monochrome(np.rint(grey[:, :, None] * SEPIA * 257).astype(np.uint16)) == "sepia"
    colour = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert is_monochrome(colour) is None


@pytest.mark.parametrize("dtype,top", [(np.uint8, 255), (np.uint16, 65535)])
def test_auto_levels_stretches_and_keeps_layout(dtype, top):
    ramp = np.tile(np.linspace(0.3, 0.6, 200), (50, 1)) * top
    image = np.dstack([ramp, ramp * 0.9, ramp * 0.8, np.full_like(ramp, top * 0.5)])
    image = np.rint(image).astype(dtype)
    out = auto_levels(image)
    assert out.dtype == dtype and out.shape == image.shape
    assert out[:, :, :3].min() == 0 and out[:, :, :3].max() == top
    np.testing.assert_array_equal(out[:, :, 3], image[:, :, 3])  # alpha untouched
    assert np.all(out[:, :, 0] >= out[:, :, 2])  # one stretch for all channels: hue kept
    grey = auto_levels(image[:, :, 0])
    assert grey.ndim == 2 and grey.min() == 0 and grey.max() == top


@pytest.mark.parametrize("dtype,top", [(np.uint8, 255), (np.uint16, 65535)])
def test_white_balance_removes_a_cast(dtype, top):
    grey = scene().astype(np.float64) / 255
    cast = np.rint(grey[:, :, None] * np.array([0.95, 0.7, 0.6]) * top).astype(dtype)
    out = white_balance(cast)
    assert out.dtype == dtype and out.shape == cast.shape
    means = out.reshape(-1, 3).mean(axis=0)
    assert means.max() - means.min() < 0.02 * top
    before = cast.reshape(-1, 3).mean(axis=0)
    assert before.max() - before.min() > 0.2 * top
    np.testing.assert_array_equal(white_balance(cast[:, :, 0]), cast[:, :, 0])


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 1), (np.uint16, 257)])
@pytest.mark.parametrize("channels", [0, 3])
def test_denoise_reduces_noise(dtype, scale, channels):
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(60, 190, 96), (96, 1))
    if channels:
        clean = np.dstack([clean, clean * 0.9, clean * 0.7])
    noisy = np.clip(np.rint((clean + rng.normal(0, 6, clean.shape)) * scale), 0, 255 * scale)
    noisy = noisy.astype(dtype)
    out = denoise(noisy, 0.5)
    assert out.dtype == dtype and out.shape == noisy.shape
    before = np.std(noisy / scale - clean)
    after = np.std(out / scale - clean)
    assert after < 0.5 * before
    np.testing.assert_array_equal(denoise(noisy, 0.0), noisy)


def test_denoise_in_bands_matches_one_call(monkeypatch):
    import cv2

    from sdstudio.core import adjust

    rng = np.random.default_rng(5)
    noisy = np.clip(rng.normal(128, 20, (90, 70, 3)), 0, 255).astype(np.uint8)
    whole = cv2.fastNlMeansDenoisingColored(
        noisy, h=9, hColor=9, templateWindowSize=7, searchWindowSize=21
    )
    monkeypatch.setattr(adjust, "DENOISE_BAND", 20)
    steps = []
    out = adjust.denoise(noisy, 0.5, progress=lambda i, n: steps.append((i, n)))
    np.testing.assert_array_equal(out, whole)
    assert steps[0] == (0, 5) and steps[-1] == (5, 5)


def cancel_while_running(work, at_step: int) -> tuple[list[int], BaseException | None]:
    """Run ``work(progress, cancel)`` on a thread of its own and cancel it from this thread once
    it reports step ``at_step`` (its progress callback waits, 30 s at most, for the cancel, so
    the test does not race it). Returns the steps it reported and what it raised."""
    import threading

    cancel, reached, steps, raised = threading.Event(), threading.Event(), [], []

    def progress(done: int, _total: int) -> None:
        steps.append(done)
        if done == at_step:
            reached.set()
            cancel.wait(timeout=30)

    def run() -> None:
        try:
            work(progress, cancel)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            raised.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    assert reached.wait(timeout=60), f"the work never reported step {at_step}"
    cancel.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return steps, raised[0] if raised else None


def test_slow_steps_stop_when_cancelled_while_running(monkeypatch):
    from sdstudio.core import adjust
    from sdstudio.core.errors import Cancelled

    image = scratch(scene())[0]
    before = image.copy()
    steps, error = cancel_while_running(
        lambda progress, cancel: detect_damage(image, progress=progress, cancel=cancel), 1
    )
    assert steps == [0, 1]  # cancelled after finding lines: the dust search was the last work
    assert isinstance(error, Cancelled)
    assert str(error) == "Damage detection cancelled; the picture is unchanged."
    monkeypatch.setattr(adjust, "DENOISE_BAND", 20)  # 12 bands
    steps, error = cancel_while_running(
        lambda progress, cancel: adjust.denoise(image, 0.5, progress=progress, cancel=cancel), 3
    )
    assert steps == [0, 1, 2, 3]  # the band it was starting ran, then it stopped
    assert isinstance(error, Cancelled)
    assert str(error) == "Denoise cancelled; the picture is unchanged."
    np.testing.assert_array_equal(image, before)


def test_a_highlight_along_a_rim_is_not_a_scratch_but_one_across_it_is():
    """A bright 2 px rim along the boundary of a dark shape on a light-grey ground (like a cup's
    lip: the two sides differ by more than the rim stands out) is part of the picture; a scratch
    of the same brightness across the shape is damage."""
    image = np.full((240, 320), 150, np.float32)
    cv2.rectangle(image, (60, 60), (260, 180), 40, -1)
    image += np.random.default_rng(2).normal(0, 2, image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    cv2.line(image, (60, 58), (260, 58), 200, 2, cv2.LINE_AA)  # rim highlight along the top edge
    rim = np.zeros_like(image)
    cv2.line(rim, (70, 58), (250, 58), 255, 2)
    damaged, truth = image.copy(), np.zeros_like(image)
    cv2.line(damaged, (20, 230), (300, 90), 200, 2, cv2.LINE_AA)  # across the shape's edges
    cv2.line(truth, (20, 230), (300, 90), 255, 2)
    mask = detect_damage(damaged).mask
    assert within(mask, truth) >= 0.8
    assert within(mask, rim) <= 0.2
