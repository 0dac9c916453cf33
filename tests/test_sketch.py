"""The Sketch layer: the brush paints above the picture; undo, clear, show/hide, the control image
and the flattened picture generation takes, and the layer in projects and autosaves."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QEvent, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication
from test_project import bomb_png, foreign_ora, png_bytes, write_instead

from sdstudio.core.brush import BrushSettings, Tool
from sdstudio.core.document import Document
from sdstudio.core.errors import ProjectError
from sdstudio.core.imageio import load_image, save_image
from sdstudio.core.project import load_project
from sdstudio.core.project_save import save_project
from sdstudio.core.recovery import RecoverySession, orphans, restore
from sdstudio.core.region import Box
from sdstudio.core.sketch import (
    SketchLayer,
    composite,
    flatten_sketch,
    premultiply,
    sketch_control_image,
    unpremultiply,
)
from sdstudio.engine.fake import FakeEngine
from sdstudio.qt.canvas import CanvasTool
from sdstudio.qt.main_window import MainWindow

HARD = BrushSettings(size=20, hardness=1.0)


def sketch(doc, points, color=(255, 0, 0), settings=HARD):
    stroke = doc.begin_stroke(Tool.PAINT, settings, color)
    for point in points:
        stroke.add(*point)
    stroke.end()


@pytest.fixture
def doc(photo) -> Document:
    return Document(photo.copy())


# -- the layer in the document ----------------------------------------------------------------


def test_the_brush_paints_the_sketch_and_leaves_the_picture_bit_exact(doc, photo):
    sketch(doc, [(30.5, 30.5), (150.5, 90.5)], color=(10, 200, 30))
    np.testing.assert_array_equal(doc.image, photo)
    assert doc.sketch.shape == (130, 200, 4) and doc.sketch.dtype == np.uint8
    assert tuple(doc.sketch[60, 90]) == (10, 200, 30, 255)  # on the path: the colour, opaque
    assert not doc.sketch[120, 10].any()  # away from it: transparent
    assert not doc.has_mask and doc.undo_label == "Paint"


def test_the_sketch_is_made_only_by_the_first_brush_stroke(doc):
    stroke = doc.begin_stroke(Tool.ERASE, HARD)
    stroke.add(50, 50)
    stroke.end()
    assert doc.clear_sketch() is None and not doc.can_redo
    doc.set_sketch_visible(False)
    doc.undo()
    assert doc.sketch is None and doc.sketch_layer() is None
    assert "sketch" not in doc.layers
    sketch(doc, [(5, 5)])
    assert doc.layers["sketch"] is doc.sketch


def test_a_stroke_on_a_transparent_sketch_keeps_its_colour_at_half_opacity(doc):
    """Premultiplied: half coverage of red is (128, 0, 0, 128), not a darker straight red."""
    sketch(doc, [(60.5, 60.5)], color=(200, 100, 0), settings=BrushSettings(20, 1.0, 0.5))
    assert tuple(doc.sketch[60, 60]) == (100, 50, 0, 128)
    assert tuple(unpremultiply(doc.sketch)[60, 60]) == (199, 100, 0, 128)
    sketch(doc, [(60.5, 60.5)], color=(0, 0, 255), settings=BrushSettings(20, 1.0, 0.5))
    # blue half over it: colour over what was there, alpha 1 - (1 - 0.5)^2
    assert tuple(doc.sketch[60, 60]) == (50, 25, 128, 192)


def test_undo_and_redo_of_a_sketch_stroke_and_of_clear(doc, photo):
    sketch(doc, [(20, 20), (180, 110)])
    painted = doc.sketch.copy()
    doc.undo()
    assert not doc.sketch.any()
    doc.redo()
    np.testing.assert_array_equal(doc.sketch, painted)
    area = doc.clear_sketch()
    assert not doc.sketch.any() and doc.undo_label == "Clear sketch"
    assert area.contains(Box(20, 20, 180, 110))
    assert doc.history.entries == 2  # the stroke and the clear: one step each
    doc.undo()
    np.testing.assert_array_equal(doc.sketch, painted)
    doc.redo()
    assert not doc.sketch.any()
    np.testing.assert_array_equal(doc.image, photo)


def test_a_sketch_change_marks_the_document_modified_and_changes_its_version(doc):
    doc.mark_saved()
    saved = doc.version
    sketch(doc, [(40, 40)])
    assert doc.modified and doc.version != saved
    stroked = doc.version
    doc.set_sketch_visible(False)  # a view setting: no new pixels
    assert doc.version == stroked
    doc.clear_sketch()
    assert doc.version not in (saved, stroked)
    doc.undo()
    doc.undo()
    assert not doc.modified and doc.version == saved


def test_showing_and_hiding_tells_the_listeners_where(doc):
    seen = []
    doc.add_listener(seen.append)
    sketch(doc, [(40.5, 40.5)])
    seen.clear()
    assert doc.set_sketch_visible(False) == Box(31, 31, 50, 50) and not doc.sketch_visible
    assert seen == [Box(31, 31, 50, 50)]  # the strokes' area, not the whole picture
    assert doc.set_sketch_visible(False) is None and len(seen) == 1  # no change: no repaint


# -- what generation takes ----------------------------------------------------------------------


def test_the_control_image_is_the_strokes_white_on_black_weighted_by_alpha(doc):
    assert (sketch_control_image(doc) == 0).all()  # nothing sketched: all black
    sketch(doc, [(30.5, 30.5)], color=(0, 0, 0))  # black strokes are still white lines
    sketch(doc, [(130.5, 80.5)], color=(9, 9, 9), settings=BrushSettings(20, 1.0, 0.5))
    control = sketch_control_image(doc)
    assert control.shape == (130, 200, 3) and control.dtype == np.uint8
    assert tuple(control[30, 30]) == (255, 255, 255) and tuple(control[80, 130]) == (128,) * 3
    assert (control[doc.sketch[:, :, 3] == 0] == 0).all()
    np.testing.assert_array_equal(control[..., 1], doc.sketch[..., 3])
    crop = sketch_control_image(doc, Box(20, 25, 60, 45))
    np.testing.assert_array_equal(crop, control[25:45, 20:60])


def test_flatten_composites_the_sketch_over_the_picture(doc, photo):
    np.testing.assert_array_equal(flatten_sketch(doc), photo)  # nothing sketched
    sketch(doc, [(30.5, 30.5), (160.5, 100.5)], color=(255, 0, 128), settings=BrushSettings(30))
    flat = flatten_sketch(doc)
    alpha = doc.sketch[..., 3:].astype(np.float64) / 255
    want = np.floor(photo * (1 - alpha) + doc.sketch[..., :3] + 0.5)
    np.testing.assert_array_equal(flat, want.astype(np.uint8))
    empty = doc.sketch[..., 3] == 0
    np.testing.assert_array_equal(flat[empty], photo[empty])  # bit-exact where not sketched
    assert tuple(flat[65, 95]) == (255, 0, 128)  # the hard core: the colour
    np.testing.assert_array_equal(flatten_sketch(doc, Box(10, 20, 50, 60)), flat[20:60, 10:50])
    np.testing.assert_array_equal(doc.image, photo)  # a copy: the picture is untouched


@pytest.mark.parametrize(
    ("shape", "dtype", "inside"),
    [((20, 20), np.uint8, 76), ((20, 20, 3), np.uint16, (65535, 0, 0)), ((20, 20, 4), np.uint8, 0)],
)
def test_flatten_keeps_the_pictures_layout_and_depth(shape, dtype, inside):
    image = np.full(shape, 7, dtype)
    layer = np.zeros((20, 20, 4), np.uint8)
    layer[5:10, 5:10] = (255, 0, 0, 255)
    flat = composite(image, layer)
    assert flat.shape == shape and flat.dtype == dtype
    if len(shape) == 3 and shape[2] == 4:  # RGBA: the sketch's alpha raises the picture's
        assert tuple(flat[6, 6]) == (255, 0, 0, 255)
    else:
        np.testing.assert_array_equal(flat[6, 6], inside)
    assert (flat[:5] == 7).all() and (flat[10:] == 7).all()


def test_premultiply_and_back_keeps_every_premultiplied_value():
    alpha, colour = np.meshgrid(np.arange(256), np.arange(256))
    layer = np.zeros((256, 256, 4), np.uint8)
    layer[..., 3] = alpha
    layer[..., :3] = np.minimum(colour, alpha)[..., None]  # premultiplied: colour <= alpha
    np.testing.assert_array_equal(premultiply(unpremultiply(layer)), layer)


# -- projects and autosaves ---------------------------------------------------------------------


@pytest.fixture
def sketched(doc) -> Document:
    sketch(doc, [(30, 30), (150, 90)], color=(0, 128, 255), settings=BrushSettings(25, 0.3))
    return doc


def save(doc, path):
    save_project(path, doc.image, doc.mask, {"k": 1}, (), doc.sketch_layer())
    return path


def test_the_sketch_round_trips_as_its_own_layer_above_the_picture(sketched, tmp_path):
    sketched.set_sketch_visible(False)
    loaded = load_project(save(sketched, tmp_path / "x.ora"))
    assert loaded.notes == () and not loaded.sketch.visible
    np.testing.assert_array_equal(loaded.sketch.pixels, sketched.sketch)
    np.testing.assert_array_equal(loaded.image, sketched.image)
    with zipfile.ZipFile(tmp_path / "x.ora") as archive:
        layers = ET.fromstring(archive.read("stack.xml")).find("stack").findall("layer")
        stored = np.array(Image.open(io.BytesIO(archive.read("data/sketch.png"))))
    assert [layer.get("name") for layer in layers] == ["Mask", "Sketch", "Picture"]
    assert layers[1].get("visibility") == "hidden" and layers[1].get("src") == "data/sketch.png"
    np.testing.assert_array_equal(stored, unpremultiply(sketched.sketch))  # straight alpha
    reopened = Document(loaded.image)
    reopened.load_sketch(loaded.sketch)
    np.testing.assert_array_equal(reopened.sketch, sketched.sketch)
    assert not reopened.sketch_visible


def test_krita_style_readers_see_the_sketch_layer(sketched, tmp_path):
    pyora = pytest.importorskip("pyora")
    opened = pyora.Project.load(str(save(sketched, tmp_path / "x.ora")))
    layers = {layer.name: layer for layer in opened.iter_layers}
    assert set(layers) == {"Picture", "Sketch", "Mask"} and layers["Sketch"].visible
    got = np.array(layers["Sketch"].get_image_data())
    np.testing.assert_array_equal(got, unpremultiply(sketched.sketch))


def test_the_merged_picture_shows_the_sketch_only_when_it_is_shown(sketched, tmp_path):
    def merged(path):
        with zipfile.ZipFile(path) as archive:
            return np.array(Image.open(io.BytesIO(archive.read("mergedimage.png"))))[..., :3]

    np.testing.assert_array_equal(
        merged(save(sketched, tmp_path / "a.ora")), flatten_sketch(sketched)
    )
    sketched.set_sketch_visible(False)
    np.testing.assert_array_equal(merged(save(sketched, tmp_path / "b.ora")), sketched.image)


def test_a_project_without_a_sketch_opens_as_before(doc, tmp_path):
    loaded = load_project(save(doc, tmp_path / "x.ora"))
    assert loaded.sketch is None and loaded.notes == ()
    with zipfile.ZipFile(tmp_path / "x.ora") as archive:
        assert "data/sketch.png" not in archive.namelist()
    fresh = Document(loaded.image)
    fresh.load_sketch(loaded.sketch)
    assert fresh.sketch is None and fresh.sketch_visible


def test_a_sketch_moved_or_cropped_elsewhere_is_placed_and_clipped(tmp_path, photo):
    image = photo[:48, :64]
    ink = np.zeros((10, 20, 3), np.uint8)  # no alpha: opaque
    ink[:, :, 0] = 200
    layers = [
        ({"name": "Sketch", "src": "data/s.png", "x": "50", "y": "-4"}, png_bytes(ink)),
        ({"name": "Picture", "src": "data/p.png"}, png_bytes(image)),
    ]
    loaded = load_project(foreign_ora(tmp_path / "x.ora", layers, image))
    placed = loaded.sketch.pixels
    assert placed.shape == (48, 64, 4) and loaded.sketch.visible
    assert (placed[0:6, 50:64] == (200, 0, 0, 255)).all()
    assert not placed[6:].any() and not placed[:, :50].any()
    assert any("converted" in note for note in loaded.notes)
    assert any("cut off" in note for note in loaded.notes)
    assert not any("left out" in note for note in loaded.notes)  # ours, not another's layer


def test_a_sketch_layer_bomb_is_refused(tmp_path, photo):
    image = photo[:48, :64]
    layers = [
        ({"name": "Sketch", "src": "data/s.png"}, bomb_png()),
        ({"name": "Picture", "src": "data/p.png"}, png_bytes(image)),
    ]
    with pytest.raises(ProjectError, match="data/s.png"):
        load_project(foreign_ora(tmp_path / "x.ora", layers, image))


@pytest.mark.parametrize("what", ["pixels", "visibility", "missing"])
def test_a_sketch_that_reads_back_different_keeps_the_old_file(
    sketched, tmp_path, monkeypatch, what
):
    target = save(sketched, tmp_path / "x.ora")
    before = target.read_bytes()

    def change(layer):
        if what == "missing":
            return None
        if what == "visibility":
            return SketchLayer(layer.pixels, not layer.visible)
        pixels = layer.pixels.copy()
        pixels[60, 90, 3] ^= 1
        return SketchLayer(pixels, layer.visible)

    write_instead(monkeypatch, lambda document, results: (document, results), change)
    with pytest.raises(ProjectError, match=r"read back the same \(sketch differ"):
        save(sketched, target)
    assert target.read_bytes() == before


def test_a_wrong_size_sketch_is_not_saved(doc, tmp_path):
    with pytest.raises(ProjectError, match="sketch is not the picture's size"):
        layer = SketchLayer(np.zeros((3, 3, 4), np.uint8))
        save_project(tmp_path / "x.ora", doc.image, None, None, (), layer)
    with pytest.raises(ValueError, match="H x W x 4"):
        SketchLayer(np.zeros((3, 3, 3), np.uint8))


def test_an_autosave_keeps_the_sketch(sketched, tmp_path):
    session = RecoverySession(tmp_path)
    sketched.set_sketch_visible(False)
    session.autosave(sketched.image, sketched.mask, sketch=sketched.sketch_layer())
    session._handle.close()  # as if the editor died: its lock is gone
    (found,) = orphans(tmp_path)
    restored = restore(found)
    np.testing.assert_array_equal(restored.sketch.pixels, sketched.sketch)
    assert not restored.sketch.visible


# -- the editor -----------------------------------------------------------------------------------


@pytest.fixture
def window(qtbot, tmp_path, photo):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, engine_factory=FakeEngine)
    window.confirm_discard = lambda: True
    qtbot.addWidget(window)
    window.resize(1000, 700)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # window shortcuts need an active window
    save_image(tmp_path / "photo.png", photo)
    window.open_path(tmp_path / "photo.png")
    qtbot.waitUntil(lambda: window.session.document is not None, timeout=5000)
    window.canvas.setFocus()
    yield window
    window.generation.shutdown()
    window.fill.shutdown()


def drag(canvas, points):
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    steps = [(QEvent.Type.MouseButtonPress, points[0], left, left)]
    steps += [(QEvent.Type.MouseMove, point, none, left) for point in points[1:]]
    steps += [(QEvent.Type.MouseButtonRelease, points[-1], left, none)]
    for kind, (x, y), button, buttons in steps:
        at = canvas.to_widget(QPointF(x, y))
        event = QMouseEvent(
            kind, at, canvas.mapToGlobal(at), button, buttons, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(canvas, event)


def shown_colour(canvas, x, y):
    """The canvas's colour on screen at image pixel (x, y)."""
    point = canvas.to_widget(QPointF(x + 0.5, y + 0.5)).toPoint()
    colour = canvas.grab().toImage().pixelColor(point)
    return colour.red(), colour.green(), colour.blue()


def test_b_and_a_drag_paint_the_sketch_which_the_canvas_shows_and_hides(qtbot, window, photo):
    document = window.session.document
    window.canvas.paint_color = (255, 255, 0)
    qtbot.keyClick(window.canvas, Qt.Key.Key_B)
    drag(window.canvas, [(30, 60), (170, 60)])
    assert tuple(document.sketch[60, 100]) == (255, 255, 0, 255)
    np.testing.assert_array_equal(document.image, photo)
    assert shown_colour(window.canvas, 100, 60) == (255, 255, 0)
    assert window.sketch_action.isChecked()
    qtbot.keyClick(window.canvas, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    assert not document.sketch_visible and not window.sketch_action.isChecked()
    assert shown_colour(window.canvas, 100, 60) == tuple(photo[60, 100])
    np.testing.assert_array_equal(document.image, photo)  # hiding changes no pixels
    qtbot.keyClick(window.canvas, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    assert document.sketch_visible and shown_colour(window.canvas, 100, 60) == (255, 255, 0)


def test_clear_sketch_then_ctrl_z_brings_it_back(qtbot, window):
    document = window.session.document
    window.canvas.paint_color = (0, 0, 255)
    qtbot.keyClick(window.canvas, Qt.Key.Key_B)
    drag(window.canvas, [(40, 40), (120, 90)])
    painted = document.sketch.copy()
    shift_control = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(window.canvas, Qt.Key.Key_K, shift_control)
    assert not document.sketch.any() and shown_colour(window.canvas, 80, 65) != (0, 0, 255)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(document.sketch, painted)
    assert shown_colour(window.canvas, 80, 65) == (0, 0, 255)


def test_a_saved_project_reopens_with_its_sketch_hidden_as_it_was(qtbot, window, tmp_path):
    document = window.session.document
    window.set_tool(CanvasTool.PAINT)
    drag(window.canvas, [(40, 40), (120, 90)])
    window.sketch_action.trigger()  # hide it
    assert window.save_to(tmp_path / "work.ora", wait=True) and not document.modified
    window.sketch_action.trigger()  # shown again, after the save
    assert document.sketch_visible and window.sketch_action.isChecked()
    window.open_path(tmp_path / "work.ora")
    qtbot.waitUntil(lambda: window.session.document is not document, timeout=5000)
    reopened = window.session.document
    np.testing.assert_array_equal(reopened.sketch, document.sketch)
    assert not reopened.sketch_visible and not window.sketch_action.isChecked()
    assert not reopened.modified and not reopened.can_undo


def test_export_includes_the_sketch_only_while_it_is_shown(qtbot, window, tmp_path, photo):
    document = window.session.document
    window.set_tool(CanvasTool.PAINT)
    drag(window.canvas, [(40, 40), (120, 90)])
    window.export_to(tmp_path / "shown.png")
    qtbot.waitUntil(lambda: (tmp_path / "shown.png").exists(), timeout=5000)
    np.testing.assert_array_equal(load_image(tmp_path / "shown.png"), flatten_sketch(document))
    window.sketch_action.trigger()
    window.export_to(tmp_path / "hidden.png")
    qtbot.waitUntil(lambda: (tmp_path / "hidden.png").exists(), timeout=5000)
    np.testing.assert_array_equal(load_image(tmp_path / "hidden.png"), photo)


def test_an_autosave_keeps_the_editors_sketch(qtbot, window, tmp_path):
    recovery = RecoverySession(tmp_path / "recovery")
    window.start_autosave(recovery)
    document = window.session.document
    window.set_tool(CanvasTool.PAINT)
    drag(window.canvas, [(40, 40), (120, 90)])
    window.sketch_action.trigger()  # hidden
    assert window.autosave_now()
    qtbot.waitUntil(lambda: not window._autosave_busy, timeout=5000)
    snapshot = load_project(recovery.snapshot_path)
    np.testing.assert_array_equal(snapshot.sketch.pixels, document.sketch)
    assert not snapshot.sketch.visible
    window.stop_autosave()


def test_img2img_redraws_the_picture_with_the_shown_sketch_and_inpaint_keeps_the_picture(
    qtbot, tmp_path, photo
):
    from sdstudio.core.request import Mode
    from sdstudio.core.sketch import flatten_sketch
    from sdstudio.engine.fake import FakeEngine

    window = MainWindow(
        settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
        engine_factory=FakeEngine,
    )
    window.confirm_discard = lambda: True
    qtbot.addWidget(window)
    window.set_document(Document(photo.copy()))
    document = window.session.document
    sketch(document, [(20, 20), (120, 90)])
    request = window.session.requests(Mode.IMG2IMG)[0]
    np.testing.assert_array_equal(request.image, flatten_sketch(document))
    assert not np.array_equal(request.image, photo)
    document.set_mask(np.full(photo.shape[:2], 255, np.uint8))
    np.testing.assert_array_equal(window.session.requests(Mode.INPAINT)[0].image, photo)
    document.set_sketch_visible(False)  # a hidden sketch is not part of the picture
    np.testing.assert_array_equal(window.session.requests(Mode.IMG2IMG)[0].image, photo)
