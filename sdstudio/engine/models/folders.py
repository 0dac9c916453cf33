"""Diffusers model folders: which pipelines and component libraries we know, and whether a
folder is safe to load (``check_folder``: every component with weights has ``.safetensors``
weights, and ``model_index.json`` names no custom code). Pickle files are refused in one set of
words (``pickle_refusal``) wherever they turn up."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily

if TYPE_CHECKING:
    from sdstudio.engine.models.checkpoints import CheckpointInfo

PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": ModelFamily.SD1,
    "StableDiffusionImg2ImgPipeline": ModelFamily.SD1,
    "StableDiffusionInpaintPipeline": ModelFamily.SD1,
    "StableDiffusionXLPipeline": ModelFamily.SDXL,
    "StableDiffusionXLImg2ImgPipeline": ModelFamily.SDXL,
    "StableDiffusionXLInpaintPipeline": ModelFamily.SDXL,
}
SAFE_LIBRARIES = {"diffusers", "transformers"}
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}
WEIGHT_SUFFIXES = PICKLE_SUFFIXES | {".safetensors"}
# What a diffusers repo needs; never the multi-GB single-file checkpoints at a repo's root,
# never pickle weights, never half-precision duplicates.
ALLOW_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"]
IGNORE_PATTERNS = ["*.fp16.safetensors", "*non_ema*", "*.ema.*"]


@dataclass(frozen=True)
class ModelInfo:
    """A resolved model: a diffusers ``folder``, or a single-file ``checkpoint`` (folder None)."""

    reference: str
    folder: Path | None
    pipeline_class: str
    family: ModelFamily
    checkpoint: CheckpointInfo | None = None

    @property
    def name(self) -> str:
        return self.reference.rstrip("/\\").replace("\\", "/").split("/")[-1]


def pickle_refusal(path: Path) -> ModelError:
    return ModelError(
        f"'{path}' is a pickle file ({path.suffix}): SD Studio loads only .safetensors weights, "
        "because pickle files can run code when opened. Use a .safetensors version of the model "
        "(most model sites offer one), or convert it in a sandbox you trust."
    )


def read_model_index(folder: Path) -> dict:
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelError(
            f"'{folder}' is not a diffusers model folder (it has no model_index.json). "
            "Point --model at the folder that holds model_index.json, or use a hub id."
        )
    try:
        return json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"'{index}' is unreadable or not valid JSON ({error}).") from error


def check_folder(folder: Path, reference: str) -> ModelInfo:
    """Refuse anything we would not load safely; say what family the model is."""
    index = read_model_index(folder)
    pipeline_class = index.get("_class_name")
    if pipeline_class not in PIPELINE_FAMILIES:
        raise ModelError(
            f"'{reference}' is a {pipeline_class or 'unknown'} model; SD Studio runs Stable "
            "Diffusion 1.x and SDXL models (text-to-image, img2img and inpainting)."
        )
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[:1] == [None]:
            continue
        if len(spec) != 2 or spec[0] not in SAFE_LIBRARIES:
            raise ModelError(
                f"'{reference}' asks for custom code for its {component} ({spec!r}); SD Studio "
                "never runs code that comes with a model."
            )
        files = [p for p in (folder / component).glob("*") if p.suffix in WEIGHT_SUFFIXES]
        if files and not any(p.suffix == ".safetensors" for p in files):
            raise ModelError(
                f"'{reference}' has only pickle weights for its {component} "
                f"({files[0].name}): SD Studio loads only .safetensors, because pickle files can "
                "run code. Choose a model published with safetensors weights."
            )
    return ModelInfo(reference, folder, pipeline_class, PIPELINE_FAMILIES[pipeline_class])
