"""Turn work that reports through a callback into an iterator of events.

A diffusers pipeline reports progress through a per-step callback, but ``Engine.run`` yields
events. The work runs on a short-lived thread and hands events over a queue; the caller's thread
(the GUI's worker, or the CLI) iterates at its own pace. Closing the iterator early cancels.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator

from sdstudio.core.errors import SDStudioError
from sdstudio.engine.events import Cancelled, Event, Failed

log = logging.getLogger(__name__)

Emit = Callable[[Event], None]


class RunCancelled(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a run (from the step callback or a module hook) to stop it."""


def check_cancel(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise RunCancelled


def failure_event(error: BaseException) -> Failed:
    """The one-line ``Failed`` event for an exception: our own messages as they are."""
    if isinstance(error, SDStudioError):
        return Failed(str(error), error)
    log.error("generation failed", exc_info=error)
    return Failed(f"Generation failed: {type(error).__name__}: {error}", error)


_DONE = object()


def stream(work: Callable[[Emit], None], cancel: threading.Event) -> Iterator[Event]:
    """Run ``work(emit)`` on a thread and yield what it emits; end with its outcome."""
    events: queue.Queue = queue.Queue()

    def target() -> None:
        try:
            work(events.put)
        except RunCancelled:
            events.put(Cancelled())
        except BaseException as error:  # noqa: BLE001 - every failure becomes an event
            events.put(failure_event(error))
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=target, name="sdstudio-generate", daemon=True)
    thread.start()
    try:
        while (event := events.get()) is not _DONE:
            yield event
    finally:
        if thread.is_alive():
            cancel.set()
            thread.join()
