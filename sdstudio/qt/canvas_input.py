"""The canvas's input: pointer, tablet and key events turned into tool calls on the document.

A mixin of ``Canvas`` (which has the view: ``to_image``, ``update_image_box``, the cursor ring).
Strokes happen in ``sdstudio.core`` in image coordinates; a finished stroke says so through
``stroke_finished`` (live mode regenerates on it), a dragged region through ``region_changed``.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QMouseEvent, QTabletEvent, QWheelEvent

from sdstudio.core.brush import Tool
from sdstudio.core.document import Document
from sdstudio.core.region import Box

ZOOM_STEP = 1.25


class CanvasTool(Enum):
    ERASE = "erase"
    RESTORE = "restore"
    PAINT = "paint"
    REGION = "region"
    SELECT = "select"  # Segment Anything: clicks and drags go to the select tool (select_tool.py)


BRUSH_TOOLS = {
    CanvasTool.ERASE: Tool.ERASE,
    CanvasTool.RESTORE: Tool.RESTORE,
    CanvasTool.PAINT: Tool.PAINT,
}


class CanvasInput:
    """Event handlers of ``Canvas``; see the module docstring."""

    def _begin(self, position: QPointF, pressure: float) -> None:
        if self.document is None:
            return
        point = self.to_image(position)
        if self.tool in (CanvasTool.REGION, CanvasTool.SELECT):
            self._region_start = point
            self._region_draft = None
            return
        color = self.paint_color if self.tool is CanvasTool.PAINT else None
        self._stroke = self.document.begin_stroke(BRUSH_TOOLS[self.tool], self.brush, color)
        self._stroke.add(point.x(), point.y(), pressure)

    def _extend(self, position: QPointF, pressure: float) -> None:
        point = self.to_image(position)
        if self._stroke is not None:
            self._stroke.add(point.x(), point.y(), pressure)
        elif self._region_start is not None and self.document is not None:
            old = self._region_draft
            self._region_draft = _box_between(self._region_start, point, self.document)
            for box in (old, self._region_draft):
                if box is not None:
                    self.update_image_box(box.expand(2))

    def _finish(self) -> None:
        if self._stroke is not None:
            self._stroke.end()
            self._stroke = None
            self.stroke_finished.emit()
        elif self._region_start is not None and self.document is not None:
            region = self._region_draft
            if region is not None and (region.width < 8 or region.height < 8):
                region = None  # a click, not a drag: clears the region
            start = self._region_start
            self._region_start, self._region_draft = None, None
            if self.tool is CanvasTool.SELECT:
                self.update()
                if region is None:
                    self.select_clicked.emit(start.x(), start.y(), self._modifiers)
                else:
                    self.select_dragged.emit(region, self._modifiers)
                return
            self.document.set_region(region)
            self.region_changed.emit(region)
            self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (
            button == Qt.MouseButton.LeftButton and self._space_held
        ):
            self._panning = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif button == Qt.MouseButton.LeftButton:
            self._modifiers = event.modifiers()
            self._begin(event.position(), 1.0)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        position = event.position()
        if self._panning is not None:
            self.pan += position - self._panning
            self._panning = position
            self.update()
            return
        self._move_cursor(position)
        point = self.to_image(position)
        self.cursor_moved.emit(int(point.x()), int(point.y()))
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._extend(position, 1.0)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._panning is not None and event.button() in (
            Qt.MouseButton.MiddleButton,
            Qt.MouseButton.LeftButton,
        ):
            self._panning = None
            self.setCursor(
                Qt.CursorShape.OpenHandCursor if self._space_held else self._tool_cursor()
            )
        elif event.button() == Qt.MouseButton.LeftButton:
            self._finish()

    def tabletEvent(self, event: QTabletEvent) -> None:  # noqa: N802
        kind = event.type()
        pressure = float(event.pressure())
        if kind == QTabletEvent.Type.TabletPress:
            self._modifiers = event.modifiers()
            self._begin(event.position(), pressure)
        elif kind == QTabletEvent.Type.TabletMove:
            self._move_cursor(event.position())
            if self._stroke is not None or self._region_start is not None:
                self._extend(event.position(), pressure)
        elif kind == QTabletEvent.Type.TabletRelease:
            self._finish()
        event.accept()  # no synthesized mouse events: the pressure would be lost

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        notches = event.angleDelta().y() / 120.0
        if notches:
            self.zoom_by(ZOOM_STEP**notches, event.position())

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_held = True
            self.setCursor(Qt.CursorShape.OpenHandCursor)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_held = False
            self.setCursor(self._tool_cursor())
            return
        super().keyReleaseEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self._move_cursor(None)
        super().leaveEvent(event)


def _box_between(a: QPointF, b: QPointF, document: Document) -> Box:
    x0, x1 = sorted((a.x(), b.x()))
    y0, y1 = sorted((a.y(), b.y()))
    box = Box(int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))
    return box.clamp(document.width, document.height)
