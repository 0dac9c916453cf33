"""One engine for several workers: made once, running one request (or model load) at a time.

Live mode runs its frames on a worker of its own, so that its signals never mix with Generate's,
but a second engine would load a second copy of the model (gigabytes of GPU memory). Both
workers take a handle on one ``SharedEngine`` instead: the engine is made by the first handle
that needs it (on that worker's thread), and a run holds the engine until its events end, so
Generate and a live frame take turns. A run that waits for its turn can be cancelled while it
waits. The engine is closed when the last handle is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from sdstudio.core.request import GenerationRequest
from sdstudio.engine.events import Cancelled, Engine, Event

WAIT_SLICE_S = 0.02
"""How often a waiting run looks at its cancel event."""


class SharedEngine:
    """See the module docstring. ``handle_factory()`` is what each worker's factory returns."""

    def __init__(self, factory: Callable[[], Engine]) -> None:
        self._factory = factory
        self._turn = threading.Lock()  # held by the run or load in progress
        self._making = threading.Lock()  # guards making the engine and counting handles
        self._engine: Engine | None = None
        self._handles = 0

    def handle_factory(self) -> Callable[[], EngineHandle]:
        return lambda: EngineHandle(self)

    @property
    def engine(self) -> Engine | None:
        """The engine once made (None before the first run or load)."""
        return self._engine

    # -- used by the handles ------------------------------------------------------------------

    def _attach(self) -> Engine:
        with self._making:
            if self._engine is None:
                self._engine = self._factory()  # an error reaches the worker that asked
            self._handles += 1
            return self._engine

    def _detach(self) -> None:
        with self._making:
            self._handles -= 1
            if self._handles > 0 or self._engine is None:
                return
            engine, self._engine = self._engine, None
        close = getattr(engine, "close", None)
        if callable(close):
            with self._turn:
                close()

    def _wait_turn(self, cancel: threading.Event | None) -> bool:
        """Take the engine; False when ``cancel`` was set while waiting for it."""
        while not self._turn.acquire(timeout=WAIT_SLICE_S):
            if cancel is not None and cancel.is_set():
                return False
        return True


class EngineHandle:
    """A worker's view of a ``SharedEngine``: the ``Engine`` protocol plus ``load`` and
    ``close``, each run or load taking its turn."""

    def __init__(self, shared: SharedEngine) -> None:
        self._shared = shared
        self._engine = shared._attach()
        self._closed = False

    def run(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Event]:
        if not self._shared._wait_turn(cancel):
            yield Cancelled()
            return
        try:
            # Closing this generator early closes the engine's too, then gives the turn back.
            yield from self._engine.run(request, cancel)
        finally:
            self._shared._turn.release()

    def load(self, reference: str) -> Any:
        load = getattr(self._engine, "load", None)
        if not callable(load):
            return None
        self._shared._wait_turn(None)
        try:
            return load(reference)
        finally:
            self._shared._turn.release()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._shared._detach()
