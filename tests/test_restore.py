"""Old-photo repair: bit-exact outside the repaired pixels, monochrome stays monochrome, CLI."""

import cv2
import numpy as np
import pytest
from test_damage import SEPIA, cancel_while_running, scene, scratch

from sdstudio.cli import main
from sdstudio.core.damage import detect_damage
from sdstudio.core.imageio import load_image, read_parameters, save_image
from sdstudio.core.mask import blend_alpha
from sdstudio.engine import restore as restore_module
from sdstudio.engine.restore import BLUR, RestoreCancelled, restore


def psnr(a, b, top=255.0) -> float:
    error = np.mean((np.asarray(a, np.float64) - b) ** 2)
    return 10 * np.log10(top**2 / max(error, 1e-12))


@pytest.fixture
def damaged():
    clean = scene()
    bad, truth = scratch(clean)
    return clean, bad, cv2.dilate(truth, np.ones((3, 3), np.uint8))


def test_grey_in_grey_out_and_repaired(damaged):
    clean, bad, mask = damaged
    out = restore(bad, mask)
    assert out.dtype == np.uint8 and out.ndim == 2 and out.shape == bad.shape
    outside = blend_alpha(mask, BLUR) == 0
    np.testing.assert_array_equal(out[outside], bad[outside])
    hit = mask > 0
    assert psnr(out[hit], clean[hit]) > psnr(bad[hit], clean[hit]) + 10
    assert psnr(out[hit], clean[hit]) > 22


def test_16_bit_rgba_exact_outside_the_mask(damaged):
    clean, bad, mask = damaged
    rng = np.random.default_rng(3)
    fine = rng.integers(0, 257, (*bad.shape, 3))  # precision below 8 bits must survive
    image = np.dstack(
        [
            np.clip(bad[:, :, None].astype(np.int64) * 257 + fine, 0, 65535),
            np.full(bad.shape, 40000),
        ]
    ).astype(np.uint16)
    out = restore(image, mask)
    assert out.dtype == np.uint16 and out.shape == image.shape
    outside = blend_alpha(mask, BLUR) == 0
    np.testing.assert_array_equal(out[outside], image[outside])
    np.testing.assert_array_equal(out[:, :, 3], image[:, :, 3])
    hit = mask > 0
    assert psnr(out[hit, 0] / 257, clean[hit]) > 20


def test_sepia_keeps_its_tone(damaged):
    clean, bad, mask = damaged
    sepia = np.rint(bad[:, :, None] * SEPIA).astype(np.uint8)
    # A bluish stain reaching past the mask must not leak colour into the repair.
    stain = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
    stain[:, 100:] = False
    sepia[stain] = (60, 110, 200)
    out = restore(sepia, mask).astype(np.float64)
    repaired = out[(mask > 0) & stain]
    ratio = repaired[:, 1:] / np.maximum(repaired[:, :1], 1)
    bright = repaired[:, 0] > 60
    np.testing.assert_allclose(ratio[bright].mean(axis=0), SEPIA[1:], atol=0.03)
    assert np.abs(ratio[bright] - SEPIA[1:]).max() < 0.1


def test_colour_photo_is_not_projected():
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (96, 96))
    mask = np.zeros((96, 96), np.uint8)
    mask[40:43, 10:80] = 255
    out = restore(image, mask)
    spread = out[mask > 0].max(axis=1).astype(int) - out[mask > 0].min(axis=1)
    assert spread.mean() > 20  # colour kept, not greyed


def test_large_areas_are_tiled_and_seamless(damaged, monkeypatch):
    clean, bad, mask = damaged
    whole = restore(bad, mask)
    monkeypatch.setattr(restore_module, "TILE", 64)
    tiled = restore(bad, mask)
    outside = blend_alpha(mask, BLUR) == 0
    np.testing.assert_array_equal(tiled[outside], bad[outside])
    hit = mask > 0
    assert abs(psnr(tiled[hit], clean[hit]) - psnr(whole[hit], clean[hit])) < 1.0


def test_progress_and_cancel_while_running(damaged):
    _, bad, mask = damaged
    calls = []
    restore(bad, mask, progress=lambda i, n: calls.append((i, n)))
    windows = calls[0][1]
    assert windows >= 4 and calls == [(i, windows) for i in range(windows + 1)]
    before = bad.copy()
    steps, error = cancel_while_running(
        lambda progress, cancel: restore(bad, mask, progress=progress, cancel=cancel), 2
    )
    assert steps == [0, 1, 2]  # at most the window under way was repaired after the cancel
    assert isinstance(error, RestoreCancelled)
    assert str(error) == "Repair cancelled; the picture is unchanged."
    np.testing.assert_array_equal(bad, before)


def test_empty_mask_is_a_copy_and_wrong_size_fails(damaged):
    _, bad, _ = damaged
    out = restore(bad, np.zeros(bad.shape, np.uint8))
    np.testing.assert_array_equal(out, bad)
    assert out is not bad
    from sdstudio.core.errors import MaskError

    with pytest.raises(MaskError):
        restore(bad, np.zeros((5, 5), np.uint8))


# ---------------------------------------------------------------------------- CLI


def test_cli_detects_writes_mask_and_repairs(tmp_path, damaged, capsys):
    clean, bad, truth = damaged
    save_image(tmp_path / "scan.png", bad)
    out, proposed = tmp_path / "out.png", tmp_path / "mask.png"
    args = ["restore", str(tmp_path / "scan.png"), "-o", str(out), "--mask-out", str(proposed)]
    assert main([*args, "--levels", "--denoise", "0.2"]) == 0
    mask = load_image(proposed)
    assert mask.shape == bad.shape and set(np.unique(mask)) <= {0, 255}
    assert np.count_nonzero(mask & truth) > 0.7 * np.count_nonzero(truth)
    result = load_image(out)
    assert result.ndim == 2 and result.dtype == np.uint8
    text = read_parameters(out)
    assert "damage detected" in text and "auto levels" in text and "denoise 0.2" in text
    assert "Saved" in capsys.readouterr().err


def test_cli_uses_a_given_mask_exactly(tmp_path, damaged):
    _, bad, mask = damaged
    image = np.rint(bad[:, :, None] * SEPIA * 257).astype(np.uint16)
    save_image(tmp_path / "scan.png", image)
    edited = mask.copy()
    edited[:, :160] = 0  # the person kept only the right half
    save_image(tmp_path / "edited.png", edited)
    out = tmp_path / "out.png"
    cmd = ["restore", str(tmp_path / "scan.png"), "--mask", str(tmp_path / "edited.png")]
    assert main([*cmd, "-o", str(out)]) == 0
    result = load_image(out)
    assert result.dtype == np.uint16 and result.shape == image.shape
    outside = blend_alpha(edited, BLUR) == 0
    np.testing.assert_array_equal(result[outside], image[outside])
    assert not np.array_equal(result[edited > 0], image[edited > 0])
    assert "edited.png" in read_parameters(out) and "kept sepia" in read_parameters(out)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("sdstudio: error: ")
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_cli_errors(tmp_path, damaged, capsys):
    _, bad, _ = damaged
    scan = tmp_path / "scan.png"
    save_image(scan, bad)
    assert main(["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png")]) == 1
    assert "does not exist" in error_line(capsys)
    assert main(["restore", str(scan), "-o", str(scan)]) == 1
    assert "overwrite" in error_line(capsys)
    assert main(["restore", str(scan), "-o", str(tmp_path / "o.png"), "--denoise", "3"]) == 1
    assert "--denoise" in error_line(capsys)
    save_image(tmp_path / "small.png", np.zeros((4, 4), np.uint8))
    cmd = ["restore", str(scan), "--mask", str(tmp_path / "small.png")]
    assert main([*cmd, "-o", str(tmp_path / "o.png")]) == 1
    assert "same size" in error_line(capsys)
    assert not (tmp_path / "o.png").exists()


def test_detect_then_restore_round_trip(damaged):
    clean, bad, truth = damaged
    out = restore(bad, detect_damage(bad).mask)
    hit = truth > 0
    assert psnr(out[hit], clean[hit]) > psnr(bad[hit], clean[hit]) + 10


def test_large_losses_are_told_from_thin_damage():
    from sdstudio.engine.restore import large_losses

    mask = np.zeros((120, 160), np.uint8)
    cv2.line(mask, (5, 5), (150, 100), 255, 5)  # a scratch: thin
    mask[80:120, 0:40] = 255  # a torn corner: large
    large = large_losses(mask)
    assert (large[80:120, 0:40] == 255).all()
    assert large[:60].max() == 0  # the scratch stays with the model-free fill


def test_restore_cli_redraws_large_losses_with_a_model_and_keeps_sepia(
    tmp_path, sd1_inpaint_model, capsys
):
    from sdstudio.core.adjust import is_monochrome

    clean = scene()
    sepia = np.rint(clean[:, :, None] * SEPIA).astype(np.uint8)
    mask = np.zeros(clean.shape, np.uint8)
    mask[150:, :70] = 255  # a lost corner
    cv2.line(mask, (120, 20), (300, 60), 255, 3)  # and a scratch
    save_image(tmp_path / "scan.png", sepia)
    save_image(tmp_path / "mask.png", mask)
    out = tmp_path / "out.png"
    cmd = ["restore", str(tmp_path / "scan.png"), "--mask", str(tmp_path / "mask.png")]
    cmd += ["--model", sd1_inpaint_model, "--steps", "3", "--seed", "4", "-o", str(out)]
    assert main(cmd) == 0, capsys.readouterr().err
    result = load_image(out)
    assert is_monochrome(result) == "sepia"  # a random tiny model adds colour; none shows
    repaired = result[150:, :70].astype(np.float64)
    ratio = repaired[:, :, 1:] / np.maximum(repaired[:, :, :1], 1)
    bright = repaired[:, :, 0] > 60
    np.testing.assert_allclose(ratio[bright].mean(axis=0), SEPIA[1:], atol=0.05)
    outside = blend_alpha(cv2.dilate(mask, np.ones((5, 5), np.uint8)), 4) == 0
    np.testing.assert_array_equal(result[outside], sepia[outside])
    text = read_parameters(out)
    assert "large losses redrawn by" in text and "seed 4" in text


def test_restore_cli_without_a_model_says_how_to_redraw_large_losses(tmp_path, capsys):
    clean = scene()
    mask = np.zeros(clean.shape, np.uint8)
    mask[150:, :70] = 255
    save_image(tmp_path / "scan.png", clean)
    save_image(tmp_path / "mask.png", mask)
    cmd = ["restore", str(tmp_path / "scan.png"), "--mask", str(tmp_path / "mask.png")]
    assert main([*cmd, "-o", str(tmp_path / "out.png")]) == 0
    assert "--model MODEL redraws them" in capsys.readouterr().err


@pytest.mark.parametrize("keep_tone", [True, False])
def test_keep_tone_puts_generated_pixels_on_the_photos_tone_curve(keep_tone):
    from sdstudio.core.region import Box
    from sdstudio.core.request import GenerationRequest, Mode
    from sdstudio.engine.diffusion.engine import _result_patch

    sepia = np.rint(scene()[:, :, None] * SEPIA).astype(np.uint8)
    request = GenerationRequest(mode=Mode.IMG2IMG, image=sepia, keep_tone=keep_tone)
    h, w = sepia.shape[:2]
    generated = np.zeros((h, w, 3), np.uint8)
    generated[:] = (40, 90, 230)  # what an unruly model might paint: blue
    patch = _result_patch(request, None, Box(0, 0, w, h), generated).astype(np.float64)
    ratio = patch[:, :, 1:] / np.maximum(patch[:, :, :1], 1)
    if keep_tone:
        np.testing.assert_allclose(ratio.mean(axis=(0, 1)), SEPIA[1:], atol=0.05)
    else:
        assert ratio[:, :, 1].mean() > 2  # blue, as painted
