"""The Select tool's controller: clicks on the canvas become a Segment Anything selection, shown
as the area that would be erased, which becomes the mask as one undoable step.

Click: a new selection from a point on the object. Shift+click: one more point on it (or a box,
with a drag). Alt+click: a point NOT on it. Drag: a box around it. Enter (or another tool) makes
the proposal the mask (added to what is already marked); Delete does so and removes at once;
Esc drops it. The proposal is grown by ``grow_px`` (the toolbar's Grow spin, or [ and ] while
selecting) so that the object's edge and shadow go too.

The model works off the GUI thread: the first click on a picture computes its embedding (a few
seconds on a CPU), each further click only decodes (milliseconds). One job runs at a time; clicks
made meanwhile are kept and the newest prompt runs next. The GUI never waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen

from sdstudio.core.document import Document
from sdstudio.core.mask import bounding_box
from sdstudio.core.region import Box
from sdstudio.core.selection import DEFAULT_GROW, MAX_GROW, Point, Prompt, add_to_mask, grow
from sdstudio.qt.canvas import TINT_ALPHA, Canvas, wrap_qimage
from sdstudio.qt.tasks import run_in_background

SELECT_TINT = (60, 150, 255)
"""The proposal's tint: the erased area's look in another colour, so that what is proposed and
what is already marked can be told apart."""


@dataclass(frozen=True)
class Proposal:
    """A selection ready to become the mask: the grown mask, the box around it and its overlay
    (RGBA over that box, made on the worker thread)."""

    prompt: Prompt
    grow_px: int
    mask: np.ndarray
    box: Box | None
    overlay: np.ndarray | None


def default_selector_factory(models: Callable[[], object]) -> Callable[[], object]:
    """Loads the installed SAM model (runs on a worker thread: torch loads there)."""

    def load():
        from sdstudio.engine.specialists.select import load_selector, sam_reference

        return load_selector(sam_reference(None, models()))

    return load


def _overlay(mask: np.ndarray, box: Box | None) -> np.ndarray | None:
    if box is None:
        return None
    part = mask[box.slices]
    rgba = np.empty((*part.shape, 4), np.uint8)
    rgba[:, :, :3] = SELECT_TINT
    rgba[:, :, 3] = (part.astype(np.uint16) * int(TINT_ALPHA * 256) >> 8).astype(np.uint8)
    return rgba


class SelectTool(QObject):
    """See the module docstring. ``selector_factory()`` builds the engine's ``Selector``."""

    status = Signal(str)
    _progress = Signal(int, int, int)  # job generation, encoder layers done, of all; any thread

    def __init__(
        self,
        canvas: Canvas,
        document: Callable[[], Document | None],
        selector_factory: Callable[[], object],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.canvas = canvas
        self._document = document
        self._factory = selector_factory
        self._selector = None
        self.grow_px = DEFAULT_GROW
        self.prompt = Prompt()
        self.proposal: Proposal | None = None
        self._busy = False
        self._pending = False
        self._generation = 0  # bumped when the picture changes or a selection ends
        self._embedded: Document | None = None
        self._then: Callable[[], None] | None = None
        self._cancel = threading.Event()  # the running job's: set when its selection ends
        self._progress.connect(self._reading)
        canvas.select_clicked.connect(self.click)
        canvas.select_dragged.connect(self.drag)
        canvas.overlay_painter = self.paint

    # -- prompts ----------------------------------------------------------------------------------

    def click(self, x: float, y: float, modifiers) -> None:
        """A click in image coordinates: a new point (Shift: one more, Alt: one not on it)."""
        document = self._document()
        if document is None or not (0 <= x < document.width and 0 <= y < document.height):
            return
        alt = bool(modifiers & Qt.KeyboardModifier.AltModifier)
        shift = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
        point = Point(float(x), float(y), positive=not alt)
        if alt or shift:
            self.prompt = replace(self.prompt, points=(*self.prompt.points, point))
        else:
            self.prompt = Prompt((point,))
        self._run()

    def drag(self, box: Box, modifiers) -> None:
        """A dragged box around the object (Shift keeps the points made so far)."""
        if self._document() is None or box.is_empty():
            return
        corners = (float(box.x0), float(box.y0), float(box.x1), float(box.y1))
        keep = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
        self.prompt = Prompt(self.prompt.points if keep else (), corners)
        self._run()

    def set_grow(self, pixels: int) -> None:
        pixels = max(0, min(MAX_GROW, int(pixels)))
        if pixels != self.grow_px:
            self.grow_px = pixels
            if not self.prompt.is_empty:
                self._run()

    # -- ending a selection -----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """A selection is proposed or on its way."""
        return self.proposal is not None or (self._busy and not self.prompt.is_empty)

    def commit(self, then: Callable[[], None] | None = None) -> bool:
        """Make the proposal the mask (added to it) as one undo step, then call ``then``; when a
        click is still being worked on, both happen once it is ready. False if nothing was
        selected (``then`` is not called: the caller goes on as without a selection)."""
        if self._busy and not self.prompt.is_empty:
            self._then = then or (lambda: None)
            self.status.emit("Finishing the selection …")
            return True
        proposal, document = self.proposal, self._document()
        if proposal is None or document is None:
            return False
        self._end()
        if proposal.box is not None and proposal.mask.shape == document.mask.shape:
            document.set_mask(add_to_mask(document.mask, proposal.mask), label="Select")
            self.status.emit(
                "The selection is the mask now: the brushes correct it (Ctrl+Z undoes)."
            )
        if then is not None:
            then()
        return True

    def drop(self) -> bool:
        """Esc: forget the selection; False if there was none."""
        if not self.active:
            return False
        self._end()
        self.status.emit("Selection dropped.")
        return True

    def reset(self) -> None:
        """Another picture: whatever was selected goes, and the next click embeds again."""
        self._end()
        self._embedded = None

    def _end(self) -> None:
        self._generation += 1  # a job still running is ignored when it ends
        self._cancel.set()  # and a picture being read stops at its next encoder layer
        self._then = None
        self._pending = False
        old = self.proposal
        self.prompt, self.proposal = Prompt(), None
        self._update(old)

    # -- the job ----------------------------------------------------------------------------------

    def _run(self) -> None:
        if self._busy:
            self._pending = True  # the newest prompt runs when this job ends
            self._update(self.proposal)  # the new point shows at once
            return
        document = self._document()
        if document is None:
            return
        self._busy, self._pending = True, False
        prompt, grow_px, generation = self.prompt, self.grow_px, self._generation
        image, selector, factory = document.image, self._selector, self._factory
        self._cancel = cancel = threading.Event()
        if self._embedded is not document:
            self.status.emit(
                "Select: reading the picture (the first click takes a few seconds; Esc stops) …"
            )
        self._update(self.proposal)
        loaded: list[object] = []  # the model, kept even when the job is cancelled

        def work():
            model = selector if selector is not None else factory()
            loaded.append(model)
            model.embed(
                image, cancel, lambda done, total: self._progress.emit(generation, done, total)
            )
            raw = model.mask(prompt.points, prompt.box)
            mask = grow(raw, grow_px)
            box = bounding_box(mask)
            return model, Proposal(prompt, grow_px, mask, box, _overlay(mask, box))

        def failed(message: str) -> None:
            if loaded:
                self._selector = loaded[0]
            self._failed(generation, message)

        run_in_background(work, lambda result: self._done(generation, document, result), failed)

    def _reading(self, generation: int, done: int, total: int) -> None:
        if generation == self._generation and 0 < done < total:
            self.status.emit(f"Select: reading the picture … {100 * done // total}% (Esc stops)")

    def _done(self, generation: int, document: Document, result) -> None:
        self._busy = False
        self._selector, proposal = result
        if generation != self._generation or document is not self._document():
            return self._next()
        self._embedded = document
        old, self.proposal = self.proposal, proposal
        self._update(old)
        if self._pending:
            return self._next()
        if self._then is not None:
            then, self._then = self._then, None
            self.commit(then)
            return None
        self._say(proposal)
        return None

    def _failed(self, generation: int, message: str) -> None:
        self._busy = False
        if generation == self._generation:
            self._end()
            self.status.emit(message)
        else:
            self._next()

    def _next(self) -> None:
        if self._pending and not self.prompt.is_empty:
            self._run()

    def _say(self, proposal: Proposal) -> None:
        if proposal.box is None:
            self.status.emit("Nothing selected there: click nearer the object's middle.")
            return
        share = 100.0 * float(np.count_nonzero(proposal.mask)) / proposal.mask.size
        self.status.emit(
            f"Selected {share:.1f}% of the picture, grown by {proposal.grow_px} px ([ ] or Grow "
            "changes it). Enter: make it the mask · Delete: remove it · Esc: drop · Shift+click: "
            "add · Alt+click: take away"
        )

    # -- drawing ----------------------------------------------------------------------------------

    def _update(self, old: Proposal | None) -> None:
        for proposal in (old, self.proposal):
            if proposal is not None and proposal.box is not None:
                self.canvas.update_image_box(proposal.box)
        self.canvas.update()  # the points and box (small; the proposal's box above)

    def paint(self, painter: QPainter) -> None:
        """Draws the proposal (as the erased area would look), the points and the box."""
        proposal = self.proposal
        if proposal is not None and proposal.box is not None and proposal.overlay is not None:
            image = wrap_qimage(proposal.overlay)
            painter.drawImage(QRectF(self.canvas.image_rect_to_widget(proposal.box)), image)
        if self.prompt.box is not None:
            x0, y0, x1, y1 = self.prompt.box
            box = Box(int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
            painter.setPen(QPen(QColor(*SELECT_TINT), 2, Qt.PenStyle.DashLine))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(self.canvas.image_rect_to_widget(box))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for point in self.prompt.points:
            centre = self.canvas.to_widget(QPointF(point.x, point.y))
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.setBrush(QColor(40, 200, 80) if point.positive else QColor(230, 50, 50))
            painter.drawEllipse(centre, 5.0, 5.0)
