"""The fast path (channels_last, fused QKV, compile per shape) and the tiny VAE, on the CPU.

The CUDA-only steps are forced here with ``FastPath(allow_cpu=True)``; compile runs with fake
compilers (one that counts, ones that fail) and once with torch.compile's eager backend.
"""

import threading
from pathlib import Path

import numpy as np
import pytest

from sdstudio.core.request import GenerationRequest, Mode, ModelFamily
from sdstudio.engine.diffusion.devices import DevicePlan, FastOptions, fast_options
from sdstudio.engine.diffusion.fastpath import PREPARING, FastPath
from sdstudio.engine.events import Finished, Preview

CPU = DevicePlan("cpu", "float32")
OFF = FastOptions(channels_last=False, fused_qkv=False, compile=False, tiny_vae=False)
NO_COMPILE = FastOptions(compile=False)


@pytest.fixture
def sd1():
    import torch
    from tiny_models import tiny_sd1

    torch.set_num_threads(1)
    return tiny_sd1(inpainting=False)


def _run(pipe, seed=7):
    import torch

    return pipe(
        prompt="a cat",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images


def _fused(unet) -> bool:
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    return all(isinstance(p, FusedAttnProcessor2_0) for p in unet.attn_processors.values())


def _channels_last(module) -> bool:
    import torch

    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    return conv.weight.is_contiguous(memory_format=torch.channels_last)


def _plain(module) -> bool:
    return "forward" not in vars(module)  # not replaced by the compile dispatcher


# --- switches ----------------------------------------------------------------------------------


def test_switches_off_apply_nothing(sd1):
    fast = FastPath(allow_cpu=True)
    assert fast.prepare(sd1, DevicePlan("cpu", "float32", fast=OFF)) == ()
    assert set(fast.skipped.values()) == {"switched off"}
    assert not _fused(sd1.unet) and not _channels_last(sd1.unet) and not _channels_last(sd1.vae)
    assert _plain(sd1.unet) and _plain(sd1.vae.decoder)


def test_on_the_cpu_the_cuda_steps_are_skipped_with_a_reason(sd1):
    fast = FastPath()
    assert fast.prepare(sd1, CPU) == ()
    assert fast.skipped == dict.fromkeys(
        ("channels_last", "fused_qkv", "compile"), "CUDA only (running on cpu)"
    )
    assert not _fused(sd1.unet) and not _channels_last(sd1.unet) and _plain(sd1.unet)


def test_settings_and_environment_switch_steps_off():
    assert fast_options({}, {}) == FastOptions()
    assert fast_options({"compile": "off", "tiny_vae": False}, {}) == FastOptions(
        compile=False, tiny_vae=False
    )
    # the variable beats the setting, as for the device settings
    env = {"SDSTUDIO_COMPILE": "0", "SDSTUDIO_CHANNELS_LAST": "on"}
    assert fast_options({"channels_last": "off"}, env) == FastOptions(compile=False)
    with pytest.raises(Exception, match="SDSTUDIO_FUSED_QKV is 'maybe'"):
        fast_options({}, {"SDSTUDIO_FUSED_QKV": "maybe"})


def test_plan_carries_the_switches_and_device_settings_still_work():
    from sdstudio.engine.diffusion.devices import plan_device

    plan = plan_device(
        ModelFamily.SD1,
        override={"device": "cpu", "compile": "off", "fused_qkv": "on"},
        environ={},
    )
    assert plan.device == "cpu" and plan.fast == FastOptions(compile=False)


# --- channels_last and fused QKV ---------------------------------------------------------------


def test_channels_last_and_fused_qkv_give_the_plain_output(sd1):
    plain = _run(sd1)
    applied = FastPath(allow_cpu=True).prepare(sd1, DevicePlan("cpu", "float32", fast=NO_COMPILE))
    assert applied == ("channels_last", "fused_qkv")
    assert _fused(sd1.unet) and _fused(sd1.vae)
    assert _channels_last(sd1.unet) and _channels_last(sd1.vae)
    np.testing.assert_allclose(_run(sd1), plain, atol=2e-4)


def _lora_file(folder: Path) -> Path:
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict
    from tiny_models import tiny_sd1

    source = tiny_sd1(inpainting=False)
    torch.manual_seed(3)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    config = LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False)
    source.unet.add_adapter(config)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        folder,
        weight_name="lora.safetensors",
        unet_lora_layers=get_peft_model_state_dict(source.unet),
    )
    return folder / "lora.safetensors"


def test_loras_still_apply_after_fusing(sd1, tmp_path):
    from tiny_models import tiny_sd1

    from sdstudio.engine.diffusion.adapters import AdapterState

    lora = _lora_file(tmp_path)
    reference, adapters = tiny_sd1(inpainting=False), AdapterState()
    adapters.apply(reference, [(lora, 1.0)])
    with_lora, base = _run(reference), _run(sd1)
    assert np.abs(with_lora - base).max() > 1e-3  # the LoRA changes the picture

    plan, fast, state = (
        DevicePlan("cpu", "float32", fast=NO_COMPILE),
        FastPath(allow_cpu=True),
        AdapterState(),
    )
    fast.prepare(sd1, plan, loras=state.active)
    assert _fused(sd1.unet)
    state.apply(sd1, [(lora, 1.0)])
    fast.prepare(sd1, plan, loras=state.active)
    assert fast.skipped["fused_qkv"] == "UNet unfused while LoRAs are on"
    np.testing.assert_allclose(_run(sd1), with_lora, atol=2e-4)
    state.apply(sd1, [])  # LoRAs off: fused again, the base model's output
    fast.prepare(sd1, plan, loras=state.active)
    assert _fused(sd1.unet)
    np.testing.assert_allclose(_run(sd1), base, atol=2e-4)


# --- compile per shape -------------------------------------------------------------------------


class CountingCompiler:
    """Stands in for torch.compile: the 'compiled' function is the eager one, counted."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.made: list[str] = []
        self.calls = 0
        # "compile": compiling raises; "call": the compiled call raises; "later": the warm-up
        # call works, the ones in the next run raise
        self.fail_at = fail_at

    def __call__(self, fn):
        self.made.append(type(fn.__self__).__name__)
        if self.fail_at == "compile":
            raise RuntimeError("backend compiler failed")

        def compiled(*args, **kwargs):
            self.calls += 1
            if self.fail_at == "call" or (self.fail_at == "later" and self.calls > 2):
                raise RuntimeError("cudagraphs: input mutated")
            return fn(*args, **kwargs)

        return compiled


def _engine(fast: FastPath, models: Path | None = None):
    import torch

    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    engine = DiffusersEngine(
        PipelineCache(device="cpu", dtype=torch.float32),
        models_folder=(lambda: models) if models is not None else None,
    )
    engine.fast = fast
    return engine


def _txt2img(model, size=64, **changes):
    fields = dict(mode=Mode.TXT2IMG, prompt="a cat", model=model, seed=5, steps=2)
    return GenerationRequest(width=size, height=size, **{**fields, **changes})


def _finish(engine, request) -> Finished:
    events = list(engine.run(request, threading.Event()))
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1]


def _unet_wrapper(engine):
    (done,) = engine.fast._done.values()
    return done.compiled[0]


def test_a_shape_compiles_after_its_first_eager_run_and_a_new_shape_starts_eager(sd1_model):
    compiler = CountingCompiler()
    engine = _engine(FastPath(compiler, allow_cpu=True))
    try:
        first_run = _finish(engine, _txt2img(sd1_model))
        first = first_run.patch
        assert first_run.notes == (PREPARING,)  # the person learns why the next run waits
        unet = _unet_wrapper(engine)
        # the first run was eager; its shape compiled after it (one warm-up call per module)
        assert compiler.made == ["UNet2DConditionModel", "Decoder"] and compiler.calls == 2
        assert len(unet.ready) == 1 and unet.compiled_calls == 1
        again_run = _finish(engine, _txt2img(sd1_model))
        again = again_run.patch
        assert again_run.notes == ()  # nothing left to prepare for this size
        assert unet.compiled_calls == 1 + 2  # both steps of the same shape ran compiled
        np.testing.assert_allclose(again, first, atol=1)
        _finish(engine, _txt2img(sd1_model, size=128))
        assert unet.compiled_calls == 3 + 1  # a new shape: eager, then compiled after the run
        assert len(unet.ready) == 2 and compiler.made.count("UNet2DConditionModel") == 1
    finally:
        engine.close()


@pytest.mark.parametrize("fail_at", ["compile", "call", "later"])
def test_a_failed_compile_falls_back_with_a_note_and_is_not_tried_again(sd1_model, fail_at):
    compiler = CountingCompiler(fail_at)
    engine = _engine(FastPath(compiler, allow_cpu=True))
    try:
        plain = _finish(engine, _txt2img(sd1_model))
        assert plain.notes == (PREPARING,)
        second = _finish(engine, _txt2img(sd1_model))  # the failure came after the first run
        assert any("Compiling the UNet failed" in note for note in second.notes)
        np.testing.assert_array_equal(second.patch, plain.patch)  # eager: the same picture
        third = _finish(engine, _txt2img(sd1_model))
        assert third.notes == ()  # said once
        assert compiler.made.count("UNet2DConditionModel") == 1  # no second attempt
        assert _unet_wrapper(engine).failed and not engine.fast.compiles(engine.cache._loaded.pipe)
    finally:
        engine.close()


def test_torch_compile_for_real_with_the_eager_backend(sd1):
    import torch

    plain = _run(sd1)
    fast = FastPath(lambda fn: torch.compile(fn, backend="eager", dynamic=False), allow_cpu=True)
    fast.prepare(sd1, DevicePlan("cpu", "float32", fast=FastOptions(fused_qkv=False)))
    _run(sd1)
    assert fast.compile_pending()["UNet"] > 0
    np.testing.assert_allclose(_run(sd1), plain, atol=2e-4)
    assert fast._done[sd1.unet].compiled[0].compiled_calls == 1 + 2


# --- the tiny VAE ------------------------------------------------------------------------------


def _tiny_vae(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )
    tiny.save_pretrained(folder, safe_serialization=True)
    return folder


def test_tiny_vae_found_in_the_models_folder_and_the_hub_cache(tmp_path):
    from sdstudio.engine.diffusion.tiny_vae import find_tiny_vae, load_tiny_vae

    models, hub = tmp_path / "models", tmp_path / "hub"
    assert find_tiny_vae(ModelFamily.SD1, models, hub_cache=hub) is None
    _tiny_vae(models / "taesd")
    assert find_tiny_vae(ModelFamily.SD1, models, hub_cache=hub) == models / "taesd"
    assert find_tiny_vae(ModelFamily.SDXL, models, hub_cache=hub) is None  # SD 1.x's only
    repo = hub / "models--madebyollin--taesdxl"
    _tiny_vae(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    found = find_tiny_vae(ModelFamily.SDXL, models, hub_cache=hub)
    assert found == repo / "snapshots" / "abc123"
    import torch

    tiny = load_tiny_vae(found, "cpu", torch.float32)
    assert type(tiny).__name__ == "AutoencoderTiny" and not tiny.training


def test_tiny_vae_decodes_live_frames_and_previews(sd1_model, tmp_path):
    models = tmp_path / "models"
    engine = _engine(FastPath(), models)
    try:
        request = _txt2img(sd1_model, steps=3)
        full = _finish(engine, request).patch
        live_without = _finish(engine, request.with_(live=True)).patch
        np.testing.assert_array_equal(live_without, full)  # absent: the full VAE, as before
        events = list(engine.run(request, threading.Event()))
        assert all(p.rgb.shape == (32, 32, 3) for p in events if isinstance(p, Preview))

        _tiny_vae(models / "taesd")
        events = list(engine.run(request.with_(live=True), threading.Event()))
        previews = [e for e in events if isinstance(e, Preview)]
        assert previews and all(p.rgb.shape == (64, 64, 3) for p in previews)  # decoded, full size
        live = events[-1].patch
        assert live.shape == full.shape and np.abs(live.astype(int) - full).mean() > 2
        np.testing.assert_array_equal(_finish(engine, request).patch, full)  # not live: full VAE
    finally:
        engine.close()


def test_tiny_previews_are_throttled(tmp_path):
    import torch

    from sdstudio.engine.diffusion.tiny_vae import TinyPreviewer, load_tiny_vae

    now = [0.0]
    tiny = load_tiny_vae(_tiny_vae(tmp_path / "taesd"), "cpu", torch.float32)
    previewer = TinyPreviewer(tiny, min_interval=0.05, clock=lambda: now[0])
    latents = torch.randn(1, 4, 16, 16)
    assert previewer(latents).shape == (32, 32, 3)
    now[0] = 0.01
    assert previewer(latents) is None  # too soon
    now[0] = 0.06
    assert previewer(latents) is not None and previewer.decoded == 2


# --- Models > Device and memory > Fast path ----------------------------------------------------


def test_fast_path_menu_switches_are_saved_and_reach_the_plan(qtbot, tmp_path):
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMenu

    from sdstudio.engine.diffusion.devices import plan_device
    from sdstudio.qt.device_menu import build_device_menu, read_overrides

    settings = QSettings(str(tmp_path / "d.ini"), QSettings.Format.IniFormat)
    settings.setValue("device/tiny_vae", "off")
    menu, overrides, changes = QMenu(), {}, []
    build_device_menu(menu, settings, overrides, lambda: changes.append(1))
    fast = next(a.menu() for a in menu.actions() if a.text() == "Fast &path (CUDA)")
    actions = {a.data(): a for a in fast.actions()}
    assert set(actions) == {"channels_last", "fused_qkv", "compile", "tiny_vae"}
    assert actions["compile"].isChecked() and not actions["tiny_vae"].isChecked()
    actions["compile"].trigger()  # off
    assert overrides["compile"] == "off" and settings.value("device/compile") == "off"
    assert changes == [1] and read_overrides(settings)["compile"] == "off"
    plan = plan_device(ModelFamily.SD1, override={**overrides, "device": "cpu"}, environ={})
    assert plan.fast == FastOptions(compile=False, tiny_vae=False)
    actions["compile"].trigger()  # on again
    assert read_overrides(settings)["compile"] == "on"
