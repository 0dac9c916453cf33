"""The tiny VAE (TAESD / TAESDXL, ``diffusers.AutoencoderTiny``): live frames and step previews.

Found offline only: a folder in the models folder (``taesd/`` holding ``config.json`` and
``diffusion_pytorch_model.safetensors`` for SD 1.x, ``taesd/taesdxl/`` or ``taesdxl/`` for SDXL;
``taesd/taesd/`` works too), else the hub cache of ``madebyollin/taesd(xl)`` (local files only,
never a download here). Loaded from safetensors only, moved to the pipeline's device and dtype.
Absent: previews stay the linear map and live frames the full VAE, as before.

The tiny decoder takes the pipeline's scaled latents as they are (its config's scaling factor
is 1) and returns an image in [-1, 1], like the full VAE. torch and diffusers load lazily.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sdstudio.core.request import ModelFamily
from sdstudio.engine.models.tiny_vae import TINY_VAE_ALLOW_PATTERNS, TINY_VAE_REPOS

log = logging.getLogger(__name__)

WEIGHTS = "diffusion_pytorch_model.safetensors"
_NAMES = {ModelFamily.SD1: "taesd", ModelFamily.SDXL: "taesdxl"}


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / WEIGHTS).is_file()


def find_tiny_vae(
    family: ModelFamily, models_folder: Path | None, *, hub_cache: Path | None = None
) -> Path | None:
    """The folder of the tiny VAE for ``family``, or None when none is installed."""
    name = _NAMES[family]
    if models_folder is not None:
        base = Path(models_folder).expanduser()
        candidates = [base / "taesd" / name, base / name]
        if family is ModelFamily.SD1:
            candidates.append(base / "taesd")
        for folder in candidates:
            if _complete(folder):
                return folder
    return _hub_cached(TINY_VAE_REPOS[family], hub_cache)


def _hub_cached(repo_id: str, hub_cache: Path | None) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(
            snapshot_download(
                repo_id,
                local_files_only=True,
                allow_patterns=TINY_VAE_ALLOW_PATTERNS,
                cache_dir=None if hub_cache is None else str(hub_cache),
            )
        )
    except Exception as error:  # noqa: BLE001 - not cached (or a broken entry): not installed
        log.debug("no cached tiny VAE %s: %s", repo_id, error)
        return None
    return folder if _complete(folder) else None


def load_tiny_vae(folder: Path, device: str, dtype: Any) -> Any:
    """The ``AutoencoderTiny`` in ``folder`` (safetensors only, local only) on device/dtype."""
    from diffusers import AutoencoderTiny

    model = AutoencoderTiny.from_pretrained(
        str(folder), use_safetensors=True, local_files_only=True, dtype=dtype
    )
    return model.to(device).eval()


class TinyVaes:
    """The loaded tiny VAE per family (one each), found again when the models folder changes."""

    def __init__(self, hub_cache: Path | None = None) -> None:
        self.hub_cache = hub_cache
        self._loaded: dict[tuple, Any] = {}

    def get(self, family: ModelFamily, models_folder: Path | None, pipe: Any) -> Any:
        """The tiny VAE for ``pipe`` (on its VAE's device and dtype), or None if not installed.
        A tiny VAE that fails to load is logged and treated as absent."""
        folder = find_tiny_vae(family, models_folder, hub_cache=self.hub_cache)
        if folder is None:
            return None
        device, dtype = _execution_device(pipe), pipe.vae.dtype
        key = (family, str(folder), str(device), str(dtype))
        if key not in self._loaded:
            try:
                model = load_tiny_vae(folder, device, dtype)
            except Exception as error:  # noqa: BLE001 - a broken download: the full VAE works
                log.warning("The tiny VAE in %s could not be loaded: %s", folder, error)
                return None
            self._loaded = {k: v for k, v in self._loaded.items() if k[0] is not family}
            self._loaded[key] = model
            log.info("Tiny VAE for %s: %s", family.value, folder)
        return self._loaded[key]


def _execution_device(pipe: Any) -> Any:
    device = getattr(pipe, "_execution_device", None)
    return device if device is not None else pipe.vae.device


def tiny_decode(tiny: Any, latents: Any) -> Any:
    """Latents (the pipeline's scaled ones) -> an image tensor in [-1, 1], N x 3 x H x W."""
    import torch

    param = next(tiny.parameters())
    with torch.no_grad():
        return tiny.decode(latents.to(param.device, param.dtype), return_dict=False)[0]


class TinyPreviewer:
    """Previews through the tiny VAE: the denoised latents -> H x W x 3 uint8 at full size.

    Throttled to stay cheap: after a decode that took ``c`` seconds the next runs only once
    ``max(min_interval, c / budget)`` has passed since it started, so decoding takes at most
    ``budget`` of the run's time and previews no more than the canvas shows; a step in between
    gets None (no preview). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        tiny: Any,
        *,
        budget: float = 0.1,
        min_interval: float = 1.0 / 30.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.tiny, self.budget, self.min_interval, self.clock = tiny, budget, min_interval, clock
        self._next = float("-inf")
        self.decoded = 0

    def __call__(self, latents: Any) -> np.ndarray | None:
        start = self.clock()
        if start < self._next:
            return None
        image = tiny_decode(self.tiny, latents[:1])
        rgb = ((image[0].float().clamp(-1, 1) + 1.0) * 127.5).round().to(dtype=_uint8())
        out = rgb.permute(1, 2, 0).cpu().numpy()
        cost = self.clock() - start
        self._next = start + max(self.min_interval, cost / self.budget)
        self.decoded += 1
        return out


def _uint8() -> Any:
    import torch

    return torch.uint8
