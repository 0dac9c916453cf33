"""The window's menus, shortcuts and tool bar (a mixin of ``MainWindow``)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QSpinBox, QToolBar

from sdstudio.core.selection import MAX_GROW
from sdstudio.qt.canvas import CanvasTool
from sdstudio.qt.device_menu import build_device_menu
from sdstudio.qt.fill_menu import build_fill_menu
from sdstudio.qt.refine_dialog import attach_refine_engine, open_refine_dialog
from sdstudio.qt.upscale_action import UpscaleAction


class WindowActions:
    """Builds the menus and the tool bar; the slots they call live on ``MainWindow``."""

    def _action(self, menu, text: str, slot, shortcuts=(), checkable: bool = False) -> QAction:
        action = QAction(text, self)
        action.setShortcuts([QKeySequence(s) for s in shortcuts])
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)  # shortcuts work whatever has focus
        return action

    def _build_actions(self) -> None:
        menus = self.menuBar()
        file = menus.addMenu("&File")
        self._action(file, "&New canvas", self.new_canvas, ["Ctrl+N"])
        self._action(file, "&Open…", self.open_dialog, [QKeySequence.StandardKey.Open])
        self.recent_menu = file.addMenu("Open &recent")
        self._action(file, "&Paste picture", self.paste, [QKeySequence.StandardKey.Paste])
        self._action(file, "&Copy result", self.copy, [QKeySequence.StandardKey.Copy])
        self._action(file, "&Save project", self.save, [QKeySequence.StandardKey.Save])
        self._action(file, "Save project &as…", self.save_as_dialog, ["Ctrl+Shift+S"])
        self._action(file, "&Export picture…", self.export_dialog, ["Ctrl+E"])
        file.addSeparator()
        self._action(file, "&Quit", self.close, [QKeySequence.StandardKey.Quit])
        edit = menus.addMenu("&Edit")
        self.undo_action = self._action(edit, "&Undo", self.undo, ["Ctrl+Z"])
        self.redo_action = self._action(edit, "&Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        edit.addSeparator()
        self._action(edit, "&Clear mask", self.clear_mask, ["Ctrl+Shift+A"])
        self._action(edit, "&Invert mask", self.invert_mask, ["Ctrl+I"])
        self._action(edit, "Clear &region", self.clear_region, [])
        self._action(edit, "Clear s&ketch", self.clear_sketch, ["Ctrl+Shift+K"])
        self._build_image_menu(menus.addMenu("&Image"))
        view = menus.addMenu("&View")
        self._action(view, "&Fit to window", self.canvas.fit, ["Ctrl+0"])
        self._action(view, "&100%", self.canvas.actual_size, ["Ctrl+1"])
        self._action(view, "Zoom &in", lambda: self.canvas.zoom_by(1.25), ["Ctrl++", "Ctrl+="])
        self._action(view, "Zoom &out", lambda: self.canvas.zoom_by(0.8), ["Ctrl+-"])
        self.transparency_action = self._action(
            view,
            "Show erased area as &transparency",
            self.canvas.set_erase_shows_transparency,
            checkable=True,
        )
        self.sketch_action = self._action(
            view, "Show &sketch", self.show_sketch, ["Ctrl+K"], checkable=True
        )
        self.sketch_action.setChecked(True)
        tools = menus.addMenu("&Tools")
        self.tool_actions = {
            CanvasTool.ERASE: self._action(
                tools,
                "&Eraser (mark to regenerate)",
                lambda: self.set_tool(CanvasTool.ERASE),
                ["E"],
                True,
            ),
            CanvasTool.RESTORE: self._action(
                tools, "&Restore (un-erase)", lambda: self.set_tool(CanvasTool.RESTORE), ["R"], True
            ),
            CanvasTool.PAINT: self._action(
                tools, "&Brush (sketch)", lambda: self.set_tool(CanvasTool.PAINT), ["B"], True
            ),
            CanvasTool.REGION: self._action(
                tools,
                "Re&gion (where to generate)",
                lambda: self.set_tool(CanvasTool.REGION),
                ["M"],
                True,
            ),
            CanvasTool.SELECT: self._action(
                tools,
                "Se&lect an object (click on it)",
                lambda: self.set_tool(CanvasTool.SELECT),
                ["S"],
                True,
            ),
        }
        self._action(tools, "S&wap eraser and restore", self.swap_tool, ["X"])
        self._action(
            tools,
            "&Bigger brush (or selection grow)",
            lambda: self._resize_tool(1.25),
            ["]"],
        )
        self._action(
            tools,
            "&Smaller brush (or selection grow)",
            lambda: self._resize_tool(1 / 1.25),
            ["["],
        )
        self.color_action = self._action(tools, "Brush &colour…", self.choose_color, ["C"])
        models = menus.addMenu("&Models")
        self._action(models, "Model &library…", self.show_model_library, ["Ctrl+L"])
        build_device_menu(
            models.addMenu("&Device and memory"),
            self.settings,
            self.device_overrides,
            lambda: self.statusBar().showMessage(
                "Device settings changed: the next generation reloads the model with them.", 8000
            ),
        )
        generate = menus.addMenu("&Generate")
        self._action(generate, "&Generate", self.generate, ["Ctrl+Return", "Ctrl+Enter"])
        self._action(
            generate,
            "&Cancel",
            lambda: self.select_tool.drop() or self.upscaler.cancel() or self.cancel(),
            ["Esc"],
        )
        self._action(
            generate, "&Remove (no model)", lambda: self._selected(self.session.remove), ["Delete"]
        )
        self._action(
            generate,
            "Remove, then &refine with the model",
            lambda: self._selected(self.remove_and_refine),
            ["Shift+Delete"],
        )
        build_fill_menu(self, generate)
        generate.addSeparator()
        generate.addAction(self.live.action)
        self._action(
            generate, "&Accept result (or keep the live frame)", self.accept, ["Return", "Enter"]
        )
        self._action(
            generate,
            "&Keep the live frame as a result",
            lambda: self.live.keep(to_results=True),
            ["Shift+Return", "Shift+Enter"],
        )
        self._action(generate, "&Use the picture's settings", self.use_provenance, ["Ctrl+Shift+U"])
        self._action(
            generate, "&Previous result", lambda: self.session.step_candidate(-1), ["Left"]
        )
        self._action(generate, "&Next result", lambda: self.session.step_candidate(1), ["Right"])
        self._action(generate, "&Discard result", self.session.discard, ["Backspace"])
        self._build_toolbar()

    def _build_image_menu(self, menu) -> None:
        """Image > Upscale 2x / 4x (qt/upscale_action.py: off the GUI thread, one undo step) and
        Upscale and refine… (qt/refine_dialog.py: the same, then an SD refine of each tile)."""
        self.upscaler = UpscaleAction(
            lambda: self.session.document, lambda: self.models_folder, self.progress, self
        )
        self.upscaler.status.connect(lambda text: self.statusBar().showMessage(text))
        self._action(menu, "Upscale &2x", lambda: self.upscaler.start(2))
        self._action(menu, "Upscale &4x", lambda: self.upscaler.start(4))
        self.refine_engine = attach_refine_engine(self)
        self._action(menu, "Upscale and &refine…", lambda: open_refine_dialog(self))

    def _build_toolbar(self) -> None:
        bar = QToolBar("Tools", self)
        bar.setObjectName("tools_toolbar")
        short = {  # the toolbar's labels: short enough that Grow shows on a laptop's screen
            CanvasTool.ERASE: "Eraser",
            CanvasTool.RESTORE: "Restore",
            CanvasTool.PAINT: "Brush",
            CanvasTool.REGION: "Region",
            CanvasTool.SELECT: "Select",
        }
        for tool, action in self.tool_actions.items():
            action.setIconText(short[tool])
            keys = action.shortcut().toString()
            action.setToolTip(f"{action.text().replace('&', '')} ({keys})")
            bar.addAction(action)
        bar.addAction(self.color_action)
        bar.addSeparator()
        self.size_box = self._spin(
            bar, "Size", 1, 2000, int(self.canvas.brush.size), self.set_brush_size
        )
        self.hardness_box = self._spin(
            bar, "Hardness %", 0, 100, 80, lambda v: self._brush(hardness=v / 100)
        )
        self.opacity_box = self._spin(
            bar, "Opacity %", 1, 100, 100, lambda v: self._brush(opacity=v / 100)
        )
        bar.addSeparator()
        self.grow_box = self._spin(
            bar, "Grow px", 0, MAX_GROW, self.select_tool.grow_px, self.select_tool.set_grow
        )
        self.grow_box.setToolTip(
            "How far a selection (S) reaches past the object's outline, so that its edge and "
            "shadow go too; [ and ] change it while selecting."
        )
        self.addToolBar(bar)

    def _resize_tool(self, factor: float) -> None:
        """[ and ]: the brush's size, or while selecting, how far the selection grows."""
        if self.canvas.tool is not CanvasTool.SELECT:
            self.set_brush_size(self.canvas.brush.size * factor)
            return
        value = self.grow_box.value()
        step = max(1, round(value * abs(factor - 1)))
        self.grow_box.setValue(value + step if factor > 1 else value - step)

    def _selected(self, run) -> None:
        """Delete and Shift+Delete: a proposed selection becomes the mask first (one undo step),
        then ``run`` removes what the mask covers."""
        if not self.select_tool.commit(then=run):
            run()

    def _spin(self, bar: QToolBar, label: str, low: int, high: int, value: int, slot) -> QSpinBox:
        bar.addWidget(QLabel(f" {label} "))
        box = QSpinBox()
        box.setRange(low, high)
        box.setValue(value)
        box.valueChanged.connect(slot)
        box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        bar.addWidget(box)
        return box
