"""The generation worker: one long-lived ``QThread`` that owns the engine and runs requests.

The GUI talks to a ``GenerationWorker`` (it lives on the GUI thread and may have a Qt parent);
the work happens in a private runner object living on the worker's own thread. The engine is made
by ``engine_factory`` on that thread the first time it is needed, so torch never loads on the GUI
thread nor at start-up.

- ``submit`` and ``load_model`` are queued to the worker thread and run one after another.
- ``cancel`` sets a ``threading.Event`` directly: the worker thread is busy inside the pipeline
  and would not see a queued slot until the run is over. It stops the current run and drops the
  rest of its batch, and every batch submitted before it.
- Signals are emitted from the worker thread and reach GUI-thread receivers queued. Previews
  cross as ``QImage`` copies that own their memory (a ``QPixmap`` is made only on the GUI thread),
  throttled to about 30 per second; the last preview of a run always arrives before ``finished``.
- Every outcome of a run is exactly one of ``finished``, ``cancelled`` or ``failed``; every
  batch ends with ``batch_done``. Exceptions become ``failed`` with a line a person can act on.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtGui import QImage

from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import GenerationRequest
from sdstudio.engine.events import Cancelled, Engine, Failed, Finished, Preview, Started, Step

log = logging.getLogger(__name__)

_abandoned: list[QThread] = []
"""Worker threads still running when given up on, kept referenced until they end."""


def _abandon(thread: QThread) -> None:
    """Keep a running thread (and its runner) alive: destroying a running ``QThread`` aborts."""
    _abandoned[:] = [t for t in _abandoned if not t.isFinished()]
    if thread.isRunning():
        _abandoned.append(thread)


PREVIEW_INTERVAL_S = 1.0 / 30.0
"""At most about 30 previews a second reach the GUI; the others are dropped."""


def preview_image(rgb: np.ndarray) -> QImage:
    """An RGB888 ``QImage`` that owns a copy of ``rgb`` (H x W x 3 uint8): safe on any thread."""
    pixels = np.ascontiguousarray(rgb, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = np.ascontiguousarray(np.repeat(pixels[:, :, None], 3, axis=2))
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"A preview must be H x W x 3, not {pixels.shape}.")
    height, width = pixels.shape[:2]
    view = QImage(pixels.data, width, height, pixels.strides[0], QImage.Format.Format_RGB888)
    return view.copy()  # the view borrows numpy's buffer; the copy owns its pixels


def error_line(error: BaseException, what: str) -> str:
    """One line for a person: our own errors as they are, others prefixed by what failed."""
    if isinstance(error, SDStudioError):
        text = str(error)
    else:
        text = f"{what}: {type(error).__name__}: {error}"
    return (text.strip().splitlines() or [what])[0]


class _Shared:
    """The state the GUI thread and the worker thread share, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.epoch = 0  # bumped by each cancel()
        self.jobs = 0  # submitted and not yet done
        self.orphaned = False  # the GenerationWorker was deleted: emit nothing more

    def add_job(self) -> int:
        with self.lock:
            self.jobs += 1
            return self.epoch

    def cancel_all(self) -> None:
        with self.lock:
            self.epoch += 1
            self.cancel.set()

    def claim(self, epoch: int) -> bool:
        """Start a batch: False when a cancel came after it was submitted."""
        with self.lock:
            if epoch != self.epoch:
                return False
            self.cancel.clear()
            return True

    def job_done(self) -> bool:
        """One job fewer; True when none is left."""
        with self.lock:
            self.jobs -= 1
            return self.jobs == 0


@dataclass(frozen=True)
class _Batch:
    requests: tuple[GenerationRequest, ...]
    epoch: int
    """The cancel epoch at submit time: a later ``cancel()`` drops this batch."""


class _PreviewThrottle:
    """Passes about one preview per ``interval``; keeps the newest dropped one for ``flush``.

    Sends are scheduled a whole interval apart on average but may come as close as half an
    interval, so steps slightly faster than the interval (31 ms against 33 ms) are not halved.
    The last step's preview always passes.
    """

    def __init__(self, send: Callable[[Preview], None], interval: float) -> None:
        self._send, self._interval = send, interval
        self._next: float | None = None
        self._pending: Preview | None = None

    def offer(self, preview: Preview) -> None:
        now = time.monotonic()
        if self._next is None or now >= self._next or preview.index >= preview.total:
            if self._next is None:
                self._next = now + self._interval
            else:
                self._next = max(self._next + self._interval, now + self._interval / 2)
            self._pending = None
            self._send(preview)
        else:
            self._pending = preview

    def flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._send(pending)


class _Runner(QObject):
    """Lives on the worker thread; runs batches and loads, emits the worker's signals."""

    def __init__(
        self,
        worker: GenerationWorker,
        factory: Callable[[], Engine],
        shared: _Shared,
        interval: float,
    ) -> None:
        super().__init__()
        self._worker = weakref.ref(worker)  # no cycle through the worker's connections
        self._factory, self._shared, self._cancel = factory, shared, shared.cancel
        self._interval = interval
        self._engine: Engine | None = None
        self._reported_busy = False

    # -- slots (worker thread) -------------------------------------------------------------

    @Slot(object)
    def run_batch(self, batch: _Batch) -> None:
        self._job_begins()
        try:
            if not self._shared.claim(batch.epoch):
                self._emit("cancelled")  # cancelled before it began
                return
            engine = self._get_engine()
            if engine is None:
                return
            for request in batch.requests:
                if self._cancel.is_set():
                    self._emit("cancelled")
                    return
                if not self._run_one(engine, request):
                    return  # cancelled or failed: the rest of the batch is dropped
        finally:
            self._job_ends(batch_done=True)

    @Slot(str)
    def load_model(self, reference: str) -> None:
        self._job_begins()
        try:
            engine = self._get_engine()
            if engine is None:
                return
            load = getattr(engine, "load", None)
            try:
                if callable(load):
                    load(reference)
            except Exception as error:
                log.error("loading %r failed", reference, exc_info=error)
                self._emit("failed", error_line(error, f"Could not load '{reference}'"))
                return
            self._emit("model_loaded", reference)
        finally:
            self._job_ends(batch_done=False)

    def close_engine(self) -> None:
        """Called on the worker thread once its event loop has ended."""
        engine, self._engine = self._engine, None
        close = getattr(engine, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                log.exception("closing the engine failed")

    # -- helpers ---------------------------------------------------------------------------

    def _emit(self, name: str, *args: Any) -> None:
        worker = self._worker()
        if worker is None or self._shared.orphaned:
            return
        try:
            getattr(worker, name).emit(*args)
        except RuntimeError:  # deleted (its Qt parent went) between the check and the emit
            self._shared.orphaned = True

    def _job_begins(self) -> None:
        if not self._reported_busy:
            self._reported_busy = True
            self._emit("busy_changed", True)

    def _job_ends(self, batch_done: bool) -> None:
        idle = self._shared.job_done()
        if batch_done:
            self._emit("batch_done")
        if idle and self._reported_busy:
            self._reported_busy = False
            self._emit("busy_changed", False)

    def _get_engine(self) -> Engine | None:
        if self._engine is None:
            try:
                self._engine = self._factory()
            except Exception as error:
                log.error("creating the engine failed", exc_info=error)
                self._emit("failed", error_line(error, "Could not start the generation engine"))
                return None
        return self._engine

    def _run_one(self, engine: Engine, request: GenerationRequest) -> bool:
        """Run one request to its one outcome; True when it finished."""
        cancel = self._cancel
        throttle = _PreviewThrottle(
            lambda p: self._emit("preview", preview_image(p.rgb), p.box), self._interval
        )
        outcome: str | None = None
        events: Iterator[Any] = iter(())
        try:
            events = iter(engine.run(request, cancel))
            # Drain the iterator to its end even after the outcome: closing a streaming
            # engine's iterator early counts as a cancel there.
            for event in events:
                if outcome is not None:
                    continue
                if isinstance(event, Step):
                    self._emit("step", event.index, event.total)
                elif isinstance(event, Preview):
                    throttle.offer(event)
                elif isinstance(event, Started):
                    self._emit("started", event)
                elif isinstance(event, Finished):
                    if cancel.is_set():  # a cancel that raced the end: no result
                        outcome = "cancelled"
                        self._emit("cancelled")
                    else:
                        outcome = "finished"
                        throttle.flush()
                        self._emit("finished", event)
                elif isinstance(event, Cancelled):
                    outcome = "cancelled"
                    self._emit("cancelled")
                elif isinstance(event, Failed):
                    outcome = "failed"
                    if event.error is not None:
                        log.error("generation failed: %s", event.message, exc_info=event.error)
                    self._emit("failed", event.message)
                else:
                    log.warning("ignoring unknown engine event %r", event)
        except Exception as error:
            log.error("the engine raised", exc_info=error)
            if outcome is None:
                outcome = "failed"
                self._emit("failed", error_line(error, "Generation failed"))
        finally:
            # Close now, not whenever it is collected: a streaming engine that is closed early
            # sets the cancel event, which must not hit a later run.
            close = getattr(events, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.exception("closing the engine's event stream failed")
        if outcome is None:
            if cancel.is_set():
                outcome = "cancelled"
                self._emit("cancelled")
            else:
                outcome = "failed"
                self._emit(
                    "failed",
                    "The engine stopped without a result; try again, and see the log if it "
                    "happens again.",
                )
        return outcome == "finished"


class _WorkerThread(QThread):
    """Runs the event loop, then closes the engine on this same thread."""

    def __init__(self, runner_closer: Callable[[], None]) -> None:
        super().__init__()
        self._closer = runner_closer

    def run(self) -> None:
        self.exec()
        self._closer()


class GenerationWorker(QObject):
    """The GUI's handle on generation: call its methods from the GUI thread only.

    ``engine_factory`` is called on the worker thread, once, when the first job needs it (a
    failure is reported through ``failed`` and the next job tries again). Call ``shutdown()``
    before the application quits (a running ``QThread`` must not be destroyed).
    """

    started = Signal(object)
    """The ``Started`` event: mode, number of steps and the box being generated."""
    step = Signal(int, int)
    """``(index, total)``, 1-based; every step, not throttled."""
    preview = Signal(object, object)
    """``(QImage, Box)``: the preview at latent resolution, to be scaled into the box."""
    finished = Signal(object)
    """The ``Finished`` event: the candidate (patch, box, parameters, request)."""
    cancelled = Signal()
    failed = Signal(str)
    """One line a person can act on."""
    batch_done = Signal()
    """After every batch, whatever its outcome."""
    model_loaded = Signal(str)
    busy_changed = Signal(bool)

    _batch_requested = Signal(object)
    _load_requested = Signal(str)

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        parent: QObject | None = None,
        *,
        preview_interval: float = PREVIEW_INTERVAL_S,
    ) -> None:
        super().__init__(parent)
        self._shared = _Shared()
        self._closed = False
        self._runner = _Runner(self, engine_factory, self._shared, preview_interval)
        self._thread = _WorkerThread(self._runner.close_engine)  # it keeps the runner alive
        self._thread.setObjectName("sdstudio-worker")
        self._runner.moveToThread(self._thread)
        queued = Qt.ConnectionType.QueuedConnection
        self._batch_requested.connect(self._runner.run_batch, queued)
        self._load_requested.connect(self._runner.load_model, queued)
        self.destroyed.connect(partial(_worker_destroyed, self._shared, self._thread))

    # -- GUI-thread API --------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (jobs submitted before this wait for it)."""
        if self._closed:
            raise RuntimeError("The generation worker has been shut down.")
        if not self._thread.isRunning():
            self._thread.start()

    def submit(self, requests: list[GenerationRequest]) -> None:
        """Run ``requests`` one after another on the worker thread (a batch)."""
        if self._closed:
            raise RuntimeError("The generation worker has been shut down.")
        batch = _Batch(tuple(requests), self._shared.add_job())
        self._batch_requested.emit(batch)

    def load_model(self, reference: str) -> None:
        """Load a model ahead of a run; ends in ``model_loaded`` or ``failed``."""
        if self._closed:
            raise RuntimeError("The generation worker has been shut down.")
        self._shared.add_job()
        self._load_requested.emit(reference)

    def cancel(self) -> None:
        """Stop the current run and drop the rest of its batch and of every batch waiting.

        Thread-safe and immediate: it sets a ``threading.Event`` that the engine checks inside
        each step, instead of queueing a slot to a thread that is busy inside the pipeline.
        """
        self._shared.cancel_all()

    def is_busy(self) -> bool:
        """True from ``submit``/``load_model`` until the worker has finished all of them."""
        with self._shared.lock:
            return self._shared.jobs > 0

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel, stop the thread and wait for it; True when it has stopped.

        Safe to call twice and when never started. ``quit()`` is called directly (it is
        thread-safe), never through a queued connection that ``wait()`` would starve.
        """
        self.cancel()
        self._closed = True
        if not self._thread.isRunning():
            return True
        self._thread.quit()
        if not self._thread.wait(timeout_ms):
            # Still inside a call that cannot be cancelled (a model load): keep the thread
            # alive until it ends, since destroying a running QThread aborts the process.
            log.warning("the generation worker did not stop within %d ms", timeout_ms)
            _abandon(self._thread)
            return False
        with self._shared.lock:
            self._shared.jobs = 0  # jobs still queued were dropped with the event loop
        return True


def _worker_destroyed(shared: _Shared, thread: QThread, *_: Any) -> None:
    """The worker was deleted without ``shutdown()`` (its Qt parent went): stop its thread."""
    shared.orphaned = True
    shared.cancel_all()
    try:
        running = thread.isRunning()
    except RuntimeError:  # the thread went first (both collected together): nothing runs
        return
    if running:
        thread.quit()
        _abandon(thread)
