"""The LoRA panel: every LoRA in the models folder with a switch and a weight.

It is another view of the prompt's ``<lora:name:weight>`` tags, kept in step both ways:
switching a LoRA on or changing its weight rewrites its tag in the prompt; typing or deleting a
tag in the prompt updates the panel. The prompt stays the one truth the engine and the saved
parameters see.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.errors import RequestError
from sdstudio.engine.diffusion.prompts import parse_prompt
from sdstudio.engine.models.library import scan_adapters
from sdstudio.qt.tasks import run_in_background

_TAG = re.compile(r"\s*<\s*lora\s*:\s*([^:<>]+?)\s*(?::[^<>]*)?>", re.IGNORECASE)
DEFAULT_WEIGHT = 0.8


def set_lora_tag(prompt: str, name: str, weight: float | None) -> str:
    """``prompt`` with ``name``'s tags removed and, unless ``weight`` is None, one tag added."""
    kept = _TAG.sub(
        lambda m: "" if m.group(1).casefold() == name.casefold() else m.group(0), prompt
    )
    kept = kept.rstrip(" ,")
    if weight is None:
        return kept
    return f"{kept} <lora:{name}:{weight:g}>".strip()


class LoraPanel(QWidget):
    """Rows of [switch] name [weight] for the LoRA files in a folder."""

    prompt_edited = Signal(str)  # the new prompt text

    def __init__(self, folder: Callable[[], Path], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._folder = folder
        self._rows: dict[str, tuple[QCheckBox, QDoubleSpinBox]] = {}
        self._prompt = ""
        self._syncing = False
        self.grid = QGridLayout()
        self.empty = QLabel()
        self.empty.setWordWrap(True)
        rescan = QPushButton("Rescan")
        rescan.clicked.connect(self.rescan)
        layout = QVBoxLayout(self)
        layout.addWidget(self.empty)
        layout.addLayout(self.grid)
        layout.addWidget(rescan, alignment=Qt.AlignmentFlag.AlignRight)
        layout.addStretch(1)
        self.rescan()

    def rescan(self) -> None:
        run_in_background(lambda: scan_adapters(self._folder()), self._show, self.empty.setText)

    def _show(self, files: list[Path]) -> None:
        while self.grid.count():
            widget = self.grid.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self._rows.clear()
        for row, path in enumerate(files):
            check = QCheckBox(path.stem)
            check.setToolTip(str(path))
            weight = QDoubleSpinBox()
            weight.setRange(-2.0, 2.0)
            weight.setSingleStep(0.05)
            weight.setValue(DEFAULT_WEIGHT)
            check.toggled.connect(lambda _on, name=path.stem: self._edit(name))
            weight.valueChanged.connect(lambda _v, name=path.stem: self._edit(name))
            self.grid.addWidget(check, row, 0)
            self.grid.addWidget(weight, row, 1)
            self._rows[path.stem] = (check, weight)
        self.empty.setText(
            ""
            if files
            else f"No LoRAs yet: put .safetensors LoRAs into {self._folder()} and Rescan."
        )
        self.follow_prompt(self._prompt)

    def follow_prompt(self, prompt: str) -> None:
        """Show the LoRAs the prompt's tags switch on, with their weights."""
        self._prompt = prompt
        try:
            wanted = {ref.name.casefold(): ref.weight for ref in parse_prompt(prompt).loras}
        except RequestError:
            return  # a tag being typed: leave the panel as it is
        self._syncing = True
        try:
            for name, (check, weight) in self._rows.items():
                on = name.casefold() in wanted
                check.setChecked(on)
                if on:
                    weight.setValue(wanted[name.casefold()])
        finally:
            self._syncing = False

    def _edit(self, name: str) -> None:
        if self._syncing:
            return
        check, weight = self._rows[name]
        self._prompt = set_lora_tag(
            self._prompt, name, weight.value() if check.isChecked() else None
        )
        self.prompt_edited.emit(self._prompt)
