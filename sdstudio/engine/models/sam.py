"""Where an installed Segment Anything model is: a transformers folder (``SamModel``) under the
models folder's ``sam`` folder, or a hub snapshot in the huggingface_hub cache (what the model
library downloads). Reads small files only (config.json), never weights, never the network."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sdstudio.engine.models.library import hub_cache_snapshots
from sdstudio.engine.models.specialist_presets import SAM_PRESETS

log = logging.getLogger(__name__)

SAM_FOLDER = "sam"


def sam_dir(models: Path) -> Path:
    return Path(models).expanduser() / SAM_FOLDER


def is_sam_folder(folder: Path) -> bool:
    """A transformers Segment Anything folder: config.json saying ``model_type`` "sam" beside
    safetensors weights (a pickle-only folder does not count: it is never loaded)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict) or config.get("model_type") != "sam":
        return False
    return any(p.suffix == ".safetensors" for p in folder.iterdir() if p.is_file())


def scan_sam(models: Path) -> list[tuple[str, Path]]:
    """Every Segment Anything model installed, best first: (reference, folder) with the
    reference a folder path (the ``sam`` folder's, then its subfolders by name) or a hub id
    (the library's downloads in their order, SlimSAM first, then other cached SAM repos)."""
    found: list[tuple[str, Path]] = []
    base = sam_dir(models)
    if base.is_dir():
        folders = [base, *sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.name)]
        found += [(str(f), f) for f in folders if not f.name.startswith(".") and is_sam_folder(f)]
    cached = dict(hub_cache_snapshots(is_sam_folder))
    order = [p.repo_id for p in SAM_PRESETS]
    for repo_id in sorted(cached, key=lambda r: order.index(r) if r in order else len(order)):
        found.append((repo_id, cached[repo_id]))
    return found


def find_sam(models: Path) -> str | None:
    """The Segment Anything model to use: a folder under ``models``/sam, else a hub id found in
    the hub cache (SlimSAM first); None when none is installed. Pass it to
    ``SamModel.from_pretrained`` (with ``local_files_only=True`` for a hub id)."""
    found = scan_sam(models)
    if not found:
        log.debug("no Segment Anything model in %s or the hub cache", sam_dir(models))
        return None
    return found[0][0]
