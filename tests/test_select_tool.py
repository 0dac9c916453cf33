"""The Select tool in the editor window, driven with the mouse and keys as a person would, with the
Segment Anything selector replaced by a fake that returns a known mask."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from sdstudio.core.errors import ModelError
from sdstudio.core.imageio import save_image
from sdstudio.core.selection import grow
from sdstudio.engine.fake import FakeEngine
from sdstudio.engine.specialists.select import NO_SAM
from sdstudio.qt.canvas import CanvasTool
from sdstudio.qt.main_window import MainWindow

SHIFT = Qt.KeyboardModifier.ShiftModifier
ALT = Qt.KeyboardModifier.AltModifier
NONE = Qt.KeyboardModifier.NoModifier


class FakeSelector:
    """A 21 x 21 square around each positive point, the box filled, negative points cut a hole;
    ``gate``, when set, holds ``embed`` until it opens (a slow first click)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.embeds = 0
        self.prompts: list[tuple] = []
        self.shape = None

    def embed(self, image, cancel=None, progress=None, key=None):
        if self.gate is not None:
            assert self.gate.wait(10)
        self.embeds += 1
        self.shape = image.shape[:2]
        return True

    def mask(self, points=(), box=None):
        self.prompts.append((tuple(points), box))
        return known_mask(self.shape, points, box)


def known_mask(shape, points, box):
    mask = np.zeros(shape, np.uint8)
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        mask[y0:y1, x0:x1] = 255
    for p in points:
        x, y = int(p.x), int(p.y)
        mask[max(0, y - 10) : y + 11, max(0, x - 10) : x + 11] = 255 if p.positive else 0
    return mask


@pytest.fixture
def make_window(qtbot, tmp_path, photo):
    windows = []

    def make(factory):
        settings = QSettings(str(tmp_path / f"s{len(windows)}.ini"), QSettings.Format.IniFormat)
        window = MainWindow(
            settings=settings, engine_factory=lambda: FakeEngine(steps=2), select_factory=factory
        )
        window.confirm_discard = lambda: True
        qtbot.addWidget(window)
        window.resize(1000, 700)
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        path = tmp_path / "photo.png"
        save_image(path, photo)
        window.open_path(path)
        qtbot.waitUntil(lambda: getattr(window.session.document, "path", None) == path)
        window.set_tool(CanvasTool.SELECT)
        return window

    yield make
    for window in windows:
        window.generation.shutdown()
        window.fill.shutdown()


def mouse(canvas, kind, x, y, modifiers=NONE, buttons=Qt.MouseButton.LeftButton):
    point = canvas.to_widget(QPointF(x, y))
    button = Qt.MouseButton.LeftButton if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton
    event = QMouseEvent(kind, point, canvas.mapToGlobal(point), button, buttons, modifiers)
    QApplication.sendEvent(canvas, event)


def click(canvas, x, y, modifiers=NONE):
    mouse(canvas, QEvent.Type.MouseButtonPress, x, y, modifiers)
    mouse(canvas, QEvent.Type.MouseButtonRelease, x, y, modifiers, Qt.MouseButton.NoButton)


def drag(canvas, a, b, modifiers=NONE):
    mouse(canvas, QEvent.Type.MouseButtonPress, *a, modifiers)
    mouse(canvas, QEvent.Type.MouseMove, *b, modifiers)
    mouse(canvas, QEvent.Type.MouseButtonRelease, *b, modifiers, Qt.MouseButton.NoButton)


def proposed(qtbot, window, count):
    """Wait for the ``count``-th decode's proposal."""
    fake = window.select_tool._factory()
    qtbot.waitUntil(lambda: len(fake.prompts) >= count and window.select_tool.proposal is not None)
    qtbot.waitUntil(lambda: not window.select_tool._busy)
    return window.select_tool.proposal


def key(window, name):
    for action in window.actions():
        if name in [s.toString() for s in action.shortcuts()]:
            action.trigger()
            return
    raise AssertionError(f"no action for {name}")


def test_a_click_proposes_and_enter_makes_it_the_mask_as_one_undo_step(qtbot, make_window):
    fake = FakeSelector()
    window = make_window(lambda: fake)
    document = window.session.document
    before = document.mask.copy()
    click(window.canvas, 60, 40)
    proposal = proposed(qtbot, window, 1)
    expected = grow(known_mask(document.mask.shape, fake.prompts[-1][0], None), 8)
    assert np.array_equal(proposal.mask, expected)
    assert np.array_equal(document.mask, before)  # only proposed: the document is untouched
    entries = document.history.entries
    key(window, "Return")
    assert np.array_equal(document.mask, expected)
    assert document.history.entries == entries + 1  # one undo step
    assert window.select_tool.proposal is None
    window.undo()
    assert np.array_equal(document.mask, before)


def test_shift_adds_alt_takes_away_and_a_plain_click_starts_again(qtbot, make_window):
    fake = FakeSelector()
    window = make_window(lambda: fake)
    click(window.canvas, 60, 40)
    proposed(qtbot, window, 1)
    click(window.canvas, 120, 40, SHIFT)
    proposed(qtbot, window, 2)
    click(window.canvas, 65, 45, ALT)
    proposed(qtbot, window, 3)
    points = fake.prompts[-1][0]
    assert [(p.x, p.y, p.positive) for p in points] == [
        (60, 40, True),
        (120, 40, True),
        (65, 45, False),
    ]
    click(window.canvas, 150, 100)
    proposed(qtbot, window, 4)
    assert [(p.x, p.y) for p in fake.prompts[-1][0]] == [(150, 100)]
    assert fake.embeds >= 1


def test_a_drag_is_a_box_and_esc_drops_the_proposal(qtbot, make_window):
    fake = FakeSelector()
    window = make_window(lambda: fake)
    document = window.session.document
    entries = document.history.entries
    drag(window.canvas, (20, 30), (90, 80))
    proposed(qtbot, window, 1)
    assert fake.prompts[-1] == ((), (20.0, 30.0, 90.0, 80.0))
    key(window, "Esc")
    assert window.select_tool.proposal is None
    assert not document.mask.any() and document.history.entries == entries


def test_grow_is_adjustable_with_the_spin_and_brackets(qtbot, make_window):
    fake = FakeSelector()
    window = make_window(lambda: fake)
    assert window.grow_box.isVisible()  # not folded out of a 1000 px window's tool bar
    click(window.canvas, 60, 40)
    proposed(qtbot, window, 1)
    window.grow_box.setValue(0)
    qtbot.waitUntil(lambda: window.select_tool.proposal.grow_px == 0)
    assert window.select_tool.proposal.mask.sum() // 255 == 21 * 21
    brush = window.canvas.brush.size
    key(window, "]")
    qtbot.waitUntil(lambda: window.select_tool.proposal.grow_px == 1)
    assert window.grow_box.value() == 1
    assert window.canvas.brush.size == brush  # [ ] change the grow, not the brush, here


def test_switching_tool_commits_and_delete_commits_then_removes(qtbot, make_window):
    fake = FakeSelector()
    window = make_window(lambda: fake)
    document = window.session.document
    click(window.canvas, 60, 40)
    proposed(qtbot, window, 1)
    window.set_tool(CanvasTool.ERASE)
    assert document.mask.any() and window.select_tool.proposal is None
    document.clear_mask()
    window.set_tool(CanvasTool.SELECT)
    seen = []
    window.session.remove = lambda refine=False: seen.append(document.mask.copy())
    click(window.canvas, 100, 80)
    key(window, "Del")  # right away: the selection is still being made
    qtbot.waitUntil(lambda: len(seen) == 1)
    assert np.array_equal(
        seen[0], grow(known_mask(document.mask.shape, fake.prompts[-1][0], None), 8)
    )


def test_clicks_made_while_the_picture_is_read_queue_and_the_gui_never_waits(qtbot, make_window):
    gate = threading.Event()
    fake = FakeSelector(gate)
    window = make_window(lambda: fake)
    click(window.canvas, 60, 40)
    click(window.canvas, 120, 40, SHIFT)  # returns at once: the first job still waits
    click(window.canvas, 150, 100, SHIFT)
    assert window.select_tool.proposal is None and fake.prompts == []
    gate.set()
    qtbot.waitUntil(lambda: len(fake.prompts[-1][0]) == 3 if fake.prompts else False)
    qtbot.waitUntil(lambda: not window.select_tool._busy)
    assert len(fake.prompts) == 2  # the first click, then the newest prompt (not one per click)


def test_without_a_model_one_line_says_where_to_get_it(qtbot, make_window):
    def missing():
        raise ModelError(NO_SAM)

    window = make_window(missing)
    click(window.canvas, 60, 40)
    qtbot.waitUntil(lambda: "Model library" in window.statusBar().currentMessage())
    assert window.select_tool.proposal is None and not window.session.document.mask.any()


class ReadingSelector(FakeSelector):
    """Reads the picture in five steps, reporting each; stops at a step when cancelled. The
    first read holds at its third step until it is cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = 0

    def embed(self, image, cancel=None, progress=None, key=None):
        from sdstudio.core.errors import Cancelled

        for step in range(5):
            if self.cancelled == 0 and step == 2:
                cancel.wait(10)
            if cancel.is_set():
                self.cancelled += 1
                raise Cancelled("Cancelled.")
            progress(step, 5)
        return super().embed(image)


def test_reading_the_picture_shows_progress_and_esc_stops_it(qtbot, make_window):
    fake = ReadingSelector()
    built = []
    window = make_window(lambda: built.append(1) or fake)
    messages = []
    window.select_tool.status.connect(messages.append)
    click(window.canvas, 60, 40)
    qtbot.waitUntil(lambda: any("reading the picture … 20%" in m for m in messages))
    key(window, "Esc")
    qtbot.waitUntil(lambda: fake.cancelled == 1 and not window.select_tool._busy)
    assert window.select_tool.proposal is None and fake.prompts == []
    assert "Selection dropped." in messages
    click(window.canvas, 60, 40)  # read again, in full, by the model already loaded
    qtbot.waitUntil(lambda: window.select_tool.proposal is not None)
    assert fake.embeds == 1 and len(built) == 1
