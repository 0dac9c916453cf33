"""ControlNet-Union (SDXL): one model, a control mode per kind, on a tiny random union model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sdstudio.core.errors import ModelError
from sdstudio.core.mask import blend_alpha
from sdstudio.core.request import Control, ControlKind, Mode, ModelFamily
from sdstudio.engine.diffusion.controlnet import resolve_controlnet
from sdstudio.engine.events import Failed
from tests.test_controlnet import patch, run, sketch


@pytest.fixture(scope="module")
def union(tmp_path_factory) -> str:
    from tiny_models import saved_union_controlnet

    return str(saved_union_controlnet(tmp_path_factory.mktemp("union") / "tiny-union"))


def test_a_union_folder_is_an_sdxl_controlnet_with_its_modes(union):
    info = resolve_controlnet(union)
    assert info.family is ModelFamily.SDXL and info.union and info.union_modes == 6


def test_union_steers_txt2img_and_each_kind_is_its_own_mode(engine, sdxl_model, union):
    plain = patch(run(engine, sdxl_model))
    scribble = patch(run(engine, sdxl_model, controls=[Control(union, sketch())]))
    again = patch(run(engine, sdxl_model, controls=[Control(union, sketch())]))
    canny = patch(run(engine, sdxl_model, controls=[Control(union, sketch(), ControlKind.CANNY)]))
    assert np.abs(scribble.astype(int) - plain).mean() > 0.05  # the control did something
    np.testing.assert_array_equal(scribble, again)
    assert not np.array_equal(scribble, canny)  # another mode (and image) for canny


def test_union_with_img2img_and_inpaint(engine, sdxl_model, union, photo, edge_mask):
    fields = dict(image=photo, strength=0.8)
    plain = patch(run(engine, sdxl_model, Mode.IMG2IMG, **fields))
    steered = patch(
        run(engine, sdxl_model, Mode.IMG2IMG, controls=[Control(union, sketch())], **fields)
    )
    assert steered.shape == photo.shape and not np.array_equal(steered, plain)
    fields = dict(image=photo, mask=edge_mask, strength=1.0, mask_blur=3, padding=8)
    done = run(engine, sdxl_model, Mode.INPAINT, controls=[Control(union, sketch())], **fields)
    outside = blend_alpha(edge_mask, 3) == 0
    np.testing.assert_array_equal(done.composite(photo)[outside], photo[outside])


@pytest.mark.parametrize(
    ("kinds", "words"),
    [
        ((ControlKind.TILE,), "has no tile mode"),
        ((ControlKind.SCRIBBLE, ControlKind.SCRIBBLE), "runs alone"),
    ],
)
def test_what_a_union_model_cannot_do_is_refused_before_anything_loads(
    sdxl_model, union, kinds, words
):
    import torch

    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    cache = PipelineCache(device="cpu", dtype=torch.float32)
    fresh = DiffusersEngine(cache)
    controls = [Control(union, sketch(), kind) for kind in kinds]
    failed = run(fresh, sdxl_model, controls=controls)
    assert isinstance(failed, Failed) and words in failed.message
    assert cache._loaded is None
    fresh.close()


def test_a_union_model_in_one_file_asks_for_its_folder(union, tmp_path):
    path = tmp_path / "union.safetensors"
    shutil.copyfile(f"{union}/diffusion_pytorch_model.safetensors", path)
    with pytest.raises(ModelError, match="diffusers folder"):
        resolve_controlnet(str(path))


def test_the_library_lists_a_union_model_as_usable(union, tmp_path):
    from sdstudio.engine.models.controlnets import scan_folder

    folder = tmp_path / "controlnet"
    shutil.copytree(union, folder / "tiny-union")
    (entry,) = scan_folder(folder)
    assert entry.usable and entry.family is ModelFamily.SDXL


@pytest.mark.parametrize(
    ("kind", "mode"),
    [(ControlKind.SCRIBBLE, 2), (ControlKind.LINEART, 3), (ControlKind.CANNY, 3)],
)
def test_each_kind_reaches_the_union_model_as_its_mode(union, kind, mode):
    from PIL import Image

    from sdstudio.core.region import Box
    from sdstudio.core.request import GenerationRequest
    from sdstudio.engine.diffusion.engine import _control_inputs

    info = resolve_controlnet(union)
    request = GenerationRequest(
        mode=Mode.IMG2IMG, image=sketch(), controls=(Control(union, sketch(), kind, 0.7),)
    )
    kwargs = {"image": Image.new("RGB", (64, 64))}
    values = _control_inputs(request, Box(0, 0, 64, 64), kwargs, (info,))
    assert values["control_mode"] == [mode] and len(values["control_image"]) == 1
    assert values["controlnet_conditioning_scale"] == pytest.approx(0.7)
