import threading

import numpy as np

from sdstudio.core.mask import blend_alpha, grow
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine.classical import HALO, ClassicalFillEngine, classical_fill
from sdstudio.engine.events import Cancelled, Failed, Finished, Started, Step
from sdstudio.engine.fill import DEFAULT_METHOD, LABELS, resolve


def remove_request(image, mask, **changes):
    return GenerationRequest(mode=Mode.REMOVE, image=image, mask=mask, mask_blur=2, **changes)


def test_fill_of_flat_region_stays_flat():
    image = np.full((60, 80, 3), (90, 120, 200), np.uint8)
    image[20:40, 30:50] = (255, 0, 0)  # the object to remove
    mask = np.zeros((60, 80), np.uint8)
    mask[20:40, 30:50] = 255
    filled = classical_fill(image, mask)
    assert (
        np.abs(filled[20:40, 30:50].astype(int) - (90, 120, 200)).max() <= 4
    )  # Telea adds ±3 noise


def test_remove_engine_events_and_bit_exact_outside(photo, edge_mask):
    events = list(ClassicalFillEngine().run(remove_request(photo, edge_mask), threading.Event()))
    assert isinstance(events[0], Started)
    assert isinstance(events[-1], Finished) and events[-2] == Step(1, 1)
    assert all(isinstance(e, Step) for e in events[1:-1])  # the fill's progress, then done
    done = events[-1]
    result = done.composite(photo)
    outside = blend_alpha(edge_mask, 2) == 0
    np.testing.assert_array_equal(result[outside], photo[outside])
    assert not np.array_equal(result[edge_mask > 0], photo[edge_mask > 0])
    used = resolve(DEFAULT_METHOD, grow(edge_mask, 2 + HALO))
    assert f"Sampler: {LABELS[used]}" in done.parameters
    assert "Seed" not in done.parameters  # no seed or steps were used: none are claimed


def test_remove_keeps_grey_and_16_bit(photo, edge_mask):
    grey16 = photo[:, :, 0].astype(np.uint16) * 257 + 1
    done = list(ClassicalFillEngine().run(remove_request(grey16, edge_mask), threading.Event()))[-1]
    result = done.composite(grey16)
    assert result.dtype == np.uint16 and result.ndim == 2
    outside = blend_alpha(edge_mask, 2) == 0
    np.testing.assert_array_equal(result[outside], grey16[outside])


def test_cancelled_before_start_gives_no_result(photo, edge_mask):
    cancel = threading.Event()
    cancel.set()
    events = list(ClassicalFillEngine().run(remove_request(photo, edge_mask), cancel))
    assert isinstance(events[-1], Cancelled)
    assert not any(isinstance(e, Finished) for e in events)


def test_empty_mask_is_a_clear_failure(photo):
    empty = np.zeros(photo.shape[:2], np.uint8)
    events = list(ClassicalFillEngine().run(remove_request(photo, empty), threading.Event()))
    assert len(events) == 1 and isinstance(events[0], Failed) and "empty" in events[0].message


def test_engine_method_is_selectable_by_name(photo, edge_mask):
    done = list(
        ClassicalFillEngine("telea").run(remove_request(photo, edge_mask), threading.Event())
    )[-1]
    assert isinstance(done, Finished)
    assert "Sampler: OpenCV Telea (no model)" in done.parameters


def test_unknown_engine_method_fails_early():
    import pytest

    with pytest.raises(ValueError, match="unknown fill method"):
        ClassicalFillEngine("magic")
