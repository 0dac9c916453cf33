"""The Restore panel: old-photo repair without a model.

Detect damage proposes a mask (scratches, dust, creases) that the person edits with the eraser
and restore brushes; Repair fills it; auto levels, white balance and denoise are optional fixes.
Each is one undoable step; the work runs off the GUI thread, and a result is dropped (with a
message) if the picture changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFormLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from sdstudio.core.document import Document
from sdstudio.qt.tasks import run_in_background


class RestorePanel(QWidget):
    status = Signal(str)

    def __init__(
        self, document: Callable[[], Document | None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._document = document
        self.busy = False
        self.sensitivity = QSlider(Qt.Orientation.Horizontal)
        self.sensitivity.setRange(0, 100)
        self.sensitivity.setValue(50)
        self.sensitivity.setToolTip("Higher finds fainter damage, and more false alarms")
        self.detect_button = QPushButton("Detect damage")
        self.detect_button.setToolTip("Propose a mask of scratches, dust and creases to edit")
        self.repair_button = QPushButton("Repair masked damage")
        self.repair_button.setToolTip("Fill the masked pixels from their surroundings (no model)")
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

        def work():
            from sdstudio.core.damage import detect_damage

            return detect_damage(image, sensitivity=sensitivity)

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

        def work():
            from sdstudio.engine.restore import restore

            return restore(image, mask)

        def done(result: np.ndarray) -> None:
            if self._still(document, version):
                document.apply_patch(
                    document.bounds, result, label="Repair damage", clear_mask=True
                )
                self.status.emit("Repaired (Ctrl+Z undoes it).")

        self._run(work, done)

    def _adjust(self, label: str, name: str) -> None:
        document = self._start(f"{label} …")
        if document is None:
            return
        image = document.image.copy()
        version = document.version

        def work():
            from sdstudio.core import adjust

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

    def _run(self, work, done) -> None:
        self._set_busy(True)

        def finish(result) -> None:
            self._set_busy(False)
            done(result)

        def failed(message: str) -> None:
            self._set_busy(False)
            self.status.emit(message)

        run_in_background(work, finish, failed)

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
