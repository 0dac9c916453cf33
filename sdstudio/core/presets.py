"""Sampler presets for few-step models: the scheduler, step count, guidance and LoRA each one is
made for, chosen per model family ("Live: LCM 4 steps", ...).

A preset's LoRA is switched on as an adapter (``GenerationRequest.loras``), never by reloading the
base model; the Turbo presets need their own whole model instead. Pure data and logic: no Qt, no
torch. The settings below follow each model's card (cited per entry); where our samplers lack the
card's exact one, the comment says what stands in and why it takes the same steps.

img2img and inpaint run ``int(steps * strength)`` of the steps (diffusers' ``get_timesteps``), so
a 1-step preset at strength 0.5 would run none: ``steps_for_strength`` raises the steps to the
fewest that run at least one, as the SDXL-Turbo card asks (``steps * strength >= 1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sdstudio.core.request import GenerationRequest, ModelFamily, Scheduler

OPENRAIL_PP = "CreativeML Open RAIL++-M (use restrictions apply; commercial use allowed)"
SAI_NC = (
    "Stability AI Non-Commercial Research Community Licence: NOT for commercial use "
    "(research and personal use only)"
)
CUSTOM = "Custom"
"""The chooser's name for "no preset": the person's own scheduler, steps and guidance."""


@dataclass(frozen=True)
class PresetLora:
    """A LoRA a preset switches on: the name it has in the models folder's ``loras`` dir (what
    ``find_lora`` looks for) and where to download it from."""

    name: str
    repo_id: str
    filename: str
    weight: float = 1.0
    approx_mb: int = 0

    @property
    def file_name(self) -> str:
        return f"{self.name}.safetensors"


@dataclass(frozen=True)
class SamplerPreset:
    name: str
    """Shown to the person; unique."""
    family: ModelFamily | None
    """The model family it is made for; None: any."""
    scheduler: Scheduler
    steps: int
    guidance: float
    licence: str
    source: str
    """Where the weights and these settings come from (the model card)."""
    lora: PresetLora | None = None
    model: str | None = None
    """A whole model the preset is made for (the Turbo models), as a hub id; None: any model of
    the family (with the preset's LoRA)."""
    commercial: bool = True
    """False where the licence forbids commercial use."""

    @property
    def loras(self) -> tuple[tuple[str, float], ...]:
        """What goes into ``GenerationRequest.loras``."""
        return () if self.lora is None else ((self.lora.name, self.lora.weight),)

    def label(self, with_family: bool = False) -> str:
        if not with_family or self.family is None:
            return self.name
        return f"{self.name} ({'SD 1.x' if self.family is ModelFamily.SD1 else 'SDXL'})"


PRESETS: tuple[SamplerPreset, ...] = (
    # huggingface.co/latent-consistency/lcm-lora-sdv1-5 (licence openrail++): LCMScheduler,
    # "2 to 8 steps", "either disable guidance_scale or use values between 1.0 and 2.0".
    SamplerPreset(
        "Live: LCM 4 steps",
        ModelFamily.SD1,
        Scheduler.LCM,
        4,
        1.0,
        OPENRAIL_PP,
        "latent-consistency/lcm-lora-sdv1-5 (LCM-LoRA, Luo et al.)",
        PresetLora(
            "lcm-lora-sdv1-5",
            "latent-consistency/lcm-lora-sdv1-5",
            "pytorch_lora_weights.safetensors",
            approx_mb=135,
        ),
    ),
    # huggingface.co/latent-consistency/lcm-lora-sdxl: the same settings for SDXL.
    SamplerPreset(
        "Live: LCM 4 steps",
        ModelFamily.SDXL,
        Scheduler.LCM,
        4,
        1.0,
        OPENRAIL_PP,
        "latent-consistency/lcm-lora-sdxl (LCM-LoRA, Luo et al.)",
        PresetLora(
            "lcm-lora-sdxl",
            "latent-consistency/lcm-lora-sdxl",
            "pytorch_lora_weights.safetensors",
            approx_mb=394,
        ),
    ),
    # huggingface.co/ByteDance/Hyper-SD (licence openrail++): the N-step LoRAs run with
    # DDIMScheduler(timestep_spacing="trailing") and guidance_scale=0, at the LoRA's own N.
    # Euler with trailing spacing stands in for DDIM: DDIM (eta 0) is Euler's method on the same
    # ODE, so it takes the same steps at the same timesteps; only its last step ends at sigma 0
    # instead of DDIM's last alpha.
    SamplerPreset(
        "Hyper-SD 8 steps",
        ModelFamily.SD1,
        Scheduler.EULER_TRAILING,
        8,
        0.0,
        OPENRAIL_PP,
        "ByteDance/Hyper-SD (Hyper-SD15-8steps-lora)",
        PresetLora(
            "Hyper-SD15-8steps-lora",
            "ByteDance/Hyper-SD",
            "Hyper-SD15-8steps-lora.safetensors",
            approx_mb=269,
        ),
    ),
    SamplerPreset(
        "Hyper-SD 8 steps",
        ModelFamily.SDXL,
        Scheduler.EULER_TRAILING,
        8,
        0.0,
        OPENRAIL_PP,
        "ByteDance/Hyper-SD (Hyper-SDXL-8steps-lora)",
        PresetLora(
            "Hyper-SDXL-8steps-lora",
            "ByteDance/Hyper-SD",
            "Hyper-SDXL-8steps-lora.safetensors",
            approx_mb=787,
        ),
    ),
    # huggingface.co/ByteDance/SDXL-Lightning (licence openrail++): "Ensure sampler uses
    # 'trailing' timesteps" (EulerDiscreteScheduler), num_inference_steps=4, guidance_scale=0;
    # "always use the correct checkpoint for the corresponding inference steps".
    SamplerPreset(
        "Lightning 4 steps",
        ModelFamily.SDXL,
        Scheduler.EULER_TRAILING,
        4,
        0.0,
        OPENRAIL_PP,
        "ByteDance/SDXL-Lightning (sdxl_lightning_4step_lora)",
        PresetLora(
            "sdxl_lightning_4step_lora",
            "ByteDance/SDXL-Lightning",
            "sdxl_lightning_4step_lora.safetensors",
            approx_mb=394,
        ),
    ),
    # huggingface.co/stabilityai/sd-turbo (licence sai-nc-community, non-commercial): a whole
    # model (distilled from SD 2.1, run by the SD 1.x pipeline), guidance_scale=0.0, 1 step (up
    # to 4); its own scheduler_config is EulerDiscreteScheduler with trailing spacing.
    SamplerPreset(
        "SD-Turbo 1 step",
        ModelFamily.SD1,
        Scheduler.EULER_TRAILING,
        1,
        0.0,
        SAI_NC,
        "stabilityai/sd-turbo (Adversarial Diffusion Distillation)",
        model="stabilityai/sd-turbo",
        commercial=False,
    ),
    # huggingface.co/stabilityai/sdxl-turbo (licence sai-nc-community, non-commercial):
    # guidance_scale=0.0, 1 step; img2img "num_inference_steps * strength >= 1"; its
    # scheduler_config is EulerAncestralDiscreteScheduler with trailing spacing.
    SamplerPreset(
        "SDXL-Turbo 1 step",
        ModelFamily.SDXL,
        Scheduler.EULER_A_TRAILING,
        1,
        0.0,
        SAI_NC,
        "stabilityai/sdxl-turbo (Adversarial Diffusion Distillation)",
        model="stabilityai/sdxl-turbo",
        commercial=False,
    ),
)


def is_model_for(preset: SamplerPreset, model: str) -> bool:
    """Whether ``model`` (a hub id, folder or file) is the whole model ``preset`` is made for:
    the hub id, or a folder or file named after it (``sdxl-turbo``, ``sd_xl_turbo_1.0``)."""
    if preset.model is None:
        return False
    wanted = _key(preset.model.rsplit("/", 1)[-1])
    name = _key(model.strip().rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1])
    return model.strip() == preset.model or name.startswith(wanted)


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def presets_for(
    family: ModelFamily | None, model: str = "", presets: tuple[SamplerPreset, ...] = PRESETS
) -> list[SamplerPreset]:
    """The presets that fit a model of ``family`` (None: unknown, so every one). A Turbo model
    gets only its own preset (a LoRA made for SD 1.5 or SDXL base does not fit it); another
    model gets the LoRA presets of its family, and the Turbo ones only while its family is
    unknown (choosing one then means choosing that model)."""
    own = [p for p in presets if model and is_model_for(p, model)]
    if own:
        return own
    return [
        p
        for p in presets
        if (family is None or p.family in (None, family)) and (p.model is None or family is None)
    ]


def find_preset(
    name: str, family: ModelFamily | None = None, model: str = ""
) -> SamplerPreset | None:
    """The preset called ``name`` (as ``label`` shows it, with or without the family) among
    those for ``family`` and ``model``; None if there is none."""
    candidates = presets_for(family, model)
    for with_family in (False, True):
        for preset in candidates:
            if preset.label(with_family) == name:
                return preset
    return None


def steps_for_strength(steps: int, strength: float) -> int:
    """The fewest steps, at least ``steps``, with which img2img at ``strength`` runs one step or
    more: diffusers runs ``int(steps * strength)`` of them (computed the same way here)."""
    if not 0.0 < strength <= 1.0:
        return steps
    while int(steps * strength) < 1:
        steps += 1
    return steps


def apply_preset(
    settings: Mapping[str, object] | GenerationRequest, preset: SamplerPreset
) -> dict[str, object]:
    """What choosing ``preset`` changes in ``settings`` (the panel's settings or a request):
    scheduler, steps, guidance and loras. Only the keys whose value changes are returned; the
    steps are raised where the settings' strength would otherwise run no step."""
    if isinstance(settings, GenerationRequest):
        current: Mapping[str, object] = {
            "scheduler": settings.scheduler,
            "steps": settings.steps,
            "guidance": settings.guidance,
            "strength": settings.strength,
            "loras": settings.loras,
        }
    else:
        current = settings
    strength = current.get("strength")
    steps = preset.steps
    if isinstance(strength, int | float) and not isinstance(strength, bool):
        steps = steps_for_strength(steps, float(strength))
    wanted: dict[str, object] = {
        "scheduler": preset.scheduler,
        "steps": steps,
        "guidance": preset.guidance,
        "loras": preset.loras,
    }
    return {key: value for key, value in wanted.items() if current.get(key) != value}
