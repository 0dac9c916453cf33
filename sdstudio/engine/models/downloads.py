"""Hub downloads with progress in bytes, cancel, and resume.

huggingface_hub keeps partly downloaded files in its cache and resumes them on the next try, so
a cancelled or broken download continues where it stopped. Progress comes from the hub's own
byte counter (its ``tqdm_class`` hook); cancelling raises inside that hook, which stops the
transfer threads at their next chunk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from sdstudio.core.errors import ModelError
from sdstudio.engine.models.folders import ALLOW_PATTERNS, IGNORE_PATTERNS

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
    from huggingface_hub import hf_hub_download

    staging = loras.parent / ".downloads" / repo_id.replace("/", "--")
    try:
        fetched = hf_hub_download(
            repo_id,
            filename,
            local_dir=staging,
            tqdm_class=_progress_class(report, cancel, single_file=True),
        )
    except DownloadCancelled:
        raise
    except Exception as error:  # noqa: BLE001 - offline, gated, missing, disk full ...
        raise _failed(f"'{filename}' from '{repo_id}'", error, cancel) from error
    loras.mkdir(parents=True, exist_ok=True)
    Path(fetched).replace(target)  # same disk: a rename, never half a file under the name
    return target


def download_model(repo_id: str, report: Report, cancel: threading.Event) -> Path:
    """Download a diffusers model from the hub into its cache (safetensors only); its folder."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            allow_patterns=ALLOW_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
            tqdm_class=_progress_class(report, cancel),
        )
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
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(
                repo_id,
                allow_patterns=allow_patterns,
                tqdm_class=_progress_class(report, cancel),
            )
        )
    except DownloadCancelled:
        raise
    except Exception as error:  # noqa: BLE001 - offline, gated, missing, disk full ...
        raise _failed(f"'{repo_id}'", error, cancel) from error
    if not (folder / WEIGHTS).is_file():
        raise ModelError(
            f"'{repo_id}' has no {WEIGHTS}: SD Studio loads a {what} only as diffusers "
            f"safetensors weights. Choose another {what}."
        )
    return folder
