"""The editor window, driven as a person would: strokes, generate, previews, accept, undo."""

import subprocess
import sys
import threading

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, QSettings, Qt
from PySide6.QtGui import QAction, QMouseEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from sdstudio.core.document import Document
from sdstudio.core.imageio import load_image, read_parameters, save_image
from sdstudio.core.mask import blend_alpha
from sdstudio.engine.fake import FakeEngine
from sdstudio.qt.canvas import CanvasTool
from sdstudio.qt.main_window import MainWindow


@pytest.fixture
def make_window(qtbot, tmp_path):
    windows = []

    def make(engine=None):
        settings = QSettings(
            str(tmp_path / f"settings{len(windows)}.ini"), QSettings.Format.IniFormat
        )
        window = MainWindow(settings=settings, engine_factory=lambda: engine or FakeEngine(steps=4))
        window.confirm_discard = lambda: True
        qtbot.addWidget(window)
        window.resize(1000, 700)
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.generation.shutdown()
        window.fill.shutdown()


def send_mouse(widget, kind, point: QPointF, buttons=Qt.MouseButton.LeftButton):
    button = Qt.MouseButton.LeftButton if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton
    event = QMouseEvent(
        kind, point, widget.mapToGlobal(point), button, buttons, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(widget, event)


def drag(canvas, points_in_image):
    widget_points = [canvas.to_widget(QPointF(x, y)) for x, y in points_in_image]
    send_mouse(canvas, QEvent.Type.MouseButtonPress, widget_points[0])
    for point in widget_points[1:]:
        send_mouse(canvas, QEvent.Type.MouseMove, point)
    send_mouse(canvas, QEvent.Type.MouseButtonRelease, widget_points[-1], Qt.MouseButton.NoButton)


def open_photo(qtbot, window, tmp_path, photo):
    path = tmp_path / "photo.png"
    save_image(path, photo)
    window.open_path(path)
    qtbot.waitUntil(lambda: getattr(window.session.document, "path", None) == path, timeout=5000)
    return window.session.document


def remove_masked(qtbot, window, document, mask, timeout=5000):
    """Mask ``mask`` and run Remove (the model-free fill) until its result waits in the strip."""
    document.set_mask(mask)
    count = len(window.session.candidates)
    window.session.remove()
    qtbot.waitUntil(lambda: len(window.session.candidates) > count, timeout=timeout)


def test_fast_stroke_masks_its_whole_path(qtbot, make_window, tmp_path, photo):
    window = make_window()
    document = open_photo(qtbot, window, tmp_path, photo)
    window.set_tool(CanvasTool.ERASE)
    window.set_brush_size(6)
    drag(window.canvas, [(20, 20), (180, 110)])  # one fast move across the picture
    for t in np.linspace(0, 1, 50):
        x, y = 20 + t * 160, 20 + t * 90
        assert document.mask[int(round(y)), int(round(x))] > 0, (x, y)
    assert document.mask[120, 20] == 0
    np.testing.assert_array_equal(document.image, photo)  # erasing never touches the picture
    assert window.session.mode().value == "inpaint"


def test_paint_then_undo_restores_sketch_and_picture_bit_exact(qtbot, make_window, tmp_path, photo):
    window = make_window()
    document = open_photo(qtbot, window, tmp_path, photo)
    window.set_tool(CanvasTool.PAINT)
    window.canvas.paint_color = (255, 255, 0)
    drag(window.canvas, [(30, 30), (100, 60), (150, 30)])
    painted = document.sketch.copy()  # the brush paints on the sketch above the picture
    assert tuple(painted[60, 100]) == (255, 255, 0, 255)
    np.testing.assert_array_equal(document.image, photo)
    window.undo()
    assert not document.sketch.any()
    np.testing.assert_array_equal(document.image, photo)
    window.redo()
    np.testing.assert_array_equal(document.sketch, painted)


def test_generate_previews_candidate_accept_undo(qtbot, make_window, tmp_path, photo, edge_mask):
    # steps slower than the 30 fps preview throttle, as real steps are: every preview arrives
    window = make_window(FakeEngine(steps=4, color=(0, 0, 255), delay=0.05))
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    shown = []
    original_set_preview = window.canvas.set_preview

    def spy(image, box=None):
        if image is not None:
            assert threading.current_thread() is threading.main_thread()  # no widget off-thread
            shown.append(box)
        original_set_preview(image, box)

    window.canvas.set_preview = spy
    window.session.generate()
    qtbot.waitUntil(lambda: len(window.session.candidates) == 1, timeout=5000)
    qtbot.waitUntil(lambda: not window.session.running, timeout=5000)
    assert len(shown) == 4  # one preview per step reached the canvas, in the generated box
    assert window.strip.list.count() == 1
    np.testing.assert_array_equal(document.image, photo)  # a candidate is not yet the picture
    assert window.session.accept()
    outside = blend_alpha(edge_mask, 4) == 0
    np.testing.assert_array_equal(document.image[outside], photo[outside])
    assert (document.image[edge_mask > 0] == (0, 0, 255)).all()
    assert not document.has_mask  # accepted: the erased area is filled
    window.undo()  # one step undoes the whole accept
    np.testing.assert_array_equal(document.image, photo)
    np.testing.assert_array_equal(document.mask, edge_mask)


def test_batch_gives_candidates_to_step_through(qtbot, make_window, tmp_path, photo, edge_mask):
    window = make_window(FakeEngine(steps=2))
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    window.panel.apply({"batch_count": 3, "seed": 10})
    said = []
    window.session.status.connect(said.append)
    window.session.generate()
    qtbot.waitUntil(lambda: len(window.session.candidates) == 3, timeout=5000)
    assert [c.seed for c in window.session.candidates] == [10, 11, 12]
    assert [m[:20] for m in said if m.startswith("Result")] == [
        "Result 1 (seed 10): ",
        "Result 2 (seed 11): ",
        "Result 3 (seed 12): ",
    ]
    window.session.step_candidate(1)
    assert window.session.current == 0  # wraps from the last to the first
    window.session.discard()
    assert len(window.session.candidates) == 2
    window.session.generate()  # re-generating keeps the earlier candidates
    qtbot.waitUntil(lambda: len(window.session.candidates) == 5, timeout=5000)


def test_cancel_mid_run_changes_nothing(qtbot, make_window, tmp_path, photo, edge_mask):
    window = make_window(FakeEngine(steps=100, delay=0.02))
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    steps = []
    window.generation.step.connect(lambda i, n: steps.append(i))
    window.session.generate()
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=5000)
    window.session.cancel()
    qtbot.waitUntil(lambda: not window.session.running, timeout=5000)
    assert window.session.candidates == []
    np.testing.assert_array_equal(document.image, photo)
    assert "Cancelled" in window.statusBar().currentMessage()


def test_closing_during_a_run_stops_the_worker(qtbot, make_window, tmp_path, photo, edge_mask):
    window = make_window(FakeEngine(steps=1000, delay=0.01))
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    steps = []
    window.generation.step.connect(lambda i, n: steps.append(i))
    window.session.generate()
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=5000)
    assert window.close()
    assert not window.generation.is_running() and not window.fill.is_running()


def test_remove_without_model_then_export_carries_parameters(
    qtbot, make_window, tmp_path, photo, edge_mask
):
    window = make_window()
    document = open_photo(qtbot, window, tmp_path, photo)
    said = []
    window.session.status.connect(said.append)
    remove_masked(qtbot, window, document, edge_mask)
    # the status bar names the fill that ran, not a seed no fill uses
    assert "Result 1 (Smooth shading + PatchMatch texture (no model)): " in [m[:59] for m in said]
    window.session.accept()
    out = tmp_path / "out.png"
    window.export_to(out)
    qtbot.waitUntil(lambda: out.exists() and read_parameters(out) is not None, timeout=5000)
    result = load_image(out)
    np.testing.assert_array_equal(result, document.image)
    assert "Sampler: Smooth shading + PatchMatch texture" in read_parameters(out)
    assert window.windowTitle().startswith("*")  # an export is not a save of the project


def test_project_saves_and_reopens_picture_mask_and_parameters(
    qtbot, make_window, tmp_path, photo, edge_mask
):
    window = make_window()
    document = open_photo(qtbot, window, tmp_path, photo)
    remove_masked(qtbot, window, document, edge_mask)
    window.session.accept()
    document.set_mask(edge_mask[::-1].copy())  # a mask to come back too
    parameters = window.session.parameters
    project = tmp_path / "work.ora"
    window.save_to(project)
    qtbot.waitUntil(lambda: not window.windowTitle().startswith("*"), timeout=5000)
    assert window.windowTitle().startswith("work.ora") and document.path == project

    other = make_window()
    other.open_path(project)
    qtbot.waitUntil(lambda: getattr(other.session.document, "path", None) == project, timeout=5000)
    reopened = other.session.document
    np.testing.assert_array_equal(reopened.image, document.image)
    np.testing.assert_array_equal(reopened.mask, document.mask)
    assert other.session.parameters == parameters and parameters
    assert not other.windowTitle().startswith("*")


def test_save_of_a_picture_asks_where_and_offers_a_project_beside_it(
    qtbot, make_window, tmp_path, photo, monkeypatch
):
    from PySide6.QtWidgets import QFileDialog

    window = make_window()
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(np.full(photo.shape[:2], 255, np.uint8))
    offered = []

    def ask(_parent, _title, start, _filter):
        offered.append(start)
        return start, ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", ask)
    assert window.save()
    qtbot.waitUntil(lambda: not window.windowTitle().startswith("*"), timeout=5000)
    assert offered == [str(tmp_path / "photo.ora")] and (tmp_path / "photo.ora").exists()


def test_closing_with_changes_can_save_the_project_first(
    qtbot, make_window, tmp_path, photo, monkeypatch
):
    from PySide6.QtWidgets import QFileDialog

    window = make_window()
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(np.full(photo.shape[:2], 255, np.uint8))
    target = tmp_path / "kept.ora"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_args: (str(target), ""))
    monkeypatch.setattr(QMessageBox, "question", lambda *_a: QMessageBox.StandardButton.Save)
    assert window._ask_discard()
    assert target.exists()  # saved before the answer came back: nothing is lost on quitting
    assert not document.modified


def test_unreadable_file_is_a_message_not_a_crash(qtbot, make_window, tmp_path):
    window = make_window()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a picture")
    window.open_path(bad)
    qtbot.waitUntil(lambda: getattr(window, "error_box", None) is not None, timeout=5000)
    assert "broken.png" in window.error_box.text() and window.session.document is None


def test_generation_failure_is_shown_and_changes_nothing(
    qtbot, make_window, tmp_path, photo, edge_mask
):
    window = make_window(FakeEngine(steps=3, fail_at=2))
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    window.session.generate()
    qtbot.waitUntil(lambda: getattr(window, "error_box", None) is not None, timeout=5000)
    assert "step 2" in window.error_box.text()
    qtbot.waitUntil(lambda: not window.session.running, timeout=5000)
    assert window.session.candidates == [] and np.array_equal(document.image, photo)


def test_mode_follows_the_document(qtbot, make_window, tmp_path, photo, edge_mask):
    window = make_window()
    window.new_canvas()
    assert window.session.mode().value == "txt2img"
    document = open_photo(qtbot, window, tmp_path, photo)
    assert window.session.mode().value == "img2img"
    document.set_mask(edge_mask)
    assert window.session.mode().value == "inpaint"


def test_settings_persist_between_windows(qtbot, tmp_path):
    path = str(tmp_path / "persist.ini")
    first = MainWindow(
        settings=QSettings(path, QSettings.Format.IniFormat), engine_factory=FakeEngine
    )
    qtbot.addWidget(first)
    first.confirm_discard = lambda: True
    first.set_brush_size(77)
    first.panel.apply({"prompt": "a lighthouse", "steps": 33})
    first.close()
    second = MainWindow(
        settings=QSettings(path, QSettings.Format.IniFormat), engine_factory=FakeEngine
    )
    qtbot.addWidget(second)
    second.confirm_discard = lambda: True
    assert second.canvas.brush.size == 77
    assert second.panel.settings()["prompt"] == "a lighthouse"
    assert second.panel.settings()["steps"] == 33
    second.close()


def test_end_to_end_with_a_tiny_pipeline(
    qtbot, make_window, tmp_path, photo, edge_mask, sd1_inpaint_model
):
    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    window = make_window(DiffusersEngine(PipelineCache(device="cpu")))
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    window.panel.apply({"model": sd1_inpaint_model, "steps": 2, "strength": 1.0, "seed": 3})
    previews = []
    window.generation.preview.connect(lambda image, box: previews.append(box))
    window.session.generate()
    qtbot.waitUntil(lambda: len(window.session.candidates) == 1, timeout=60000)
    assert previews
    window.session.accept()
    outside = blend_alpha(edge_mask, 4) == 0
    np.testing.assert_array_equal(document.image[outside], photo[outside])


def test_window_appears_before_torch_is_imported(tmp_path):
    code = (
        "import sys\n"
        "from PySide6.QtCore import QSettings\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from sdstudio.qt.main_window import MainWindow\n"
        "app = QApplication([])\n"
        f"w = MainWindow(settings=QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat))\n"
        "w.show(); app.processEvents()\n"
        "print('torch' in sys.modules, 'diffusers' in sys.modules, w.isVisible())\n"
        "w.confirm_discard = lambda: True; w.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert out.stdout.split() == ["False", "False", "True"], out.stderr


def test_document_blank_is_white():
    document = Document.blank(64, 48)
    assert document.image.shape == (48, 64, 3) and (document.image == 255).all()


def test_missing_hub_model_is_downloaded_with_progress_then_generated(
    qtbot, make_window, tmp_path, photo, edge_mask, monkeypatch
):
    window = make_window(FakeEngine(steps=2))
    window.checks_downloads = True  # as with the real engine
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    window.panel.apply({"model": "someone/not-downloaded"})
    monkeypatch.setattr(
        "sdstudio.qt.model_actions.needs_download", lambda ref: ref == "someone/not-downloaded"
    )
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    monkeypatch.setattr(
        "sdstudio.qt.model_actions.QMessageBox.question", lambda *a, **k: answers.pop(0)
    )
    fetched = []

    def fake_download(repo_id, report, cancel):
        for done in (100, 200, 300):
            report(done, 300, 50.0)
        fetched.append(repo_id)
        return tmp_path / "hub-folder"

    monkeypatch.setattr("sdstudio.engine.models.downloads.download_model", fake_download)
    window.generate()  # answered No: nothing happens
    assert fetched == [] and window.session.candidates == [] and not window.session.running
    window.generate()  # answered Yes: download, then generate
    qtbot.waitUntil(lambda: len(window.session.candidates) == 1, timeout=5000)
    assert fetched == ["someone/not-downloaded"] and window.download is None


def test_remove_and_refine_sends_a_gentle_remove_to_the_model(
    qtbot, make_window, tmp_path, photo, edge_mask
):
    engine = FakeEngine(steps=2)
    window = make_window(engine)
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    window.panel.apply({"strength": 0.9})
    window.remove_and_refine()
    qtbot.waitUntil(lambda: len(window.session.candidates) == 1, timeout=5000)
    (request,) = engine.requests
    assert request.mode.value == "remove" and request.strength == 0.5


def test_the_remove_fill_is_chosen_in_the_menu_and_remembered(qtbot, tmp_path, photo, edge_mask):
    from PySide6.QtCore import QSettings

    from sdstudio.qt.main_window import MainWindow

    def window_with(settings_file):
        settings = QSettings(str(settings_file), QSettings.Format.IniFormat)
        window = MainWindow(settings=settings, engine_factory=FakeEngine)
        window.confirm_discard = lambda: True
        qtbot.addWidget(window)
        return window

    window = window_with(tmp_path / "s.ini")
    (menu_action,) = [
        a for a in window.findChildren(QAction) if a.text().replace("&", "") == "OpenCV Telea"
    ]
    menu_action.trigger()
    document = open_photo(qtbot, window, tmp_path, photo)
    remove_masked(qtbot, window, document, edge_mask, timeout=10000)
    assert "OpenCV Telea" in window.session.candidates[0].result.parameters
    window.close()
    assert window_with(tmp_path / "s.ini").fill_method == "telea"


def test_autosave_after_an_accepted_result_and_never_over_the_persons_file(
    qtbot, make_window, tmp_path, photo, edge_mask
):
    from sdstudio.core.project import load_project
    from sdstudio.core.recovery import RecoverySession, orphans

    window = make_window()
    recovery = RecoverySession(tmp_path / "recovery")
    window.start_autosave(recovery)
    document = open_photo(qtbot, window, tmp_path, photo)
    original = (tmp_path / "photo.png").read_bytes()
    assert not window.autosave_now()  # nothing changed yet: nothing written
    remove_masked(qtbot, window, document, edge_mask)
    window.session.accept()  # an accepted result is autosaved at once
    qtbot.waitUntil(lambda: recovery.snapshot_path.exists() and not window._autosave_busy)
    snapshot = load_project(recovery.snapshot_path)
    np.testing.assert_array_equal(snapshot.image, document.image)
    assert snapshot.extra["parameters"] == window.session.parameters
    assert (tmp_path / "photo.png").read_bytes() == original
    assert not window.autosave_now()  # nothing new since: not written again
    document.set_mask(edge_mask)
    assert window.autosave_now()
    qtbot.waitUntil(lambda: not window._autosave_busy)
    assert orphans(tmp_path / "recovery") == []  # this editor is alive
    window.stop_autosave()
    assert list((tmp_path / "recovery").iterdir()) == []


def test_start_up_offers_what_a_crashed_editor_kept(qtbot, make_window, tmp_path, photo):
    from PySide6.QtWidgets import QMessageBox

    from sdstudio.core.recovery import RecoverySession, orphans

    folder = tmp_path / "recovery"
    crashed = RecoverySession(folder)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[10:20, 10:30] = 255
    crashed.autosave(photo, mask, {"parameters": "Steps: 20"}, tmp_path / "trip.ora")
    crashed._handle.close()  # the process died: its lock is gone, its files are not

    window = make_window()
    window.start_autosave(RecoverySession(tmp_path / "mine"))
    asked = []
    window.ask_recovery = lambda orphan: asked.append(orphan) or QMessageBox.StandardButton.Open
    assert window.offer_recovery(folder) is not None
    qtbot.waitUntil(lambda: window.session.document is not None, timeout=5000)
    document = window.session.document
    np.testing.assert_array_equal(document.image, photo)
    np.testing.assert_array_equal(document.mask, mask)
    assert document.modified and window.session.parameters == "Steps: 20"
    assert document.path == tmp_path / "trip.ora"  # Ctrl+S puts it back where it belongs
    assert "trip.ora" in asked[0].describe()
    qtbot.waitUntil(lambda: orphans(folder) == [], timeout=5000)  # kept by this editor now
    assert window.recovery.snapshot_path.exists()
    window.stop_autosave()


def test_a_discarded_recovery_is_not_offered_again(qtbot, make_window, tmp_path, photo):
    from PySide6.QtWidgets import QMessageBox

    from sdstudio.core.recovery import RecoverySession, orphans

    folder = tmp_path / "recovery"
    crashed = RecoverySession(folder)
    crashed.autosave(photo, np.zeros(photo.shape[:2], np.uint8))
    crashed._handle.close()
    window = make_window()
    window.ask_recovery = lambda _orphan: QMessageBox.StandardButton.Ignore
    assert window.offer_recovery(folder) is None and len(orphans(folder)) == 1
    window.ask_recovery = lambda _orphan: QMessageBox.StandardButton.Discard
    assert window.offer_recovery(folder) is None and orphans(folder) == []
    assert window.session.document is None


def test_a_picture_from_another_tool_offers_its_settings(qtbot, make_window, tmp_path, photo):
    import json

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    graph = {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 77,
                "steps": 28,
                "cfg": 5.5,
                "sampler_name": "euler_ancestral",
                "scheduler": "normal",
                "denoise": 1.0,
                "positive": ["6", 0],
                "negative": ["7", 0],
            },
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red kite over dunes"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "people"}},
    }
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    path = tmp_path / "comfy.png"
    Image.fromarray(photo).save(path, pnginfo=info)
    window = make_window()
    window.open_path(path)
    qtbot.waitUntil(lambda: window.provenance is not None, timeout=5000)
    assert "ComfyUI" in window.statusBar().currentMessage()
    window.use_provenance()
    settings = window.panel.settings()
    assert settings["prompt"] == "a red kite over dunes"
    assert settings["negative_prompt"] == "people"
    assert (settings["steps"], settings["guidance"], settings["seed"]) == (28, 5.5, 77)
    assert settings["scheduler"].value == "Euler a"
    window.set_document(Document.blank(64, 64))  # a new picture forgets it
    window.use_provenance()
    assert "no generation settings" in window.statusBar().currentMessage()


def test_undo_and_results_stay_within_their_memory_budgets(
    qtbot, make_window, tmp_path, photo, edge_mask
):
    from sdstudio.core.region import Box

    (tmp_path / "settings0.ini").write_text("[memory]\nundo_mib=16\nresults_mib=16\n")
    window = make_window()
    assert window.session.candidate_budget == 16 * 2**20
    document = Document(np.zeros((1500, 2000, 3), np.uint8))  # 9 MB a full change
    window.set_document(document)
    assert document.history.budget_bytes == 16 * 2**20
    for value in (10, 20, 30):
        document.apply_patch(Box(0, 0, 2000, 1500), np.full((1500, 2000, 3), value, np.uint8))
    assert document.history.dropped >= 1 and document.history.can_undo
    assert "undo step(s) were dropped" in window.statusBar().currentMessage()

    document = open_photo(qtbot, window, tmp_path, photo)
    window.session.candidate_budget = 1  # every new result pushes the older ones out
    messages = []
    window.session.status.connect(messages.append)
    for _ in range(2):
        document.set_mask(edge_mask)
        window.session.remove()
        qtbot.waitUntil(lambda: not window.session.running, timeout=5000)
    assert len(window.session.candidates) == 1
    assert any("were dropped to keep the results within" in m for m in messages)


def test_closing_during_an_autosave_leaves_nothing_to_recover(
    qtbot, make_window, tmp_path, photo, edge_mask
):
    import time

    from sdstudio.core.recovery import RecoverySession

    window = make_window()
    folder = tmp_path / "recovery"
    recovery = RecoverySession(folder)
    write = recovery.autosave
    recovery.autosave = lambda *args: (time.sleep(0.5), write(*args))  # a large picture
    window.start_autosave(recovery)
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    assert window.autosave_now()  # the write is under way on a worker ...
    assert window.close()  # ... and the window closes once it is done, cleaning up after it
    from sdstudio.qt.tasks import wait_for_background

    assert wait_for_background()  # a write that outlived the close would show up now
    assert list(folder.iterdir()) == []


def test_a_colour_managed_picture_keeps_its_profile_through_project_and_export(
    qtbot, make_window, tmp_path, photo
):
    import os

    from PIL import Image

    profile_path = "/usr/share/color/icc/ghostscript/a98.icc"
    if not os.path.exists(profile_path):
        pytest.skip("no Adobe RGB profile on this machine")
    with open(profile_path, "rb") as handle:
        profile = handle.read()
    Image.fromarray(photo).save(tmp_path / "scan.png", icc_profile=profile)
    window = make_window()
    window.open_path(tmp_path / "scan.png")
    qtbot.waitUntil(lambda: window.session.document is not None, timeout=5000)
    assert window.session.document.icc_profile == profile
    assert "to sRGB" in window.statusBar().currentMessage()
    window.save_to(tmp_path / "scan.ora")
    qtbot.waitUntil(lambda: (tmp_path / "scan.ora").exists(), timeout=5000)
    other = make_window()
    other.open_path(tmp_path / "scan.ora")
    qtbot.waitUntil(lambda: other.session.document is not None, timeout=5000)
    assert other.session.document.icc_profile == profile
    other.export_to(tmp_path / "scan.jpg")
    qtbot.waitUntil(lambda: (tmp_path / "scan.jpg").exists(), timeout=5000)
    with Image.open(tmp_path / "scan.jpg") as exported:
        assert exported.info.get("icc_profile") == profile


def test_waiting_results_are_kept_in_the_project(qtbot, make_window, tmp_path, photo, edge_mask):
    window = make_window()
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(edge_mask)
    for _ in range(2):
        window.session.remove()
        qtbot.waitUntil(lambda: not window.session.running, timeout=5000)
    kept = [c.result.patch.copy() for c in window.session.candidates]
    assert len(kept) == 2
    project = tmp_path / "waiting.ora"
    window.save_to(project)
    qtbot.waitUntil(lambda: not window.windowTitle().startswith("*"), timeout=5000)

    other = make_window()
    other.open_path(project)
    qtbot.waitUntil(lambda: len(other.session.candidates) == 2, timeout=5000)
    assert other.session.current == 0  # the first shown, as after generating
    assert "2 waiting result(s)" in other.statusBar().currentMessage()
    for candidate, patch in zip(other.session.candidates, kept, strict=True):
        np.testing.assert_array_equal(candidate.result.patch, patch)
        assert candidate.result.request.mode.value == "remove"
    assert other.session.accept()
    assert not other.session.document.has_mask  # accepted as a removal: the mask is cleared


def test_autosave_keeps_waiting_results_and_recovery_brings_them_back(
    qtbot, make_window, tmp_path, photo, edge_mask
):
    from PySide6.QtWidgets import QMessageBox

    from sdstudio.core.recovery import RecoverySession

    window = make_window()
    folder = tmp_path / "recovery"
    crashed = RecoverySession(folder)
    window.start_autosave(crashed)
    document = open_photo(qtbot, window, tmp_path, photo)
    remove_masked(qtbot, window, document, edge_mask)
    assert window.autosave_now()
    qtbot.waitUntil(lambda: not window._autosave_busy, timeout=5000)
    crashed._handle.close()  # the editor dies with a result waiting
    window.recovery = None

    other = make_window()
    other.ask_recovery = lambda _orphan: QMessageBox.StandardButton.Open
    assert other.offer_recovery(folder) is not None
    qtbot.waitUntil(lambda: len(other.session.candidates) == 1, timeout=5000)
    waiting = window.session.candidates[0].result.patch
    np.testing.assert_array_equal(other.session.candidates[0].result.patch, waiting)


def test_the_remove_fill_looks_for_lama_in_the_windows_models_folder(qtbot, tmp_path):
    """The library can move the models folder: Remove's engine must read the window's."""
    from sdstudio.qt.fill_menu import fill_engine_factory

    folder = tmp_path / "models"
    engine = fill_engine_factory(lambda: "auto", lambda: folder)()
    (folder / "specialists").mkdir(parents=True)
    assert engine.lama_model("auto") is None  # nothing installed there
    lama = folder / "specialists" / "big-lama.safetensors"
    seen = []
    import sdstudio.engine.specialists.lama as lama_module

    real = lama_module.find_lama
    lama_module.find_lama = lambda models: seen.append(models) or lama
    try:
        assert engine.lama_model("auto") == lama
    finally:
        lama_module.find_lama = real
    assert seen == [folder]
