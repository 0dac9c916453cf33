"""File handling of the editor window: open (in the background), save projects, paste, copy,
export, recent files, drag and drop, and the prompt before changes are thrown away.

A project (``.ora``, OpenRaster) holds the picture, the mask, the sketch and the generation
parameters; saving it marks the document saved. Exporting writes a flat picture for other programs
and does not: the work is only safe once it is in a project."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QFileDialog, QMessageBox

from sdstudio.core.document import Document
from sdstudio.core.imageio import FORMATS, Picture, load_picture, save_image
from sdstudio.core.project import Result, load_project
from sdstudio.core.project_save import save_project
from sdstudio.core.provenance import Provenance, read_provenance
from sdstudio.core.sketch import flatten_sketch
from sdstudio.qt.session import qimage_of
from sdstudio.qt.tasks import run_in_background

log = logging.getLogger(__name__)

OPEN_FILTER = (
    "Pictures and projects (*.ora *.png *.jpg *.jpeg *.webp *.tif *.tiff *.bmp *.gif);;"
    "SD Studio projects (*.ora);;All files (*)"
)
PROJECT = ".ora"
PROJECT_FILTER = "SD Studio project, OpenRaster (*.ora)"
EXPORT_FILTER = "PNG (*.png);;JPEG (*.jpg *.jpeg);;WebP (*.webp);;TIFF (*.tif *.tiff)"
MAX_RECENT = 10


def array_from_qimage(image: QImage) -> np.ndarray:
    """A pasted or dropped QImage -> RGB (or RGBA when it has transparency) uint8 array."""
    rgba = image.convertToFormat(QImage.Format.Format_RGBA8888)
    width, height = rgba.width(), rgba.height()
    buffer = np.frombuffer(rgba.constBits(), np.uint8, count=rgba.sizeInBytes())
    array = buffer.reshape(height, rgba.bytesPerLine())[:, : width * 4].reshape(height, width, 4)
    return array.copy() if array[:, :, 3].min() < 255 else array[:, :, :3].copy()


def _profile_from(text: object) -> bytes | None:
    """A colour profile kept in a project's settings (base64), or None."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True) or None
    except ValueError:
        return None


class FileHandling:
    """Mixed into MainWindow (which provides session, settings, set_document, statusBar)."""

    provenance: Provenance | None = None
    """How the open picture was made, when its file says so (shown on opening)."""

    def new_canvas(self) -> None:
        if not self.confirm_discard():
            return
        s = self.panel.settings()
        self.set_document(Document.blank(s["width"], s["height"]), blank=True)

    def open_dialog(self) -> None:
        start = self.settings.value("files/last_dir", str(Path.home()))
        path, _ = QFileDialog.getOpenFileName(self, "Open picture", str(start), OPEN_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> None:
        """Read the picture or project on a background thread; the window stays responsive."""
        if not self.confirm_discard():
            return
        path = Path(path)
        self.statusBar().showMessage(f"Opening {path.name} …")
        if path.suffix.lower() == PROJECT:
            run_in_background(
                lambda: load_project(path),
                lambda project: self._opened_project(path, project),
                self.show_error,
            )
            return

        def read() -> tuple[Picture, Provenance | None]:
            picture = load_picture(path)  # one read: pixels and text metadata
            return picture, read_provenance(picture.texts)

        def opened(result: tuple[Picture, Provenance | None]) -> None:
            picture, found = result
            image = picture.array
            document = Document(image, path=path)
            document.icc_profile = picture.icc_profile
            self.set_document(document)
            self.provenance = found
            self._remember_recent(path)
            size = f"{image.shape[1]}x{image.shape[0]}"
            if picture.notes:  # said plainly: the picture is not quite what the file held
                size += "; " + "; ".join(picture.notes)
            if found is not None:
                message = (
                    f"Opened {path.name} ({size}), {found.summary()}. Generate > Use the "
                    "picture's settings (Ctrl+Shift+U) puts them in the panel."
                )
            else:
                message = (
                    f"Opened {path.name} ({size}). Erase what should change (E), then "
                    "Generate (Ctrl+Enter) or Remove (Delete)."
                )
            self.statusBar().showMessage(message, 15000)

        run_in_background(read, opened, self.show_error)

    def project_snapshot(self, document: Document) -> tuple:
        """(image, mask, extra, results, sketch) of ``document`` for ``save_project``: copies
        made on this thread (milliseconds), so the write can run on a worker. Autosave takes the
        same."""
        image, mask, sketch = document.image.copy(), document.mask.copy(), document.sketch_layer()
        results = [Result(*kept) for kept in self.session.kept_results()]  # never written to
        extra: dict[str, object] = {"parameters": self.session.parameters}
        if document.icc_profile:
            extra["icc_profile"] = base64.b64encode(document.icc_profile).decode("ascii")
        return image, mask, extra, results, sketch

    def show_project(self, project, path: Path | None) -> tuple[Document, int]:
        """Make a loaded project (or recovered snapshot) the open document: picture, mask,
        sketch, colour profile, parameters and waiting results. Returns it and how many results
        wait."""
        document = Document(project.image, path=path)
        document.mask[...] = project.mask
        document.load_sketch(project.sketch)
        document.icc_profile = _profile_from(project.extra.get("icc_profile"))
        self.set_document(document)
        parameters = project.extra.get("parameters")  # a file's data: text, or nothing
        self.session.parameters = parameters if isinstance(parameters, str) else None
        if self.session.parameters is not None:
            self.provenance = read_provenance({"parameters": self.session.parameters})
        return document, self.session.restore_results(project.results)

    def _opened_project(self, path: Path, project) -> None:
        document, waiting = self.show_project(project, path)
        document.mark_saved()
        self._update_title()
        self._remember_recent(path)
        notes = " ".join(project.notes)
        if waiting:
            notes += f" {waiting} waiting result(s) are in the strip below (Enter accepts)."
        self.statusBar().showMessage(f"Opened the project {path.name}. {notes}", 10000)

    def use_provenance(self) -> None:
        """Put the settings the picture was made with (as read on opening) in the panel."""
        found = getattr(self, "provenance", None)
        if found is None:
            self.statusBar().showMessage("This picture carries no generation settings.", 5000)
            return
        skipped = self.panel.apply(found.settings)
        message = f"The panel now holds the settings of the picture, {found.summary()}."
        if skipped:
            message += f" Kept as they were (not usable here): {', '.join(skipped)}."
        self.statusBar().showMessage(message, 10000)

    # -- saving ---------------------------------------------------------------------------------

    def save(self, wait: bool = False) -> bool:
        """Save the project where it was last saved, or ask where (a picture opened from a PNG
        becomes ``name.ora`` beside it). ``wait`` saves on this thread (when closing)."""
        document = self._document()
        if document is None:
            return False
        if document.path is None or document.path.suffix.lower() != PROJECT:
            return self.save_as_dialog(wait)
        return self.save_to(document.path, wait)

    def save_as_dialog(self, wait: bool = False) -> bool:
        document = self._document()
        if document is None:
            return False
        if document.path is not None:
            start = document.path.with_suffix(PROJECT)
        else:
            start = Path(self.settings.value("files/last_dir", str(Path.home()))) / "untitled.ora"
        path, _ = QFileDialog.getSaveFileName(self, "Save project", str(start), PROJECT_FILTER)
        if not path:
            return False
        return self.save_to(path, wait)

    def save_to(self, path: str | Path, wait: bool = False) -> bool:
        """Write the project safely (a temporary file, verified, then swapped in; the old one kept
        as ``name.ora~``), in the background unless ``wait``. True when saved or under way."""
        path = Path(path)
        if path.suffix.lower() != PROJECT:
            path = path.with_suffix(PROJECT)
        document = self._document()
        image, mask, extra, results, sketch = self.project_snapshot(document)
        version = document.version
        self.statusBar().showMessage(f"Saving {path.name} …")

        def saved(_result=None) -> None:
            self.statusBar().showMessage(f"Saved {path}.", 5000)
            if document is self._document():
                document.path = path
                document.mark_saved_as(version)  # the file holds the copy, not later edits
                if version is not None and document.version == version:
                    self.autosave_saved()  # what is on disk is what is on screen
                self._update_title()
            self._remember_recent(path)

        if not wait:
            run_in_background(
                lambda: save_project(path, image, mask, extra, results, sketch),
                saved,
                self.show_error,
            )
            return True
        try:
            save_project(path, image, mask, extra, results, sketch)
        except Exception as error:  # noqa: BLE001 - shown, and the close is called off
            self.show_error(str(error))
            return False
        saved()
        return True

    def paste(self) -> None:
        image = QGuiApplication.clipboard().image()
        if image.isNull():
            self.statusBar().showMessage("The clipboard holds no picture.", 5000)
            return
        if not self.confirm_discard():
            return
        self.set_document(Document(array_from_qimage(image)))
        self.statusBar().showMessage("Pasted a picture from the clipboard.", 5000)

    def copy(self) -> None:
        candidate = self.session.shown_candidate()
        if candidate is not None:
            image = candidate.image
        elif self._document() is not None:
            image = qimage_of(self._document().image)
        else:
            return
        QGuiApplication.clipboard().setImage(image)
        self.statusBar().showMessage("Copied to the clipboard.", 3000)

    def export_dialog(self) -> bool:
        document = self._document()
        if document is None:
            return False
        start = document.path.with_suffix(".png") if document.path else Path.home() / "untitled.png"
        path, _ = QFileDialog.getSaveFileName(self, "Export picture", str(start), EXPORT_FILTER)
        if not path:
            return False
        self.export_to(path)
        return True

    def export_to(self, path: str | Path) -> None:
        """Write the picture (with its generation parameters, and the sketch when it is shown)
        on a background thread. The document stays unsaved: an export is a copy for other
        programs, not the project."""
        path = Path(path)
        if path.suffix.lower() not in FORMATS:
            path = path.with_suffix(".png")
        document = self._document()
        shown = document.sketch is not None and document.sketch_visible
        snapshot = flatten_sketch(document) if shown else document.image.copy()
        parameters = self.session.parameters
        profile = document.icc_profile
        self.statusBar().showMessage(f"Exporting {path.name} …")

        def saved(_result) -> None:
            self.statusBar().showMessage(f"Exported {path}.", 5000)
            self._remember_recent(path)

        run_in_background(
            lambda: save_image(path, snapshot, parameters, profile), saved, self.show_error
        )

    def show_error(self, message: str) -> None:
        """Status bar and a window-modal message box that does not block the event loop."""
        log.warning("%s", message)
        self.statusBar().showMessage(message)
        box = QMessageBox(
            QMessageBox.Icon.Warning, "SD Studio", message, QMessageBox.StandardButton.Ok, self
        )
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.error_box = box

    def _remember_recent(self, path: Path) -> None:
        recent = [str(path)] + [p for p in self._recent() if p != str(path)]
        self.settings.setValue("files/recent", recent[:MAX_RECENT])
        self.settings.setValue("files/last_dir", str(path.parent))
        self._fill_recent_menu()

    def _recent(self) -> list[str]:
        value = self.settings.value("files/recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in value or []]

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self._recent():
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_path(p))
        self.recent_menu.setEnabled(bool(self._recent()))

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        data = event.mimeData()
        files = [url.toLocalFile() for url in data.urls() if url.isLocalFile()]
        if files:
            self.open_path(files[0])
        elif data.hasImage() and self.confirm_discard():
            self.set_document(Document(array_from_qimage(QImage(data.imageData()))))
        event.acceptProposedAction()

    def _ask_discard(self) -> bool:
        document = self._document()
        if document is None or not document.modified:
            return True
        answer = QMessageBox.question(
            self,
            "SD Studio",
            "The picture has changes that are not saved. Save the project first?",
            QMessageBox.StandardButton.Save
            | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel,
        )
        if answer == QMessageBox.StandardButton.Save:
            return self.save(wait=True)
        return answer == QMessageBox.StandardButton.Discard
