"""ControlNet conditioning on tiny random models, loaded through the path users take."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from sdstudio.core.errors import ModelError, RequestError
from sdstudio.core.mask import blend_alpha
from sdstudio.core.region import Box
from sdstudio.core.request import Control, ControlKind, GenerationRequest, Mode, ModelFamily
from sdstudio.engine.diffusion import controlnet as controlnets
from sdstudio.engine.diffusion.controlnet import control_image, resolve_controlnet
from sdstudio.engine.events import Failed, Finished


@pytest.fixture(scope="module")
def sd1_controlnet(tmp_path_factory) -> str:
    from tiny_models import saved_controlnet

    return str(saved_controlnet(tmp_path_factory.mktemp("cn") / "sd1-scribble"))


@pytest.fixture(scope="module")
def sd1_controlnet_file(sd1_controlnet, tmp_path_factory) -> str:
    """The same ControlNet as one .safetensors file (the diffusers weights, no config)."""
    path = tmp_path_factory.mktemp("cn-file") / "sd1-scribble.safetensors"
    shutil.copyfile(f"{sd1_controlnet}/diffusion_pytorch_model.safetensors", path)
    return str(path)


@pytest.fixture(scope="module")
def sdxl_controlnet(tmp_path_factory) -> str:
    from tiny_models import saved_controlnet

    return str(saved_controlnet(tmp_path_factory.mktemp("cn-xl") / "sdxl-scribble", xl=True))


def sketch(horizontal: bool = True, size: int = 64) -> np.ndarray:
    """Light lines on dark, as a person's scribble."""
    image = np.zeros((size, size, 3), np.uint8)
    if horizontal:
        image[size // 3 : size // 3 + 4, 4:-4] = 255
    else:
        image[4:-4, size // 2 : size // 2 + 4] = 255
    return image


def run(engine, model, mode=Mode.TXT2IMG, controls=(), **fields):
    request = GenerationRequest(
        mode=mode, prompt="a house", model=model, seed=3, steps=2, width=64, height=64,
        controls=tuple(controls), **fields,
    )  # fmt: skip
    events = list(engine.run(request, threading.Event()))
    return events[-1]


def patch(event) -> np.ndarray:
    assert isinstance(event, Finished), f"expected Finished, got {event}"
    return event.patch


def test_control_steers_txt2img_and_the_same_control_gives_the_same_picture(
    engine, sd1_model, sd1_controlnet
):
    plain = patch(run(engine, sd1_model))
    controlled = patch(run(engine, sd1_model, controls=[Control(sd1_controlnet, sketch())]))
    again = patch(run(engine, sd1_model, controls=[Control(sd1_controlnet, sketch())]))
    other = patch(run(engine, sd1_model, controls=[Control(sd1_controlnet, sketch(False))]))
    assert np.abs(controlled.astype(int) - plain).mean() > 2  # the control did something
    np.testing.assert_array_equal(controlled, again)
    assert not np.array_equal(controlled, other)
    weak = Control(sd1_controlnet, sketch(), strength=0.0)
    np.testing.assert_allclose(patch(run(engine, sd1_model, controls=[weak])), plain, atol=1)


def test_a_single_file_controlnet_loads_like_its_folder(
    engine, sd1_model, sd1_controlnet, sd1_controlnet_file
):
    info = resolve_controlnet(sd1_controlnet_file)
    assert info.family is ModelFamily.SD1 and info.file is not None
    from_folder = patch(run(engine, sd1_model, controls=[Control(sd1_controlnet, sketch())]))
    from_file = patch(run(engine, sd1_model, controls=[Control(sd1_controlnet_file, sketch())]))
    np.testing.assert_array_equal(from_file, from_folder)


def test_a_second_run_does_not_reload_the_controlnet(
    engine, sd1_model, sd1_controlnet, monkeypatch
):
    loads = []
    real = controlnets.load_controlnet
    monkeypatch.setattr(
        controlnets, "load_controlnet", lambda info, **kw: loads.append(info) or real(info, **kw)
    )
    engine.cache.unload()
    for _ in range(2):
        patch(run(engine, sd1_model, controls=[Control(sd1_controlnet, sketch())]))
    assert [info.reference for info in loads] == [sd1_controlnet]


def test_control_with_img2img_changes_the_result(engine, sd1_model, sd1_controlnet, photo):
    fields = dict(image=photo, strength=0.8)
    plain = patch(run(engine, sd1_model, Mode.IMG2IMG, **fields))
    controls = [Control(sd1_controlnet, sketch(size=96))]  # another size than the picture's
    controlled = patch(run(engine, sd1_model, Mode.IMG2IMG, controls=controls, **fields))
    assert controlled.shape == plain.shape == photo.shape
    assert np.abs(controlled.astype(int) - plain).mean() > 1


@pytest.mark.parametrize("model", ["sd1_model", "sd1_inpaint_model"])
def test_control_with_inpaint_keeps_unmasked_pixels_bit_exact(
    engine, sd1_controlnet, photo, edge_mask, model, request
):
    base = request.getfixturevalue(model)
    fields = dict(image=photo, mask=edge_mask, strength=1.0, mask_blur=3, padding=8)
    controls = [Control(sd1_controlnet, sketch(size=80))]
    done = run(engine, base, Mode.INPAINT, controls=controls, **fields)
    plain = run(engine, base, Mode.INPAINT, **fields)
    result = done.composite(photo)
    outside = blend_alpha(edge_mask, 3) == 0
    np.testing.assert_array_equal(result[outside], photo[outside])
    inside = edge_mask > 0
    assert np.abs(result[inside].astype(int) - plain.composite(photo)[inside]).mean() > 1
    assert 'ControlNet 0: "Module: scribble, Model: sd1-scribble' in done.parameters


def test_sdxl_controlnet_steers_an_sdxl_model(engine, sdxl_model, sdxl_controlnet):
    plain = patch(run(engine, sdxl_model))
    controlled = patch(run(engine, sdxl_model, controls=[Control(sdxl_controlnet, sketch())]))
    assert np.abs(controlled.astype(int) - plain).mean() > 2


@pytest.mark.parametrize(
    ("model", "control", "words"),
    [
        ("sd1_model", "sdxl_controlnet", "is for SDXL models, but 'model' is a Stable Diffusion"),
        ("sdxl_model", "sd1_controlnet", "for Stable Diffusion 1.x models, but 'model' is an SDXL"),
    ],
)
def test_family_mismatch_is_refused_before_the_model_loads(model, control, words, request):
    import torch

    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    cache = PipelineCache(device="cpu", dtype=torch.float32)
    fresh = DiffusersEngine(cache)
    controls = [Control(request.getfixturevalue(control), sketch())]
    failed = run(fresh, request.getfixturevalue(model), controls=controls)
    assert isinstance(failed, Failed) and words in failed.message
    assert len(failed.message.splitlines()) == 1
    assert cache._loaded is None  # neither the model nor the ControlNet was loaded
    fresh.close()


def test_a_single_file_tells_its_family_from_its_weights(sdxl_controlnet, tmp_path):
    path = tmp_path / "named-sd15-but-is-xl.safetensors"
    shutil.copyfile(f"{sdxl_controlnet}/diffusion_pytorch_model.safetensors", path)
    assert resolve_controlnet(str(path)).family is ModelFamily.SDXL
    assert resolve_controlnet(sdxl_controlnet).family is ModelFamily.SDXL


def test_a_pickled_controlnet_is_refused_and_its_payload_never_runs(
    engine, sd1_model, sd1_controlnet, tmp_path
):
    from tiny_models import pickle_trap

    marker = tmp_path / "ran"
    single = pickle_trap(tmp_path / "control.pth", marker, torch_zip=True)
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copyfile(f"{sd1_controlnet}/config.json", folder / "config.json")
    pickle_trap(folder / "diffusion_pytorch_model.bin", marker)
    for reference in (single, folder):
        with pytest.raises(ModelError, match="pickle file"):
            resolve_controlnet(str(reference))
        failed = run(engine, sd1_model, controls=[Control(str(reference), sketch())])
        assert isinstance(failed, Failed) and "only .safetensors" in failed.message
    assert not marker.exists()


def test_what_is_not_a_controlnet_is_refused_clearly(sd1_model, tmp_path):
    with pytest.raises(ModelError, match="not a ControlNet folder"):
        resolve_controlnet(sd1_model)  # a whole model, not a ControlNet
    with pytest.raises(ModelError, match="No ControlNet"):
        resolve_controlnet(str(tmp_path / "missing"))


def test_control_image_is_laid_over_the_picture_and_cropped_like_it():
    control = np.zeros((260, 400, 3), np.uint8)  # twice the 200 x 130 picture
    control[100:140, 300:380] = 255  # over picture pixels (150..190, 50..70)
    box = Box(140, 40, 200, 80)  # 60 x 40
    image = control_image(Control("cn", control), (120, 80), (200, 130), box)
    assert image.shape == (80, 120, 3)
    white = np.argwhere(image[:, :, 0] > 128)
    # picture pixels x 150..190, y 50..70 -> box 10..50, 10..30 -> doubled to the 120 x 80 size
    assert 18 <= white[:, 1].min() <= 21 and 98 <= white[:, 1].max() <= 101
    assert 18 <= white[:, 0].min() <= 21 and 58 <= white[:, 0].max() <= 61
    assert image[:16].max() < 30 and image[64:].max() < 30


def test_canny_control_is_the_edges_of_the_image():
    picture = np.zeros((64, 64, 3), np.uint8)
    picture[16:48, 16:48] = 200  # a filled square: its outline are the edges
    scribble = control_image(Control("cn", picture), (64, 64), None, None)
    canny = control_image(Control("cn", picture, ControlKind.CANNY), (64, 64), None, None)
    np.testing.assert_array_equal(scribble, picture)  # as it is
    assert set(np.unique(canny)) == {0, 255}
    assert canny[32, 32].max() == 0 and canny[16:48, 15:17].max() == 255


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"strength": 2.5}, "Control strength"),
        ({"strength": -0.1}, "Control strength"),
        ({"start": 0.5, "end": 0.5}, "0 <= start < end <= 1"),
        ({"end": 1.5}, "0 <= start < end <= 1"),
        ({"start": -0.1}, "0 <= start < end <= 1"),
        ({"model": " "}, "needs a ControlNet"),
        ({"image": np.zeros((64, 64), np.uint8)}, "H x W x 3"),
        ({"image": np.zeros((64, 64, 3), np.uint16)}, "H x W x 3"),
        ({"image": np.zeros((4, 64, 3), np.uint8)}, "at least 8"),
        ({"kind": "scribble"}, "Unknown control kind"),
        ({"strength": True}, "must be a number"),
    ],
)
def test_invalid_controls_say_what_is_wrong(fields, message):
    values = {"model": "cn", "image": sketch(), **fields}
    with pytest.raises(RequestError, match=message):
        Control(**values)


def test_controls_in_a_request_are_checked_and_frozen():
    image = sketch()
    control = Control("cn", image)
    image[:] = 7
    assert control.image.max() == 255 and not control.image.flags.writeable
    with pytest.raises(RequestError, match="tuple of Control"):
        GenerationRequest(Mode.TXT2IMG, controls=[control])  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="Remove takes no control"):
        mask = np.full((64, 64), 255, np.uint8)
        GenerationRequest(Mode.REMOVE, image=sketch(), mask=mask, controls=(control,))
    assert GenerationRequest(Mode.TXT2IMG, controls=(control,)).controls == (control,)


def test_the_inpaint_control_marks_the_area_to_regenerate():
    from sdstudio.engine.diffusion.controlnet import inpaint_condition

    rgb = np.full((8, 6, 3), 51, np.uint8)
    mask = np.zeros((8, 6), np.uint8)
    mask[2:5, 1:3] = 255
    tensor = inpaint_condition(rgb, mask)
    assert tuple(tensor.shape) == (1, 3, 8, 6)
    values = tensor[0].numpy().transpose(1, 2, 0)
    assert (values[mask > 0] == -1.0).all()
    np.testing.assert_allclose(values[mask == 0], 0.2)


def test_an_inpaint_control_reaches_the_pipeline_marked_and_keeps_unmasked_pixels(
    engine, sd1_model, sd1_controlnet, photo, edge_mask, monkeypatch
):
    from sdstudio.engine.diffusion import engine as engine_module

    seen = []
    real = engine_module.inpaint_condition

    def spy(rgb, mask):
        seen.append((rgb, mask))
        return real(rgb, mask)

    monkeypatch.setattr(engine_module, "inpaint_condition", spy)
    fields = dict(image=photo, mask=edge_mask, strength=1.0, mask_blur=3, padding=8)
    control = Control(sd1_controlnet, photo, ControlKind.INPAINT)
    done = run(engine, sd1_model, Mode.INPAINT, controls=[control], **fields)
    outside = blend_alpha(edge_mask, 3) == 0
    np.testing.assert_array_equal(done.composite(photo)[outside], photo[outside])
    ((rgb, mask),) = seen
    assert rgb.shape[:2] == mask.shape[:2] and 0 < (mask > 127).mean() < 1  # the hole, cropped


def test_the_inpaint_control_needs_an_inpaint(photo):
    control = Control("some/controlnet", photo, ControlKind.INPAINT)
    with pytest.raises(RequestError, match="erase that area"):
        GenerationRequest(mode=Mode.IMG2IMG, image=photo, controls=(control,))
