"""LaMa removal (engine/specialists/lama.py) through the product's paths: the fill engine's crop
and paste-back, "auto" with and without a model installed, and ``sdstudio remove --fill lama``.
A random-weight LaMa: these tests check plumbing and pixels outside the hole, not quality."""

import threading
from pathlib import Path

import numpy as np
import pytest

from sdstudio.cli import main
from sdstudio.core.errors import ModelError
from sdstudio.core.imageio import load_image, read_parameters, save_image
from sdstudio.core.mask import blend_alpha
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine.classical import ClassicalFillEngine
from sdstudio.engine.events import Failed, Finished, Step
from sdstudio.engine.specialists import lama as lama_module
from sdstudio.engine.specialists.lama import find_lama, lama_fill
from sdstudio.engine.specialists.loading import specialists_dir
from sdstudio.engine.streaming import RunCancelled

BLUR = 2


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models folder with a random-weight LaMa (full size, about 200 MB) installed."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.LaMa import LaMa

    torch.set_num_threads(1)  # a shared 2-core machine
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in LaMa(in_nc=4, out_nc=3).eval().state_dict().items()}
    folder = tmp_path_factory.mktemp("home") / "models"  # as SDSTUDIO_HOME's models folder
    specialists_dir(folder).mkdir(parents=True)
    save_file(state, str(specialists_dir(folder) / "big-lama.safetensors"))
    return folder


@pytest.fixture
def lama(models) -> Path:
    path = find_lama(models)
    assert path == specialists_dir(models) / "big-lama.safetensors"
    return path


def odd_picture(h=67, w=91, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 2, y * 3, 255 - x - y], -1) % 256
    return np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


def blob(h=67, w=91) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[20:45, 30:62] = 255
    return mask


def remove(engine, image, mask, **changes):
    request = GenerationRequest(mode=Mode.REMOVE, image=image, mask=mask, mask_blur=BLUR, **changes)
    return list(engine.run(request, threading.Event()))[-1]


def test_lama_fill_changes_the_hole_only(lama):
    image, mask = odd_picture(), blob()
    out = lama_fill(image, mask, lama)
    hole = mask > 0
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert (out[hole] != image[hole]).mean() > 0.5
    again = lama_fill(image, mask, lama).astype(int)  # deterministic, to a rounding hair
    assert np.abs(again - out).max() <= 1


@pytest.mark.parametrize("channels", [0, 3, 4])
def test_lama_fill_keeps_the_picture_layout(lama, channels):
    """Given a 16-bit grey, RGB or RGBA picture (as restore or a caller may), the model sees
    8-bit RGB and the fill comes back in the picture's layout; alpha and outside are kept."""
    rgb = odd_picture()
    image = rgb[:, :, 1] if channels == 0 else rgb
    if channels == 4:
        image = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
    image16 = image.astype(np.uint16) * 257 + 3
    mask = blob()
    hole = mask > 0
    out = lama_fill(image16, mask, lama, device="cpu")
    assert out.dtype == np.uint16 and out.shape == image16.shape
    np.testing.assert_array_equal(out[~hole], image16[~hole])
    seen8 = np.repeat(image[:, :, None], 3, 2) if channels == 0 else rgb  # what the model sees
    filled8 = lama_fill(seen8, mask, lama, device="cpu").astype(np.float64)
    luma = np.array([0.299, 0.587, 0.114])
    expected = (filled8 @ luma if channels == 0 else filled8) * 257
    colour = out if channels == 0 else out[..., :3]
    # within one 8-bit level: float rounding may differ by a hair between two runs of the network
    assert np.abs(colour[hole] - expected[hole]).max() <= 258
    assert np.abs(colour[hole] - expected[hole]).mean() < 2
    if channels == 4:
        np.testing.assert_array_equal(out[..., 3], image16[..., 3])


@pytest.mark.parametrize(
    "layout",
    ["rgb8", "rgb16", "grey8", "grey16", "rgba8", "rgba16"],
)
def test_remove_with_lama_keeps_every_pixel_outside_the_blend_zone(lama, layout):
    image = odd_picture()
    if layout.startswith("grey"):
        image = image[:, :, 1]
    elif layout.startswith("rgba"):
        alpha = np.linspace(40, 255, image.shape[1]).astype(np.uint8)
        image = np.dstack([image, np.broadcast_to(alpha, image.shape[:2])])
    if layout.endswith("16"):
        image = image.astype(np.uint16) * 257 + 3  # not a multiple of 257: no 8-bit round trip
    mask = blob()
    done = remove(ClassicalFillEngine("lama", fill_model=lama), image, mask)
    assert isinstance(done, Finished), getattr(done, "message", done)
    assert "Sampler: LaMa" in done.parameters
    result = done.composite(image)
    assert result.dtype == image.dtype and result.shape == image.shape
    outside = blend_alpha(mask, BLUR) == 0
    np.testing.assert_array_equal(result[outside], image[outside])
    assert not np.array_equal(result[mask > 0], image[mask > 0])


def test_lama_reads_context_around_the_hole_beyond_the_crop(lama, monkeypatch):
    """LaMa is given at least ``CONTEXT`` pixels of picture on each side of the hole (more than
    the engine's crop), and the window stays inside the picture."""
    seen = []
    fill = lama_module.lama_fill
    monkeypatch.setattr(
        lama_module, "lama_fill", lambda rgb, mask, *a: seen.append(mask > 0) or fill(rgb, mask, *a)
    )
    image = odd_picture(300, 260)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[140:160, 120:140] = 255
    done = remove(ClassicalFillEngine("lama", fill_model=lama), image, mask)
    assert isinstance(done, Finished)
    (hole,) = seen
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    assert rows[0] >= lama_module.CONTEXT and hole.shape[0] - rows[-1] > lama_module.CONTEXT
    assert cols[0] >= lama_module.CONTEXT and hole.shape[1] - cols[-1] > lama_module.CONTEXT
    corner = remove(ClassicalFillEngine("lama", fill_model=lama), image, np.roll(mask, 130, 0))
    assert isinstance(corner, Finished) and seen[1].shape[0] < hole.shape[0]  # clamped


def test_auto_uses_lama_for_objects_when_installed_and_not_otherwise(models, tmp_path):
    image, mask = odd_picture(), blob()
    with_model = ClassicalFillEngine("auto", models_folder=lambda: models)
    assert "Sampler: LaMa removal model," in remove(with_model, image, mask).parameters
    without = ClassicalFillEngine("auto", models_folder=lambda: tmp_path)
    parameters = remove(without, image, mask).parameters
    assert "LaMa" not in parameters and "(no model)" in parameters
    stroke = np.zeros(mask.shape, np.uint8)
    stroke[30:33, 10:80] = 255  # a thin stroke: the membrane, model or not
    assert "LaMa" not in remove(with_model, image, stroke).parameters
    both = mask.copy()
    both[60:62, 5:85] = 255  # an object and a stroke: LaMa for one, the membrane for the other
    image[60:62, 5:85] = (255, 0, 0)  # a red line to remove
    done = remove(with_model, image, both)
    assert "LaMa removal model (smooth membrane for thin strokes)" in done.parameters
    line = done.composite(image)[60:62, 10:80].reshape(-1, 3)
    assert (line[:, 0].astype(int) - line[:, 1:].max(1) < 100).all()  # no red left


def test_lama_without_a_model_says_where_to_get_one(tmp_path):
    done = remove(
        ClassicalFillEngine("lama", models_folder=lambda: tmp_path), odd_picture(), blob()
    )
    assert isinstance(done, Failed) and "Model library" in done.message
    assert "--fill auto" in done.message


def test_a_large_crop_is_filled_at_the_working_size(lama, monkeypatch):
    seen = []
    run = lama_module._run

    def spy(descriptor, rgb8, hole, *rest):
        seen.append(rgb8.shape[:2])
        return run(descriptor, rgb8, hole, *rest)

    monkeypatch.setattr(lama_module, "_run", spy)
    monkeypatch.setitem(lama_module.WORK_SIZE, "cpu", 48)
    image = odd_picture(121, 97)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[40:80, 30:70] = 1
    out = lama_fill(image, mask, lama, device="cpu")
    assert seen == [(48, 38)]
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])
    assert (out[mask > 0] != image[mask > 0]).mean() > 0.5


def test_the_model_stays_loaded_until_its_file_changes(lama, monkeypatch, tmp_path):
    import os
    import shutil

    import sdstudio.engine.specialists.loading as loading

    loads = []
    load = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda *a: loads.append(a) or load(*a))
    lama_module.clear_cache()
    image, mask = odd_picture(40, 40), blob(40, 40)
    lama_fill(image, mask, lama, device="cpu")
    lama_fill(image, mask, lama, device="cpu")
    assert len(loads) == 1
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(lama, copy)
    lama_fill(image, mask, copy, device="cpu")
    lama_fill(image, mask, copy, device="cpu")
    assert len(loads) == 2
    os.utime(copy, ns=(10**9, 10**9))  # the file replaced (same name and size): loaded again
    lama_fill(image, mask, copy, device="cpu")
    assert len(loads) == 3


def test_cancel_stops_lama_within_the_network(lama):
    cancel = threading.Event()
    calls = []

    def progress(i, n):
        calls.append((i, n))
        if i == 3:
            cancel.set()

    with pytest.raises(RunCancelled):
        lama_fill(odd_picture(), blob(), lama, cancel, progress)
    assert calls[-1][0] == 3 and calls[-1][1] > 10  # stopped at the next stage, not the end


def test_a_non_lama_model_is_refused(tmp_path):
    from safetensors.torch import save_file
    from spandrel.architectures.SCUNet import SCUNet

    path = tmp_path / "scunet.safetensors"
    save_file({k: v.contiguous() for k, v in SCUNet().state_dict().items()}, str(path))
    with pytest.raises(ModelError, match="not a LaMa"):
        lama_fill(odd_picture(), blob(), path, device="cpu")


def test_cli_remove_with_lama_end_to_end(models, lama, tmp_path, monkeypatch, capsys):
    image, mask = odd_picture(), blob()
    save_image(tmp_path / "photo.png", image)
    save_image(tmp_path / "mask.png", mask)
    args = ["remove", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]
    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path / "home"))  # no model installed there
    assert main([*args, "--fill", "lama", "-o", str(tmp_path / "none.png")]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "Model library" in error[0] and "--fill auto" in error[0]
    assert not (tmp_path / "none.png").exists()

    monkeypatch.setenv("SDSTUDIO_HOME", str(models.parent))  # its models folder: installed
    out = tmp_path / "out.png"
    assert main([*args, "--fill", "lama", "-o", str(out)]) == 0, capsys.readouterr().err
    result = load_image(out)
    outside = blend_alpha(mask, 4) == 0
    np.testing.assert_array_equal(result[outside], image[outside])
    assert not np.array_equal(result[mask > 0], image[mask > 0])
    assert "Sampler: LaMa" in read_parameters(out)

    given = tmp_path / "given.png"
    chosen = ["--fill", "lama", "--fill-model", str(lama), "-o", str(given)]
    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path / "home"))
    assert main([*args, *chosen]) == 0
    np.testing.assert_array_equal(load_image(given), result)


def test_remove_and_refine_starts_from_the_lama_fill(models, sd1_inpaint_model, tmp_path):
    """The SD "remove + refine" pre-fills through the same fill_crop, with the installed LaMa."""
    image, mask = odd_picture(), blob()
    save_image(tmp_path / "photo.png", image)
    save_image(tmp_path / "mask.png", mask)
    calls = []
    fill = lama_module.lama_fill

    def spy(*args, **kwargs):
        calls.append(args[2])
        return fill(*args, **kwargs)

    args = ["remove", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]
    args += ["--refine", "--model", sd1_inpaint_model, "--steps", "2", "--seed", "1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lama_module, "lama_fill", spy)
        assert main([*args, "--models-dir", str(models), "-o", str(tmp_path / "a.png")]) == 0
        assert calls == [find_lama(models)]
        assert main([*args, "--models-dir", str(tmp_path), "-o", str(tmp_path / "b.png")]) == 0
        assert len(calls) == 1  # no LaMa in that folder: the model-free pre-fill
    result = load_image(tmp_path / "a.png")
    outside = blend_alpha(mask, 4) == 0
    np.testing.assert_array_equal(result[outside], image[outside])


def test_a_lama_remove_reports_progress_while_it_runs(lama):
    """A LaMa run takes seconds on a CPU: its stages reach the worker as steps, in order."""
    request = GenerationRequest(mode=Mode.REMOVE, image=odd_picture(), mask=blob(), mask_blur=BLUR)
    events = list(ClassicalFillEngine("lama", fill_model=lama).run(request, threading.Event()))
    steps = [e for e in events if isinstance(e, Step)]
    assert isinstance(events[-1], Finished) and len(steps) >= 3
    fractions = [s.index / s.total for s in steps]
    assert fractions == sorted(fractions) and steps[-1] == Step(1, 1)
