"""Model references: a hub repo id, a local diffusers folder, or a single ``.safetensors`` file.

Safetensors only, no remote code. ``resolve_model`` turns a reference into something safe to
load: a local folder where every component with weights has ``.safetensors`` weights and
``model_index.json`` names only the pipeline classes and component libraries we know, or a
single-file checkpoint whose header says it is a full SD 1.x or SDXL model (``checkpoints.py``).
Hub models come from huggingface_hub's cache, or are downloaded into it (with a terminal progress
bar); offline, a missing model is a one-line error.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily

if TYPE_CHECKING:
    from sdstudio.engine.checkpoints import CheckpointInfo

log = logging.getLogger(__name__)

DEFAULT_INPAINT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

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
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    kwargs = {"allow_patterns": ALLOW_PATTERNS, "ignore_patterns": IGNORE_PATTERNS}
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
    except LocalEntryNotFoundError:
        pass  # not cached yet: download below
    except Exception as error:  # noqa: BLE001 - a broken cache entry: try the hub
        log.info("cache lookup for %s failed: %s", repo_id, error)
    try:
        return Path(snapshot_download(repo_id, **kwargs))
    except GatedRepoError as error:
        raise ModelError(
            f"'{repo_id}' is gated on the Hugging Face Hub: accept its licence on its page, log "
            "in with `hf auth login`, and try again."
        ) from error
    except RepositoryNotFoundError as error:
        raise ModelError(
            f"There is no model '{repo_id}' on the Hugging Face Hub (or it is private). Check "
            "the spelling, or pass a local diffusers folder with --model PATH."
        ) from error
    except Exception as error:  # noqa: BLE001 - offline, DNS, proxy, disk full ...
        raise ModelError(
            f"Model '{repo_id}' is not downloaded and the Hugging Face Hub cannot be reached "
            f"({type(error).__name__}). Connect to the internet and run again (it is downloaded "
            f"once, then cached), or run `hf download {repo_id}` on a connected machine and "
            "copy the cache, or pass a local diffusers folder with --model PATH."
        ) from error


def resolve_model(reference: str) -> ModelInfo:
    """A model reference -> a checked local folder or checkpoint (downloading a hub model if needed)."""
    reference = reference.strip()
    if not reference:
        raise ModelError(
            "No model chosen: pass --model with a hub id (for example "
            f"{DEFAULT_INPAINT_MODEL}), a local diffusers folder or a .safetensors checkpoint."
        )
    path = Path(reference).expanduser()
    if path.is_dir():
        return check_folder(path, reference)
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise pickle_refusal(path)
        if path.suffix.lower() == ".safetensors":
            from sdstudio.engine.checkpoints import inspect_checkpoint, require_full

            checkpoint = require_full(inspect_checkpoint(path))
            return ModelInfo(
                reference, None, checkpoint.pipeline_class, checkpoint.family, checkpoint
            )
        raise ModelError(
            f"'{reference}' is a file, not a model: choose a .safetensors checkpoint, a diffusers "
            "folder or a hub id."
        )
    if HUB_ID.match(reference) and not reference.startswith((".", "~")):
        return check_folder(_download(reference), reference)
    raise ModelError(
        f"No model folder '{reference}' exists, and it is not a hub id (owner/name). Check the path."
    )


def needs_download(reference: str) -> bool:
    """True for a hub id whose model is not in the local cache (checked offline, instantly)."""
    reference = reference.strip()
    if not HUB_ID.match(reference) or reference.startswith((".", "~")) or Path(reference).exists():
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(reference, "model_index.json")
    except Exception:  # noqa: BLE001 - an unreadable cache: let the run say what is wrong
        return False
    return not isinstance(found, str)
