"""The editor's model actions: generate (downloading a missing hub model first, with
progress), cancel, the model library dialog, and what it hands back (a model, a LoRA tag)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from sdstudio.engine.models.library import human_size
from sdstudio.engine.models.resolve import needs_download
from sdstudio.qt.model_library import Download, ModelLibraryDialog, models_folder


class ModelActions:
    """Mixed into MainWindow (which provides panel, session, settings, progress, loras,
    models_folder, checks_downloads, download, show_error and statusBar)."""

    def generate(self) -> None:
        """Generate; a hub model not yet on this computer is downloaded first, with progress."""
        self._with_model(self.session.generate)

    def remove_and_refine(self) -> None:
        """Remove with the model-free fill, then a partial diffusion pass with a neutral prompt."""
        self._with_model(lambda: self.session.remove(refine=True))

    def _with_model(self, run) -> None:
        model = self.panel.settings()["model"]
        if self.download is not None:
            self.statusBar().showMessage("Still downloading the model: wait, or cancel with Esc.")
            return
        if self.checks_downloads and self.session.document is not None and needs_download(model):
            answer = QMessageBox.question(
                self,
                "SD Studio",
                f"The model '{model}' is not on this computer yet. Download it now from the "
                "Hugging Face Hub (a few GB, once)? The generation starts when it is done.",
            )
            if answer == QMessageBox.StandardButton.Yes:
                self._download_then(model, run)
            return
        run()

    def cancel(self) -> None:
        if self.download is not None:
            self.download.cancel.set()
        self.session.cancel()

    def _download_then(self, model: str, run) -> None:
        self.download = Download(model)

        def progress(done: int, total: int, speed: float) -> None:
            self.progress.setVisible(True)
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total) if total else 0)
            self.progress.setFormat("%p%")
            self.statusBar().showMessage(
                f"Downloading {model}: {human_size(done)} of {human_size(total)}, "
                f"{human_size(int(speed))}/s (Esc cancels; a later try resumes)"
            )

        def finished(_folder: str) -> None:
            self.download = None
            self._on_progress(0, 0, -1.0)
            run()

        def failed(message: str) -> None:
            self.download = None
            self._on_progress(0, 0, -1.0)
            self.show_error(message)

        self.download.signals.progress.connect(progress)
        self.download.signals.done.connect(finished)
        self.download.signals.failed.connect(failed)
        self.statusBar().showMessage(f"Downloading {model} …")
        self.download.start()

    def show_model_library(self) -> None:
        dialog = ModelLibraryDialog(self.settings, self, model=self.panel.settings()["model"])
        dialog.model_chosen.connect(self._use_model)
        dialog.lora_chosen.connect(self._insert_lora)
        dialog.controlnet_chosen.connect(self._use_controlnet)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(
            lambda _r: setattr(self, "models_folder", models_folder(self.settings))
        )
        dialog.open()
        self.library_dialog = dialog

    def _library_closed(self, _result: int) -> None:
        self.models_folder = models_folder(self.settings)
        self.loras.rescan()

    def _use_model(self, reference: str) -> None:
        self.panel.add_recent_model(reference)
        self.panel.apply({"model": reference})
        self.statusBar().showMessage(f"Model: {reference}", 5000)

    def _use_controlnet(self, reference: str) -> None:
        self.panel.control.choose(reference)
        self.panel.control.setChecked(True)
        self.statusBar().showMessage(
            f"ControlNet: {reference}. Control is on in the Generate panel: the Sketch layer "
            "steers the next generation (or live mode, F5).",
            8000,
        )

    def _insert_lora(self, tag: str) -> None:
        prompt = self.panel.settings()["prompt"].rstrip()
        self.panel.apply({"prompt": f"{prompt} {tag}".strip()})
