"""The diffusers engine on tiny random pipelines, loaded through the user's model-reference path."""

import contextlib
import threading

import numpy as np
import pytest

from sdstudio.core.mask import blend_alpha
from sdstudio.core.request import GenerationRequest, Mode, Scheduler
from sdstudio.engine.events import Cancelled, Failed, Finished, Preview, Started, Step


def run_all(engine, request, cancel=None):
    return list(engine.run(request, cancel or threading.Event()))


def finished(events) -> Finished:
    last = events[-1]
    assert isinstance(last, Finished), f"expected Finished, got {last}"
    return last


def inpaint_request(model, image, mask, **changes):
    fields = dict(
        mode=Mode.INPAINT,
        prompt="a red ball",
        model=model,
        seed=7,
        steps=3,
        strength=1.0,
        mask_blur=3,
        padding=8,
    )
    fields.update(changes)
    return GenerationRequest(image=image, mask=mask, **fields)


def test_same_seed_same_pixels_other_seed_other_pixels(engine, sd1_inpaint_model, photo, edge_mask):
    request = inpaint_request(sd1_inpaint_model, photo, edge_mask)
    first = finished(run_all(engine, request)).patch
    again = finished(run_all(engine, request)).patch
    other = finished(run_all(engine, request.with_(seed=8))).patch
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_one_step_and_one_preview_per_step(engine, sd1_inpaint_model, photo, edge_mask):
    events = run_all(engine, inpaint_request(sd1_inpaint_model, photo, edge_mask, steps=4))
    started = events[0]
    assert isinstance(started, Started) and started.total_steps == 4
    steps = [e for e in events if isinstance(e, Step)]
    previews = [e for e in events if isinstance(e, Preview)]
    assert [s.index for s in steps] == [1, 2, 3, 4] and all(s.total == 4 for s in steps)
    assert [p.index for p in previews] == [1, 2, 3, 4]
    for preview in previews:
        assert preview.rgb.dtype == np.uint8 and preview.rgb.ndim == 3 and preview.rgb.shape[2] == 3
        assert preview.box == started.box
    finished(events)


def test_unmasked_pixels_bit_exact_on_large_non_square_image(
    engine, sd1_inpaint_model, photo, edge_mask
):
    # 200x130 is larger than the tiny model's 64 px native size; the mask touches the right edge.
    done = finished(run_all(engine, inpaint_request(sd1_inpaint_model, photo, edge_mask)))
    result = done.composite(photo)
    assert result.shape == photo.shape and result.dtype == photo.dtype
    outside = blend_alpha(edge_mask, 3) == 0
    np.testing.assert_array_equal(result[outside], photo[outside])
    inside = edge_mask > 0
    assert np.abs(result[inside].astype(int) - photo[inside]).mean() > 5  # something was painted
    assert done.box.width < photo.shape[1] or done.box.height < photo.shape[0]  # worked on a crop


@pytest.mark.parametrize("layout", ["grey", "rgba", "rgb16"])
def test_picture_layout_and_depth_kept(engine, sd1_inpaint_model, photo, edge_mask, layout):
    if layout == "grey":
        image = photo[:, :, 1].copy()
    elif layout == "rgba":
        alpha = np.full(photo.shape[:2] + (1,), 200, np.uint8)
        image = np.concatenate([photo, alpha], axis=2)
    else:
        image = photo.astype(np.uint16) * 257 + 3  # values no 8-bit picture could hold
    done = finished(run_all(engine, inpaint_request(sd1_inpaint_model, image, edge_mask)))
    result = done.composite(image)
    assert result.dtype == image.dtype and result.shape == image.shape
    outside = blend_alpha(edge_mask, 3) == 0
    np.testing.assert_array_equal(result[outside], image[outside])
    if layout == "rgba":
        np.testing.assert_array_equal(result[:, :, 3], image[:, :, 3])


@contextlib.contextmanager
def unet_calls(engine, model: str, cancel: threading.Event, hold_at: int):
    """Count the UNet forward calls begun and ended inside the block. Call ``hold_at`` waits for
    ``cancel`` (30 s at most) before it begins: the step under way when the person cancels, held
    so that the test does not race the generation thread."""
    from sdstudio.engine.diffusion.pipelines import Task

    _, pipe = engine.cache.pipeline(model, Task.INPAINT)  # the pipeline the engine runs
    calls = {"begun": 0, "ended": 0}

    def before(_module, _args):
        calls["begun"] += 1
        if calls["begun"] == hold_at:
            cancel.wait(timeout=30)

    def after(_module, _args, _output):
        calls["ended"] += 1

    handles = [pipe.unet.register_forward_pre_hook(before), pipe.unet.register_forward_hook(after)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def test_cancel_mid_run_stops_within_the_step_and_the_next_run_is_unchanged(
    engine, sd1_inpaint_model, photo, edge_mask
):
    request = inpaint_request(sd1_inpaint_model, photo, edge_mask, steps=6)
    uninterrupted = finished(run_all(engine, request)).patch
    cancel = threading.Event()
    events = []
    with unet_calls(engine, sd1_inpaint_model, cancel, hold_at=3) as calls:
        for event in engine.run(request, cancel):
            events.append(event)
            if isinstance(event, Step) and event.index == 2:
                cancel.set()  # the third step is about to begin
    assert isinstance(events[-1], Cancelled)
    assert not any(isinstance(e, Finished) for e in events)
    assert [e.index for e in events if isinstance(e, Step)] == [1, 2]
    assert calls == {"begun": 3, "ended": 2}  # the third step was cut inside the UNet
    # The pipeline is reusable and deterministic: the same request now gives exactly what the
    # uninterrupted run gave.
    np.testing.assert_array_equal(finished(run_all(engine, request)).patch, uninterrupted)


def test_closing_the_iterator_cancels(engine, sd1_inpaint_model, photo, edge_mask):
    request = inpaint_request(sd1_inpaint_model, photo, edge_mask, steps=6)
    cancel = threading.Event()
    with unet_calls(engine, sd1_inpaint_model, cancel, hold_at=1) as calls:
        iterator = engine.run(request, cancel)
        assert isinstance(next(iterator), Started)
        iterator.close()  # the caller lets go while the first step waits to begin
        # The generation thread runs one thing at a time: this run starts once that one ended.
        empty = request.with_(mask=np.zeros_like(edge_mask))
        last = run_all(engine, empty)[-1]
        assert isinstance(last, Failed) and "mask is empty" in last.message
    assert calls == {"begun": 1, "ended": 0}  # stopped inside the step under way, no other


def test_plain_unet_inpaints_through_latent_blending(engine, sd1_model, photo, edge_mask):
    done = finished(run_all(engine, inpaint_request(sd1_model, photo, edge_mask, strength=0.9)))
    outside = blend_alpha(edge_mask, 3) == 0
    np.testing.assert_array_equal(done.composite(photo)[outside], photo[outside])


def test_txt2img_and_img2img(engine, sd1_model, photo):
    t2i = GenerationRequest(
        mode=Mode.TXT2IMG, prompt="a house", model=sd1_model, seed=1, steps=2, width=96, height=64
    )
    done = finished(run_all(engine, t2i))
    assert done.patch.shape == (64, 96, 3)
    i2i = GenerationRequest(
        mode=Mode.IMG2IMG,
        prompt="a house",
        model=sd1_model,
        seed=1,
        steps=4,
        strength=0.5,
        image=photo,
    )
    events = run_all(engine, i2i)
    assert len([e for e in events if isinstance(e, Step)]) == 2  # 4 steps at strength 0.5
    result = finished(events).composite(photo)
    assert result.shape == photo.shape and not np.array_equal(result, photo)


def test_inpainting_model_refuses_txt2img_clearly(engine, sd1_inpaint_model):
    request = GenerationRequest(
        mode=Mode.TXT2IMG, prompt="x", model=sd1_inpaint_model, steps=2, width=64, height=64
    )
    last = run_all(engine, request)[-1]
    assert isinstance(last, Failed) and "inpainting model" in last.message


def test_an_inpainting_model_redraws_img2img_by_inpainting_the_whole_area(
    engine, sd1_inpaint_model, photo
):
    """Live mode and img2img with the default (inpainting) model: the area is inpainted whole,
    starting from its noised pixels, and nothing outside the region changes."""
    from sdstudio.core.region import Box

    region = Box(40, 20, 140, 100)
    fields = dict(prompt="a house", model=sd1_inpaint_model, seed=1, steps=4, image=photo)
    gentle = GenerationRequest(mode=Mode.IMG2IMG, strength=0.3, region=region, **fields)
    events = run_all(engine, gentle)
    assert len([e for e in events if isinstance(e, Step)]) == 1  # 4 steps at strength 0.3
    result = finished(events).composite(photo)
    outside = np.ones(photo.shape[:2], bool)
    outside[region.slices] = False
    np.testing.assert_array_equal(result[outside], photo[outside])
    assert not np.array_equal(result[region.slices], photo[region.slices])
    strong = GenerationRequest(mode=Mode.IMG2IMG, strength=1.0, region=region, **fields)
    redrawn = finished(run_all(engine, strong)).composite(photo)
    near = np.abs(result[region.slices].astype(int) - photo[region.slices]).mean()
    far = np.abs(redrawn[region.slices].astype(int) - photo[region.slices]).mean()
    assert near < far  # a low strength keeps more of the picture: its pixels start the run


@pytest.mark.parametrize("scheduler", list(Scheduler))
def test_every_scheduler_runs(engine, sd1_inpaint_model, photo, edge_mask, scheduler):
    request = inpaint_request(sd1_inpaint_model, photo, edge_mask, steps=2, scheduler=scheduler)
    events = run_all(engine, request)
    finished(events)
    assert len([e for e in events if isinstance(e, Preview)]) == 2


def test_sdxl_family_txt2img_and_inpaint(engine, sdxl_model, photo, edge_mask):
    t2i = GenerationRequest(
        mode=Mode.TXT2IMG, prompt="a house", model=sdxl_model, seed=1, steps=2, width=64, height=64
    )
    assert finished(run_all(engine, t2i)).patch.shape == (64, 64, 3)
    done = finished(run_all(engine, inpaint_request(sdxl_model, photo, edge_mask, strength=0.9)))
    outside = blend_alpha(edge_mask, 3) == 0
    np.testing.assert_array_equal(done.composite(photo)[outside], photo[outside])


def test_empty_mask_fails_with_clear_message(engine, sd1_inpaint_model, photo):
    request = inpaint_request(sd1_inpaint_model, photo, np.zeros(photo.shape[:2], np.uint8))
    last = run_all(engine, request)[-1]
    assert isinstance(last, Failed) and "mask is empty" in last.message


def test_modes_share_one_set_of_weights(engine, sd1_model):
    from sdstudio.engine.diffusion.pipelines import Task

    _, t2i = engine.cache.pipeline(sd1_model, Task.TXT2IMG)
    _, i2i = engine.cache.pipeline(sd1_model, Task.IMG2IMG)
    _, inp = engine.cache.pipeline(sd1_model, Task.INPAINT)
    assert t2i is not i2i and i2i is not inp
    assert t2i.unet is i2i.unet is inp.unet and t2i.vae is inp.vae


def test_lora_tag_in_the_prompt_changes_the_picture_and_leaving_it_out_restores_it(
    tmp_path, sd1_inpaint_model, photo, edge_mask
):
    import torch
    from test_adapters import _lora_file

    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    models = tmp_path / "models"
    _lora_file(models / "loras", 1)  # lora1.safetensors
    engine = DiffusersEngine(
        PipelineCache(device="cpu", dtype=torch.float32), models_folder=lambda: models
    )
    base = inpaint_request(sd1_inpaint_model, photo, edge_mask)
    plain = finished(run_all(engine, base)).patch
    styled = finished(run_all(engine, base.with_(prompt="a red ball <lora:lora1:1.0>"))).patch
    again = finished(run_all(engine, base)).patch
    assert not np.array_equal(plain, styled)
    np.testing.assert_array_equal(plain, again)
    missing = run_all(engine, base.with_(prompt="a red ball <lora:nope>"))[-1]
    assert isinstance(missing, Failed) and "nope" in missing.message
    # a LoRA the request carries besides the prompt (a sampler preset's) is the same LoRA
    carried = finished(
        run_all(engine, base.with_(prompt="a red ball", loras=(("lora1", 1.0),)))
    ).patch
    np.testing.assert_array_equal(carried, styled)


def test_words_past_75_tokens_still_count(engine, sd1_inpaint_model, photo, edge_mask):
    # Both prompts share their first 75 tokens (far more than 75 in fact). Cut at 75 tokens,
    # as a plain pipeline call does, they would give the same picture; encoded in chunks, the
    # different endings must show.
    start = ", ".join(["a very detailed red ball on a sunny sandy beach"] * 6)
    one = inpaint_request(sd1_inpaint_model, photo, edge_mask, prompt=start + ", at night, snow")
    two = one.with_(prompt=start + ", at noon, green grass")
    assert not np.array_equal(
        finished(run_all(engine, one)).patch, finished(run_all(engine, two)).patch
    )


def test_changed_device_settings_reload_the_model(sd1_model):
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    overrides = {"device": "cpu"}
    cache = PipelineCache(overrides=lambda: dict(overrides))
    first = cache.load(sd1_model).pipe
    assert cache.load(sd1_model).pipe is first  # same settings: no reload
    assert cache.plan.device == "cpu" and cache.plan.dtype == "float32"
    overrides["dtype"] = "bfloat16"
    second = cache.load(sd1_model).pipe
    assert second is not first and cache.plan.dtype == "bfloat16"
    assert next(second.unet.parameters()).dtype.__repr__() == "torch.bfloat16"
