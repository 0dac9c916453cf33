"""The model library: what the user has (models folder, hub cache) and what they can fetch.

Scanning reads only small files (model_index.json, configs, safetensors headers), never
weights, so a folder of many multi-GB checkpoints lists in a moment. Each entry says its family
and kind, or why it cannot be used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models.folders import PICKLE_SUFFIXES, check_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    reference: str
    """What to pass as the model: a folder or file path, or a hub id."""
    name: str
    source: str
    """"folder", "file" or "hub cache"."""
    family: ModelFamily | None = None
    inpainting: bool | None = None
    size_bytes: int = 0
    problem: str | None = None
    """Why it cannot be used, in one line; None when it can."""

    @property
    def kind(self) -> str:
        if self.inpainting is None:
            return "?"
        return "inpainting" if self.inpainting else "plain"

    @property
    def usable(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Preset:
    title: str
    repo_id: str
    family: ModelFamily
    inpainting: bool
    approx_gb: float
    note: str


PRESETS = (
    Preset(
        "SD 1.5 inpainting",
        "stable-diffusion-v1-5/stable-diffusion-inpainting",
        ModelFamily.SD1,
        True,
        2.1,
        "The default for removing and repainting; 512 px.",
    ),
    Preset(
        "SDXL inpainting",
        "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        ModelFamily.SDXL,
        True,
        6.9,
        "Better detail at 1024 px; needs about 8 GB of GPU memory.",
    ),
    Preset(
        "SD 1.5",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        ModelFamily.SD1,
        False,
        2.7,
        "Text-to-image and img2img (sketch to image); 512 px.",
    ),
    Preset(
        "SDXL base",
        "stabilityai/stable-diffusion-xl-base-1.0",
        ModelFamily.SDXL,
        False,
        6.9,
        "Text-to-image and img2img at 1024 px.",
    ),
    Preset(
        "LCM Dreamshaper (few steps)",
        "SimianLuo/LCM_Dreamshaper_v7",
        ModelFamily.SD1,
        False,
        2.2,
        "4-8 steps with the LCM sampler: fast on small GPUs and CPUs.",
    ),
)


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors") if p.is_file())


def _unet_inpainting(folder: Path) -> bool | None:
    try:
        config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        return int(config.get("in_channels", 4)) == 9
    except (OSError, ValueError):
        return None


def _folder_entry(folder: Path, reference: str, source: str, name: str) -> ModelEntry:
    try:
        info = check_folder(folder, reference)
    except SDStudioError as error:
        return ModelEntry(reference, name, source, problem=str(error))
    return ModelEntry(
        reference, name, source, info.family, _unet_inpainting(folder), _folder_size(folder)
    )


def _file_entry(path: Path) -> ModelEntry:
    size = path.stat().st_size
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return ModelEntry(
            str(path),
            path.name,
            "file",
            size_bytes=size,
            problem=(
                f"{path.suffix} is a pickle file: SD Studio loads only .safetensors, because pickle "
                "files can run code. Get the .safetensors version of this model."
            ),
        )
    try:
        from sdstudio.engine.models.checkpoints import inspect_checkpoint, require_full

        info = inspect_checkpoint(path)
        require_full(info)  # a UNet-only file is not a model to pick
    except SDStudioError as error:
        return ModelEntry(str(path), path.name, "file", size_bytes=size, problem=str(error))
    return ModelEntry(str(path), path.stem, "file", info.family, info.inpainting, size)


def scan_folder(models: Path) -> list[ModelEntry]:
    """Diffusers folders and single-file checkpoints in ``models`` (not its LoRA/embedding
    folders), sorted by name; unusable files are listed with the reason."""
    entries: list[ModelEntry] = []
    if not models.is_dir():
        return entries
    skip = {"loras", "embeddings"}
    for path in sorted(models.iterdir(), key=lambda p: p.name.lower()):
        if path.name.startswith(".") or path.name.lower() in skip:
            continue
        if path.is_dir() and (path / "model_index.json").is_file():
            entries.append(_folder_entry(path, str(path), "folder", path.name))
        elif path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES | {".safetensors"}:
            entries.append(_file_entry(path))
    return entries


def scan_hub_cache() -> list[ModelEntry]:
    """Diffusers models already in the huggingface_hub cache (usable offline)."""
    try:
        from huggingface_hub import constants, scan_cache_dir

        cache = scan_cache_dir(constants.HF_HUB_CACHE)  # read now, not when the hub was imported
    except Exception as error:  # noqa: BLE001 - no cache yet, unreadable cache
        log.info("no hub cache to scan: %s", error)
        return []
    entries = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            folder = Path(revision.snapshot_path)
            if (folder / "model_index.json").is_file():
                entries.append(_folder_entry(folder, repo.repo_id, "hub cache", repo.repo_id))
                break
    return entries


def scan_library(models: Path) -> list[ModelEntry]:
    return scan_folder(models) + scan_hub_cache()


def scan_adapters(folder: Path) -> list[Path]:
    """LoRA or embedding files (safetensors) in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".safetensors")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
