"""Loaded pipelines: one base model at a time, one pipeline object per task sharing its weights.

Switching between txt2img, img2img and inpaint costs nothing (``from_pipe`` shares the modules);
switching models unloads the previous one first. ControlNet pipelines are built the same way,
with the loaded ControlNets (kept per reference, a few at a time) added. torch and diffusers are
imported here, lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.diffusion import controlnet as controlnets
from sdstudio.engine.diffusion.controlnet import ControlNetInfo
from sdstudio.engine.diffusion.devices import DevicePlan, apply_plan, plan_device
from sdstudio.engine.models.folders import ModelInfo
from sdstudio.engine.models.resolve import resolve_model

log = logging.getLogger(__name__)


class Task(Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


TASK_CLASSES = {
    ModelFamily.SD1: {
        Task.TXT2IMG: "StableDiffusionPipeline",
        Task.IMG2IMG: "StableDiffusionImg2ImgPipeline",
        Task.INPAINT: "StableDiffusionInpaintPipeline",
    },
    ModelFamily.SDXL: {
        Task.TXT2IMG: "StableDiffusionXLPipeline",
        Task.IMG2IMG: "StableDiffusionXLImg2ImgPipeline",
        Task.INPAINT: "StableDiffusionXLInpaintPipeline",
    },
}


CONTROL_CLASSES = {
    ModelFamily.SD1: {
        Task.TXT2IMG: "StableDiffusionControlNetPipeline",
        Task.IMG2IMG: "StableDiffusionControlNetImg2ImgPipeline",
        Task.INPAINT: "StableDiffusionControlNetInpaintPipeline",
    },
    ModelFamily.SDXL: {
        Task.TXT2IMG: "StableDiffusionXLControlNetPipeline",
        Task.IMG2IMG: "StableDiffusionXLControlNetImg2ImgPipeline",
        Task.INPAINT: "StableDiffusionXLControlNetInpaintPipeline",
    },
}
UNION_CLASSES = {
    Task.TXT2IMG: "StableDiffusionXLControlNetUnionPipeline",
    Task.IMG2IMG: "StableDiffusionXLControlNetUnionImg2ImgPipeline",
    Task.INPAINT: "StableDiffusionXLControlNetUnionInpaintPipeline",
}
"""SDXL with a ControlNet-Union model (it runs alone: ``controlnet.check_union``)."""
MAX_CONTROLNETS = 2
"""ControlNets kept loaded beside the model (each is about a third of its UNet)."""


@dataclass
class Loaded:
    info: ModelInfo
    pipe: Any
    scheduler_config: Any

    @property
    def family(self) -> ModelFamily:
        return self.info.family

    @property
    def inpainting_unet(self) -> bool:
        """A 9-channel UNet: made for inpainting, unable to do txt2img or img2img."""
        return self.pipe.unet.config.in_channels == 9

    @property
    def native_size(self) -> int:
        """The size the model was trained at (512 for SD1.5, 1024 for SDXL)."""
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)


class PipelineCache:
    """``device``/``dtype`` given (tests, benchmarks) fix the device; otherwise each load plans
    it from the hardware and free memory (sdstudio.engine.diffusion.devices), with ``overrides`` from the
    settings and the SDSTUDIO_DEVICE/DTYPE/OFFLOAD/VAE_TILING variables."""

    def __init__(
        self,
        device: str | None = None,
        dtype: Any = None,
        overrides: dict | Callable[[], dict] | None = None,
    ) -> None:
        """``overrides`` may be a callable, asked at each load: when its answer changes (the
        user changed a device setting), the next run reloads the model with the new plan."""
        self._overrides_source = (
            overrides if callable(overrides) else (lambda: dict(overrides or {}))
        )
        self._fixed: dict = {}
        self._environ: dict | None = None  # None: read os.environ
        if device is not None or dtype is not None:
            self._fixed = {
                "device": device or "auto",
                "dtype": str(dtype).removeprefix("torch.") if dtype is not None else "auto",
            }
            self._environ = {}
        self._loaded_with: dict | None = None
        self.plan: DevicePlan | None = None
        self._loaded: Loaded | None = None
        self._by_task: dict[Task, Any] = {}
        self._controlnets: dict[str, Any] = {}  # reference -> ControlNetModel, oldest first
        self._by_control: dict[tuple[Task, tuple[str, ...]], Any] = {}

    @property
    def device(self) -> str:
        return self.plan.device if self.plan is not None else "cpu"

    def load(self, reference: str, info: ModelInfo | None = None) -> Loaded:
        """Load a model (a no-op when it is the one loaded); ``info``: ``reference`` already
        resolved."""
        overrides = {**self._overrides_source(), **self._fixed}
        if (
            self._loaded is not None
            and self._loaded.info.reference == reference.strip()
            and overrides == self._loaded_with
        ):
            return self._loaded
        info = info or resolve_model(reference)
        self.unload()
        import diffusers

        plan = plan_device(info.family, override=overrides, environ=self._environ)
        kwargs: dict[str, Any] = {
            "dtype": plan.torch_dtype,
            "use_safetensors": True,
            "local_files_only": True,
        }
        if info.family is ModelFamily.SD1:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        cls = getattr(diffusers, info.pipeline_class)
        if info.checkpoint is not None:  # a single file: the shipped configs, never the hub
            from sdstudio.engine.models.checkpoints import load_single_file

            pipe = load_single_file(info.checkpoint.path, dtype=plan.torch_dtype)
        else:
            try:
                pipe = cls.from_pretrained(info.folder, **kwargs)
            except (OSError, ValueError) as error:
                raise ModelError(
                    f"Could not load '{info.reference}': {error}".splitlines()[0]
                ) from error
        apply_plan(pipe, plan)
        log.info("%s", plan.reason)
        if plan.warning:
            log.warning("%s", plan.warning)
        self.plan, self._loaded_with = plan, overrides
        pipe.set_progress_bar_config(disable=True)
        self._loaded = Loaded(info, pipe, pipe.scheduler.config)
        self._by_task = {
            t: pipe for t in Task if TASK_CLASSES[info.family][t] == info.pipeline_class
        }
        return self._loaded

    def model_info(self, reference: str) -> ModelInfo:
        """What ``reference`` is (family, pipeline class), without loading it."""
        if self._loaded is not None and self._loaded.info.reference == reference.strip():
            return self._loaded.info
        return resolve_model(reference)

    def pipeline(
        self, reference: str, task: Task, controls: tuple[ControlNetInfo, ...] = ()
    ) -> tuple[Loaded, Any]:
        """The pipeline for ``task``; with ``controls``, a ControlNet pipeline sharing the
        model's weights (each ControlNet's family is checked before the model is loaded)."""
        info = None
        if controls:
            info = self.model_info(reference)
            for control in controls:
                controlnets.check_family(control, info.family, info.name)
        loaded = self.load(reference, info)  # resolved once, not again
        if loaded.inpainting_unet and task is not Task.INPAINT:
            raise ModelError(
                f"'{loaded.info.name}' is an inpainting model: it can only inpaint. Choose a "
                f"regular model for {task.value}."
            )
        if controls:
            return loaded, self._control_pipeline(loaded, task, controls)
        pipe = self._by_task.get(task)
        if pipe is None:
            import diffusers

            cls = getattr(diffusers, TASK_CLASSES[loaded.family][task])
            # from_pipe casts shared modules to fp32 unless told the dtype (diffusers 0.42)
            pipe = cls.from_pipe(loaded.pipe, dtype=self.plan.torch_dtype)
            pipe.set_progress_bar_config(disable=True)
            self._by_task[task] = pipe
        return loaded, pipe

    def controlnet(self, info: ControlNetInfo) -> Any:
        """The loaded ControlNet for ``info`` (loaded once, then kept)."""
        assert self._loaded is not None and self.plan is not None
        model = self._controlnets.pop(info.reference, None)
        if model is None:
            unet_config = self._loaded.pipe.unet.config
            controlnets.check_fits(info, unet_config, self._loaded.info.name)
            model = controlnets.load_controlnet(
                info, dtype=self.plan.torch_dtype, unet_config=unet_config
            )
            while len(self._controlnets) >= MAX_CONTROLNETS:
                oldest = next(iter(self._controlnets))
                del self._controlnets[oldest]
                for key in [k for k in self._by_control if oldest in k[1]]:
                    del self._by_control[key]
        self._controlnets[info.reference] = model  # the newest last
        return model

    def _control_pipeline(
        self, loaded: Loaded, task: Task, controls: tuple[ControlNetInfo, ...]
    ) -> Any:
        models = [self.controlnet(info) for info in controls]
        key = (task, tuple(info.reference for info in controls))
        pipe = self._by_control.get(key)
        if pipe is None:
            import diffusers

            union = any(info.union for info in controls)
            name = UNION_CLASSES[task] if union else CONTROL_CLASSES[loaded.family][task]
            cls = getattr(diffusers, name)
            pipe = cls.from_pipe(
                loaded.pipe,
                controlnet=models[0] if len(models) == 1 else models,
                dtype=self.plan.torch_dtype,
            )
            pipe.set_progress_bar_config(disable=True)
            self._by_control[key] = pipe
        return pipe

    def unload(self) -> None:
        if self._loaded is None:
            return
        self._loaded = None
        self._by_task.clear()
        self._controlnets.clear()
        self._by_control.clear()
        import gc

        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
