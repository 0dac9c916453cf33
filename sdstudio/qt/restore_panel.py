"""The Restore panel: old-photo repair without a model.

Detect damage proposes a mask (scratches, dust, creases) that the person edits with the eraser
and restore brushes; Repair fills it; auto levels, white balance and denoise are optional fixes.
Each is one undoable step; the work runs off the GUI thread with a progress bar and a Cancel
button (Esc while the panel has focus), and a result is dropped (with a message) if the picture
changed meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.document import Document
from sdstudio.qt.faces_panel import FacesPanel
from sdstudio.qt.tasks import run_in_background


class RestorePanel(QWidget):
    status = Signal(str)
    redraw_requested = Signal()
    """Repair left large losses masked for the model (the window runs the session's redraw)."""
    _progressed = Signal(int, int)
    """Emitted from the worker thread; Qt delivers it on the GUI thread."""

    def __init__(
        self, document: Callable[[], Document | None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._document = document
        self.busy = False
        self._cancel: threading.Event | None = None
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop this step; the picture stays as it was (Esc)")
        self.cancel_button.clicked.connect(self.cancel)
        QShortcut(
            QKeySequence(Qt.Key.Key_Escape),
            self,
            self.cancel,
            context=Qt.ShortcutContext.WidgetWithChildrenShortcut,
        )
        self._progressed.connect(self._show_progress)
        self.sensitivity = QSlider(Qt.Orientation.Horizontal)
        self.sensitivity.setRange(0, 100)
        self.sensitivity.setValue(50)
        self.sensitivity.setToolTip("Higher finds fainter damage, and more false alarms")
        self.detect_button = QPushButton("Detect damage")
        self.detect_button.setToolTip("Propose a mask of scratches, dust and creases to edit")
        self.repair_button = QPushButton("Repair masked damage")
        self.repair_button.setToolTip("Fill the masked pixels from their surroundings (no model)")
        self.use_model = QCheckBox("Redraw large losses with the model")
        self.use_model.setToolTip(
            "After the repair, tears and lost corners are redrawn by the Generate tab's model "
            "(a result to accept or discard); thin damage never needs a model"
        )
        self.levels_button = QPushButton("Auto levels")
        self.balance_button = QPushButton("White balance")
        self.denoise_button = QPushButton("Mild denoise")
        self.note = QLabel(
            "Detect, then correct the proposal with the eraser (E) and restore (R) brushes, "
            "then Repair. Grey and sepia photos stay grey and sepia."
        )
        self.note.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Sensitivity", self.sensitivity)
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addLayout(form)
        self.buttons = (
            self.detect_button,
            self.repair_button,
            self.levels_button,
            self.balance_button,
            self.denoise_button,
        )
        for button in self.buttons:
            layout.addWidget(button)
            if button is self.repair_button:
                layout.addWidget(self.use_model)
        self.faces = FacesPanel(self)
        layout.addWidget(self.faces)
        self.buttons += self.faces.buttons
        working = QHBoxLayout()
        working.addWidget(self.progress, 1)
        working.addWidget(self.cancel_button)
        layout.addLayout(working)
        self.progress.hide()
        self.cancel_button.hide()
        layout.addStretch(1)
        self.detect_button.clicked.connect(self.detect)
        self.repair_button.clicked.connect(self.repair)
        self.levels_button.clicked.connect(lambda: self._adjust("Auto levels", "auto_levels"))
        self.balance_button.clicked.connect(lambda: self._adjust("White balance", "white_balance"))
        self.denoise_button.clicked.connect(lambda: self._adjust("Denoise", "denoise"))

    # -- actions ------------------------------------------------------------------------------

    def detect(self) -> None:
        document = self._start("Detecting damage …")
        if document is None:
            return
        image, sensitivity = document.image.copy(), self.sensitivity.value() / 100
        version = document.version

        def work(progress, cancel):
            from sdstudio.core.damage import detect_damage

            return detect_damage(image, sensitivity=sensitivity, progress=progress, cancel=cancel)

        def done(report) -> None:
            if self._still(document, version):
                document.set_mask(report.mask, label="Detected damage")
                self.status.emit(
                    f"{report.summary()}: correct the mask with the brushes, then Repair."
                )

        self._run(work, done)

    def repair(self) -> None:
        document = self._document()
        if document is not None and not document.has_mask:
            self.status.emit(
                "Nothing to repair: Detect damage or paint the damage with the eraser."
            )
            return
        document = self._start("Repairing …")
        if document is None:
            return
        image, mask = document.image.copy(), document.mask.copy()
        version = document.version

        def work(progress, cancel):
            from sdstudio.engine.restore import large_losses, restore

            return restore(image, mask, progress=progress, cancel=cancel), large_losses(mask)

        def done(outcome: tuple[np.ndarray, np.ndarray]) -> None:
            result, large = outcome
            if not self._still(document, version):
                return
            document.apply_patch(document.bounds, result, label="Repair damage", clear_mask=True)
            if not large.any():
                self.status.emit("Repaired (Ctrl+Z undoes it).")
            elif self.use_model.isChecked():
                document.set_mask(large, label="Large losses")
                self.status.emit("Repaired; the model now redraws the large losses …")
                self.redraw_requested.emit()
            else:
                self.status.emit(
                    "Repaired (Ctrl+Z undoes it). Large losses were filled from their "
                    "surroundings: tick 'Redraw large losses with the model' to redraw them."
                )

        self._run(work, done)

    def _adjust(self, label: str, name: str) -> None:
        document = self._start(f"{label} …")
        if document is None:
            return
        image = document.image.copy()
        version = document.version

        def work(progress, cancel):
            from sdstudio.core import adjust

            if name == "denoise":  # the slow one: in bands, with progress and cancel
                return adjust.denoise(image, progress=progress, cancel=cancel)
            return getattr(adjust, name)(image)

        def done(result: np.ndarray) -> None:
            if self._still(document, version):
                document.apply_patch(document.bounds, result, label=label)
                self.status.emit(f"{label} applied (Ctrl+Z undoes it).")

        self._run(work, done)

    # -- plumbing ----------------------------------------------------------------------------

    def _start(self, message: str) -> Document | None:
        document = self._document()
        if document is None:
            self.status.emit("Open a picture first.")
            return None
        if self.busy:
            self.status.emit("Still working on the last step.")
            return None
        self.status.emit(message)
        return document

    def cancel(self) -> None:
        """Stop the running step: its result, whenever it comes, is not applied."""
        if self._cancel is not None and not self._cancel.is_set():
            self._cancel.set()
            self.status.emit("Cancelling …")

    def _run(self, work, done) -> None:
        cancel = threading.Event()
        self._cancel = cancel
        self._set_busy(True)

        def report(index: int, total: int) -> None:
            self._progressed.emit(index, total)

        def finish(result) -> None:
            self._set_busy(False)
            if cancel.is_set():  # finished before it noticed: still the person's word
                self.status.emit("Cancelled; the picture is unchanged.")
                return
            done(result)

        def failed(message: str) -> None:
            self._set_busy(False)
            self.status.emit(message)

        run_in_background(lambda: work(report, cancel), finish, failed)

    def _show_progress(self, index: int, total: int) -> None:
        if self.busy:
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(index)

    def _still(self, document: Document, version: object) -> bool:
        """The picture and mask are what the work started from; else say so and drop it."""
        same = document is self._document() and version is not None and document.version == version
        if not same:
            self.status.emit(
                "The picture changed while this ran; nothing was applied. Run it again."
            )
        return same

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        for button in self.buttons:
            button.setEnabled(not busy)
        self.progress.setRange(0, 0)  # busy, until the first report says how far
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if not busy:
            self._cancel = None
