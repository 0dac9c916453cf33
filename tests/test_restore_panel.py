"""The Restore panel in the window: detect -> editable mask -> repair, and the fixes, each undoable."""

import cv2
import numpy as np
from PySide6.QtCore import QSettings

from sdstudio.core.document import Document
from sdstudio.engine.fake import FakeEngine
from sdstudio.qt.main_window import MainWindow


def scratched_scan():
    rng = np.random.default_rng(3)
    clean = np.clip(rng.normal(140, 6, (240, 320)), 0, 255).astype(np.uint8)
    clean = cv2.GaussianBlur(clean, (5, 5), 0)
    damaged = clean.copy()
    cv2.line(damaged, (20, 40), (300, 200), 250, 2)
    return clean, damaged


def make(qtbot, tmp_path, engine=None):
    window = MainWindow(
        settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
        engine_factory=FakeEngine if engine is None else (lambda: engine),
    )
    window.confirm_discard = lambda: True
    qtbot.addWidget(window)
    return window


def test_detect_then_repair_then_undo(qtbot, tmp_path):
    window = make(qtbot, tmp_path)
    clean, damaged = scratched_scan()
    window.set_document(Document(damaged.copy()))
    document = window.session.document
    panel = window.restore_panel
    panel.detect()
    qtbot.waitUntil(lambda: document.has_mask and not panel.busy, timeout=10000)
    on_line = document.mask[damaged > 200]
    assert (on_line > 0).mean() > 0.8  # the scratch is proposed
    assert (document.mask > 0).mean() < 0.05  # and little else
    panel.repair()
    qtbot.waitUntil(lambda: not panel.busy and not document.has_mask, timeout=10000)
    assert document.image.ndim == 2  # grey stays grey
    error_before = np.abs(damaged.astype(int) - clean).mean()
    error_after = np.abs(document.image.astype(int) - clean).mean()
    assert error_after < error_before / 3
    window.undo()  # one step back: damage and the mask return
    np.testing.assert_array_equal(document.image, damaged)
    assert document.has_mask
    window.close()


def test_fixes_are_undoable_steps_and_repair_needs_a_mask(qtbot, tmp_path):
    window = make(qtbot, tmp_path)
    faded = np.full((60, 80, 3), (120, 110, 100), np.uint8)
    faded[:, 40:] = (150, 140, 130)
    window.set_document(Document(faded.copy()))
    document = window.session.document
    panel = window.restore_panel
    panel.repair()
    assert "Nothing to repair" in window.statusBar().currentMessage()
    panel._adjust("Auto levels", "auto_levels")
    qtbot.waitUntil(lambda: not panel.busy and document.can_undo, timeout=10000)
    assert document.image.max() > faded.max() and document.undo_label == "Auto levels"
    window.undo()
    np.testing.assert_array_equal(document.image, faded)
    window.close()


def test_a_result_is_dropped_if_the_picture_changed_meanwhile(qtbot, tmp_path):
    window = make(qtbot, tmp_path)
    _clean, damaged = scratched_scan()
    window.set_document(Document(damaged.copy()))
    document = window.session.document
    panel = window.restore_panel
    panel.detect()
    document.invert_mask()  # an edit before the detection's result reaches the GUI thread
    qtbot.waitUntil(lambda: not panel.busy, timeout=10000)
    assert (document.mask == 255).all()  # the inverted empty mask, not the proposal
    assert "changed while this ran" in window.statusBar().currentMessage()
    window.close()


def test_repair_shows_progress_and_cancel_leaves_the_picture_unchanged(
    qtbot, tmp_path, monkeypatch
):
    import threading

    import sdstudio.engine.restore as restore_module

    window = make(qtbot, tmp_path)
    _clean, damaged = scratched_scan()
    window.set_document(Document(damaged.copy()))
    document = window.session.document
    mask = np.zeros_like(damaged)
    for x in range(10, 310, 30):  # ten separate spots: ten windows, ten progress steps
        mask[100:104, x : x + 4] = 255
    document.set_mask(mask)
    panel = window.restore_panel
    gate = threading.Event()
    real = restore_module._repair_window
    calls = []

    def slow(*args):  # hold the worker in its first window until the test lets it go
        calls.append(1)
        gate.wait(10)
        return real(*args)

    monkeypatch.setattr(restore_module, "_repair_window", slow)
    panel.repair()
    assert panel.busy and not panel.repair_button.isEnabled()
    assert panel.progress.isVisibleTo(panel) and panel.cancel_button.isVisibleTo(panel)
    qtbot.waitUntil(lambda: panel.progress.maximum() == 10, timeout=5000)
    panel.cancel_button.click()
    gate.set()
    qtbot.waitUntil(lambda: not panel.busy, timeout=10000)
    assert "cancelled" in window.statusBar().currentMessage().lower()
    assert len(calls) == 1  # it stopped at the next window, not after all ten
    np.testing.assert_array_equal(document.image, damaged)
    assert document.has_mask and document.undo_label != "Repair damage"  # nothing applied
    assert not panel.cancel_button.isVisibleTo(panel) and not panel.progress.isVisibleTo(panel)
    window.close()


def test_large_losses_go_to_the_model_when_asked(qtbot, tmp_path):
    engine = FakeEngine(steps=2)
    window = make(qtbot, tmp_path, engine)
    _clean, damaged = scratched_scan()
    window.set_document(Document(damaged.copy()))
    document = window.session.document
    mask = np.zeros_like(damaged)
    mask[180:, :60] = 255  # a torn corner
    mask[20:23, 100:300] = 255  # and a scratch
    document.set_mask(mask)
    panel = window.restore_panel
    panel.use_model.setChecked(True)
    panel.repair()
    qtbot.waitUntil(lambda: len(window.session.candidates) == 1, timeout=10000)
    (request,) = engine.requests
    assert request.mode.value == "remove" and request.keep_tone
    assert "old photograph" in request.prompt and request.strength == 0.6
    np.testing.assert_array_equal(
        request.mask > 0, (np.arange(240)[:, None] >= 180) & (np.arange(320) < 60)
    )
    assert (document.image[20:23, 100:300] != damaged[20:23, 100:300]).any()  # scratch repaired
    window.close()


def test_without_the_model_large_losses_are_filled_and_the_panel_says_so(qtbot, tmp_path):
    window = make(qtbot, tmp_path)
    _clean, damaged = scratched_scan()
    window.set_document(Document(damaged.copy()))
    document = window.session.document
    mask = np.zeros_like(damaged)
    mask[180:, :60] = 255
    document.set_mask(mask)
    window.restore_panel.repair()
    qtbot.waitUntil(lambda: not window.restore_panel.busy and not document.has_mask, timeout=10000)
    assert "Redraw large losses with the model" in window.statusBar().currentMessage()
    assert not window.session.candidates
    window.close()
