"""Loaded pipelines: one base model at a time, one pipeline object per task sharing its weights.

Switching between txt2img, img2img and inpaint costs nothing (``from_pipe`` shares the modules);
switching models unloads the previous one first. torch and diffusers are imported here, lazily.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models import ModelInfo, resolve_model

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


def pick_device() -> tuple[str, Any]:
    """CUDA in fp16, Apple MPS in fp32, else CPU in fp32. ``SDSTUDIO_DEVICE`` overrides."""
    import torch

    wanted = os.environ.get("SDSTUDIO_DEVICE", "").strip().lower()
    if wanted == "cpu":
        return "cpu", torch.float32
    if wanted in ("", "cuda") and torch.cuda.is_available():
        return "cuda", torch.float16
    if (
        wanted in ("", "mps")
        and getattr(torch.backends, "mps", None)
        and torch.backends.mps.is_available()
    ):
        return "mps", torch.float32
    if wanted not in ("", "cpu"):
        raise ModelError(f"SDSTUDIO_DEVICE={wanted} is not available here; use cpu, cuda or mps.")
    log.warning("No GPU found: generating on the CPU, which takes minutes per image.")
    return "cpu", torch.float32


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
    def __init__(self, device: str | None = None, dtype: Any = None) -> None:
        self._device, self._dtype = device, dtype
        self._loaded: Loaded | None = None
        self._by_task: dict[Task, Any] = {}

    @property
    def device(self) -> str:
        if self._device is None:
            self._device, self._dtype = pick_device()
        return self._device

    def load(self, reference: str) -> Loaded:
        """Load a model (a no-op when it is the one loaded)."""
        if self._loaded is not None and self._loaded.info.reference == reference.strip():
            return self._loaded
        info = resolve_model(reference)
        self.unload()
        import diffusers

        device = self.device
        kwargs: dict[str, Any] = {
            "dtype": self._dtype,
            "use_safetensors": True,
            "local_files_only": True,
        }
        if info.family is ModelFamily.SD1:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        cls = getattr(diffusers, info.pipeline_class)
        try:
            pipe = cls.from_pretrained(info.folder, **kwargs)
        except (OSError, ValueError) as error:
            raise ModelError(
                f"Could not load '{info.reference}': {error}".splitlines()[0]
            ) from error
        pipe = pipe.to(device)
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
            pipe = cls.from_pipe(loaded.pipe)
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
