"""The editor window: canvas in the middle, generation panel on the right, results below."""

from __future__ import annotations

import logging

from PySide6.QtCore import QByteArray, QEvent, QObject, QSettings, Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QColorDialog,
    QComboBox,
    QDockWidget,
    QFrame,
    QLabel,
    QMainWindow,
    QProgressBar,
    QScrollArea,
)

from sdstudio.core.brush import BrushSettings
from sdstudio.core.document import Document
from sdstudio.core.paths import loras_dir
from sdstudio.engine.shared import SharedEngine
from sdstudio.qt.autosave import Autosave
from sdstudio.qt.candidate_strip import CandidateStrip
from sdstudio.qt.canvas import Canvas, CanvasTool
from sdstudio.qt.device_menu import read_overrides
from sdstudio.qt.files import FileHandling
from sdstudio.qt.fill_menu import fill_engine_factory, read_fill_method
from sdstudio.qt.live_mode import LiveMode
from sdstudio.qt.lora_panel import LoraPanel
from sdstudio.qt.memory import RESULTS_KEY, RESULTS_MIB, UNDO_KEY, UNDO_MIB, memory_budget
from sdstudio.qt.model_actions import ModelActions
from sdstudio.qt.model_library import models_folder
from sdstudio.qt.panel import GenerationPanel
from sdstudio.qt.restore_panel import RestorePanel
from sdstudio.qt.select_tool import SelectTool, default_selector_factory
from sdstudio.qt.session import EditorSession
from sdstudio.qt.tasks import wait_for_background
from sdstudio.qt.upscale_action import follow_size
from sdstudio.qt.window_actions import WindowActions
from sdstudio.qt.worker import GenerationWorker

log = logging.getLogger(__name__)


def _diffusers_engine(models_folder, overrides):
    """Runs on the worker thread: torch and diffusers load here, never on the GUI thread."""
    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache
    from sdstudio.engine.diffusion.warmup import import_quietly

    import_quietly()
    return DiffusersEngine(PipelineCache(overrides=overrides), models_folder=models_folder)


class _WheelScrolls(QObject):
    """The mouse wheel over a field the person has not clicked into scrolls the panel, and does
    not change the field's value (scrolling the panel over a combo box would change the model)."""

    def __init__(self, area: QScrollArea) -> None:
        super().__init__(area)
        self._area = area

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.Wheel and not watched.hasFocus():
            QApplication.sendEvent(self._area.verticalScrollBar(), event)
            return True
        return False


def _scrolled(widget) -> QScrollArea:
    """``widget`` in a scroll area, so that a tall panel fits a laptop's screen."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    bar = area.verticalScrollBar().sizeHint().width()
    area.setMinimumWidth(widget.minimumSizeHint().width() + bar)  # no label is clipped
    guard = _WheelScrolls(area)
    for field in widget.findChildren(QComboBox) + widget.findChildren(QAbstractSpinBox):
        field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # a wheel does not focus it
        field.installEventFilter(guard)
    return area


class MainWindow(WindowActions, ModelActions, FileHandling, Autosave, QMainWindow):
    def __init__(
        self,
        settings: QSettings | None = None,
        engine_factory=None,
        fill_factory=None,
        select_factory=None,
    ) -> None:
        super().__init__()
        self.settings = settings or QSettings("sdstudio", "SD Studio")
        self.setWindowTitle("SD Studio")
        self.setAcceptDrops(True)
        self.canvas = Canvas()
        self.setCentralWidget(self.canvas)
        self.panel = GenerationPanel(models_folder=lambda: self.models_folder)
        self.strip = CandidateStrip()
        self.models_folder = models_folder(self.settings)  # read by the worker thread
        self.device_overrides = read_overrides(self.settings)  # likewise (a copy per load)
        self.checks_downloads = engine_factory is None  # the real engine: models may be missing
        self.download = None
        # Generate and live mode run on workers of their own that share one engine (one copy
        # of the model in memory): they take turns.
        self.engine = SharedEngine(
            engine_factory
            or (
                lambda: _diffusers_engine(
                    lambda: self.models_folder, lambda: dict(self.device_overrides)
                )
            )
        )
        self.generation = GenerationWorker(self.engine.handle_factory())
        self.fill_method = read_fill_method(self.settings)
        self.fill = GenerationWorker(
            fill_factory
            or fill_engine_factory(lambda: self.fill_method, lambda: self.models_folder)
        )
        self.session = EditorSession(self.canvas, self.panel, self.generation, self.fill)
        self.session.candidate_budget = memory_budget(self.settings, RESULTS_KEY, RESULTS_MIB)
        self.live = LiveMode(self, self.engine.handle_factory())
        self.confirm_discard = self._ask_discard  # tests replace this
        self.select_tool = SelectTool(
            self.canvas,
            lambda: self.session.document,
            select_factory or default_selector_factory(lambda: self.models_folder),
            self,
        )
        self.select_tool.status.connect(lambda text: self.statusBar().showMessage(text))
        self._build_docks()
        self._build_status_bar()
        self._build_actions()
        self._connect()
        self._restore_state()
        self.generation.start()
        self.fill.start()
        self._update_title()

    # -- layout ---------------------------------------------------------------------------------

    def _build_docks(self) -> None:
        panel_dock = QDockWidget("Generate", self)
        panel_dock.setObjectName("generate_dock")
        panel_dock.setWidget(_scrolled(self.panel))  # fits a laptop screen: it scrolls
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, panel_dock)
        self.loras = LoraPanel(lambda: loras_dir(self.models_folder))
        lora_dock = QDockWidget("LoRAs", self)
        lora_dock.setObjectName("loras_dock")
        lora_dock.setWidget(self.loras)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, lora_dock)
        self.tabifyDockWidget(panel_dock, lora_dock)
        self.restore_panel = RestorePanel(lambda: self.session.document)
        restore_dock = QDockWidget("Restore", self)
        restore_dock.setObjectName("restore_dock")
        restore_dock.setWidget(self.restore_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, restore_dock)
        self.tabifyDockWidget(lora_dock, restore_dock)
        panel_dock.raise_()
        strip_dock = QDockWidget("Results", self)
        strip_dock.setObjectName("results_dock")
        strip_dock.setWidget(self.strip)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, strip_dock)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.zoom_label = QLabel("100%")
        self.position_label = QLabel("")
        bar.addPermanentWidget(self.live.label)
        bar.addPermanentWidget(self.position_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.zoom_label)

    def _connect(self) -> None:
        s = self.session
        s.status.connect(lambda text: self.statusBar().showMessage(text))
        s.failed.connect(self.show_error)
        s.progress.connect(self._on_progress)
        s.running_changed.connect(self.panel.set_running)
        s.candidates_changed.connect(lambda: self.strip.show_candidates(s.candidates, s.current))
        s.last_seed_changed.connect(self.panel.set_last_seed)
        self.panel.prompt_edit.textChanged.connect(
            lambda: self.loras.follow_prompt(self.panel.prompt_edit.toPlainText())
        )
        self.restore_panel.status.connect(lambda text: self.statusBar().showMessage(text))
        self.restore_panel.redraw_requested.connect(self.session.redraw_losses)
        self.loras.prompt_edited.connect(lambda text: self.panel.apply({"prompt": text}))
        self.panel.generate_requested.connect(self.generate)
        self.panel.cancel_requested.connect(self.cancel)
        self.panel.remove_requested.connect(lambda: s.remove())
        self.strip.selected.connect(s.select)
        self.strip.accept_requested.connect(s.accept)
        self.strip.discard_requested.connect(s.discard)
        self.strip.discard_all_requested.connect(s.discard_all)
        self.canvas.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        self.canvas.cursor_moved.connect(lambda x, y: self.position_label.setText(f"{x}, {y}"))
        self.canvas.region_changed.connect(lambda _box: self._update_mode())
        live = self.live
        live.status.connect(lambda text: self.statusBar().showMessage(text))
        self.canvas.stroke_finished.connect(
            lambda: live.changed() if self.canvas.tool is CanvasTool.PAINT else None
        )  # the eraser's and restore's strokes change the mask, which a live frame ignores
        self.panel.changed.connect(live.changed)
        self.panel.live_toggled.connect(live.set_enabled)
        live.action.toggled.connect(self.panel.set_live)

    def _on_progress(self, index: int, total: int, seconds_left: float) -> None:
        if total <= 0:
            self.progress.setVisible(False)
            return
        self.progress.setVisible(True)
        self.progress.setRange(0, total)
        self.progress.setValue(index)
        self.progress.setFormat(f"step {index}/{total}")
        if index:
            left = f", about {seconds_left:.0f} s left" if seconds_left >= 0 else ""
            self.statusBar().showMessage(f"Step {index}/{total}{left} (Esc cancels)")

    # -- tools ----------------------------------------------------------------------------------

    def set_tool(self, tool: CanvasTool) -> None:
        if tool is not CanvasTool.SELECT:
            self.select_tool.commit()  # another tool: the proposed selection becomes the mask
        self.canvas.tool = tool
        for each, action in self.tool_actions.items():
            action.setChecked(each is tool)

    def swap_tool(self) -> None:
        swap = {CanvasTool.ERASE: CanvasTool.RESTORE, CanvasTool.RESTORE: CanvasTool.ERASE}
        self.set_tool(swap.get(self.canvas.tool, CanvasTool.ERASE))

    def _brush(self, **changes) -> None:
        fields = {
            "size": self.canvas.brush.size,
            "hardness": self.canvas.brush.hardness,
            "opacity": self.canvas.brush.opacity,
            "spacing": self.canvas.brush.spacing,
        }
        fields.update(changes)
        self.canvas.brush = BrushSettings(**fields)  # the canvas repaints its brush ring

    def set_brush_size(self, size: float) -> None:
        size = max(1.0, min(2000.0, float(size)))
        self._brush(size=size)
        if self.size_box.value() != round(size):
            self.size_box.blockSignals(True)
            self.size_box.setValue(round(size))
            self.size_box.blockSignals(False)

    def choose_color(self) -> None:
        color = QColorDialog.getColor(QColor(*self.canvas.paint_color), self, "Brush colour")
        if color.isValid():
            self.canvas.paint_color = (color.red(), color.green(), color.blue())
            self._show_color()
            self.set_tool(CanvasTool.PAINT)

    def _show_color(self) -> None:
        pixmap = QPixmap(16, 16)
        pixmap.fill(QColor(*self.canvas.paint_color))
        self.color_action.setIcon(QIcon(pixmap))

    # -- document edits -------------------------------------------------------------------------

    def _document(self) -> Document | None:
        return self.session.document

    def undo(self) -> None:
        if self._document() is not None and self._document().can_undo:
            self._document().undo()
            self._update_mode()

    def redo(self) -> None:
        if self._document() is not None and self._document().can_redo:
            self._document().redo()
            self._update_mode()

    def clear_mask(self) -> None:
        if self._document() is not None:
            self._document().clear_mask()
            self._update_mode()

    def invert_mask(self) -> None:
        if self._document() is not None:
            self._document().invert_mask()
            self._update_mode()

    def clear_sketch(self) -> None:
        if self._document() is not None:
            self._document().clear_sketch()
            self._update_mode()

    def show_sketch(self, shown: bool) -> None:
        if self._document() is not None:
            self._document().set_sketch_visible(shown)
            self.live.changed()

    def clear_region(self) -> None:
        if self._document() is not None:
            self._document().set_region(None)
            self.canvas.update()
            self._update_mode()

    def accept(self) -> None:
        """Enter: keep the live frame while live mode shows one, else accept the result."""
        if self.select_tool.commit():  # a proposed selection becomes the mask first
            return
        if self.live.enabled and self.live.controller.current_frame() is not None:
            self.live.keep()
        else:
            self.session.accept()

    def _update_mode(self) -> None:
        self.live.changed()  # undo, redo, a cleared mask, sketch or region
        mode = self.session.mode()
        self.panel.set_mode_text("" if mode is None else f"Mode: {mode.value}")
        self._update_title()

    def _say_dropped_undo(self, document: Document) -> None:
        dropped = document.history.dropped - self._undo_dropped
        if dropped > 0:
            self._undo_dropped = document.history.dropped
            budget = document.history.budget_bytes // 2**20
            self.statusBar().showMessage(
                f"The oldest {dropped} undo step(s) were dropped to keep undo within {budget} MiB "
                f"({UNDO_KEY} in the settings).",
                10000,
            )

    def _update_title(self) -> None:
        document = self._document()
        if document is None:
            self.setWindowTitle("SD Studio")
            return
        name = document.path.name if document.path else "Untitled"
        self.setWindowTitle(f"{'*' if document.modified else ''}{name} — SD Studio")

    def set_document(self, document: Document, blank: bool = False) -> None:
        self.provenance = None  # how the picture was made, when its file says (files.py)
        self.live.set_enabled(False)  # live mode draws over one picture only
        document.history.budget_bytes = memory_budget(self.settings, UNDO_KEY, UNDO_MIB)
        self.select_tool.reset()
        self.session.set_document(document, blank=blank)
        document.add_listener(lambda _box: self._update_title())
        document.add_listener(lambda _box: self._say_dropped_undo(document))
        document.add_size_listener(lambda: follow_size(self, document))
        self._undo_dropped = document.history.dropped
        self.sketch_action.setChecked(document.sketch_visible)
        self._update_mode()

    # -- state and closing ----------------------------------------------------------------------

    def _restore_state(self) -> None:
        # A damaged settings file must not stop the editor: what is unreadable is ignored.
        geometry = self.settings.value("window/geometry")
        if not (isinstance(geometry, (QByteArray, bytes)) and self.restoreGeometry(geometry)):
            self.resize(1280, 820)
        state = self.settings.value("window/state")
        if isinstance(state, (QByteArray, bytes)) and not self.restoreState(state):
            log.warning("ignoring an unreadable window layout")
        self.panel.restore_state(self.settings)
        try:
            self.set_brush_size(float(self.settings.value("tools/size", 40)))
            self.hardness_box.setValue(int(self.settings.value("tools/hardness", 80)))
            self.opacity_box.setValue(int(self.settings.value("tools/opacity", 100)))
        except (TypeError, ValueError):
            log.warning("ignoring unreadable tool settings")
        self.set_tool(CanvasTool.ERASE)
        self._show_color()
        self._fill_recent_menu()

    def save_state(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("tools/size", self.canvas.brush.size)
        self.settings.setValue("tools/hardness", self.hardness_box.value())
        self.settings.setValue("tools/opacity", self.opacity_box.value())
        self.panel.save_state(self.settings)
        self.settings.sync()

    def closeEvent(self, event) -> None:  # noqa: N802
        if not self.confirm_discard():
            event.ignore()
            return
        if self.download is not None:
            self.download.cancel.set()  # what was fetched stays in the cache for next time
        self.restore_panel.cancel()
        wait_for_background(120_000)  # a save, export or autosave under way finishes first
        self.stop_autosave()
        self.save_state()
        self.live.shutdown()
        self.generation.shutdown()
        self.fill.shutdown()
        event.accept()
