"""Canvas view behaviour: zoom around the cursor, panning, partial repaints, region drawing, and
the window's tool shortcuts.

Repaints are counted from the paint events Qt delivers to the canvas (their regions), so every
repaint counts: the picture's, the brush cursor's and full ones alike."""

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QObject, QPoint, QPointF, QRect, QSettings, Qt
from PySide6.QtGui import QMouseEvent, QRegion, QWheelEvent
from PySide6.QtWidgets import QApplication

from sdstudio.core.document import Document
from sdstudio.core.region import Box
from sdstudio.engine.fake import FakeEngine
from sdstudio.qt.canvas import Canvas, CanvasTool
from sdstudio.qt.main_window import MainWindow


@pytest.fixture
def canvas(qtbot):
    widget = Canvas()
    qtbot.addWidget(widget)
    widget.resize(600, 400)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_document(Document(np.zeros((300, 500, 3), np.uint8)))
    return widget


def mouse(widget, kind, point, button, buttons):
    QApplication.sendEvent(
        widget,
        QMouseEvent(
            kind,
            QPointF(point),
            widget.mapToGlobal(QPointF(point)),
            button,
            buttons,
            Qt.KeyboardModifier.NoModifier,
        ),
    )


class RepaintSpy(QObject):
    """The regions of the paint events a widget receives (what Qt really repaints)."""

    def __init__(self, widget) -> None:
        super().__init__()
        self.widget = widget
        self.regions: list[QRegion] = []
        widget.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt API
        if watched is self.widget and event.type() == QEvent.Type.Paint:
            self.regions.append(QRegion(event.region()))
        return False

    def flush(self) -> None:
        """Deliver the repaints asked for so far."""
        for _ in range(3):
            QApplication.processEvents()

    def take(self) -> QRegion:
        """Everything repainted since the last take (after delivering what is pending)."""
        self.flush()
        union = QRegion()
        for region in self.regions:
            union = union.united(region)
        self.regions.clear()
        return union


def area(region: QRegion) -> int:
    return sum(rect.width() * rect.height() for rect in region)


@pytest.fixture
def spy(canvas):
    watcher = RepaintSpy(canvas)
    watcher.take()  # the first full paint of the new document
    return watcher


def cursor_ring(canvas, at: QPointF) -> QRect:
    """The widget rectangle the brush cursor's ring covers at ``at`` (its outer pen included)."""
    radius = canvas.brush.size * canvas.zoom / 2 + 2
    return QRect(
        int(at.x() - radius), int(at.y() - radius), int(2 * radius) + 1, int(2 * radius) + 1
    )


def test_wheel_zoom_keeps_the_point_under_the_cursor(canvas):
    anchor = QPointF(150, 120)
    before = canvas.to_image(anchor)
    event = QWheelEvent(
        anchor,
        canvas.mapToGlobal(anchor),
        QPoint(),
        QPoint(0, 120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    zoom = canvas.zoom
    QApplication.sendEvent(canvas, event)
    assert canvas.zoom == pytest.approx(zoom * 1.25)
    after = canvas.to_image(anchor)
    assert (after.x(), after.y()) == pytest.approx((before.x(), before.y()))


def test_middle_drag_pans_without_painting(canvas):
    pan = QPointF(canvas.pan)
    mouse(
        canvas,
        QEvent.Type.MouseButtonPress,
        QPointF(100, 100),
        Qt.MouseButton.MiddleButton,
        Qt.MouseButton.MiddleButton,
    )
    mouse(
        canvas,
        QEvent.Type.MouseMove,
        QPointF(130, 90),
        Qt.MouseButton.NoButton,
        Qt.MouseButton.MiddleButton,
    )
    mouse(
        canvas,
        QEvent.Type.MouseButtonRelease,
        QPointF(130, 90),
        Qt.MouseButton.MiddleButton,
        Qt.MouseButton.NoButton,
    )
    assert (canvas.pan - pan) == QPointF(30, -10)
    assert not canvas.document.has_mask


def test_fit_and_actual_size(canvas):
    canvas.fit()
    assert canvas.zoom == pytest.approx(min(580 / 500, 380 / 300))
    canvas.actual_size()
    assert canvas.zoom == 1.0


def test_a_moving_cursor_repaints_its_ring_where_it_was_and_where_it_is(canvas, spy):
    none = Qt.MouseButton.NoButton
    points = [QPointF(170, 140), QPointF(185, 145), QPointF(300, 260)]
    mouse(canvas, QEvent.Type.MouseMove, points[0], none, none)
    assert spy.take().contains(cursor_ring(canvas, points[0]))
    for before, now in zip(points, points[1:], strict=False):
        mouse(canvas, QEvent.Type.MouseMove, now, none, none)
        repainted = spy.take()
        assert repainted.contains(cursor_ring(canvas, before)), "the old ring is left behind"
        assert repainted.contains(cursor_ring(canvas, now))
        assert area(repainted) < 0.05 * canvas.width() * canvas.height()
    QApplication.sendEvent(canvas, QEvent(QEvent.Type.Leave))
    assert spy.take().contains(cursor_ring(canvas, points[-1]))


def test_a_stroke_repaints_the_dabs_and_the_cursor_and_nothing_else(canvas, spy):
    """A short stroke by mouse: what Qt repaints covers every dab and the cursor ring at every
    point, and stays within the brush's reach of the pointer's path."""
    from sdstudio.core.brush import BrushSettings

    canvas.fit()
    canvas.brush = BrushSettings(size=10)
    path = [QPointF(200, 150), QPointF(206, 151), QPointF(214, 153), QPointF(220, 156)]
    spy.take()
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    mouse(canvas, QEvent.Type.MouseMove, path[0], none, none)
    mouse(canvas, QEvent.Type.MouseButtonPress, path[0], left, left)
    for point in path[1:]:
        mouse(canvas, QEvent.Type.MouseMove, point, none, left)
    mouse(canvas, QEvent.Type.MouseButtonRelease, path[-1], left, none)
    repainted = spy.take()
    assert canvas.document.has_mask
    reach = canvas.brush.size * canvas.zoom / 2 + 8
    first, last = path[0], path[-1]
    around = QRect(
        int(first.x() - reach),
        int(first.y() - reach),
        int(last.x() - first.x() + 2 * reach),
        int(last.y() - first.y() + 2 * reach),
    )
    assert around.contains(repainted.boundingRect()), (repainted.boundingRect(), around)
    assert area(repainted) < 0.05 * canvas.width() * canvas.height()
    for point in path:
        assert repainted.contains(cursor_ring(canvas, point)), point
    changed = np.argwhere(canvas.document.mask > 0)
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0) + 1
    dabs = canvas.image_rect_to_widget(Box(int(x0), int(y0), int(x1), int(y1)))
    assert repainted.contains(dabs), (dabs, repainted.boundingRect())


@pytest.mark.parametrize("tool", ["erase", "paint"])
def test_a_dab_from_the_document_repaints_only_around_it(canvas, spy, tool):
    from sdstudio.core.brush import BrushSettings, Tool

    canvas.fit()
    spy.take()
    stroke = canvas.document.begin_stroke(Tool(tool), BrushSettings(size=10), (0, 0, 0))
    stroke.add(200, 100)
    stroke.end()
    repainted = spy.take()
    assert canvas.document.has_mask if tool == "erase" else canvas.document.sketch.any()
    dab = canvas.image_rect_to_widget(Box(195, 95, 205, 105))
    assert repainted.contains(dab)
    assert 0 < area(repainted) < 0.01 * canvas.width() * canvas.height()


def test_hiding_the_sketch_repaints_only_where_it_is(canvas, spy):
    from sdstudio.core.brush import BrushSettings, Tool

    canvas.fit()
    stroke = canvas.document.begin_stroke(Tool.PAINT, BrushSettings(size=10), (0, 0, 0))
    stroke.add(200, 100)
    stroke.end()
    spy.take()
    canvas.document.set_sketch_visible(False)
    repainted = spy.take()
    assert repainted.contains(canvas.image_rect_to_widget(Box(196, 96, 204, 104)))
    assert 0 < area(repainted) < 0.01 * canvas.width() * canvas.height()


def test_a_brush_change_repaints_only_the_cursor_ring(canvas, spy):
    from sdstudio.core.brush import BrushSettings

    at = QPointF(300, 200)
    mouse(canvas, QEvent.Type.MouseMove, at, Qt.MouseButton.NoButton, Qt.MouseButton.NoButton)
    spy.take()
    small = cursor_ring(canvas, at)
    canvas.brush = BrushSettings(size=80)
    repainted = spy.take()
    assert repainted.contains(small) and repainted.contains(cursor_ring(canvas, at))
    assert area(repainted) < 0.1 * canvas.width() * canvas.height()
    canvas.brush = BrushSettings(size=80, hardness=0.2)  # the ring looks the same
    assert area(spy.take()) < 0.1 * canvas.width() * canvas.height()


def test_the_region_tool_removes_the_ring_and_a_brush_brings_it_back(canvas, spy):
    at = QPointF(300, 200)
    mouse(canvas, QEvent.Type.MouseMove, at, Qt.MouseButton.NoButton, Qt.MouseButton.NoButton)
    spy.take()
    ring = cursor_ring(canvas, at)
    canvas.tool = CanvasTool.REGION
    assert spy.take().contains(ring)  # the ring is painted over, not left behind
    canvas.tool = CanvasTool.RESTORE
    assert spy.take().contains(ring)


def test_region_tool_draws_a_region(canvas):
    canvas.tool = CanvasTool.REGION
    start, end = canvas.to_widget(QPointF(50, 40)), canvas.to_widget(QPointF(250, 200))
    mouse(
        canvas,
        QEvent.Type.MouseButtonPress,
        start,
        Qt.MouseButton.LeftButton,
        Qt.MouseButton.LeftButton,
    )
    mouse(canvas, QEvent.Type.MouseMove, end, Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton)
    mouse(
        canvas,
        QEvent.Type.MouseButtonRelease,
        end,
        Qt.MouseButton.LeftButton,
        Qt.MouseButton.NoButton,
    )
    region = canvas.document.region
    assert region is not None and abs(region.x0 - 50) <= 1 and abs(region.y1 - 200) <= 1


def test_candidate_and_preview_overlays_do_not_touch_the_document(canvas):
    from PySide6.QtGui import QImage

    image = QImage(10, 10, QImage.Format.Format_RGBA8888)
    image.fill(0xFF00FF00)
    canvas.set_preview(image, Box(0, 0, 10, 10))
    canvas.set_candidate(image, Box(5, 5, 15, 15))
    canvas.repaint()
    assert (canvas.document.image == 0).all()


def test_tool_shortcuts(qtbot, tmp_path):
    window = MainWindow(
        settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
        engine_factory=FakeEngine,
    )
    window.confirm_discard = lambda: True
    qtbot.addWidget(window)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # window shortcuts need an active window
    window.canvas.setFocus()
    for key, tool in (
        (Qt.Key.Key_B, CanvasTool.PAINT),
        (Qt.Key.Key_M, CanvasTool.REGION),
        (Qt.Key.Key_E, CanvasTool.ERASE),
        (Qt.Key.Key_X, CanvasTool.RESTORE),
    ):
        qtbot.keyClick(window.canvas, key)
        assert window.canvas.tool is tool
    size = window.canvas.brush.size
    repaints = RepaintSpy(window.canvas)
    repaints.take()
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    assert window.canvas.brush.size == pytest.approx(size * 1.25)
    canvas_area = window.canvas.width() * window.canvas.height()
    assert area(repaints.take()) < 0.1 * canvas_area  # the ring at most, not the whole picture
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketLeft)
    assert window.canvas.brush.size == pytest.approx(size)
    window.close()


def test_device_menu_choices_are_saved_and_shared(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "d.ini"), QSettings.Format.IniFormat)
    settings.setValue("device/offload", "model")
    window = MainWindow(settings=settings, engine_factory=FakeEngine)
    window.confirm_discard = lambda: True
    qtbot.addWidget(window)
    assert window.device_overrides["offload"] == "model"
    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Models")
    device = next(a.menu() for a in menu.actions() if a.text() == "&Device and memory")
    precision = next(a.menu() for a in device.actions() if a.text() == "&Precision")
    fp32 = next(a for a in precision.actions() if a.data() == "float32")
    fp32.trigger()
    assert window.device_overrides["dtype"] == "float32"
    assert settings.value("device/dtype") == "float32"
    window.close()
