"""Few-step sampler presets: the table, choosing one, and running one (tiny models, CPU, offline)."""

import threading
from pathlib import Path

import numpy as np
import pytest

from sdstudio.core.presets import (
    PRESETS,
    apply_preset,
    find_preset,
    is_model_for,
    presets_for,
    steps_for_strength,
)
from sdstudio.core.request import GenerationRequest, Mode, ModelFamily, Scheduler
from sdstudio.engine.events import Finished, Started

# The modules the LCM-LoRA training script (diffusers' train_lcm_distill_lora_sd_wds.py) adapts:
# attention, projections, feed-forward, and the ResNet and resampling convolutions.
LCM_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)


def lcm_style_lora(path: Path, seed: int = 3) -> Path:
    """A random LoRA in lcm-lora-sdv1-5's layout (kohya's ``lora_unet_<module>`` names with
    lora_down/lora_up/alpha, convolutions included) on the tiny SD1 UNet."""
    import torch
    from safetensors.torch import save_file
    from tiny_models import tiny_sd1

    torch.manual_seed(seed)
    tensors = {}
    for name, module in tiny_sd1(inpainting=False).unet.named_modules():
        if not name.endswith(LCM_TARGETS):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(module, torch.nn.Conv2d):
            down = torch.randn(4, module.in_channels, *module.kernel_size)
            up = torch.randn(module.out_channels, 4, 1, 1)
        else:
            down, up = torch.randn(4, module.in_features), torch.randn(module.out_features, 4)
        tensors[f"{key}.lora_down.weight"] = down * 0.1
        tensors[f"{key}.lora_up.weight"] = up * 0.1
        tensors[f"{key}.alpha"] = torch.tensor(4.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


# --- the table ---------------------------------------------------------------------------------


def test_every_preset_is_complete_and_its_sampler_is_one_the_engine_makes():
    from tiny_models import _scheduler

    from sdstudio.engine.diffusion.schedulers import make_scheduler

    config = _scheduler().config
    names = set()
    for preset in PRESETS:
        assert preset.licence and preset.source and 1 <= preset.steps <= 8
        assert 0.0 <= preset.guidance <= 2.0  # few-step models want little or no guidance
        assert (preset.lora is None) != (preset.model is None)  # a LoRA or a whole model
        names.add((preset.name, preset.family))
        scheduler = make_scheduler(preset.scheduler, config)
        scheduler.set_timesteps(preset.steps)
        assert len(scheduler.timesteps) == preset.steps
        if preset.scheduler in (Scheduler.EULER_TRAILING, Scheduler.EULER_A_TRAILING):
            assert scheduler.config.timestep_spacing == "trailing"
            assert int(scheduler.timesteps[0]) == 999  # starts from pure noise, as distilled
        if preset.lora is not None:
            assert preset.lora.file_name.endswith(".safetensors")
            assert preset.lora.filename.endswith(".safetensors") and "/" in preset.lora.repo_id
            assert preset.loras == ((preset.lora.name, preset.lora.weight),)
    assert len(names) == len(PRESETS)  # a name is unique within its family


def test_families_and_licences():
    sd1 = {p.name for p in presets_for(ModelFamily.SD1, "my/sd15-finetune")}
    sdxl = {p.name for p in presets_for(ModelFamily.SDXL, "my/sdxl-finetune")}
    assert sd1 == {"Live: LCM 4 steps", "Hyper-SD 8 steps"}
    assert sdxl == {"Live: LCM 4 steps", "Hyper-SD 8 steps", "Lightning 4 steps"}
    lcm = find_preset("Live: LCM 4 steps", ModelFamily.SDXL)
    assert lcm.lora.name == "lcm-lora-sdxl" and lcm.scheduler is Scheduler.LCM
    assert find_preset("Live: LCM 4 steps", ModelFamily.SD1).lora.name == "lcm-lora-sdv1-5"
    assert len(presets_for(None)) == len(PRESETS)  # family unknown: all, named with it
    assert find_preset("Live: LCM 4 steps (SDXL)").family is ModelFamily.SDXL
    assert find_preset("Lightning 4 steps", ModelFamily.SD1) is None  # an SDXL LoRA only

    turbos = [p for p in PRESETS if p.model is not None]
    assert {p.model for p in turbos} == {"stabilityai/sd-turbo", "stabilityai/sdxl-turbo"}
    for preset in turbos:  # the Turbo models are non-commercial, and say so
        assert not preset.commercial and "non-commercial" in preset.licence.lower()
        assert preset.guidance == 0.0 and preset.steps == 1
    assert all(p.commercial and "Open RAIL++-M" in p.licence for p in PRESETS if p.lora)
    # a Turbo model gets its own preset only: SD 1.5 / SDXL LoRAs do not fit it
    assert [p.name for p in presets_for(ModelFamily.SDXL, "stabilityai/sdxl-turbo")] == [
        "SDXL-Turbo 1 step"
    ]
    assert is_model_for(turbos[1], "/models/sd_xl_turbo_1.0_fp16.safetensors")
    assert not is_model_for(turbos[0], "/models/sdxl-turbo")  # sd-turbo is not sdxl-turbo


def test_applying_a_preset_says_what_changes():
    settings = {"scheduler": Scheduler.EULER_A, "steps": 20, "guidance": 7.0, "strength": 0.75}
    lcm = find_preset("Live: LCM 4 steps", ModelFamily.SD1)
    assert apply_preset(settings, lcm) == {
        "scheduler": Scheduler.LCM,
        "steps": 4,
        "guidance": 1.0,
        "loras": (("lcm-lora-sdv1-5", 1.0),),
    }
    same = {**settings, "scheduler": Scheduler.LCM, "steps": 4, "loras": lcm.loras}
    assert apply_preset(same, lcm) == {"guidance": 1.0}
    request = GenerationRequest(Mode.TXT2IMG, steps=4, guidance=1.0, scheduler=Scheduler.LCM)
    assert apply_preset(request, lcm) == {"loras": (("lcm-lora-sdv1-5", 1.0),)}
    changed = request.with_(**apply_preset(request, lcm))
    assert changed.loras == lcm.loras and apply_preset(changed, lcm) == {}


def test_few_steps_at_low_strength_still_run_a_step():
    # diffusers' img2img runs int(steps * strength) steps: 1 step at 0.5 would run none
    turbo = find_preset("SDXL-Turbo 1 step", ModelFamily.SDXL, "stabilityai/sdxl-turbo")
    assert apply_preset({"strength": 0.5}, turbo)["steps"] == 2  # as the SDXL-Turbo card says
    assert apply_preset({"strength": 1.0}, turbo)["steps"] == 1
    assert steps_for_strength(4, 0.5) == 4 and steps_for_strength(4, 0.2) == 5
    for steps in (1, 2, 4, 8):
        for strength in (0.01, 0.1, 0.3, 1 / 3, 0.7, 1.0):
            found = steps_for_strength(steps, strength)
            assert int(found * strength) >= 1 and found >= steps
            assert found == steps or int((found - 1) * strength) < 1  # the fewest that do


# --- running one -------------------------------------------------------------------------------


@pytest.fixture
def preset_engine(tmp_path, sd1_model, monkeypatch):
    """An engine whose models folder holds an LCM-style LoRA under the preset's name; a
    counter of model loads (resolving the reference is the first thing a load does)."""
    import torch

    from sdstudio.engine.diffusion import pipelines
    from sdstudio.engine.diffusion.engine import DiffusersEngine

    torch.set_num_threads(1)
    models = tmp_path / "models"
    lcm_style_lora(models / "loras" / "lcm-lora-sdv1-5.safetensors")
    loads = []
    real = pipelines.resolve_model
    monkeypatch.setattr(pipelines, "resolve_model", lambda ref: loads.append(ref) or real(ref))
    engine = DiffusersEngine(
        pipelines.PipelineCache(device="cpu", dtype=torch.float32), models_folder=lambda: models
    )
    yield engine, loads
    engine.close()


def _run(engine, request) -> tuple[list, Finished]:
    events = list(engine.run(request, threading.Event()))
    assert isinstance(events[-1], Finished), events[-1]
    return events, events[-1]


def test_lcm_preset_switches_its_lora_on_without_reloading_the_model(preset_engine, sd1_model):
    engine, loads = preset_engine
    lcm = find_preset("Live: LCM 4 steps", ModelFamily.SD1)
    base = GenerationRequest(
        Mode.TXT2IMG, prompt="a red ball", model=sd1_model, seed=5, width=64, height=64
    )
    live = base.with_(**apply_preset(base, lcm))
    assert live.scheduler is Scheduler.LCM and live.steps == 4

    plain = _run(engine, live.with_(loras=()))[1].patch
    unet = engine.cache.load(sd1_model).pipe.unet
    events, first = _run(engine, live)
    assert sum(isinstance(e, Started) for e in events) == 1 and events[0].total_steps == 4
    again = _run(engine, live)[1].patch
    off = _run(engine, live.with_(loras=()))[1].patch

    assert not np.array_equal(first.patch, plain)  # the LoRA is in effect
    np.testing.assert_array_equal(first.patch, again)  # deterministic
    np.testing.assert_array_equal(off, plain)  # off again: the base model exactly
    assert loads == [sd1_model]  # loaded once: adapters switch, the model stays
    assert engine.cache.load(sd1_model).pipe.unet is unet
    assert [p.name for p in engine.adapters.loaded] == ["lcm-lora-sdv1-5.safetensors"]


def test_lcm_img2img_at_low_strength_runs_a_step(preset_engine, sd1_model, photo):
    engine, _loads = preset_engine
    lcm = find_preset("Live: LCM 4 steps", ModelFamily.SD1)
    base = GenerationRequest(
        Mode.IMG2IMG, prompt="a red ball", image=photo, model=sd1_model, seed=5, strength=0.2
    )
    request = base.with_(**apply_preset(base, lcm))
    assert request.steps == 5  # int(4 * 0.2) would be no step at all
    events, result = _run(engine, request)
    assert events[0].total_steps == 1
    assert result.patch.shape == photo.shape and not np.array_equal(result.patch, photo)
