"""The model library's specialist models (DESIGN.md section 9): the files in the models folder's
``specialists`` folder (LaMa and what else spandrel loads), the upscalers in its ``upscalers``
folder and the Segment Anything models, each
with its architecture, purpose, licence, size and what stops it from being used; a pickle-format
file is converted to ``.safetensors`` once, after the person agrees, off the GUI thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid

from sdstudio.engine.models.library import human_size
from sdstudio.engine.models.specialist_presets import (
    SAM_PRESETS,
    SELECTION,
    UPSCALING,
    preset_for_file,
)
from sdstudio.qt.tasks import run_in_background

CONSENT = (
    "This file is in PyTorch's pickle format. SD Studio reads it as plain tensors only (never "
    "runs code in it) and saves a .safetensors copy beside it, which it uses from then on."
)
PICKLES = {".pth", ".pt", ".ckpt", ".bin"}
HEADERS = ["Specialist model", "Architecture", "Purpose", "Licence", "Size", "Note"]
PATH_ROLE = Qt.ItemDataRole.UserRole
CONVERT_ROLE = Qt.ItemDataRole.UserRole + 1


@dataclass(frozen=True)
class Row:
    """One line of the list, whatever it was found as."""

    name: str
    path: Path
    architecture: str | None
    purpose: str | None
    licence: str
    size: str
    note: str
    convert: bool = False

    @property
    def cells(self) -> list[str]:
        architecture, purpose = self.architecture or "?", self.purpose or "?"
        return [self.name, architecture, purpose, self.licence, self.size, self.note]


def scan_rows(models: Path) -> list[Row]:
    """What the list shows (runs off the GUI thread): the specialists folder's files as 13A's
    ``scan_specialists`` describes them, then the Segment Anything models installed."""
    from sdstudio.engine.models.sam import scan_sam
    from sdstudio.engine.models.specialist_presets import YUNET_PRESET
    from sdstudio.engine.specialists.face_detect import find_yunet
    from sdstudio.engine.specialists.loading import scan_specialists, specialists_dir

    specialists_dir(models).mkdir(parents=True, exist_ok=True)
    rows = []
    for info in [*scan_specialists(models), *_scan_upscalers(models)]:
        preset = preset_for_file(info.path.name)
        licence = info.licence or (preset.licence if preset else "unknown: see where it came from")
        size = human_size(info.path.stat().st_size) if info.path.is_file() else ""
        note = info.problem or ""
        if info.needs_conversion and not note:
            note = "Pickle format: convert it to .safetensors once to use it."
        rows.append(
            Row(
                info.name,
                info.path,
                info.architecture,
                info.purpose,
                licence,
                size,
                note,
                info.needs_conversion,
            )
        )
    yunet = find_yunet(models)
    if yunet is not None:  # ONNX: data for OpenCV's own runtime, not a spandrel model
        rows.append(
            Row(
                yunet.name,
                yunet,
                "YuNet",
                YUNET_PRESET.purpose,
                YUNET_PRESET.licence,
                human_size(yunet.stat().st_size),
                "Face detector for Restore faces (OpenCV).",
            )
        )
    presets = {p.repo_id: p for p in SAM_PRESETS}
    for reference, folder in scan_sam(models):
        preset = presets.get(reference)
        licence = preset.licence if preset else "see its model card"
        weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        where = "folder" if reference == str(folder) else "hub cache"
        rows.append(
            Row(
                reference,
                folder,
                "Segment Anything",
                SELECTION,
                licence,
                human_size(weights),
                f"Transformers model ({where}).",
            )
        )
    return rows


def _scan_upscalers(models: Path) -> list:
    """The files in the models folder's 'upscalers' folder, described like the specialists
    (any model there is taken for an upscaler; spandrel says what it is when it is used)."""
    from dataclasses import replace

    from sdstudio.engine.specialists.loading import SUFFIXES, describe
    from sdstudio.engine.specialists.upscale import upscalers_dir

    folder = upscalers_dir(models)
    folder.mkdir(parents=True, exist_ok=True)
    infos, seen = [], set()
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
        info = describe(path)
        if info.path in seen or not info.path.is_file():
            continue
        seen.add(info.path)
        infos.append(replace(info, purpose=info.purpose or UPSCALING))
    return sorted(infos, key=lambda i: i.name.lower())


class SpecialistsSection(QWidget):
    """The list and its Convert button. ``say`` shows one line (the dialog's status);
    ``changed`` is emitted after a conversion (the dialog rescans what depends on it)."""

    changed = Signal()

    def __init__(self, say: Callable[[str], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.say = say
        self.models: Path | None = None
        self.converting: Path | None = None
        self.ask: Callable[[str], bool] = self._ask
        """Asks for the conversion (tests put an answer here)."""
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(HEADERS)
        self.tree.setRootIsDecorated(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.currentItemChanged.connect(self._current)
        self.convert_button = QPushButton("Convert to .safetensors…")
        self.convert_button.setEnabled(False)
        self.convert_button.clicked.connect(self.convert_current)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.convert_button)
        layout.addLayout(row)

    def rescan(self, models: Path) -> None:
        self.models = models
        run_in_background(lambda: scan_rows(models), self._show, self._scan_failed)

    def _scan_failed(self, message: str) -> None:
        self.say(f"Listing the specialist models failed: {_one_line(message)}")

    def _show(self, rows: list[Row]) -> None:
        if not isValid(self.tree):  # the dialog closed while the folders were being listed
            return
        self.tree.clear()
        warn = QBrush(QColor(194, 106, 0))
        for row in rows:
            item = QTreeWidgetItem(row.cells)
            item.setData(0, PATH_ROLE, str(row.path))
            item.setData(0, CONVERT_ROLE, row.convert)
            item.setToolTip(0, str(row.path))
            item.setToolTip(3, row.cells[3])
            item.setToolTip(5, row.cells[5])
            if row.cells[5] and not row.cells[5].startswith("Transformers"):
                item.setForeground(5, warn)
            self.tree.addTopLevelItem(item)
        self._current(self.tree.currentItem())

    def _current(self, item: QTreeWidgetItem | None, _previous=None) -> None:
        wanted = item is not None and bool(item.data(0, CONVERT_ROLE))
        self.convert_button.setEnabled(wanted and self.converting is None)

    # -- conversion -------------------------------------------------------------------------

    def convert_current(self) -> None:
        item = self.tree.currentItem()
        if item is None or not item.data(0, CONVERT_ROLE):
            self.say("Choose a file that needs converting first.")
            return
        self.convert(Path(item.data(0, PATH_ROLE)))

    def after_download(self, landed: Path) -> None:
        """A downloaded file in pickle format is offered for conversion right away."""
        if landed.is_file() and landed.suffix.lower() in PICKLES:
            self.convert(landed)

    def convert(self, path: Path) -> None:
        """Ask once, then convert ``path`` off the GUI thread and list the folder again."""
        if self.converting is not None:
            self.say(f"Still converting {self.converting.name}.")
            return
        if not self.ask(f"Convert {path.name} to .safetensors?\n\n{CONSENT}"):
            self.say(f"{path.name} was left as it is (it cannot be used until it is converted).")
            return
        from sdstudio.engine.specialists.loading import convert_to_safetensors

        self.converting = path
        self.convert_button.setEnabled(False)
        self.say(f"Converting {path.name} to .safetensors …")
        run_in_background(lambda: convert_to_safetensors(path), self._converted, self._failed)

    def _converted(self, saved: Path) -> None:
        source, self.converting = self.converting, None
        name = source.name if source else "The file"
        self.say(f"{name} converted: {Path(saved).name} is used from now on.")
        if self.models is not None:
            self.rescan(self.models)
        self.changed.emit()

    def _failed(self, message: str) -> None:
        source, self.converting = self.converting, None
        name = source.name if source else "the file"
        self.say(f"Converting {name} failed: {_one_line(message)}")
        self._current(self.tree.currentItem())

    def _ask(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Convert to .safetensors", text)
        return answer == QMessageBox.StandardButton.Yes


def _one_line(message: str) -> str:
    return " ".join(message.split())
