from pathlib import Path

import numpy as np
import pytest

from sdstudio.core.brush import BrushSettings, Tool
from sdstudio.core.document import Document
from sdstudio.core.history import TILE
from sdstudio.core.region import Box


@pytest.fixture
def doc(photo) -> Document:
    return Document(photo.copy(), path=Path("photo.png"))


@pytest.fixture
def boxes(doc) -> list[Box]:
    seen: list[Box] = []
    doc.add_listener(seen.append)
    return seen


def erase(doc, points, size=20.0):
    stroke = doc.begin_stroke(Tool.ERASE, BrushSettings(size=size))
    for p in points:
        stroke.add(*p)
    stroke.end()


def test_new_document(doc, photo):
    assert (doc.width, doc.height) == (200, 130)
    assert doc.mask.shape == (130, 200) and doc.mask.dtype == np.uint8 and not doc.has_mask
    assert doc.region is None and doc.path == Path("photo.png")
    assert not doc.modified and not doc.can_undo and not doc.can_redo
    assert doc.layers["image"] is doc.image and doc.layers["mask"] is doc.mask
    np.testing.assert_array_equal(doc.image, photo)


def test_blank_document_is_white_rgb():
    doc = Document.blank(30, 20)
    assert doc.image.shape == (20, 30, 3) and doc.image.dtype == np.uint8
    assert (doc.image == 255).all()
    assert tuple(Document.blank(2, 2, (1, 2, 3)).image[1, 1]) == (1, 2, 3)


@pytest.mark.parametrize(
    "image",
    [np.zeros((5, 5, 3), np.float32), np.zeros((5, 5, 2), np.uint8), np.zeros((0, 5), np.uint8)],
)
def test_unsupported_pictures_are_refused(image):
    with pytest.raises(ValueError, match="picture must"):
        Document(image)


def test_erase_stroke_is_one_undo_step_and_notifies(doc, boxes):
    erase(doc, [(50, 50), (120, 60), (150, 100)])
    assert doc.has_mask and doc.modified and doc.undo_label == "Erase"
    assert len(boxes) == 3 and all(b.inside(doc.width, doc.height) for b in boxes)
    marked = doc.mask.copy()
    assert doc.history.entries == 1

    area = doc.undo()
    assert not doc.has_mask and boxes[-1] == area
    assert area.contains(Box(40, 40, 160, 110))
    assert doc.redo_label == "Erase"
    doc.redo()
    np.testing.assert_array_equal(doc.mask, marked)


def test_paint_stroke_undo_is_bit_exact(doc, photo):
    stroke = doc.begin_stroke(Tool.PAINT, BrushSettings(size=15), color=(255, 0, 255))
    stroke.add(10, 10)
    stroke.add(190, 120)
    stroke.end()
    painted = doc.sketch.copy()  # the brush paints on the sketch, above the picture
    assert painted[:, :, 3].any() and not doc.has_mask
    np.testing.assert_array_equal(doc.image, photo)
    doc.undo()
    assert not doc.sketch.any()
    np.testing.assert_array_equal(doc.image, photo)
    doc.redo()
    np.testing.assert_array_equal(doc.sketch, painted)


def test_small_stroke_stores_only_touched_tiles():
    doc = Document(np.zeros((2000, 3000, 3), np.uint8))
    stroke = doc.begin_stroke(Tool.PAINT, BrushSettings(size=40), color=(255, 255, 255))
    stroke.add(1000, 1000)
    stroke.add(1100, 1030)
    stroke.end()
    assert doc.history.entries == 1
    assert 0 < doc.history.bytes_used <= 2 * 6 * 128 * 128 * 4  # a few RGBA tiles, before + after
    assert doc.history.bytes_used < doc.sketch.nbytes / 40


def test_new_stroke_or_undo_ends_an_open_stroke(doc):
    first = doc.begin_stroke(Tool.ERASE, BrushSettings(size=10))
    first.add(20, 20)
    assert doc.modified and not doc.can_undo  # painted, not yet recorded
    second = doc.begin_stroke(Tool.ERASE, BrushSettings(size=10))
    assert first.finished and doc.history.entries == 1
    second.add(100, 100)
    doc.undo()  # ends the second stroke, then undoes it
    assert doc.mask[100, 100] == 0 and doc.mask[20, 20] == 255


def test_apply_patch_and_undo(doc, photo, boxes):
    box = Box(150, 100, 200, 130)  # touches the picture's corner
    patch = np.full((30, 50, 3), 7, np.uint8)
    assert doc.apply_patch(box, patch) == box
    assert boxes == [box] and doc.undo_label == "Accept result"
    assert (doc.image[box.slices] == 7).all()
    np.testing.assert_array_equal(doc.image[:100], photo[:100])
    doc.undo()
    np.testing.assert_array_equal(doc.image, photo)
    assert doc.apply_patch(box, photo[box.slices].copy()) is None  # nothing changes


def test_accepting_an_inpaint_clears_the_mask_in_the_same_undo_step(doc, photo, edge_mask, boxes):
    doc.set_mask(edge_mask)
    box = Box(160, 10, 200, 60)
    area = doc.apply_patch(box, np.zeros((50, 40, 3), np.uint8), clear_mask=True)
    assert area == box.union(Box(170, 20, 200, 55)) and boxes[-1] == area
    assert not doc.has_mask and (doc.image[box.slices] == 0).all()
    assert doc.undo_label == "Accept result" and doc.history.entries == 2
    doc.undo()
    np.testing.assert_array_equal(doc.image, photo)
    np.testing.assert_array_equal(doc.mask, edge_mask)
    doc.redo()
    assert not doc.has_mask and (doc.image[box.slices] == 0).all()


@pytest.mark.parametrize(
    ("box", "patch", "message"),
    [
        (Box(0, 0, 10, 10), np.zeros((10, 10), np.uint8), "shape"),
        (Box(0, 0, 10, 10), np.zeros((10, 10, 3), np.uint16), "uint8"),
        (Box(195, 0, 205, 10), np.zeros((10, 10, 3), np.uint8), "outside"),
    ],
)
def test_apply_patch_validates(doc, box, patch, message):
    with pytest.raises(ValueError, match=message):
        doc.apply_patch(box, patch)
    assert not doc.can_undo


def test_clear_and_invert_mask_are_undoable(doc, boxes):
    erase(doc, [(30, 30)])
    marked = doc.mask.copy()
    assert doc.invert_mask() == Box(0, 0, 200, 130)
    np.testing.assert_array_equal(doc.mask, 255 - marked)
    assert doc.undo_label == "Invert mask"
    doc.undo()
    np.testing.assert_array_equal(doc.mask, marked)

    area = doc.clear_mask()
    assert area is not None and area.contains(Box(25, 25, 35, 35)) and boxes[-1] == area
    assert not doc.has_mask and doc.undo_label == "Clear mask"
    assert doc.clear_mask() is None and doc.undo_label == "Clear mask"  # no empty step
    doc.undo()
    np.testing.assert_array_equal(doc.mask, marked)


def test_set_mask_replaces_and_undoes(doc):
    proposal = np.zeros((130, 200), bool)
    proposal[0:10, 190:200] = True
    area = doc.set_mask(proposal)
    assert area == Box(128, 0, 200, 128)  # the changed tile
    assert doc.mask[5, 195] == 255 and doc.mask.sum() == 100 * 255
    doc.undo()
    assert not doc.has_mask
    with pytest.raises(ValueError, match="130 x 200"):
        doc.set_mask(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        doc.set_mask(np.zeros((130, 200), np.float32))


def test_set_region_notifies_but_is_not_an_undo_step(doc, boxes):
    doc.set_region(Box(10, 10, 50, 50))
    doc.set_region(Box(100, 20, 120, 40))
    assert doc.region == Box(100, 20, 120, 40)
    assert boxes == [Box(10, 10, 50, 50), Box(10, 10, 120, 50)]
    doc.set_region(None)
    assert doc.region is None and boxes[-1] == Box(100, 20, 120, 40)
    assert not doc.can_undo and not doc.modified
    with pytest.raises(ValueError, match="outside"):
        doc.set_region(Box(0, 0, 500, 10))


def test_modified_follows_saves_undo_and_redo(doc):
    erase(doc, [(40, 40)])
    assert doc.modified
    doc.mark_saved()
    assert not doc.modified
    doc.undo()
    assert doc.modified  # differs from the saved pixels
    doc.redo()
    assert not doc.modified  # back to them
    doc.modified = True
    assert doc.modified


def test_undo_with_nothing_to_undo(doc, boxes):
    assert doc.undo() is None and doc.redo() is None and boxes == []


def dot(doc: Document, x: int, value: int) -> None:
    doc.apply_patch(Box(x, 0, x + 1, 1), np.full((1, 1, 3), value, np.uint8), label="Dot")


def test_undoing_past_dropped_steps_leaves_the_document_modified(photo):
    one_step = 2 * TILE * TILE * 3
    doc = Document(photo.copy(), history_budget=2 * one_step)
    for value in (10, 20, 30, 40):
        dot(doc, 0, value)
    assert doc.history.dropped == 2
    while doc.can_undo:
        doc.undo()
    assert not np.array_equal(doc.image, photo)  # the first two dots cannot be undone
    assert doc.modified  # so closing asks to save


def test_saved_state_is_found_again_after_older_steps_are_dropped(photo):
    one_step = 2 * TILE * TILE * 3
    doc = Document(photo.copy(), history_budget=2 * one_step)
    dot(doc, 0, 10)
    doc.mark_saved()
    saved = doc.image.copy()
    for value in (20, 30):
        dot(doc, 0, value)
    assert doc.history.dropped == 1  # the step that led to the saved pixels
    assert doc.modified
    while doc.can_undo:
        doc.undo()
    np.testing.assert_array_equal(doc.image, saved)
    assert not doc.modified


def test_a_saved_state_on_a_discarded_redo_branch_is_never_reached_again(photo):
    one_step = 2 * TILE * TILE * 3
    doc = Document(photo.copy(), history_budget=2 * one_step)
    dot(doc, 0, 10)
    dot(doc, 0, 20)
    doc.mark_saved()  # the file holds the second dot
    doc.undo()
    dot(doc, TILE, 30)  # a new branch: the saved step can no longer be redone
    dot(doc, 0, 40)  # and the first step is dropped
    assert doc.history.dropped == 1 and not doc.can_redo
    while doc.can_undo:
        assert doc.modified
        doc.undo()
    assert doc.image[0, 0, 0] == 10 and doc.modified


def test_a_save_that_ends_after_more_edits_marks_the_copy_it_wrote(doc):
    erase(doc, [(10, 10), (30, 10)])
    version, saved_mask = doc.version, doc.mask.copy()  # the copy a background save writes
    erase(doc, [(100, 50), (120, 60)])  # drawn while the file is written
    doc.mark_saved_as(version)
    assert doc.modified
    doc.undo()
    assert not doc.modified
    np.testing.assert_array_equal(doc.mask, saved_mask)
    doc.undo()
    assert doc.modified  # the picture as opened: not what the file holds now


def test_a_copy_taken_during_a_stroke_never_matches_and_the_stroke_goes_on(doc):
    stroke = doc.begin_stroke(Tool.ERASE, BrushSettings(size=10))
    stroke.add(10, 10)
    assert doc.version is None
    doc.mark_saved_as(doc.version)  # the save of a copy taken mid-stroke ends
    stroke.add(60, 10)
    stroke.end()
    assert doc.undo_label == "Erase" and doc.modified
    doc.undo()
    assert doc.modified
