"""Progress and cancellation for slow pure functions (no Qt: a plain callback and an Event).

A slow function takes ``progress: Progress | None`` and ``cancel: threading.Event | None`` and
calls ``checkpoint`` between its steps; the GUI passes a callback that posts to its thread and the
Event its Cancel button sets, the CLI a printer, tests neither.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sdstudio.core.errors import Cancelled

Progress = Callable[[int, int], None]


def checkpoint(
    done: int,
    total: int,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    what: str = "Cancelled",
) -> None:
    """Report ``done`` of ``total`` steps, or raise ``Cancelled`` if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what}; the picture is unchanged.")
    if progress is not None:
        progress(done, total)
