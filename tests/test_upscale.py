"""Upscaling (engine/specialists/upscale.py): random-weight tiny ESRGAN and compact SRVGGNet
models from spandrel's classes, saved as .safetensors and loaded back through the user's path."""

import threading
from pathlib import Path

import numpy as np
import pytest
from tiny_models import pickle_trap

from sdstudio.core.errors import ModelError, SDStudioError
from sdstudio.engine.specialists import upscale as up
from sdstudio.engine.specialists.loading import PickleConsentNeeded
from sdstudio.engine.streaming import RunCancelled


def save_state(model, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def compact(scale: int, seed: int = 0):
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale).eval()


def esrgan(scale: int, seed: int = 0):
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models folder: a compact 4x and 2x in 'upscalers', a tiny ESRGAN 4x in 'specialists'."""
    import torch

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("models")
    save_state(compact(4), folder / "upscalers" / "compact-x4.safetensors")
    save_state(compact(2, seed=1), folder / "upscalers" / "compact-x2.safetensors")
    save_state(esrgan(4), folder / "specialists" / "4x_tiny_esrgan.safetensors")
    return folder


@pytest.fixture
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 40 * 56).reshape(40, 56)
    noise = rng.normal(0, 20, (40, 56, 3))
    return np.clip(base[:, :, None] + noise, 0, 255).astype(np.uint8)


def test_scale_from_name():
    assert up.scale_from_name("RealESRGAN_x4plus") == 4
    assert up.scale_from_name("RealESRGAN_x2plus") == 2
    assert up.scale_from_name("realesr-general-x4v3") == 4
    assert up.scale_from_name("4x_foolhardy_Remacri") == 4
    assert up.scale_from_name("2x-AnimeSharpV2") == 2
    assert up.scale_from_name("my_upscaler") is None


def test_find_upscaler_prefers_the_scale_then_4x(models, tmp_path):
    assert up.find_upscaler(models, 2).name == "compact-x2.safetensors"
    assert up.find_upscaler(models, 4).name == "4x_tiny_esrgan.safetensors"  # sorted by name
    only4 = tmp_path / "only4"
    save_state(compact(4), only4 / "upscalers" / "x4.safetensors")
    assert up.find_upscaler(only4, 2) == only4 / "upscalers" / "x4.safetensors"
    assert up.find_upscaler(tmp_path / "empty", 2) is None


@pytest.mark.parametrize("name", ["compact-x4", "compact-x2"])
@pytest.mark.parametrize("scale", [2, 4])
def test_output_size_for_2x_and_4x(models, photo, name, scale):
    out = up.upscale(photo, scale, models / "upscalers" / f"{name}.safetensors", device="cpu")
    assert out.shape == (40 * scale, 56 * scale, 3) and out.dtype == np.uint8


def test_a_tiny_esrgan_upscales_4x(models, photo):
    out = up.upscale(photo, 4, models / "specialists" / "4x_tiny_esrgan.safetensors", device="cpu")
    assert out.shape == (160, 224, 3)


def untiled(path: Path, image: np.ndarray) -> np.ndarray:
    """The model run on the whole picture at once, without the tiler, in ``image``'s dtype."""
    import torch

    from sdstudio.engine.specialists.loading import load_model

    top = np.iinfo(image.dtype).max
    descriptor = load_model(path, "cpu")
    tensor = torch.from_numpy(image.astype(np.float32) / top).permute(2, 0, 1)[None]
    with torch.inference_mode():
        out = descriptor(tensor)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    return np.rint(out * top).astype(image.dtype)


def test_tiled_equals_untiled_within_rounding(models):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    path = models / "upscalers" / "compact-x4.safetensors"
    whole = untiled(path, image)
    assert whole.std() > 20  # the model's output is a picture, not a clamped flat field
    tiled = up.upscale(image, 4, path, tile=48, device="cpu")
    assert int(np.abs(tiled.astype(int) - whole).max()) <= 1


def test_a_4x_model_asked_for_2x_is_brought_down_by_area(models, photo):
    import cv2

    path = models / "upscalers" / "compact-x4.safetensors"
    whole = untiled(path, photo)
    expected = cv2.resize(whole, (112, 80), interpolation=cv2.INTER_AREA)
    out = up.upscale(photo, 2, path, device="cpu")
    assert out.shape == (80, 112, 3)
    assert int(np.abs(out.astype(int) - expected).max()) <= 1


def test_16_bit_stays_16_bit_from_its_full_values(models, photo):
    path = models / "upscalers" / "compact-x2.safetensors"
    deep = photo.astype(np.uint16) * 257 + 100  # values an 8-bit copy would lose
    out = up.upscale(deep, 2, path, device="cpu")
    assert out.dtype == np.uint16 and out.shape == (80, 112, 3)
    assert int(np.abs(out.astype(int) - untiled(path, deep)).max()) <= 2  # of 65535
    assert (out % 257 != 0).mean() > 0.5  # not an 8-bit result scaled up


def test_grey_stays_grey_and_alpha_is_kept(models, photo):
    path = models / "upscalers" / "compact-x2.safetensors"
    grey = photo[:, :, 1].copy()
    out = up.upscale(grey, 2, path, device="cpu")
    assert out.shape == (80, 112) and out.dtype == np.uint8
    rgb = up.upscale(np.dstack([grey] * 3), 2, path, device="cpu")
    luma = np.rint(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    assert int(np.abs(out.astype(int) - luma).max()) <= 1

    alpha = np.zeros((40, 56), np.uint8)
    alpha[:, 28:] = 255
    out = up.upscale(np.dstack([photo, alpha]), 2, path, device="cpu")
    assert out.shape == (80, 112, 4)
    assert (out[:, :50, 3] == 0).all() and (out[:, 62:, 3] == 255).all()
    assert int(np.abs(out[:, :, :3].astype(int) - up.upscale(photo, 2, path)).max()) == 0


def test_lanczos_without_a_model(photo):
    out = up.upscale(photo, 4, None)
    assert out.shape == (160, 224, 3)
    deep = up.upscale(photo[:, :, 0].astype(np.uint16) * 257, 2, None)
    assert deep.shape == (80, 112) and deep.dtype == np.uint16


def test_cancel_and_progress(models, photo):
    path = models / "upscalers" / "compact-x2.safetensors"
    seen = []
    up.upscale(photo, 4, path, tile=32, device="cpu", progress=lambda d, t: seen.append((d, t)))
    total = seen[-1][1]
    assert seen == [(k, total) for k in range(1, total + 1)]  # two passes counted as one run
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RunCancelled):
        up.upscale(photo, 2, path, cancel=cancel)


def test_bad_input_is_refused_before_loading(tmp_path, photo, monkeypatch):
    def boom(*_args):
        raise AssertionError("no model may load for bad input")

    monkeypatch.setattr("sdstudio.engine.specialists.loading.load_model", boom)
    with pytest.raises(SDStudioError, match="2 or 4"):
        up.upscale(photo, 3, tmp_path / "x.safetensors")
    with pytest.raises(SDStudioError, match="at least"):
        up.upscale(photo, 2, tmp_path / "x.safetensors", tile=8)


def test_a_model_that_is_not_an_upscaler_is_refused(tmp_path, photo):
    path = save_state(compact(1), tmp_path / "x1.safetensors")
    up.clear_cache()
    with pytest.raises(ModelError, match="not an upscaler"):
        up.upscale(photo, 2, path, device="cpu")


def test_the_model_stays_loaded(models, photo, monkeypatch):
    path = models / "upscalers" / "compact-x2.safetensors"
    up.upscale(photo, 2, path, device="cpu")
    monkeypatch.setattr(
        "sdstudio.engine.specialists.loading.load_model", lambda *_: pytest.fail("loaded again")
    )
    up.upscale(photo, 2, path, device="cpu")


@pytest.mark.parametrize("torch_zip", [False, True])
def test_a_pickle_payload_never_runs(tmp_path, monkeypatch, photo, torch_zip):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran.txt"
    folder = tmp_path / "models" / "upscalers"
    folder.mkdir(parents=True)
    evil = pickle_trap(
        folder / "RealESRGAN_x2plus.pth", marker, torch_zip=torch_zip, w=np.zeros(3, np.float32)
    )
    assert up.find_upscaler(tmp_path / "models", 2) is None  # not usable until converted
    up.clear_cache()
    with pytest.raises(PickleConsentNeeded):
        up.upscale(photo, 2, evil, device="cpu")
    assert not marker.exists()
