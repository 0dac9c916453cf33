"""Hub downloads with progress in bytes, cancel, and resume: models, LoRAs, ControlNets, tiny
VAEs and the specialist models (a LaMa file, Segment Anything folders).

huggingface_hub keeps partly downloaded files in its cache and resumes them on the next try, so
a cancelled or broken download continues where it stopped. Progress comes from the hub's own
byte counter (its ``tqdm_class`` hook); cancelling raises inside that hook, which stops the
transfer threads at their next chunk.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sdstudio.core.errors import ModelError
from sdstudio.engine.models.folders import ALLOW_PATTERNS, IGNORE_PATTERNS
from sdstudio.engine.models.specialist_presets import (
    SAM_ALLOW_PATTERNS,
    SAM_WEIGHTS,
    SpecialistPreset,
)

WEIGHTS = "diffusion_pytorch_model.safetensors"
Report = Callable[[int, int, float], None]
"""(bytes done, bytes in all (0 while unknown), bytes per second)."""


class DownloadCancelled(Exception):  # noqa: N818 - a signal, not an error
    pass


def _progress_class(report: Report, cancel: threading.Event, single_file: bool = False):
    from tqdm.auto import tqdm

    lock = threading.Lock()
    started = time.monotonic()

    class Progress(tqdm):
        """Quiet tqdm that forwards the hub's byte counter to ``report``: a snapshot's overall
        "Reconstructing" bar; for one file, its bar (not xet's network "downloading bytes")."""

        def __init__(self, *args, **kwargs):
            desc = str(kwargs.get("desc", ""))
            wanted = "downloading bytes" not in desc if single_file else "Reconstruct" in desc
            self.counts_bytes = kwargs.get("unit") == "B" and wanted
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial", 0) or 0)

        def update(self, n=1):
            if cancel.is_set():
                raise DownloadCancelled
            if self.counts_bytes:
                with lock:
                    self.done += int(n or 0)
                    elapsed = max(1e-6, time.monotonic() - started)
                    report(self.done, int(self.total or 0), self.done / elapsed)
            return None

    return Progress


def _failed(what: str, error: Exception, cancel: threading.Event) -> Exception:
    if cancel.is_set():
        return DownloadCancelled()
    return ModelError(
        f"Downloading {what} failed ({type(error).__name__}: {str(error)[:120]}). "
        "Check the connection and try again; the part already downloaded is kept."
    )


def download_lora(
    repo_id: str,
    filename: str,
    loras: Path,
    name: str,
    report: Report,
    cancel: threading.Event,
) -> Path:
    """Download one LoRA file of a hub repo into the ``loras`` folder as ``name.safetensors``
    (the name a sampler preset looks for). The part fetched waits, resumable, in a hidden
    ``.downloads`` folder beside ``loras``; the file appears under its name only when whole."""
    if not filename.lower().endswith(".safetensors"):
        raise ModelError(f"'{filename}' is not a .safetensors file: only those are loaded.")
    target = loras / f"{name}.safetensors"
    if target.is_file():
        return target
    staging = loras.parent / ".downloads" / repo_id.replace("/", "--")
    fetched = _fetch_file(repo_id, filename, staging, report, cancel)
    loras.mkdir(parents=True, exist_ok=True)
    Path(fetched).replace(target)  # same disk: a rename, never half a file under the name
    return target


def download_model(repo_id: str, report: Report, cancel: threading.Event) -> Path:
    """Download a diffusers model from the hub into its cache (safetensors only); its folder."""
    return _snapshot(
        repo_id, report, cancel, allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS
    )


def _fetch_file(
    repo_id: str,
    filename: str,
    staging: Path,
    report: Report,
    cancel: threading.Event,
    revision: str | None = None,
) -> Path:
    """``hf_hub_download`` of one file into ``staging`` with progress and cancel; the file, or
    one line a person can act on."""
    from huggingface_hub import hf_hub_download

    try:
        fetched = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            local_dir=staging,
            tqdm_class=_progress_class(report, cancel, single_file=True),
        )
    except DownloadCancelled:
        raise
    except Exception as error:  # noqa: BLE001 - offline, gated, missing, disk full ...
        raise _failed(f"'{filename}' from '{repo_id}'", error, cancel) from error
    return Path(fetched)


def _snapshot(repo_id: str, report: Report, cancel: threading.Event, **patterns) -> Path:
    """``snapshot_download`` of ``repo_id`` with progress and cancel (``patterns``: its
    allow/ignore patterns); the snapshot folder, or one line a person can act on."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, tqdm_class=_progress_class(report, cancel), **patterns)
    except DownloadCancelled:
        raise
    except Exception as error:  # noqa: BLE001 - offline, gated, missing, disk full ...
        raise _failed(f"'{repo_id}'", error, cancel) from error
    return Path(folder)


def download_controlnet(repo_id: str, report: Report, cancel: threading.Event) -> Path:
    """Download a diffusers ControlNet from the hub into its cache: its config.json and
    diffusion_pytorch_model.safetensors only (never pickles, never half-precision copies), where
    ``resolve_controlnet`` and the library's scan find it by repo id; its folder."""
    from sdstudio.engine.diffusion.controlnet import ALLOW_PATTERNS

    return download_weights(repo_id, ALLOW_PATTERNS, report, cancel, what="ControlNet")


def download_weights(
    repo_id: str,
    allow_patterns: list[str],
    report: Report,
    cancel: threading.Event,
    *,
    what: str,
) -> Path:
    """Download a single diffusers module whose files sit at the repo's root (a ControlNet, a
    tiny VAE: ``allow_patterns`` says which) into the hub cache; its folder. A ``what`` that has
    no diffusion_pytorch_model.safetensors there is refused."""
    folder = _snapshot(repo_id, report, cancel, allow_patterns=allow_patterns)
    if not (folder / WEIGHTS).is_file():
        raise ModelError(
            f"'{repo_id}' has no {WEIGHTS}: SD Studio loads a {what} only as diffusers "
            f"safetensors weights. Choose another {what}."
        )
    return folder


def download_specialist(
    preset: SpecialistPreset, models: Path, report: Report, cancel: threading.Event
) -> Path:
    """Download a specialist model: a single file (``preset.filename``, a spandrel model) into
    the models folder's specialists folder as ``preset.target``, its size and sha256 checked
    when the preset knows them; or a transformers model (Segment Anything) into the hub cache.
    The path it landed at (a file or a snapshot folder)."""
    if preset.filename is None:
        return download_sam(preset.repo_id, report, cancel)
    from sdstudio.engine.models.specialist_presets import UPSCALING
    from sdstudio.engine.specialists.loading import specialists_dir
    from sdstudio.engine.specialists.upscale import upscalers_dir

    folder = upscalers_dir(models) if preset.purpose == UPSCALING else specialists_dir(models)
    target = folder / (preset.target or preset.filename)
    if target.is_file() and _matches(target, preset) is None:
        return target

    staging = Path(models) / ".downloads" / preset.repo_id.replace("/", "--")
    fetched = _fetch_file(
        preset.repo_id, preset.filename, staging, report, cancel, revision=preset.revision
    )
    problem = _matches(fetched, preset)
    if problem is not None:
        fetched.unlink(missing_ok=True)  # a wrong file is not kept for a resume
        raise ModelError(
            f"The downloaded '{preset.filename}' from '{preset.repo_id}' is not the published "
            f"file ({problem}); it was deleted. Try again later, or get the file from "
            f"{preset.source} and put it in {folder}."
        )
    folder.mkdir(parents=True, exist_ok=True)
    fetched.replace(target)  # same disk: a rename, never half a file under the name
    return target


def _matches(path: Path, preset: SpecialistPreset) -> str | None:
    """Why ``path`` is not the file ``preset`` describes (size, sha256), or None."""
    size = path.stat().st_size
    if preset.size_bytes is not None and size != preset.size_bytes:
        return f"{size} bytes, expected {preset.size_bytes}"
    if preset.sha256 is not None:
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != preset.sha256.lower():
            return f"sha256 {digest.hexdigest()[:12]}…, expected {preset.sha256[:12]}…"
    return None


def download_sam(repo_id: str, report: Report, cancel: threading.Event) -> Path:
    """Download a Segment Anything model in the transformers format into the hub cache: its
    config, preprocessor config and ``model.safetensors`` only (never pickles), where
    ``sdstudio.engine.models.sam.find_sam`` finds it by repo id; its folder."""
    folder = _snapshot(repo_id, report, cancel, allow_patterns=SAM_ALLOW_PATTERNS)
    if not (folder / SAM_WEIGHTS).is_file() or not (folder / "config.json").is_file():
        raise ModelError(
            f"'{repo_id}' has no config.json and {SAM_WEIGHTS}: SD Studio loads Segment "
            "Anything only in the transformers format with safetensors weights. Choose another."
        )
    return folder
