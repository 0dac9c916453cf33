"""Loaded pipelines: one base model at a time, one pipeline object per task sharing its weights.

Switching between txt2img, img2img and inpaint costs nothing (``from_pipe`` shares the modules);
switching models unloads the previous one first. torch and diffusers are imported here, lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily
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

    @property
    def device(self) -> str:
        return self.plan.device if self.plan is not None else "cpu"

    def load(self, reference: str) -> Loaded:
        """Load a model (a no-op when it is the one loaded)."""
        overrides = {**self._overrides_source(), **self._fixed}
        if (
            self._loaded is not None
            and self._loaded.info.reference == reference.strip()
            and overrides == self._loaded_with
        ):
            return self._loaded
        info = resolve_model(reference)
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

    def pipeline(self, reference: str, task: Task) -> tuple[Loaded, Any]:
        loaded = self.load(reference)
        if loaded.inpainting_unet and task is not Task.INPAINT:
            raise ModelError(
                f"'{loaded.info.name}' is an inpainting model: it can only inpaint. Choose a "
                f"regular model for {task.value}."
            )
        pipe = self._by_task.get(task)
        if pipe is None:
            import diffusers

            cls = getattr(diffusers, TASK_CLASSES[loaded.family][task])
            # from_pipe casts shared modules to fp32 unless told the dtype (diffusers 0.42)
            pipe = cls.from_pipe(loaded.pipe, dtype=self.plan.torch_dtype)
            pipe.set_progress_bar_config(disable=True)
            self._by_task[task] = pipe
        return loaded, pipe

    def unload(self) -> None:
        if self._loaded is None:
            return
        self._loaded = None
        self._by_task.clear()
        import gc

        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
