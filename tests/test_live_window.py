"""Live mode in the editor window, with the fake engine: F5, strokes, frames, Keep, undo."""

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from sdstudio.core.imageio import save_image
from sdstudio.core.region import Box
from sdstudio.core.request import Mode
from sdstudio.core.sketch import flatten_sketch
from sdstudio.engine.fake import FakeEngine
from sdstudio.qt.canvas import CanvasTool
from sdstudio.qt.main_window import MainWindow
from tests.test_main_window import drag, open_photo


@pytest.fixture
def live_window(qtbot, tmp_path):
    made: list = []
    engines: list[FakeEngine] = []

    def factory():
        engines.append(FakeEngine(steps=2, color=(0, 200, 0)))
        return engines[-1]

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, engine_factory=factory)
    window.confirm_discard = lambda: True
    qtbot.addWidget(window)
    window.resize(1000, 700)
    window.show()
    qtbot.waitExposed(window)
    window.engines = engines
    made.append(window)
    yield window
    for each in made:
        each.live.shutdown()
        each.generation.shutdown()
        each.fill.shutdown()


def stroke(window, y: int) -> None:
    window.set_tool(CanvasTool.PAINT)
    drag(window.canvas, [(20, y), (60, y), (100, y)])


def frames(window) -> list:
    return [r for r in window.engines[0].requests if r.live] if window.engines else []


def wait_frame(qtbot, window, count: int) -> None:
    """Until ``count`` live frames ran and the newest is on the canvas."""
    qtbot.waitUntil(
        lambda: (
            len(frames(window)) >= count
            and not window.live.controller.is_busy()
            and window.canvas.live_frame is not None
        ),
        timeout=10000,
    )


def test_the_picture_follows_each_stroke_and_stays_unchanged(qtbot, live_window, tmp_path, photo):
    window = live_window
    document = open_photo(qtbot, window, tmp_path, photo)
    before = document.image.copy()
    window.live.action.trigger()  # F5
    assert window.live.enabled and window.panel.live_button.isChecked()
    wait_frame(qtbot, window, 1)  # switching on shows the current state once
    for n, y in enumerate((30, 60, 90), start=2):
        stroke(window, y)
        wait_frame(qtbot, window, n)
        request = frames(window)[-1]
        assert request.mode is Mode.IMG2IMG
        # the frame is the picture with every stroke so far, as drawn
        np.testing.assert_array_equal(request.image, flatten_sketch(document))
    seeds = {r.seed for r in frames(window)}
    assert len(seeds) == 1, "the seed must stay fixed while live mode is on"
    assert frames(window)[-1].strength == pytest.approx(window.panel.live_strength.value())
    np.testing.assert_array_equal(document.image, before)  # frames are drawn over it only
    assert window.live.label.isVisible() and "s per frame" in window.live.label.text()
    window.live.action.trigger()  # F5 again: off
    assert window.canvas.live_frame is None and not window.live.label.isVisible()
    np.testing.assert_array_equal(document.image, before)


def test_keep_is_one_undo_step(qtbot, live_window, tmp_path, photo):
    window = live_window
    document = open_photo(qtbot, window, tmp_path, photo)
    before = document.image.copy()
    window.live.set_enabled(True)
    stroke(window, 40)
    wait_frame(qtbot, window, 1)
    entries = document.history.entries
    window.accept()  # Enter: keeps the live frame
    assert window.canvas.live_frame is None
    assert document.history.entries == entries + 1
    assert document.history.undo_label == "Keep live frame"
    assert (document.image[:, :, :3] == (0, 200, 0)).all()
    window.undo()
    np.testing.assert_array_equal(document.image, before)
    assert window.live.enabled, "Keep leaves live mode on"


def test_the_live_area_is_the_region(qtbot, live_window, tmp_path, photo):
    window = live_window
    document = open_photo(qtbot, window, tmp_path, photo)
    region = Box(16, 16, 80, 72)
    document.set_region(region)
    before = document.image.copy()
    window.live.set_enabled(True)
    stroke(window, 40)
    wait_frame(qtbot, window, 1)
    request = frames(window)[-1]
    assert request.image.shape[:2] == (region.height, region.width)
    assert request.region is None
    assert window.canvas.live_frame[1] == region
    window.accept()
    assert (document.image[region.slices][:, :, :3] == (0, 200, 0)).all()
    outside = np.ones(document.image.shape[:2], bool)
    outside[region.slices] = False
    np.testing.assert_array_equal(document.image[outside], before[outside])


def test_keep_to_results_and_opening_another_picture_leaves_live_mode(
    qtbot, live_window, tmp_path, photo
):
    window = live_window
    document = open_photo(qtbot, window, tmp_path, photo)
    before = document.image.copy()
    window.live.set_enabled(True)
    stroke(window, 50)
    wait_frame(qtbot, window, 1)
    assert window.live.keep(to_results=True)
    assert len(window.session.candidates) == 1
    np.testing.assert_array_equal(document.image, before)
    other = tmp_path / "other.png"
    save_image(other, photo[::-1].copy())
    window.open_path(other)
    qtbot.waitUntil(lambda: window.session.document.path == other, timeout=5000)
    assert not window.live.enabled and not window.live.action.isChecked()
    assert window.canvas.live_frame is None


def test_generate_and_live_share_one_engine(qtbot, live_window, tmp_path, photo, edge_mask):
    window = live_window
    document = open_photo(qtbot, window, tmp_path, photo)
    window.live.set_enabled(True)
    stroke(window, 30)
    wait_frame(qtbot, window, 1)
    document.set_mask(edge_mask)
    window.generate()
    qtbot.waitUntil(lambda: len(window.session.candidates) == 1, timeout=10000)
    assert len(window.engines) == 1, "a second engine would load a second copy of the model"


def test_an_empty_sketch_waits_quietly_for_the_first_stroke(qtbot, live_window, tmp_path, photo):
    """With a scribble control and nothing drawn, live mode waits: no error, no frame."""
    window = live_window
    open_photo(qtbot, window, tmp_path, photo)
    window.panel.apply({"control": {"reference": str(tmp_path / "cn"), "kind": "scribble"}})
    said: list[str] = []
    window.live.status.connect(said.append)
    window.live.set_enabled(True)
    qtbot.wait(300)
    assert frames(window) == [] and not any("empty" in line for line in said)
    stroke(window, 40)
    wait_frame(qtbot, window, 1)
    control = frames(window)[-1].controls[0]
    assert control.image.any() and control.image.shape[:2] == frames(window)[-1].image.shape[:2]


def test_the_wheel_scrolls_the_panel_without_changing_a_field(qtbot, live_window):
    """Scrolling the tall panel over a combo box must not change the model under the mouse."""
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    window = live_window
    combo = window.panel.model_combo
    combo.addItems(["model-a", "model-b"])
    combo.setCurrentIndex(0)
    before = combo.currentText()
    centre = QPointF(combo.rect().center())
    for _ in range(3):
        event = QWheelEvent(
            centre,
            QPointF(combo.mapToGlobal(centre.toPoint())),
            QPoint(0, 0),
            QPoint(0, -120),
            Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        QApplication.sendEvent(combo, event)
    assert combo.currentText() == before


def test_a_large_area_is_scaled_down_for_frames_and_kept_at_full_size(
    qtbot, live_window, tmp_path, photo, monkeypatch
):
    import sdstudio.qt.live_mode as live_mode

    monkeypatch.setattr(live_mode, "LIVE_MAX_SIDE", 64)  # the 200 x 130 photo is "large"
    window = live_window
    document = open_photo(qtbot, window, tmp_path, photo)
    window.live.set_enabled(True)
    stroke(window, 60)
    wait_frame(qtbot, window, 1)
    request = frames(window)[-1]
    assert request.image.shape[:2] == (42, 64)  # 130 x 200 scaled to 64 on the longer side
    assert window.canvas.live_frame[1] == Box(0, 0, 200, 130)  # drawn over the whole area
    window.accept()
    assert (document.image[:, :, :3] == (0, 200, 0)).all()  # the frame, at full size
    window.undo()
    np.testing.assert_array_equal(document.image, photo)


class NotingEngine(FakeEngine):
    """Its results carry a note, as the engine's do when the fast path fell back."""

    def run(self, request, cancel):
        import dataclasses

        from sdstudio.engine.events import Finished

        for event in super().run(request, cancel):
            if isinstance(event, Finished):
                event = dataclasses.replace(event, notes=("The fast path is off: compile failed.",))
            yield event


def test_an_engine_note_reaches_the_status_bar(qtbot, tmp_path, photo, edge_mask):
    settings = QSettings(str(tmp_path / "n.ini"), QSettings.Format.IniFormat)
    engine = NotingEngine(steps=2)
    window = MainWindow(settings=settings, engine_factory=lambda: engine)
    window.confirm_discard = lambda: True
    qtbot.addWidget(window)
    said: list[str] = []
    window.session.status.connect(said.append)
    window.live.status.connect(said.append)
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    window.generate()
    qtbot.waitUntil(lambda: len(window.session.candidates) == 1, timeout=10000)
    assert any("compile failed" in line for line in said)
    said.clear()
    document.set_mask(np.zeros_like(edge_mask))
    window.live.set_enabled(True)
    stroke(window, 40)
    qtbot.waitUntil(lambda: window.canvas.live_frame is not None, timeout=10000)
    assert any(line.startswith("Live: ") and "compile failed" in line for line in said)
    window.live.shutdown()
    window.generation.shutdown()
    window.fill.shutdown()


def test_a_controlnet_chosen_in_the_library_switches_control_on(live_window, tmp_path):
    window = live_window
    folder = str(tmp_path / "my-controlnet")
    window._use_controlnet(folder)
    control = window.panel.settings()["control"]
    assert control is not None and control["reference"] == folder


def test_an_eraser_stroke_starts_no_frame(qtbot, live_window, tmp_path, photo):
    """A live frame ignores the mask, so marking it must not cost a frame."""
    window = live_window
    open_photo(qtbot, window, tmp_path, photo)
    window.live.set_enabled(True)
    wait_frame(qtbot, window, 1)  # switching on shows the current state once
    window.set_tool(CanvasTool.ERASE)
    drag(window.canvas, [(20, 40), (90, 40)])
    qtbot.wait(400)
    assert len(frames(window)) == 1
    stroke(window, 60)
    wait_frame(qtbot, window, 2)


def test_the_panels_seed_wins_and_a_new_one_gives_a_new_frame(qtbot, live_window, tmp_path, photo):
    window = live_window
    open_photo(qtbot, window, tmp_path, photo)
    window.panel.apply({"seed": 1234})
    window.live.set_enabled(True)
    wait_frame(qtbot, window, 1)
    assert frames(window)[-1].seed == 1234
    window.panel.apply({"seed": 99})  # the panel says a setting changed: a new frame follows
    qtbot.waitUntil(lambda: frames(window)[-1].seed == 99, timeout=10000)
