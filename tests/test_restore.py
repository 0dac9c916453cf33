"""Old-photo repair: bit-exact outside the repaired pixels, monochrome stays monochrome, CLI."""

import threading

import cv2
import numpy as np
import pytest
from test_damage import SEPIA, scene, scratch

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


def test_cancel_and_progress(damaged):
    _, bad, mask = damaged
    calls = []
    restore(bad, mask, progress=lambda i, n: calls.append((i, n)))
    assert calls and calls[-1][0] == calls[-1][1]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RestoreCancelled):
        restore(bad, mask, cancel=cancel)


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
