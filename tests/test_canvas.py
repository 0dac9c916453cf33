"""Canvas view behaviour: zoom around the cursor, panning, partial repaints, region drawing, and
the window's tool shortcuts."""

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
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


def test_a_dab_repaints_only_around_it(canvas):
    from sdstudio.core.brush import BrushSettings, Tool

    canvas.fit()
    before = canvas.repainted_pixels
    stroke = canvas.document.begin_stroke(Tool.ERASE, BrushSettings(size=10))
    stroke.add(200, 100)
    stroke.end()
    repainted = canvas.repainted_pixels - before
    assert canvas.document.has_mask
    assert 0 < repainted < 0.01 * canvas.width() * canvas.height()


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
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    assert window.canvas.brush.size == pytest.approx(size * 1.25)
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
