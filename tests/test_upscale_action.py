"""Image > Upscale in the editor, and the document's undoable change of size under it."""

import threading

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from test_upscale import compact, save_state

from sdstudio.core.brush import BrushSettings, Tool
from sdstudio.core.document import Document
from sdstudio.core.region import Box
from sdstudio.engine.fake import FakeEngine
from sdstudio.qt.main_window import MainWindow
from sdstudio.qt.tasks import wait_for_background


def picture(height=40, width=60, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# -- the document -------------------------------------------------------------------------------


def test_replace_image_scales_mask_sketch_region_and_undo_restores_exactly():
    original = picture()
    document = Document(original.copy())
    document.mask[10:20, 30:40] = 255
    stroke = document.begin_stroke(Tool.PAINT, BrushSettings(size=6), (255, 0, 0))
    stroke.add(5, 5)
    stroke.end()
    sketch = document.sketch.copy()
    document.set_region(Box(6, 4, 30, 20))
    sizes = []
    document.add_size_listener(lambda: sizes.append(document.image.shape))
    bigger = picture(80, 120, seed=1)

    document.replace_image(bigger, "Upscale 2x")
    assert document.image.shape == (80, 120, 3) and (document.image == bigger).all()
    expected_mask = np.zeros((80, 120), np.uint8)
    expected_mask[20:40, 60:80] = 255
    assert (document.mask == expected_mask).all()
    assert document.sketch.shape == (80, 120, 4) and document.sketch[10, 10, 3] > 0
    assert document.region == Box(12, 8, 60, 40)
    assert sizes == [(80, 120, 3)] and document.undo_label == "Upscale 2x"

    document.undo()
    assert (document.image == original).all() and document.image.shape == (40, 60, 3)
    assert document.mask[10:20, 30:40].all() and document.mask.sum() == 100 * 255
    assert (document.sketch == sketch).all() and document.region == Box(6, 4, 30, 20)
    assert document.can_undo and document.undo_label != "Upscale 2x"  # the stroke's step
    document.redo()
    assert (document.image == bigger).all() and document.region == Box(12, 8, 60, 40)
    assert sizes == [(80, 120, 3), (40, 60, 3), (80, 120, 3)]


def test_edits_after_the_size_change_undo_and_redo_in_order():
    document = Document(picture())
    document.replace_image(picture(80, 120, seed=1))
    stroke = document.begin_stroke(Tool.PAINT, BrushSettings(size=8), (0, 255, 0))
    stroke.add(100, 70)
    stroke.end()  # the sketch is made after the size change
    document.mask[:] = 0
    document.set_mask(np.full((80, 120), 255, np.uint8))
    painted = document.sketch.copy()
    for _ in range(3):
        document.undo()
    assert document.image.shape == (40, 60, 3) and not document.sketch.any()
    for _ in range(3):
        document.redo()
    assert document.image.shape == (80, 120, 3)
    assert (document.sketch == painted).all() and document.mask.all()


def test_a_wrong_picture_is_refused():
    document = Document(picture())
    with pytest.raises(ValueError, match="uint8 or uint16"):
        document.replace_image(np.zeros((4, 4, 3), np.float32))
    assert not document.can_undo


# -- the editor ---------------------------------------------------------------------------------


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("models/folder", str(tmp_path / "models"))
    win = MainWindow(settings=settings, engine_factory=lambda: FakeEngine(steps=2))
    win.confirm_discard = lambda: True
    win.models_folder = tmp_path / "models"
    qtbot.addWidget(win)
    win.show()
    yield win
    wait_for_background()
    win.generation.shutdown()
    win.fill.shutdown()


def action(window, text):
    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Image")
    return next(a for a in menu.actions() if a.text() == text)


def upscale(qtbot, window, text="Upscale &2x"):
    with qtbot.waitSignal(window.upscaler.finished, timeout=30000):
        action(window, text).trigger()


def test_menu_upscale_2x_then_one_undo_restores_the_original(qtbot, window, tmp_path):
    save_state(compact(2), tmp_path / "models" / "upscalers" / "RealESRGAN_x2plus.safetensors")
    original = picture()
    document = Document(original.copy())
    document.mask[8:16, 8:24] = 255
    window.set_document(document)
    messages = []
    window.upscaler.status.connect(messages.append)

    upscale(qtbot, window)
    assert document.image.shape == (80, 120, 3) and document.mask.shape == (80, 120)
    assert document.mask[16:32, 16:48].all() and document.mask.sum() == 16 * 32 * 255
    assert window.canvas.document is document and window.canvas._rgba.shape[:2] == (80, 120)
    assert "RealESRGAN_x2plus" in messages[-1] and "120 x 80" in messages[-1]
    assert window.undo_action.isEnabled() or document.can_undo

    window.undo()
    assert (document.image == original).all() and document.mask.sum() == 8 * 16 * 255
    assert window.canvas._rgba.shape[:2] == (40, 60) and not document.can_undo
    assert window.statusBar().currentMessage() == "The picture is 60 x 40 now."
    window.redo()
    assert document.image.shape == (80, 120, 3) and window.canvas._rgba.shape[:2] == (80, 120)


def test_lanczos_when_no_model_is_installed_says_where_to_get_one(qtbot, window):
    document = Document(picture())
    window.set_document(document)
    messages = []
    window.upscaler.status.connect(messages.append)
    upscale(qtbot, window, "Upscale &4x")
    assert document.image.shape == (160, 240, 3)
    assert "Lanczos" in messages[-1] and "Model library" in messages[-1]


def test_cancel_leaves_the_picture_untouched(qtbot, window, tmp_path, monkeypatch):
    from sdstudio.engine.specialists import upscale as engine

    save_state(compact(2), tmp_path / "models" / "upscalers" / "RealESRGAN_x2plus.safetensors")
    original = picture()
    document = Document(original.copy())
    window.set_document(document)
    started, release = threading.Event(), threading.Event()
    real = engine.run_tiled

    def slow(*args, **kwargs):  # waits in the first tile until the test has pressed Esc
        function = args[1]

        def tile(piece):
            started.set()
            release.wait(10)
            return function(piece)

        return real(args[0], tile, *args[2:], **kwargs)

    monkeypatch.setattr(engine, "run_tiled", slow)
    with qtbot.waitSignal(window.upscaler.finished, timeout=30000):
        action(window, "Upscale &2x").trigger()
        assert started.wait(10)
        assert window.upscaler.cancel()
        release.set()
    assert (document.image == original).all() and not document.can_undo
    assert window.canvas._rgba.shape[:2] == (40, 60)
