"""The Restore tab's Faces group: find the faces, restore them with an installed face model.

It runs through the Restore panel's own plumbing (``_start``, ``_run``, ``_still``): off the GUI
thread, with its progress bar and Cancel button, the result applied as one undoable step, and
dropped with a message if the picture changed meanwhile. Nothing is drawn on the canvas: the
group says how many faces were found, and by which detector.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

DEFAULT_FIDELITY = 20
"""Percent of the original face kept (the restorer's strength is 1 - fidelity)."""
NO_MODEL = (
    "No face model installed: download GFPGAN v1.4 or RestoreFormer in Models > Model library."
)

FIND_NOTE = "Find faces shows how many there are."


class FacesPanel(QGroupBox):
    """``restore``: the RestorePanel this group lives in (its status, progress and cancel).
    ``models``: the models folder (default: the window's, else SD Studio's own)."""

    def __init__(
        self,
        restore,
        models: Callable[[], Path] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Faces", parent)
        self._restore = restore
        self._models = models or self._window_models
        self._faces: tuple[object, list] | None = None  # (document version, faces)
        self.found = QLabel(FIND_NOTE)
        self.found.setWordWrap(True)
        self.model = QComboBox()
        self.model.setToolTip("The face restoration model (from the models folder)")
        self.fidelity = QSlider(Qt.Orientation.Horizontal)
        self.fidelity.setRange(0, 100)
        self.fidelity.setValue(DEFAULT_FIDELITY)
        self.fidelity.setToolTip(
            "How much of the original face is kept: 0 = the restored face only, 100 = the "
            "original (nothing changes)"
        )
        self.find_button = QPushButton("Find faces")
        self.find_button.setToolTip("Count the faces the restorer would work on")
        self.restore_button = QPushButton("Restore faces")
        self.restore_button.setToolTip(
            "Align, restore and blend each face back softly; the rest of the picture is kept"
        )
        self.buttons = (self.find_button, self.restore_button)
        form = QFormLayout()
        form.addRow("Model", self.model)
        self.fidelity_value = QLabel()
        self.fidelity_value.setMinimumWidth(
            self.fidelity_value.fontMetrics().horizontalAdvance("100%")
        )
        self.fidelity.valueChanged.connect(lambda v: self.fidelity_value.setText(f"{v}%"))
        self.fidelity_value.setText(f"{self.fidelity.value()}%")
        fidelity = QHBoxLayout()
        fidelity.addWidget(self.fidelity, 1)
        fidelity.addWidget(self.fidelity_value)
        form.addRow("Fidelity", fidelity)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.find_button)
        layout.addWidget(self.restore_button)
        layout.addWidget(self.found)
        self.find_button.clicked.connect(self.find)
        self.restore_button.clicked.connect(self.restore)
        self.refresh_models()

    def _window_models(self) -> Path:
        from sdstudio.core.paths import models_dir

        folder = getattr(self.window(), "models_folder", None)
        return Path(folder) if folder else models_dir()

    @property
    def strength(self) -> float:
        return 1.0 - self.fidelity.value() / 100

    def refresh_models(self) -> None:
        """List the installed face models (their file headers are read: cheap)."""
        from sdstudio.engine.specialists.faces import face_models

        current = self.model.currentData()
        self.model.clear()
        for path in face_models(self._models()):
            self.model.addItem(path.stem, str(path))
        if self.model.count() == 0:
            self.model.addItem("(none installed)", None)
            self.model.setToolTip(NO_MODEL)
            self.found.setText(NO_MODEL)
        else:
            if self.found.text() == NO_MODEL:
                self.found.setText(FIND_NOTE)
            self.model.setToolTip("The face restoration model (from the models folder)")
            index = self.model.findData(current)
            self.model.setCurrentIndex(max(0, index))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.refresh_models()  # a model downloaded meanwhile shows up
        super().showEvent(event)

    # -- actions ------------------------------------------------------------------------------

    def find(self) -> None:
        document = self._restore._start("Finding faces …")
        if document is None:
            return
        image, version, models = document.image.copy(), document.version, self._models()

        def work(_progress, _cancel):
            from sdstudio.engine.specialists.face_detect import detect_faces, face_detector

            return detect_faces(image, models=models), face_detector(models)

        def done(outcome) -> None:
            faces, detector = outcome
            if self._restore._still(document, version):
                self._faces = (version, faces)
                self._say_found(faces, detector)

        self._restore._run(work, done)

    def restore(self) -> None:
        self.refresh_models()
        model = self.model.currentData()
        if model is None:
            self._restore.status.emit(NO_MODEL)
            self.found.setText(NO_MODEL)
            return
        document = self._restore._start("Restoring faces …")
        if document is None:
            return
        image, version, models = document.image.copy(), document.version, self._models()
        known = self._faces[1] if self._faces and self._faces[0] == version else None
        strength = self.strength

        def work(progress, cancel):
            from sdstudio.engine.specialists.face_detect import face_detector
            from sdstudio.engine.specialists.faces import restore_faces

            result, faces = restore_faces(
                image,
                Path(model),
                strength,
                faces=known,
                cancel=cancel,
                progress=progress,
                models=models,
            )
            return result, faces, face_detector(models)

        def done(outcome: tuple[np.ndarray, list, str | None]) -> None:
            result, faces, detector = outcome
            if not self._restore._still(document, version):
                return
            self._say_found(faces, detector)
            if not faces:
                self._restore.status.emit("No faces found: nothing was changed.")
                return
            document.apply_patch(document.bounds, result, label="Restore faces")
            self._faces = None
            count = _count(faces)
            self._restore.status.emit(f"Restored {count} (Ctrl+Z undoes it).")

        self._restore._run(work, done)

    def _say_found(self, faces: list, detector: str | None) -> None:
        from sdstudio.engine.specialists.face_detect import YUNET

        text = f"Found {_count(faces)} ({detector})."
        if detector != YUNET:
            text += (
                " YuNet finds more, with their eyes and mouths: download it (230 KB) in "
                "Models > Model library."
            )
        self.found.setText(text)
        self._restore.status.emit(text)


def _count(faces: list) -> str:
    return f"{len(faces)} face" + ("" if len(faces) == 1 else "s")
