"""The canvas: shows the document at any zoom and turns pointer events into tool calls.

It keeps an 8-bit RGBA display copy of the picture and a mask overlay, both numpy arrays that
QImages wrap without copying; an edit updates only the changed box of each and repaints only
that part of the widget. The document's sketch (premultiplied RGBA) is wrapped as it is and
drawn above the picture while it is shown. Painting itself happens in ``sdstudio.core``
(Document, Stroke), in image coordinates; this widget maps coordinates and draws, and its
``CanvasInput`` mixin (canvas_input.py) forwards events.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QImage,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import QWidget

from sdstudio.core.brush import BrushSettings
from sdstudio.core.document import Document
from sdstudio.core.pixels import to_rgba8
from sdstudio.core.region import Box
from sdstudio.qt.canvas_input import CanvasInput, CanvasTool

TINT = (255, 64, 64)
TINT_ALPHA = 0.45
LIVE_SKETCH_OPACITY = 0.35
"""The sketch over a live frame: visible enough to draw on, faint enough to judge the frame."""
MIN_ZOOM, MAX_ZOOM = 1 / 64, 64.0


def wrap_qimage(
    array: np.ndarray, image_format: QImage.Format = QImage.Format.Format_RGBA8888
) -> QImage:
    """A QImage sharing ``array``'s memory (H x W x 4 uint8, C-contiguous); keep ``array`` alive."""
    height, width = array.shape[:2]
    return QImage(array.data, width, height, width * 4, image_format)


def _checker_brush() -> QBrush:
    pixmap = QPixmap(16, 16)
    pixmap.fill(QColor(204, 204, 204))
    painter = QPainter(pixmap)
    painter.fillRect(0, 0, 8, 8, QColor(240, 240, 240))
    painter.fillRect(8, 8, 8, 8, QColor(240, 240, 240))
    painter.end()
    return QBrush(pixmap)


class Canvas(CanvasInput, QWidget):
    """Zoomable, pannable view of a Document with brush, restore, paint and region tools."""

    zoom_changed = Signal(float)
    cursor_moved = Signal(int, int)  # image coordinates
    region_changed = Signal(object)  # Box | None
    stroke_finished = Signal()  # a brush, eraser or restore stroke ended (live mode listens)
    select_clicked = Signal(float, float, object)  # the select tool: image x, y, modifiers
    select_dragged = Signal(object, object)  # the select tool: a Box, modifiers

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setCursor(Qt.CursorShape.BlankCursor)
        self.setMinimumSize(200, 200)
        self.document: Document | None = None
        self._tool = CanvasTool.ERASE
        self._brush = BrushSettings()
        self.paint_color: tuple[int, int, int] = (40, 40, 40)
        self.erase_shows_transparency = False
        self.zoom = 1.0
        self.pan = QPointF(0, 0)  # widget position of image (0, 0)
        self._rgba: np.ndarray | None = None
        self._overlay: np.ndarray | None = None
        self._image: QImage | None = None
        self._overlay_image: QImage | None = None
        self._sketch: tuple[np.ndarray, QImage] | None = None  # the document's, wrapped
        self._preview: tuple[QImage, Box] | None = None
        self._candidate: tuple[QImage, Box] | None = None
        self._live: tuple[QImage, Box] | None = None  # live mode's frame, over the picture
        self._stroke = None
        self._panning: QPointF | None = None
        self._space_held = False
        self._region_start: QPointF | None = None
        self._region_draft: Box | None = None
        self._cursor: QPointF | None = None
        self._checker = _checker_brush()
        self._modifiers = Qt.KeyboardModifier.NoModifier  # of the last press (the select tool)
        self.overlay_painter = None  # draws above the mask overlay (the select tool's proposal)

    # -- tool and brush: the cursor ring shows both ---------------------------------------------

    @property
    def tool(self) -> CanvasTool:
        return self._tool

    @tool.setter
    def tool(self, tool: CanvasTool) -> None:
        self._tool = tool
        self.update(self._cursor_rect(self._cursor))  # the region tool shows no ring
        self.setCursor(self._tool_cursor())

    def _tool_cursor(self) -> Qt.CursorShape:
        """The pointer over the picture: none (the ring shows the brush), a cross to select."""
        select = self._tool is CanvasTool.SELECT
        return Qt.CursorShape.CrossCursor if select else Qt.CursorShape.BlankCursor

    @property
    def brush(self) -> BrushSettings:
        return self._brush

    @brush.setter
    def brush(self, brush: BrushSettings) -> None:
        old = self._cursor_rect(self._cursor)
        self._brush = brush
        self.update(old.united(self._cursor_rect(self._cursor)))  # the ring, not the picture

    # -- document -----------------------------------------------------------------------------

    def set_document(self, document: Document | None) -> None:
        if self.document is not None:
            self.document.remove_listener(self._on_document_changed)
        self.document = document
        self._preview = self._candidate = self._sketch = self._live = None
        if document is None:
            self._rgba = self._overlay = self._image = self._overlay_image = None
        else:
            self._rgba = np.ascontiguousarray(to_rgba8(document.image))
            self._overlay = np.zeros((document.height, document.width, 4), np.uint8)
            self._image = wrap_qimage(self._rgba)
            self._overlay_image = wrap_qimage(self._overlay)
            self._refresh_overlay(Box(0, 0, document.width, document.height))
            document.add_listener(self._on_document_changed)
            self.fit()
        self.update()

    def _on_document_changed(self, box: Box | None) -> None:
        document = self.document
        if document is None:
            return
        if box is None:
            box = Box(0, 0, document.width, document.height)
        box = box.clamp(document.width, document.height)
        if box.is_empty():
            return
        self._rgba[box.slices] = to_rgba8(document.image[box.slices])
        self._refresh_overlay(box)
        self.update_image_box(box)

    def _sketch_image(self) -> QImage | None:
        """The document's sketch as a QImage sharing its memory (made once it exists)."""
        sketch = self.document.sketch if self.document is not None else None
        if sketch is None:
            return None
        if self._sketch is None or self._sketch[0] is not sketch:
            premultiplied = QImage.Format.Format_RGBA8888_Premultiplied
            self._sketch = (sketch, wrap_qimage(sketch, premultiplied))
        return self._sketch[1]

    def _refresh_overlay(self, box: Box) -> None:
        mask = self.document.mask[box.slices]
        overlay = self._overlay[box.slices]
        if self.erase_shows_transparency:
            ys, xs = np.mgrid[box.y0 : box.y1, box.x0 : box.x1]
            light = ((ys // 8 + xs // 8) % 2 == 0)[..., None]
            overlay[:, :, :3] = np.where(light, 240, 204)
            overlay[:, :, 3] = mask
        else:
            overlay[:, :, :3] = TINT
            overlay[:, :, 3] = (mask.astype(np.uint16) * int(TINT_ALPHA * 256) >> 8).astype(
                np.uint8
            )

    def set_erase_shows_transparency(self, on: bool) -> None:
        self.erase_shows_transparency = on
        if self.document is not None:
            self._refresh_overlay(Box(0, 0, self.document.width, self.document.height))
        self.update()

    # -- overlays from generation ---------------------------------------------------------------

    def set_preview(self, image: QImage | None, box: Box | None = None) -> None:
        old = self._preview
        self._preview = (image, box) if image is not None and box is not None else None
        for item in (old, self._preview):
            if item is not None:
                self.update_image_box(item[1])

    def set_candidate(self, image: QImage | None, box: Box | None = None) -> None:
        old = self._candidate
        self._candidate = (image, box) if image is not None and box is not None else None
        for item in (old, self._candidate):
            if item is not None:
                self.update_image_box(item[1])

    def set_live(self, image: QImage | None, box: Box | None = None) -> None:
        """Live mode's frame, drawn over the picture (the sketch shows through it, fainter)
        until it is replaced, kept or cleared; the document is not touched."""
        old = self._live
        self._live = (image, box) if image is not None and box is not None else None
        for item in (old, self._live):
            if item is not None:
                self.update_image_box(item[1])

    @property
    def live_frame(self) -> tuple[QImage, Box] | None:
        return self._live

    # -- coordinates and view -----------------------------------------------------------------

    def to_image(self, point: QPointF) -> QPointF:
        return (point - self.pan) / self.zoom

    def to_widget(self, point: QPointF) -> QPointF:
        return point * self.zoom + self.pan

    def image_rect_to_widget(self, box: Box) -> QRect:
        top_left = self.to_widget(QPointF(box.x0, box.y0))
        bottom_right = self.to_widget(QPointF(box.x1, box.y1))
        return QRectF(top_left, bottom_right).toAlignedRect()

    def update_image_box(self, box: Box) -> None:
        rect = self.image_rect_to_widget(box).adjusted(-2, -2, 2, 2) & self.rect()
        if not rect.isEmpty():
            self.update(rect)

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the image point under ``anchor`` (widget coords; default centre) still."""
        zoom = min(MAX_ZOOM, max(MIN_ZOOM, zoom))
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        fixed = self.to_image(anchor)
        self.zoom = zoom
        self.pan = anchor - fixed * zoom
        self.zoom_changed.emit(zoom)
        self.update()

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        self.set_zoom(self.zoom * factor, anchor)

    def fit(self) -> None:
        if self.document is None or self.width() <= 0:
            return
        zoom = min(
            (self.width() - 20) / self.document.width, (self.height() - 20) / self.document.height
        )
        self.zoom = min(MAX_ZOOM, max(MIN_ZOOM, zoom))
        self.pan = QPointF(
            (self.width() - self.document.width * self.zoom) / 2,
            (self.height() - self.document.height * self.zoom) / 2,
        )
        self.zoom_changed.emit(self.zoom)
        self.update()

    def actual_size(self) -> None:
        self.set_zoom(1.0)

    # -- painting -------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.fillRect(event.rect(), QColor(48, 48, 52))
        if self.document is None or self._image is None:
            painter.setPen(QColor(200, 200, 200))
            painter.drawText(
                self.rect(),
                Qt.AlignmentFlag.AlignCenter,
                "Open a picture (Ctrl+O), drop one here, or paste one (Ctrl+V)",
            )
            return
        full = Box(0, 0, self.document.width, self.document.height)
        exposed = self._visible_image_box(event.rect(), full)
        if exposed is not None:
            target = QRectF(
                self.to_widget(QPointF(exposed.x0, exposed.y0)),
                self.to_widget(QPointF(exposed.x1, exposed.y1)),
            )
            source = QRectF(exposed.x0, exposed.y0, exposed.width, exposed.height)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.zoom < 1.0)
            painter.fillRect(target, self._checker)
            painter.drawImage(target, self._image, source)
            if self._live is not None:  # the frame replaces the picture; the strokes show faint
                image, box = self._live
                painter.drawImage(QRectF(self.image_rect_to_widget(box)), image)
            sketch = self._sketch_image() if self.document.sketch_visible else None
            if sketch is not None:
                painter.setOpacity(LIVE_SKETCH_OPACITY if self._live is not None else 1.0)
                painter.drawImage(target, sketch, source)
                painter.setOpacity(1.0)
            painter.drawImage(target, self._overlay_image, source)
            for item in (self._preview, self._candidate):
                if item is not None:
                    image, box = item
                    painter.drawImage(QRectF(self.image_rect_to_widget(box)), image)
            if self.overlay_painter is not None:
                self.overlay_painter(painter)
        self._paint_region(painter)
        self._paint_cursor(painter)

    def _visible_image_box(self, rect: QRect, full: Box) -> Box | None:
        top_left = self.to_image(QPointF(rect.topLeft()))
        bottom_right = self.to_image(QPointF(rect.bottomRight()) + QPointF(1, 1))
        box = Box(
            int(np.floor(top_left.x())) - 1,
            int(np.floor(top_left.y())) - 1,
            int(np.ceil(bottom_right.x())) + 1,
            int(np.ceil(bottom_right.y())) + 1,
        )
        box = box.clamp(full.width, full.height)
        return None if box.is_empty() else box

    def _paint_region(self, painter: QPainter) -> None:
        region = self._region_draft or (self.document.region if self.document else None)
        if region is None:
            return
        pen = QPen(QColor(255, 255, 255), 1, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(self.image_rect_to_widget(region))

    def _paint_cursor(self, painter: QPainter) -> None:
        ringless = (CanvasTool.REGION, CanvasTool.SELECT)
        if self._cursor is None or self.tool in ringless or self._panning is not None:
            return
        radius = max(1.0, self.brush.size * self.zoom / 2)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for color, extra in ((QColor(0, 0, 0, 160), 1.0), (QColor(255, 255, 255, 220), 0.0)):
            painter.setPen(QPen(color, 1))
            painter.drawEllipse(self._cursor, radius + extra, radius + extra)

    def _cursor_rect(self, point: QPointF | None) -> QRect:
        if point is None:
            return QRect()
        r = int(self.brush.size * self.zoom / 2) + 4
        return QRect(int(point.x()) - r, int(point.y()) - r, 2 * r, 2 * r)

    def _move_cursor(self, point: QPointF | None) -> None:
        old = self._cursor_rect(self._cursor)
        self._cursor = point
        self.update(old)  # two rectangles: their union would span the whole way between them
        self.update(self._cursor_rect(point))

    def resizeEvent(self, event) -> None:  # noqa: N802
        first = event.oldSize().width() <= 0
        super().resizeEvent(event)
        if first:
            self.fit()
