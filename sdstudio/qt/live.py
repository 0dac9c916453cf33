"""Live mode's controller: regenerates the live area while the person draws.

It turns changes into runs through ``core.live.LiveScheduler`` (one run in flight, changes
coalesced, the newest state wins, a pause after the last change from the measured frame time,
young stale runs cancelled between steps, failures backed off), arms one single-shot ``QTimer``
for the scheduler's next wake-up, and runs the requests on a ``GenerationWorker`` of its own.
The GUI thread never waits: ``notify_changed``, ``set_enabled`` and ``keep`` return at once;
the worker cancels between steps, and its signals come back queued.

Wiring it into the window (the caller's part)::

    live_worker = GenerationWorker(engine_factory)   # live's own worker: all its signals are
    live_worker.start()                              # live's; shut it down with the others
    live = LiveController(live_worker, build_request, parent=window)
    live.frame_ready.connect(canvas_overlay)         # Finished: draw patch at box over the picture
    live.frame_cleared.connect(remove_overlay)       # live off, or the frame was kept
    live.busy_changed.connect(indicator_working)     # bool
    live.frame_time.connect(indicator_seconds)       # float seconds, after each frame
    live.failed.connect(status_bar)                  # one line a person can act on
    toggle.toggled.connect(live.set_enabled)         # F5; a new document: set_enabled(False)
    # stroke end, prompt, parameter, control changes:
    live.notify_changed()
    # Keep (Enter): one undo step, as EditorSession.accept does for a candidate
    frame = live.keep()
    if frame is not None:
        document.apply_patch(frame.box, frame.patch, label="Keep live frame")

``build_request()`` is called on the GUI thread when a run starts (not at each change), so it
always reads the newest document and settings: the live area as img2img with the sketch as
control, a fixed seed and the live strength. It returns None when there is nothing to generate
(no document); a ``RequestError`` it raises is reported through ``failed``. Keep its cost small:
it runs on the GUI thread (copy only the live area's pixels).

Frames: the newest finished frame is shown; a stale run's frame still shows (it is newer than
the one on screen), and a frame never replaces one of a newer state. Switching off cancels the
run in flight, drops its frame and clears the one shown; the picture is never touched here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, QTimer, Signal

from sdstudio.core.errors import SDStudioError
from sdstudio.core.live import Action, CancelRun, LivePolicy, LiveScheduler, Outcome, StartRun
from sdstudio.core.request import GenerationRequest
from sdstudio.engine.events import Finished, Started

log = logging.getLogger(__name__)


@dataclass
class _Job:
    job_id: int
    version: int
    request: GenerationRequest
    outcome: Outcome | None = None
    dropped: bool = False
    """Live was switched off while it ran: its frame, if any, is not shown."""


class LiveController(QObject):
    """See the module docstring. Call every method from the GUI thread."""

    frame_ready = Signal(object)
    """The newest live frame (``Finished``): its patch goes over the picture at its box."""
    frame_cleared = Signal()
    """No frame to show any more (live switched off, or the frame was kept)."""
    busy_changed = Signal(bool)
    """True while a run is in flight or a change waits for one."""
    frame_time = Signal(float)
    """Seconds the last frame took, from the engine's start to its result."""
    failed = Signal(str)

    def __init__(
        self,
        worker,
        build_request: Callable[[], GenerationRequest | None],
        parent: QObject | None = None,
        *,
        policy: LivePolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(parent)
        self._worker, self._build, self._clock = worker, build_request, clock
        self.scheduler = LiveScheduler(policy)
        self._job: _Job | None = None
        self._frame: Finished | None = None
        self._frame_request: GenerationRequest | None = None
        self._frame_version = 0
        self._busy = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._on_timer)
        worker.started.connect(self._on_started)
        worker.finished.connect(self._on_finished)
        worker.cancelled.connect(self._on_cancelled)
        worker.failed.connect(self._on_failed)
        worker.batch_done.connect(self._on_batch_done)

    # -- API ----------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.scheduler.enabled

    @property
    def version(self) -> int:
        """The number of the newest change (frames say which change they show)."""
        return self.scheduler.version

    @property
    def frame_version(self) -> int:
        """The change the shown frame renders (0: none)."""
        return self._frame_version if self._frame is not None else 0

    def is_busy(self) -> bool:
        return self._busy

    def current_frame(self) -> Finished | None:
        return self._frame

    def current_request(self) -> GenerationRequest | None:
        """The request ``build_request`` made for the shown frame (the very object), or None."""
        return self._frame_request if self._frame is not None else None

    def set_enabled(self, enabled: bool) -> None:
        """On: a first frame of the current state follows. Off: the run in flight is cancelled
        (its frame dropped) and the shown frame cleared."""
        if enabled == self.scheduler.enabled:
            return
        self._apply(self.scheduler.set_enabled(enabled, self._clock()))
        if enabled:
            self.notify_changed()
            return
        if self._job is not None:
            self._job.dropped = True
        self._clear_frame()
        self._update()

    def notify_changed(self) -> None:
        """Something that matters changed (a stroke ended, the prompt, a parameter, a control)."""
        if self.scheduler.enabled:
            self._apply(self.scheduler.changed(None, self._clock()))

    def keep(self) -> Finished | None:
        """The current frame, handed over once (the overlay is cleared) for the caller to put
        into the picture as one undo step; None when there is none."""
        frame = self._frame
        self._clear_frame()
        return frame

    # -- scheduling ---------------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, CancelRun):
                if self._job is not None and self._job.job_id == action.job_id:
                    self._worker.cancel()  # sets an Event: the run stops between steps
            elif isinstance(action, StartRun):
                pending.extend(self._start(action))
        self._update()

    def _start(self, action: StartRun) -> list[Action]:
        """Submit the run; when it cannot start, report it to the scheduler at once."""
        try:
            request = self._build()
        except SDStudioError as error:
            self.failed.emit(str(error))
            return self.scheduler.run_finished(action.job_id, self._clock(), Outcome.FAILED)
        if request is None:  # nothing to generate: the next change tries again
            return self.scheduler.run_finished(action.job_id, self._clock(), Outcome.CANCELLED)
        self._job = _Job(action.job_id, action.version, request)
        self._worker.submit([request])
        return []

    def _update(self) -> None:
        """Arm the timer for the scheduler's next wake-up and say when busy changes."""
        now = self._clock()
        wake = self.scheduler.next_wakeup(now)
        if wake is None:
            self._timer.stop()
        else:
            self._timer.start(max(1, math.ceil((wake - now) * 1000)))
        busy = self._job is not None or self.scheduler.busy()
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)

    def _on_timer(self) -> None:
        self._apply(self.scheduler.tick(self._clock()))

    def _clear_frame(self) -> None:
        if self._frame is not None:
            self._frame = self._frame_request = None
            self.frame_cleared.emit()

    # -- worker events (GUI thread, queued from the worker) -----------------------------------

    def _on_started(self, _event: Started) -> None:
        if self._job is not None:
            self.scheduler.run_started(self._job.job_id, self._clock())

    def _on_finished(self, result: Finished) -> None:
        job = self._job
        if job is None:
            return
        job.outcome = Outcome.FINISHED
        if job.dropped or job.version <= self._frame_version:
            return  # live went off meanwhile, or a newer state is on screen already
        self._frame, self._frame_version = result, job.version
        self._frame_request = job.request
        self.frame_ready.emit(result)

    def _on_cancelled(self) -> None:
        if self._job is not None:
            self._job.outcome = Outcome.CANCELLED

    def _on_failed(self, message: str) -> None:
        if self._job is not None:
            self._job.outcome = Outcome.FAILED
            if not self._job.dropped:
                self.failed.emit(message)

    def _on_batch_done(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        outcome = job.outcome or Outcome.FAILED
        actions = self.scheduler.run_finished(job.job_id, self._clock(), outcome)
        if outcome is Outcome.FINISHED and self.scheduler.last_frame_time is not None:
            self.frame_time.emit(self.scheduler.last_frame_time)
        self._apply(actions)
