"""The model library: what the user has (models folder, hub cache) and what they can fetch.

Scanning reads only small files (model_index.json, configs, safetensors headers), never
weights, so a folder of many multi-GB checkpoints lists in a moment. Each entry says its family
and kind, or why it cannot be used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sdstudio.core.errors import SDStudioError
from sdstudio.core.presets import OPENRAIL_PP
from sdstudio.core.presets import PRESETS as SAMPLER_PRESETS
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models.folders import PICKLE_SUFFIXES, PIPELINE_FAMILIES, check_folder

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


OPENRAIL_M = "CreativeML OpenRAIL-M (use restrictions apply; commercial use allowed)"


@dataclass(frozen=True)
class Preset:
    """Something to download: a diffusers model (a hub repo), or with ``filename`` one file of a
    repo, a LoRA that lands in the models folder's ``loras`` dir as ``lora_name``; with
    ``controlnet`` a diffusers ControlNet (a hub repo's config and safetensors weights)."""

    title: str
    repo_id: str
    family: ModelFamily
    inpainting: bool
    approx_gb: float
    note: str
    licence: str = ""
    filename: str | None = None
    lora_name: str | None = None
    commercial: bool = True
    controlnet: bool = False

    @property
    def kind(self) -> str:
        if self.controlnet:
            return "ControlNet"
        if self.lora_name is not None:
            return "LoRA"
        return "inpainting" if self.inpainting else "plain"

    @property
    def key(self) -> str:
        """Tells downloads apart (one repo can hold several LoRAs)."""
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id


MODEL_PRESETS = (
    Preset(
        "SD 1.5 inpainting",
        "stable-diffusion-v1-5/stable-diffusion-inpainting",
        ModelFamily.SD1,
        True,
        2.1,
        "The default for removing and repainting; 512 px.",
        OPENRAIL_M,
    ),
    Preset(
        "SDXL inpainting",
        "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        ModelFamily.SDXL,
        True,
        6.9,
        "Better detail at 1024 px; needs about 8 GB of GPU memory.",
        OPENRAIL_PP,
    ),
    Preset(
        "SD 1.5",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        ModelFamily.SD1,
        False,
        2.7,
        "Text-to-image and img2img (sketch to image); 512 px.",
        OPENRAIL_M,
    ),
    Preset(
        "SDXL base",
        "stabilityai/stable-diffusion-xl-base-1.0",
        ModelFamily.SDXL,
        False,
        6.9,
        "Text-to-image and img2img at 1024 px.",
        OPENRAIL_PP,
    ),
    Preset(
        "LCM Dreamshaper (few steps)",
        "SimianLuo/LCM_Dreamshaper_v7",
        ModelFamily.SD1,
        False,
        2.2,
        "4-8 steps with the LCM sampler: fast on small GPUs and CPUs.",
        "MIT (as its model card says)",
    ),
)


def _few_step_downloads() -> tuple[Preset, ...]:
    """The sampler presets' LoRAs and Turbo models (core.presets), as downloads."""
    found: dict[str, Preset] = {}
    for sampler in SAMPLER_PRESETS:
        family = sampler.family or ModelFamily.SD1
        note = (
            f"For the sampler preset '{sampler.name}': {sampler.steps} step(s), "
            f"{sampler.scheduler.value}, guidance {sampler.guidance:g}. {sampler.source}."
        )
        if sampler.lora is not None:
            lora = sampler.lora
            preset = Preset(
                lora.name,
                lora.repo_id,
                family,
                False,
                lora.approx_mb / 1024,
                note,
                sampler.licence,
                filename=lora.filename,
                lora_name=lora.name,
                commercial=sampler.commercial,
            )
        elif sampler.model is not None:
            preset = Preset(
                sampler.model.split("/")[-1],
                sampler.model,
                family,
                False,
                TURBO_GB.get(sampler.model, 0.0),
                note,
                sampler.licence,
                commercial=sampler.commercial,
            )
        else:
            continue
        found.setdefault(preset.key, preset)
    return tuple(found.values())


TURBO_GB = {"stabilityai/sd-turbo": 5.2, "stabilityai/sdxl-turbo": 13.9}
"""Their diffusers folders in full precision, as ALLOW_PATTERNS fetches them."""
PRESETS = MODEL_PRESETS + _few_step_downloads()


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


def hub_cache_snapshots(wanted: Callable[[Path], bool]) -> list[tuple[str, Path]]:
    """Model repos in the huggingface_hub cache (usable offline), sorted by id: each repo id
    with its first snapshot folder that ``wanted`` accepts."""
    try:
        from huggingface_hub import constants, scan_cache_dir

        cache = scan_cache_dir(constants.HF_HUB_CACHE)  # read now, not when the hub was imported
    except Exception as error:  # noqa: BLE001 - no cache yet, unreadable cache
        log.info("no hub cache to scan: %s", error)
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            folder = Path(revision.snapshot_path)
            if wanted(folder):
                found.append((repo.repo_id, folder))
                break
    return found


def scan_hub_cache() -> list[ModelEntry]:
    """Diffusers models already in the huggingface_hub cache (usable offline)."""
    return [
        _folder_entry(folder, repo_id, "hub cache", repo_id)
        for repo_id, folder in hub_cache_snapshots(lambda f: (f / "model_index.json").is_file())
    ]


def scan_library(models: Path) -> list[ModelEntry]:
    return scan_folder(models) + scan_hub_cache()


def scan_adapters(folder: Path) -> list[Path]:
    """LoRA or embedding files (safetensors) in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".safetensors")


def guess_family(reference: str) -> ModelFamily | None:
    """The family of the model ``reference`` names, from small files only and never the
    network: a folder's model_index.json, a checkpoint's header, the downloads above, or the
    hub cache's model_index.json. None when it cannot be told (not there yet, unreadable)."""
    reference = reference.strip()
    if not reference:
        return None
    path = Path(reference).expanduser()
    try:
        if path.is_dir():
            return check_folder(path, reference).family
        if path.is_file():
            from sdstudio.engine.models.checkpoints import inspect_checkpoint

            return (
                inspect_checkpoint(path).family if path.suffix.lower() == ".safetensors" else None
            )
    except (SDStudioError, OSError):
        return None
    for preset in PRESETS:
        if preset.filename is None and preset.repo_id == reference:
            return preset.family
    from sdstudio.engine.models.resolve import HUB_ID

    if not HUB_ID.match(reference):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        index = try_to_load_from_cache(reference, "model_index.json")
        if not isinstance(index, str):
            return None
        name = json.loads(Path(index).read_text(encoding="utf-8")).get("_class_name")
    except Exception:  # noqa: BLE001 - an unreadable cache: the family is just unknown
        return None
    return PIPELINE_FAMILIES.get(name)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
