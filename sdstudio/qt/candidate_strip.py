"""A strip of thumbnails of the results waiting to be accepted or discarded."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

THUMB = 96


class CandidateStrip(QWidget):
    selected = Signal(int)
    accept_requested = Signal()
    discard_requested = Signal()
    discard_all_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setObjectName("candidates")
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setFlow(QListView.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setFixedHeight(THUMB + 36)
        self.list.setMovement(QListView.Movement.Static)
        self.list.currentRowChanged.connect(self._row_changed)
        self.accept_button = QPushButton("Accept (Enter)")
        self.discard_button = QPushButton("Discard (Backspace)")
        self.discard_all_button = QPushButton("Discard all")
        self.accept_button.clicked.connect(self.accept_requested)
        self.discard_button.clicked.connect(self.discard_requested)
        self.discard_all_button.clicked.connect(self.discard_all_requested)
        buttons = QVBoxLayout()
        for button in (self.accept_button, self.discard_button, self.discard_all_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self._updating = False
        self.show_candidates([], -1)

    def show_candidates(self, candidates, current: int) -> None:
        """``candidates``: objects with ``image`` (QImage) and ``label``."""
        self._updating = True
        try:
            self.list.clear()
            for number, candidate in enumerate(candidates, start=1):
                pixmap = QPixmap.fromImage(candidate.image).scaled(
                    THUMB,
                    THUMB,
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
                item = QListWidgetItem(QIcon(pixmap), f"{number}: {candidate.label}")
                self.list.addItem(item)
            self.list.setCurrentRow(current)
        finally:
            self._updating = False
        has = bool(candidates)
        for button in (self.accept_button, self.discard_button, self.discard_all_button):
            button.setEnabled(has)

    def _row_changed(self, row: int) -> None:
        if not self._updating and row >= 0:
            self.selected.emit(row)
