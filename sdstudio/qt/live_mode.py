"""Live mode in the window: F5 regenerates the live area while the person draws.

The live area is the selected region, else the whole picture. Each frame is img2img of that
area with the sketch on it (and the panel's control, when one is on: the Sketch layer is its
image), at the live strength, with a seed fixed while live mode is on, so that only what changed
changes. ``LiveController`` (live.py) decides when a frame runs; frames run on a worker of their
own that shares the engine (and so the loaded model) with Generate: they take turns.

What the person sees: the newest frame drawn over the picture (the picture itself is unchanged),
the strokes faint above it, and a "Live" label in the status bar that says when it is working and
how long a frame took. Enter keeps the frame as one undoable step; Shift+Enter puts it among the
results instead; F5 again (or opening another picture) leaves live mode with the picture as it
was.
"""

from __future__ import annotations

import logging

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel

from sdstudio.core.errors import RequestError
from sdstudio.core.region import Box
from sdstudio.core.request import GenerationRequest, random_seed
from sdstudio.engine.compositing import resize_rgb
from sdstudio.engine.events import Finished
from sdstudio.qt.control_request import EMPTY_SKETCH
from sdstudio.qt.live import LiveController
from sdstudio.qt.session import qimage_of
from sdstudio.qt.worker import GenerationWorker

log = logging.getLogger(__name__)


def live_area(document) -> Box:
    """The part of the picture live mode regenerates: the region, else all of it."""
    region = document.region
    full = Box(0, 0, document.width, document.height)
    return full if region is None else region.clamp(document.width, document.height)


LIVE_MAX_SIDE = 1024
"""A larger live area is scaled down to this for its frames (the model works at its native size,
512 or 1024, anyway), so that the GUI thread never copies a large picture at full size for one;
Keep scales the frame back up to the area."""


def placed(frame: Finished, area: Box) -> Box:
    """Where ``frame`` (made from the crop ``area``, maybe scaled down) lies in the picture."""
    height, width = frame.request.image.shape[:2]
    sx, sy = area.width / width, area.height / height
    box = frame.box
    return Box(
        area.x0 + round(box.x0 * sx),
        area.y0 + round(box.y0 * sy),
        area.x0 + round(box.x1 * sx),
        area.y0 + round(box.y1 * sy),
    )


def full_size(frame: Finished, box: Box) -> np.ndarray:
    """The frame's pixels at the size of ``box`` (scaled up when the area was scaled down)."""
    patch = frame.patch
    if patch.shape[:2] == (box.height, box.width):
        return patch
    resized = resize_rgb(patch, box.width, box.height)
    return resized.reshape(box.height, box.width, *patch.shape[2:])


class LiveMode(QObject):
    """Owns live mode's worker, controller, action and indicator; see the module docstring."""

    status = Signal(str)

    def __init__(self, window, engine_factory) -> None:
        super().__init__(window)
        self.window, self.session, self.canvas = window, window.session, window.canvas
        self.worker = GenerationWorker(engine_factory)
        self.controller = LiveController(self.worker, self.build_request, parent=self)
        self.seed: int | None = None
        self.areas: dict[int, Box] = {}
        """The live area of the newest requests, by the request's id (a frame is the crop of
        its area; the controller says which request a frame came from)."""
        self.label = QLabel("")
        self.label.setVisible(False)
        self.label.setToolTip("Live mode (F5): the picture follows your strokes")
        self.action = QAction("&Live mode", window)
        self.action.setCheckable(True)
        self.action.setShortcut(QKeySequence("F5"))
        self.action.setToolTip("Regenerate the picture (or the region) while you draw (F5)")
        self.action.toggled.connect(self.set_enabled)
        window.addAction(self.action)
        c = self.controller
        c.frame_ready.connect(self._show)
        c.frame_cleared.connect(lambda: self.canvas.set_live(None))
        c.busy_changed.connect(lambda _busy: self._update_label())
        c.frame_time.connect(self._frame_time)
        c.failed.connect(self._failed)
        self._last_time: float | None = None
        self._failing = False
        self._kept = 0
        self.worker.start()

    # -- switching ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.controller.enabled

    def set_enabled(self, on: bool) -> None:
        if self.action.isChecked() != on:
            self.action.setChecked(on)  # comes back here through toggled
            return
        if on == self.controller.enabled:
            return
        if on:
            self.seed = random_seed()  # while the panel says Random; its own seed wins
            self._last_time, self._failing, self._kept = None, False, 0
            self.status.emit(
                f"Live mode on (seed {self._seed()}): draw with the brush (B); the picture follows "
                "each stroke. Enter keeps the frame, Shift+Enter adds it to the results, F5 leaves."
            )
        self.controller.set_enabled(on)
        if not on:
            self.areas.clear()
            self.status.emit(
                "Live mode off: its frame is no longer drawn; the picture holds only what you "
                "kept (Enter), which Ctrl+Z takes back."
                if self._kept
                else "Live mode off: the picture is as it was."
            )
        self._update_label()

    def _seed(self) -> int:
        """The panel's seed when it has one, else the one drawn when live mode went on."""
        seed = self.window.panel.settings()["seed"]
        return seed if seed is not None else (self.seed or 0)

    def changed(self) -> None:
        """Something the frame depends on changed (a stroke, the prompt, a setting, undo)."""
        if self.controller.enabled:
            self.controller.notify_changed()

    # -- frames ---------------------------------------------------------------------------------

    def build_request(self) -> GenerationRequest | None:
        """The next frame's request, read now from the document and the panel (GUI thread: it
        copies only the live area)."""
        document = self.session.document
        if document is None:
            return None
        area = live_area(document)
        if area.is_empty():
            return None
        strength = float(self.window.panel.settings().get("live_strength", 0.5))
        try:
            request = self.session.area_request(
                area, LIVE_MAX_SIDE, strength=strength, seed=self._seed(), live=True
            )
        except RequestError as error:
            if str(error) == EMPTY_SKETCH:  # the control's sketch is not drawn yet: wait for it
                return None
            raise
        shown = self.controller.current_request()
        self.areas = {
            id(r): self.areas[id(r)] for r in (shown,) if r is not None and id(r) in self.areas
        }
        self.areas[id(request)] = area
        return request

    def _show(self, frame: Finished) -> None:
        area = self._area()
        if area is None:
            return
        self.canvas.set_live(qimage_of(frame.patch), placed(frame, area))
        if frame.notes:  # e.g. the fast path fell back to the plain one
            self.status.emit("Live: " + " ".join(frame.notes))
        elif self._failing:  # the last word in the status bar was a failure: it is over
            self._failing = False
            self.status.emit("Live: the frame follows again (Enter keeps it).")

    def keep(self, to_results: bool = False) -> bool:
        """Put the shown frame into the picture as one undo step (or among the results);
        False when there is no frame."""
        document = self.session.document
        frame = self.controller.current_frame()
        area = self._area()
        if document is None or frame is None or area is None:
            self.status.emit("No live frame to keep yet: draw a stroke and wait for it.")
            return False
        self.controller.keep()
        box = placed(frame, area)
        patch = full_size(frame, box)
        if to_results:
            self.session.add_result(
                Finished(patch, box, frame.parameters, frame.request.with_(live=False))
            )
            return True
        document.apply_patch(box, patch, label="Keep live frame")
        self._kept += 1
        self.status.emit(
            "Live frame kept (Ctrl+Z takes it back); live mode goes on from it. Ctrl+Shift+K "
            "clears the sketch."
        )
        return True

    def _area(self) -> Box | None:
        request = self.controller.current_request()
        return None if request is None else self.areas.get(id(request))

    # -- indicator ------------------------------------------------------------------------------

    def _frame_time(self, seconds: float) -> None:
        self._last_time = seconds
        self._update_label()

    def _failed(self, message: str) -> None:
        self._failing = True
        self.status.emit(f"Live: {message}")
        self._update_label()

    def _update_label(self) -> None:
        on = self.controller.enabled
        self.label.setVisible(on)
        if not on:
            return
        timing = f"{self._last_time:.2f} s per frame" if self._last_time is not None else ""
        if self.controller.is_busy():
            text = "● Live: working" + (f" ({timing})" if timing else "…")
        else:
            text = "● Live" + (f": {timing}" if timing else ": waiting for a stroke")
        self.label.setText(text)

    def shutdown(self) -> None:
        self.controller.set_enabled(False)
        self.worker.shutdown()
