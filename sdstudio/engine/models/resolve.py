"""Model references: a hub repo id, a local diffusers folder, or a single ``.safetensors`` file.

Safetensors only, no remote code. ``resolve_model`` turns a reference into something safe to
load: a local folder that ``folders.check_folder`` accepts, or a single-file checkpoint whose
header says it is a full SD 1.x or SDXL model (``checkpoints``). Hub models come from
huggingface_hub's cache, or are downloaded into it (with a terminal progress bar); offline, a
missing model is a one-line error.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sdstudio.core.errors import ModelError
from sdstudio.engine.models.checkpoints import inspect_checkpoint, require_full
from sdstudio.engine.models.folders import (
    ALLOW_PATTERNS,
    IGNORE_PATTERNS,
    PICKLE_SUFFIXES,
    ModelInfo,
    check_folder,
    pickle_refusal,
)

log = logging.getLogger(__name__)

DEFAULT_INPAINT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _download(repo_id: str) -> Path:
    return hub_snapshot(
        repo_id,
        what="model",
        allow_patterns=ALLOW_PATTERNS,
        ignore_patterns=IGNORE_PATTERNS,
        instead="pass a local diffusers folder with --model PATH",
    )


def hub_snapshot(
    repo_id: str,
    *,
    what: str,
    allow_patterns: list[str],
    ignore_patterns: list[str] | None = None,
    instead: str,
) -> Path:
    """The local folder of hub repo ``repo_id`` (a ``what``: "model", "ControlNet"), from the
    cache or downloaded into it; a one-line error saying what to do (``instead``) otherwise."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    kwargs = {"allow_patterns": allow_patterns, "ignore_patterns": ignore_patterns}
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
            f"There is no {what} '{repo_id}' on the Hugging Face Hub (or it is private). Check "
            f"the spelling, or {instead}."
        ) from error
    except Exception as error:  # noqa: BLE001 - offline, DNS, proxy, disk full ...
        raise ModelError(
            f"{what[0].upper()}{what[1:]} '{repo_id}' is not downloaded and the Hugging Face Hub "
            f"cannot be reached ({type(error).__name__}). Connect to the internet and run again "
            f"(it is downloaded once, then cached), or run `hf download {repo_id}` on a "
            f"connected machine and copy the cache, or {instead}."
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
