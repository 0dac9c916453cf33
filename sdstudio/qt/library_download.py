"""One download for the model library, on a plain thread: a model, a LoRA, a ControlNet, a tiny
VAE or a specialist model; progress, done and failure arrive as Qt signals on the GUI thread."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from sdstudio.core.errors import SDStudioError
from sdstudio.engine.models.library import Preset
from sdstudio.engine.models.specialist_presets import SpecialistPreset
from sdstudio.engine.models.tiny_vae import TINY_VAE_ALLOW_PATTERNS, TINY_VAE_PRESETS


class _DownloadSignals(QObject):
    progress = Signal(object, object, float)  # done, total (Python ints: past 2 GB)
    done = Signal(str)
    failed = Signal(str)


class Download:
    """One hub download on a plain thread; its signals arrive on the GUI thread. A model or a
    ControlNet goes into the hub cache; a LoRA (``preset.filename``) into ``loras`` under the
    preset's name."""

    def __init__(
        self,
        preset: Preset | SpecialistPreset | str,
        loras: Path | None = None,
        *,
        models: Path | None = None,
    ) -> None:
        self.preset = preset
        self.repo_id = preset if isinstance(preset, str) else preset.repo_id
        self.loras = loras
        self.models = models if models is not None else (loras.parent if loras else None)
        """The models folder: a specialist file lands in its specialists folder."""
        self.cancel = threading.Event()
        self.signals = _DownloadSignals()
        self.thread = threading.Thread(
            target=self._run, name=f"download {self.repo_id}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def _fetch(self) -> Path:
        from sdstudio.engine.models.downloads import (
            download_controlnet,
            download_lora,
            download_model,
            download_weights,
        )

        preset, report = self.preset, self.signals.progress.emit
        if isinstance(preset, SpecialistPreset):
            from sdstudio.engine.models.downloads import download_specialist

            assert self.models is not None or preset.filename is None
            return download_specialist(preset, self.models or Path(), report, self.cancel)
        if isinstance(preset, Preset) and preset.controlnet:
            return download_controlnet(preset.repo_id, report, self.cancel)
        if preset in TINY_VAE_PRESETS:
            patterns = TINY_VAE_ALLOW_PATTERNS
            return download_weights(preset.repo_id, patterns, report, self.cancel, what="tiny VAE")
        if isinstance(preset, Preset) and preset.filename and preset.lora_name:
            assert self.loras is not None
            return download_lora(
                preset.repo_id,
                preset.filename,
                self.loras,
                preset.lora_name,
                self.signals.progress.emit,
                self.cancel,
            )
        return download_model(self.repo_id, self.signals.progress.emit, self.cancel)

    def _run(self) -> None:
        from sdstudio.engine.models.downloads import DownloadCancelled

        try:
            folder = self._fetch()
        except DownloadCancelled:
            self.signals.failed.emit("Download cancelled; what was fetched is kept for next time.")
        except SDStudioError as error:
            self.signals.failed.emit(str(error))
        else:
            self.signals.done.emit(str(folder))
