"""Image > Upscale 2x / 4x: runs the upscaler off the GUI thread with progress and cancel (Esc),
then replaces the picture as one undo step (``Document.replace_image``). The window follows the
size change (and its undo and redo) through ``follow_size``. Image > Upscale and refine… adds a
second pass on the same thread (``refine``: see ``qt/refine_dialog.RefinePass``): the whole is
still one undo step, and Esc cancels either pass."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QProgressBar

from sdstudio.core.document import Document
from sdstudio.qt.tasks import run_in_background

_CANCELLED = object()


class UpscaleAction(QObject):
    """Starts one upscale at a time. ``status`` carries the line for the status bar;
    ``finished`` is emitted when a run ends (applied, cancelled or failed)."""

    status = Signal(str)
    finished = Signal()
    _progressed = Signal(int, int, str)  # from the worker thread: done, total (0: busy), what

    def __init__(
        self,
        document: Callable[[], Document | None],
        models: Callable[[], Path],
        progress: QProgressBar,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._document = document
        self._models = models
        self._bar = progress
        self._cancel: threading.Event | None = None
        self._progressed.connect(self._show_progress)

    @property
    def busy(self) -> bool:
        return self._cancel is not None

    def start(self, scale: int, refine=None) -> None:
        """Upscale the picture ``scale`` times; then, with ``refine`` (a ``RefinePass``: checked
        options, a ``load()`` and a ``run(image, cancel, progress)``), refine the result."""
        document = self._document()
        if document is None:
            self.status.emit("Open a picture first.")
            return
        if self.busy:
            self.status.emit("An upscale is already running (Esc cancels it).")
            return
        image, version, models = document.image.copy(), document.version, self._models()
        cancel = self._cancel = threading.Event()
        what = f"Upscale {scale}x" + (" and refine" if refine is not None else "")
        self.status.emit(f"Upscaling {scale}x … (Esc cancels)")
        self._bar.setRange(0, 0)
        self._bar.setFormat("upscale")
        self._bar.setVisible(True)

        def work():  # the models folder is scanned here too: file reads stay off the GUI thread
            from sdstudio.engine.specialists.upscale import describe_choice, find_upscaler, upscale
            from sdstudio.engine.streaming import RunCancelled

            if refine is not None:  # the model first: a missing one fails before the upscale
                self.status.emit(f"Loading {refine.options.model} for the refine …")
                self._progressed.emit(0, 0, "loading model")
                refine.load()
                if cancel.is_set():
                    return _CANCELLED
            model = find_upscaler(models, scale)
            name = describe_choice(model)
            self.status.emit(f"Upscaling {scale}x with {name} … (Esc cancels)")  # queued
            try:
                result = upscale(
                    image, scale, model, cancel=cancel, progress=self._reporter("tile")
                )
                if refine is not None:
                    self.status.emit(f"Refining with {refine.options.model} … (Esc cancels)")
                    result = refine.run(result, cancel, self._reporter("refine tile"))
            except RunCancelled:
                return _CANCELLED
            return result, model, name

        def done(outcome) -> None:
            self._end()
            if outcome is _CANCELLED or cancel.is_set():
                self.status.emit(f"{what} cancelled; the picture is unchanged.")
            elif document is not self._document() or document.version != version:
                self.status.emit("The picture changed while upscaling; nothing was applied.")
            else:
                result, model, name = outcome
                document.replace_image(result, what)
                done_too = "" if refine is None else f" and {refine.summary()}"
                self.status.emit(self._summary(scale, name, model, document, done_too))
            self.finished.emit()

        def failed(message: str) -> None:
            self._end()
            self.status.emit(f"{what} failed: {' '.join(message.split())}")
            self.finished.emit()

        run_in_background(work, done, failed)

    @staticmethod
    def _summary(
        scale: int, name: str, model: Path | None, document: Document, done_too: str = ""
    ) -> str:
        size = f"{document.width} x {document.height}"
        if model is not None:
            return f"Upscaled {scale}x with {name}{done_too}: now {size} (Ctrl+Z undoes it)."
        return (
            f"Upscaled {scale}x with Lanczos{done_too}: now {size}. No upscaling model is "
            "installed: get "
            "Real-ESRGAN in Models > Model library (or drop one into the models folder's "
            "'upscalers' folder) for added detail."
        )

    def cancel(self) -> bool:
        """Stop the running upscale (the picture stays as it was); True if one was running."""
        if self._cancel is None or self._cancel.is_set():
            return False
        self._cancel.set()
        self.status.emit("Cancelling the upscale …")
        return True

    def _reporter(self, label: str) -> Callable[[int, int], None]:
        return lambda done, total: self._progressed.emit(done, total, label)

    def _show_progress(self, done: int, total: int, label: str) -> None:
        if not self.busy:
            return
        self._bar.setRange(0, total)  # 0: busy, with no count
        self._bar.setValue(done)
        self._bar.setFormat(f"{label} {done}/{total}" if total else label)

    def _end(self) -> None:
        self._cancel = None
        self._bar.setVisible(False)


def follow_size(window, document: Document) -> None:
    """After ``document`` changed size (an upscale, its undo or redo): the canvas, the results,
    the selection and the mode start again from the new picture, as on opening one."""
    if window.session.document is not document:
        return
    window.select_tool.reset()
    window.session.set_document(document, blank=window.session.blank)
    window._update_mode()
    window.statusBar().showMessage(f"The picture is {document.width} x {document.height} now.")
