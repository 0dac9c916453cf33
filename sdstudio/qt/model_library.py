"""The model library dialog: models found on disk with family and kind (or why they cannot be
used), LoRAs to insert into the prompt, ControlNets with their family (a note when it is not the
current model's), and presets to download with progress and cancel. Scanning and downloads run
off the GUI thread."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QUrl, Signal
from PySide6.QtGui import QBrush, QColor, QDesktopServices
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.paths import loras_dir, models_dir
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models.controlnets import (
    CONTROLNET_PRESETS,
    ControlNetEntry,
    controlnets_dir,
    scan_controlnets,
)
from sdstudio.engine.models.library import (
    PRESETS,
    ModelEntry,
    guess_family,
    human_size,
    scan_adapters,
    scan_library,
)
from sdstudio.engine.models.specialist_presets import SPECIALIST_PRESETS
from sdstudio.engine.models.tiny_vae import TINY_VAE_PRESETS
from sdstudio.qt.library_download import Download
from sdstudio.qt.specialists_library import SpecialistsSection
from sdstudio.qt.tasks import run_in_background

FOLDER_KEY = "models/folder"
DOWNLOADS = PRESETS + CONTROLNET_PRESETS + TINY_VAE_PRESETS + SPECIALIST_PRESETS
"""What the dialog offers to download: models, few-step LoRAs, ControlNets, tiny VAEs,
specialist models (LaMa, Segment Anything)."""
FAMILY_WORDS = {ModelFamily.SD1: "SD 1.x", ModelFamily.SDXL: "SDXL"}


def models_folder(settings: QSettings) -> Path:
    value = settings.value(FOLDER_KEY)
    return Path(str(value)) if value else models_dir()


class ModelLibraryDialog(QDialog):
    model_chosen = Signal(str)
    lora_chosen = Signal(str)
    controlnet_chosen = Signal(str)

    def __init__(
        self, settings: QSettings, parent: QWidget | None = None, *, model: str = ""
    ) -> None:
        """``model``: the current model's reference; ControlNets made for another family get
        a note (they are refused only when a run would use them)."""
        super().__init__(parent)
        self.setWindowTitle("Model library")
        self.resize(860, 720)
        self.settings = settings
        self.model = model
        self.model_family: ModelFamily | None = None
        self.controlnet_entries: list[ControlNetEntry] = []
        self.downloads: dict[str, Download] = {}
        self.folder_label = QLabel()
        change = QPushButton("Change folder…")
        change.clicked.connect(self._change_folder)
        show = QPushButton("Show folder")
        show.clicked.connect(self._show_folder)
        rescan = QPushButton("Rescan")
        rescan.clicked.connect(self.rescan)
        self.models = self._tree(["Model", "Family", "Kind", "Size", "Where", "Note"])
        self.models.itemDoubleClicked.connect(lambda item, _col: self._use(item))
        self.models.currentItemChanged.connect(self._explain)
        use = QPushButton("Use this model")
        use.clicked.connect(lambda: self._use(self.models.currentItem()))
        self.loras = self._tree(["LoRA", "Insert into the prompt as"])
        insert = QPushButton("Insert into prompt")
        insert.clicked.connect(self._insert_lora)
        self.controlnets = self._tree(["ControlNet", "Family", "Size", "Where", "Note"])
        self.controlnets.itemDoubleClicked.connect(lambda item, _col: self._use_controlnet(item))
        use_controlnet = QPushButton("Use this ControlNet")
        use_controlnet.clicked.connect(lambda: self._use_controlnet(self.controlnets.currentItem()))
        self.specialists = SpecialistsSection(lambda text: self.status.setText(text))
        self.presets = self._tree(["Download", "Family", "Kind", "Licence", "About", "Size"])
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self._download)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.clicked.connect(self._cancel_downloads)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        for widget in (self.folder_label, change, show, rescan):
            top.addWidget(widget)
        top.insertStretch(1)
        layout.addLayout(top)
        layout.addWidget(self.models, 3)
        layout.addLayout(_row(use))
        layout.addWidget(self.loras, 1)
        layout.addLayout(_row(insert))
        layout.addWidget(self.controlnets, 1)
        layout.addLayout(_row(use_controlnet))
        layout.addWidget(self.specialists, 1)
        layout.addWidget(self.presets, 2)
        layout.addLayout(_row(self.progress, self.download_button, self.cancel_button))
        layout.addWidget(self.status)
        self._fill_presets()
        self.rescan()

    @staticmethod
    def _tree(headers: list[str]) -> QTreeWidget:
        tree = QTreeWidget()
        tree.setHeaderLabels(headers)
        tree.setRootIsDecorated(False)
        tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        return tree

    # -- scanning ---------------------------------------------------------------------------

    def folder(self) -> Path:
        return models_folder(self.settings)

    def rescan(self) -> None:
        folder = self.folder()
        self.folder_label.setText(f"Models folder: {folder}")
        self.status.setText("Scanning …")

        model = self.model

        def scan():
            folder.mkdir(parents=True, exist_ok=True)
            loras_dir(folder).mkdir(exist_ok=True)
            controlnets_dir(folder).mkdir(exist_ok=True)
            family = guess_family(model)
            return (
                scan_library(folder),
                scan_adapters(loras_dir(folder)),
                scan_controlnets(folder),
                family,
            )

        run_in_background(scan, self._show_scan, self.status.setText)
        self.specialists.rescan(folder)

    def _show_scan(
        self,
        result: tuple[list[ModelEntry], list[Path], list[ControlNetEntry], ModelFamily | None],
    ) -> None:
        entries, loras, self.controlnet_entries, self.model_family = result
        self.models.clear()
        grey = QBrush(QColor(140, 140, 140))
        for entry in entries:
            family = entry.family.value.upper() if entry.family else "?"
            size = human_size(entry.size_bytes) if entry.size_bytes else ""
            item = QTreeWidgetItem([entry.name, family, entry.kind, size, entry.source, ""])
            item.setData(0, Qt.ItemDataRole.UserRole, entry.reference)
            if not entry.usable:
                item.setToolTip(0, entry.problem)
                for column in range(6):
                    item.setForeground(column, grey)
                item.setText(2, "cannot use")
                item.setToolTip(2, entry.problem)
                item.setText(5, entry.problem)
                item.setToolTip(5, entry.problem)
            else:
                item.setToolTip(0, entry.reference)
            self.models.addTopLevelItem(item)
        self.loras.clear()
        for path in loras:
            self.loras.addTopLevelItem(QTreeWidgetItem([path.stem, f"<lora:{path.stem}:0.8>"]))
        self._show_controlnets()
        usable = sum(e.usable for e in entries)
        self.status.setText(
            f"{usable} usable model(s), {len(entries) - usable} that cannot be used (hover for "
            f"why), {len(loras)} LoRA(s), {len(self.controlnet_entries)} ControlNet(s). Drop "
            ".safetensors checkpoints into the models folder, LoRAs into its 'loras' folder, "
            "ControlNets into its 'controlnet' folder and removal models (LaMa) into its "
            "'specialists' folder, then Rescan."
        )

    def _show_controlnets(self) -> None:
        """The ControlNets, with why one cannot be used, or a note when it is made for another
        family than the current model (a run would refuse it; here it is only a note)."""
        self.controlnets.clear()
        grey = QBrush(QColor(140, 140, 140))
        warn = QBrush(QColor(194, 106, 0))
        for entry in self.controlnet_entries:
            family = entry.family.value.upper() if entry.family else "?"
            size = human_size(entry.size_bytes) if entry.size_bytes else ""
            note = entry.problem or ""
            other = self.model_family is not None and entry.family not in (None, self.model_family)
            if entry.usable and other:
                note = (
                    f"For {FAMILY_WORDS[entry.family]} models; the current model is "
                    f"{FAMILY_WORDS[self.model_family]}, so choose another model to use it."
                )
            item = QTreeWidgetItem([entry.name, family, size, entry.source, note])
            item.setData(0, Qt.ItemDataRole.UserRole, entry.reference)
            item.setData(0, Qt.ItemDataRole.UserRole + 1, entry.problem)
            item.setToolTip(0, entry.problem or entry.reference)
            item.setToolTip(4, note)
            if not entry.usable:
                for column in range(5):
                    item.setForeground(column, grey)
            elif other:
                item.setForeground(1, warn)
                item.setForeground(4, warn)
            self.controlnets.addTopLevelItem(item)

    def _use_controlnet(self, item: QTreeWidgetItem | None) -> None:
        if item is None:
            return
        problem = item.data(0, Qt.ItemDataRole.UserRole + 1)
        if problem:
            self.status.setText(problem)
            return
        self.controlnet_chosen.emit(item.data(0, Qt.ItemDataRole.UserRole))
        self.status.setText(f"Using the ControlNet {item.text(0)}. {item.text(4)}".strip())

    def _explain(self, item: QTreeWidgetItem | None, _previous=None) -> None:
        if item is not None and item.text(2) == "cannot use":
            self.status.setText(item.toolTip(2))

    def _use(self, item: QTreeWidgetItem | None) -> None:
        if item is None:
            return
        if item.text(2) == "cannot use":
            self.status.setText(item.toolTip(2))
            return
        reference = item.data(0, Qt.ItemDataRole.UserRole)
        self.model_chosen.emit(reference)
        self.status.setText(f"Using {item.text(0)}.")
        family = item.text(1).lower()
        self.model = reference
        self.model_family = next((f for f in ModelFamily if f.value == family), None)
        self._show_controlnets()  # the family notes follow the model chosen

    def _insert_lora(self) -> None:
        item = self.loras.currentItem()
        if item is not None:
            self.lora_chosen.emit(item.text(1))

    def _change_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Models folder", str(self.folder()))
        if path:
            self.settings.setValue(FOLDER_KEY, path)
            self.rescan()

    def _show_folder(self) -> None:
        self.folder().mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.folder())))

    # -- downloads --------------------------------------------------------------------------

    def _fill_presets(self) -> None:
        warn = QBrush(QColor(194, 106, 0))
        for index, preset in enumerate(DOWNLOADS):
            size = preset.approx_gb
            item = QTreeWidgetItem(
                [
                    preset.title,
                    preset.family.value.upper() if preset.family else "—",
                    "tiny VAE" if preset in TINY_VAE_PRESETS else preset.kind,
                    preset.licence,
                    preset.note,
                    f"~{size:.1f} GB" if size >= 1 else f"~{size * 1024:.0f} MB",
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, index)
            where = f"{preset.repo_id}/{preset.filename}" if preset.filename else preset.repo_id
            item.setToolTip(0, where)
            item.setToolTip(3, getattr(preset, "source", None) or preset.licence)
            item.setToolTip(4, preset.note)
            if not preset.commercial:
                item.setForeground(3, warn)
            self.presets.addTopLevelItem(item)

    def _download(self) -> None:
        item = self.presets.currentItem()
        if item is None:
            self.status.setText("Choose a model to download first.")
            return
        preset = DOWNLOADS[item.data(0, Qt.ItemDataRole.UserRole)]
        repo_id = preset.key
        if repo_id in self.downloads:
            return
        download = Download(preset, loras_dir(self.folder()), models=self.folder())
        download.signals.progress.connect(self._on_progress)
        download.signals.done.connect(lambda folder, r=repo_id: self._on_done(r, folder))
        download.signals.failed.connect(lambda message, r=repo_id: self._on_failed(r, message))
        self.downloads[repo_id] = download
        self.cancel_button.setEnabled(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        licence = "" if preset.commercial else f" Licence: {preset.licence}."
        self.status.setText(f"Downloading {preset.title} ({repo_id}) …{licence}")
        download.start()

    def _on_progress(self, done: int, total: int, speed: float) -> None:
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
            self.progress.setFormat(
                f"{human_size(done)} of {human_size(total)} — {human_size(int(speed))}/s"
            )

    def _finish(self, repo_id: str, message: str) -> None:
        self.downloads.pop(repo_id, None)
        self.cancel_button.setEnabled(bool(self.downloads))
        self.progress.setVisible(bool(self.downloads))
        self.status.setText(message)

    def _on_done(self, repo_id: str, landed: str) -> None:
        self._finish(repo_id, f"Downloaded {repo_id}.")
        self.rescan()
        self.specialists.after_download(Path(landed))  # a pickle: offers the conversion

    def _on_failed(self, repo_id: str, message: str) -> None:
        self._finish(repo_id, message)

    def _cancel_downloads(self) -> None:
        for download in self.downloads.values():
            download.cancel.set()

    def done(self, result: int) -> None:  # noqa: D401 - Qt API: closing the dialog
        self._cancel_downloads()
        super().done(result)


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addStretch(1)
    for widget in widgets:
        row.addWidget(widget)
    return row
