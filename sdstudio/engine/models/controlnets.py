"""ControlNets the user has: the models folder's ``controlnet`` folder and the hub cache.

Scanning reads only configs and safetensors headers (through ``resolve_controlnet``, which
tells SD 1.x from SDXL by the weights), never the weights themselves and never a pickle: a
``.pth`` or ``.bin`` is listed with why it cannot be used. An entry's ``reference`` is what the
Generate panel passes to the engine (a folder or file path, or a hub id found in the cache).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.diffusion.controlnet import CONFIG, resolve_controlnet
from sdstudio.engine.models.folders import PICKLE_SUFFIXES, pickle_refusal
from sdstudio.engine.models.library import Preset, hub_cache_snapshots

CONTROLNET_FOLDER = "controlnet"
CONTROLNET_CLASSES = {"ControlNetModel", "ControlNetUnionModel", "ControlNetXSAdapter"}
"""config.json classes that mark a hub repo as a ControlNet (unsupported ones get a problem)."""

CONTROLNET_1_1 = (
    "OpenRAIL (ControlNet 1.1, as its model card says: use restrictions apply; commercial use "
    "allowed)"
)


def _sd15(title: str, name: str, note: str) -> Preset:
    return Preset(
        title,
        f"lllyasviel/{name}",
        ModelFamily.SD1,
        False,
        1.4,  # diffusion_pytorch_model.safetensors in full precision
        note,
        CONTROLNET_1_1,
        controlnet=True,
    )


CONTROLNET_PRESETS = (
    _sd15(
        "ControlNet SD 1.5 scribble",
        "control_v11p_sd15_scribble",
        "Your brush strokes (the Sketch layer) steer the picture: the control for live drawing.",
    ),
    _sd15(
        "ControlNet SD 1.5 line art",
        "control_v11p_sd15_lineart",
        "Clean line drawings (light lines on dark) become the picture's outlines.",
    ),
    _sd15(
        "ControlNet SD 1.5 canny",
        "control_v11p_sd15_canny",
        "Keeps the edges of a picture (found with OpenCV) while the rest is redrawn.",
    ),
    _sd15(
        "ControlNet SD 1.5 inpaint",
        "control_v11p_sd15_inpaint",
        "Helps a plain SD 1.5 model inpaint in keeping with the surroundings: use it with the "
        "Inpaint control kind (the erased area is marked for it).",
    ),
    Preset(
        "ControlNet SDXL scribble",
        "xinsir/controlnet-scribble-sdxl-1.0",
        ModelFamily.SDXL,
        False,
        2.3,
        "Brush strokes steer an SDXL model (xinsir's scribble ControlNet).",
        "Apache 2.0 (as its model card says)",
        controlnet=True,
    ),
    Preset(
        "ControlNet SDXL union",
        "xinsir/controlnet-union-sdxl-1.0",
        ModelFamily.SDXL,
        False,
        2.3,
        "One SDXL ControlNet for several kinds: Scribble, Line art and Canny each run as its "
        "own mode (xinsir's ControlNet-Union; it runs alone, not beside another control).",
        "Apache 2.0 (as its model card says)",
        controlnet=True,
    ),
)
"""Well-known ControlNets to download: diffusers ControlNetModel repos with a
``diffusion_pytorch_model.safetensors`` (only that and config.json are fetched)."""


@dataclass(frozen=True)
class ControlNetEntry:
    reference: str
    """What to pass as the control's model: a folder or file path, or a hub id."""
    name: str
    family: ModelFamily | None
    source: str
    """"folder", "file" or "hub cache"."""
    size_bytes: int = 0
    problem: str | None = None
    """Why it cannot be used, in one line; None when it can."""

    @property
    def usable(self) -> bool:
        return self.problem is None


def controlnets_dir(models: Path) -> Path:
    """Where ControlNets go in a models folder (beside ``loras`` and ``embeddings``)."""
    return models / CONTROLNET_FOLDER


def _weights_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors") if p.is_file())


def _entry(path: Path, reference: str, name: str, source: str, size: int) -> ControlNetEntry:
    try:
        info = resolve_controlnet(str(path))
    except SDStudioError as error:
        problem = str(error).replace(str(path), reference)
        return ControlNetEntry(reference, name, None, source, size, problem)
    return ControlNetEntry(reference, name, info.family, source, size)


def scan_folder(folder: Path) -> list[ControlNetEntry]:
    """Diffusers ControlNet folders and single files in ``folder``, sorted by name; pickles and
    other unusable ones are listed with the reason (a pickle is never opened)."""
    entries: list[ControlNetEntry] = []
    if not folder.is_dir():
        return entries
    for path in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            entries.append(_entry(path, str(path), path.name, "folder", _weights_size(path)))
        elif path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
            problem = str(pickle_refusal(path))
            size = path.stat().st_size
            entries.append(ControlNetEntry(str(path), path.name, None, "file", size, problem))
        elif path.is_file() and path.suffix.lower() == ".safetensors":
            size = path.stat().st_size
            entries.append(_entry(path, str(path), path.stem, "file", size))
    return entries


def _config_class(folder: Path) -> str | None:
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return config.get("_class_name") if isinstance(config, dict) else None


def scan_hub_cache() -> list[ControlNetEntry]:
    """ControlNets already in the huggingface_hub cache (repos whose config.json is a
    ControlNet's), by repo id: the engine finds them there offline."""
    return [
        _entry(folder, repo_id, repo_id, "hub cache", _weights_size(folder))
        for repo_id, folder in hub_cache_snapshots(lambda f: _config_class(f) in CONTROLNET_CLASSES)
    ]


def scan_controlnets(models: Path) -> list[ControlNetEntry]:
    """The ControlNets in ``models``' ``controlnet`` folder, then those in the hub cache."""
    return scan_folder(controlnets_dir(models)) + scan_hub_cache()
