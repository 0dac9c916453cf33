import numpy as np
import pytest

from sdstudio.core.history import TILE, History, snapshot_box, tile_box, tiles_of
from sdstudio.core.region import Box


def picture(h=300, w=200, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, channels), dtype=np.uint8)


def edit(history, array, box, value, label="edit", layer="image"):
    before = snapshot_box(array, box)
    array[box.slices] = value
    return history.record(label, layer, before, array)


def test_tiles_of_lists_every_touched_tile():
    assert tiles_of(Box(0, 0, 1, 1)) == [(0, 0)]
    assert tiles_of(Box(TILE - 1, TILE - 1, TILE + 1, TILE + 1)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert tiles_of(Box(0, 0, TILE, TILE)) == [(0, 0)]  # x1/y1 are exclusive
    assert tiles_of(Box(5, 5, 5, 9)) == []


def test_snapshot_copies_whole_tiles_clipped_at_the_edge():
    array = picture(300, 200)
    tiles = snapshot_box(array, Box(150, 260, 400, 400))  # partly outside
    assert set(tiles) == {(2, 1)}
    assert tiles[(2, 1)].shape == (300 - 256, 200 - 128, 3)
    np.testing.assert_array_equal(tiles[(2, 1)], array[256:300, 128:200])
    array[299, 199] = array[299, 199] + 1
    assert not np.array_equal(tiles[(2, 1)], array[256:300, 128:200])  # a copy, not a view
    assert tile_box((2, 1), array) == Box(128, 256, 200, 300)


def test_record_keeps_only_changed_tiles():
    array = picture()
    history = History()
    before = snapshot_box(array, Box(0, 0, 200, 300))  # all 6 tiles
    array[10, 10] = (1, 2, 3) if tuple(array[10, 10]) != (1, 2, 3) else (4, 5, 6)
    area = history.record("dot", "image", before, array)
    assert area == Box(0, 0, TILE, TILE)
    assert history.entries == 1
    assert history.bytes_used == 2 * TILE * TILE * 3


def test_record_without_change_pushes_nothing():
    array = picture()
    history = History()
    assert history.record("none", "image", snapshot_box(array, Box(0, 0, 50, 50)), array) is None
    assert history.entries == 0 and not history.can_undo and history.undo_label is None


def test_undo_and_redo_are_bit_exact():
    array = picture()
    original = array.copy()
    history = History()
    edit(history, array, Box(100, 100, 180, 290), 7, label="first")
    after_first = array.copy()
    edit(history, array, Box(0, 0, 60, 60), 9, label="second")
    after_second = array.copy()
    assert history.undo_label == "second"

    area = history.undo({"image": array})
    assert area == Box(0, 0, TILE, TILE)
    np.testing.assert_array_equal(array, after_first)
    assert history.redo_label == "second" and history.undo_label == "first"
    history.undo({"image": array})
    np.testing.assert_array_equal(array, original)
    assert history.undo({"image": array}) is None and not history.can_undo

    history.redo({"image": array})
    np.testing.assert_array_equal(array, after_first)
    history.redo({"image": array})
    np.testing.assert_array_equal(array, after_second)
    assert history.redo({"image": array}) is None and not history.can_redo


def test_a_new_entry_clears_redo():
    array = picture()
    history = History()
    edit(history, array, Box(0, 0, 10, 10), 1)
    edit(history, array, Box(0, 0, 10, 10), 2)
    history.undo({"image": array})
    assert history.can_redo
    edit(history, array, Box(10, 150, 20, 160), 3, label="third")
    assert not history.can_redo and history.redo_label is None
    assert history.entries == 2
    assert history.bytes_used == 2 * 2 * TILE * TILE * 3


def test_undo_writes_into_the_named_layer():
    image, mask = picture(), np.zeros((300, 200), np.uint8)
    history = History()
    edit(history, mask, Box(5, 5, 20, 20), 255, layer="mask")
    history.undo({"image": image, "mask": mask})
    assert not mask.any()
    with pytest.raises(KeyError, match="mask"):
        history.redo({"image": image})


def test_one_entry_can_change_several_layers():
    image, mask = picture(), np.zeros((300, 200), np.uint8)
    original = image.copy()
    history = History()
    before = {
        "image": snapshot_box(image, Box(0, 0, 10, 10)),
        "mask": snapshot_box(mask, Box(150, 200, 160, 210)),
    }
    image[:10, :10] = 0
    mask[200:210, 150:160] = 255
    after_image, after_mask = image.copy(), mask.copy()
    area = history.record_layers(
        "both", {k: (v, {"image": image, "mask": mask}[k]) for k, v in before.items()}
    )
    assert area == Box(0, 0, 200, 256) and history.entries == 1
    history.undo({"image": image, "mask": mask})
    assert not mask.any()
    np.testing.assert_array_equal(image, original)
    history.redo({"image": image, "mask": mask})
    np.testing.assert_array_equal(image, after_image)
    np.testing.assert_array_equal(mask, after_mask)


def test_budget_drops_the_oldest_entries_and_keeps_the_newest():
    array = picture(512, 512)
    one_entry = 2 * TILE * TILE * 3
    history = History(budget_bytes=3 * one_entry)
    states = [array.copy()]
    for i in range(5):
        edit(history, array, Box(i * 100, 0, i * 100 + 1, 1), 200 + i)
        states.append(array.copy())
    assert history.entries == 3 and history.dropped == 2
    assert history.bytes_used == 3 * one_entry <= history.budget_bytes
    for _ in range(3):
        history.undo({"image": array})
    assert history.undo({"image": array}) is None
    np.testing.assert_array_equal(array, states[2])  # the two oldest steps are gone

    tiny = History(budget_bytes=10)
    edit(tiny, array, Box(0, 0, 1, 1), 1)
    edit(tiny, array, Box(0, 0, 1, 1), 2)
    assert tiny.entries == 1 and tiny.dropped == 1 and tiny.can_undo


def test_mismatched_before_tile_is_refused():
    array = picture()
    history = History()
    with pytest.raises(ValueError, match="snapshot_box"):
        history.record("bad", "image", {(0, 0): array[:10, :10].copy()}, array)


def test_state_follows_undo_and_redo():
    array = picture()
    history = History()
    start = history.state
    edit(history, array, Box(0, 0, 5, 5), 1)
    one = history.state
    assert one != start
    history.undo({"image": array})
    assert history.state == start
    history.redo({"image": array})
    assert history.state == one


def test_invalid_budget():
    with pytest.raises(ValueError, match="budget"):
        History(budget_bytes=0)


def test_equal_states_mean_equal_pixels_while_old_steps_are_dropped():
    # The promise "modified" rests on: whatever edits, undos, redos, discarded redo branches and
    # dropped steps led there, two moments with the same state hold the same pixels.
    rng = np.random.default_rng(7)
    one_entry = 2 * TILE * TILE * 3
    dropped = 0
    for _ in range(40):
        array = np.zeros((TILE, 2 * TILE, 3), np.uint8)
        history = History(budget_bytes=int(rng.integers(1, 4)) * one_entry)
        seen = {history.state: array.copy()}
        for _ in range(14):
            action = rng.choice(["edit", "edit", "undo", "redo"])
            if action == "edit":
                x = int(rng.integers(0, 2 * TILE))
                edit(history, array, Box(x, 0, x + 1, 1), int(rng.integers(1, 256)))
            else:
                getattr(history, action)({"image": array})
            pixels = seen.setdefault(history.state, array.copy())
            np.testing.assert_array_equal(array, pixels)
        dropped += history.dropped
    assert dropped > 20  # the budget did drop steps along the way


def test_undoing_everything_after_a_drop_ends_at_the_state_after_the_last_dropped_step():
    array = picture(TILE, 3 * TILE)
    history = History(budget_bytes=2 * 2 * TILE * TILE * 3)  # two entries
    edit(history, array, Box(0, 0, 1, 1), 1)
    after_first, pixels_after_first = history.state, array.copy()
    edit(history, array, Box(TILE, 0, TILE + 1, 1), 2)
    history.undo({"image": array})
    edit(history, array, Box(2 * TILE, 0, 2 * TILE + 1, 1), 3)  # discards the redo branch
    edit(history, array, Box(0, 0, 1, 1), 4)  # drops the first entry
    assert history.dropped == 1
    while history.can_undo:
        history.undo({"image": array})
    np.testing.assert_array_equal(array, pixels_after_first)
    assert history.state == after_first


def test_clearing_gives_the_layers_a_new_state():
    array = picture()
    history = History()
    edit(history, array, Box(0, 0, 5, 5), 1)
    before = history.state
    history.clear()  # e.g. another picture was loaded into the layers
    assert history.state != before
    assert not history.can_undo and not history.can_redo and history.bytes_used == 0
