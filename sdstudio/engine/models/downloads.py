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

Report = Callable[[int, int, float], None]
"""(bytes done, bytes in all (0 while unknown), bytes per second)."""


class DownloadCancelled(Exception):  # noqa: N818 - a signal, not an error
    pass


def _progress_class(report: Report, cancel: threading.Event):
    from tqdm.auto import tqdm

    lock = threading.Lock()
    started = time.monotonic()

    class Progress(tqdm):
        """Quiet tqdm that forwards the hub's "Reconstructing" byte counter to ``report``."""

        def __init__(self, *args, **kwargs):
            self.counts_bytes = kwargs.get("unit") == "B" and "Reconstruct" in str(
                kwargs.get("desc", "")
            )
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
        if cancel.is_set():
            raise DownloadCancelled from error
        raise ModelError(
            f"Downloading '{repo_id}' failed ({type(error).__name__}: {str(error)[:120]}). "
            "Check the connection and try again; the part already downloaded is kept."
        ) from error
    return Path(folder)
