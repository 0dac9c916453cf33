"""Run slow file work (reading or writing large pictures) off the GUI thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from sdstudio.core.errors import SDStudioError

log = logging.getLogger(__name__)


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(str)


class _Task(QRunnable):
    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.work = work
        self.signals = _Signals()

    def run(self) -> None:
        try:
            result = self.work()
        except SDStudioError as error:
            self.signals.failed.emit(str(error))
        except Exception as error:  # noqa: BLE001 - becomes a message, the trace goes to the log
            log.exception("background task failed")
            self.signals.failed.emit(f"{type(error).__name__}: {error}")
        else:
            self.signals.done.emit(result)


_running: set[_Task] = set()


def run_in_background(
    work: Callable[[], Any], on_done: Callable[[Any], None], on_failed: Callable[[str], None]
) -> None:
    """Run ``work()`` on Qt's thread pool; ``on_done(result)`` / ``on_failed(message)`` run on
    the GUI thread afterwards."""
    task = _Task(work)
    _running.add(task)

    def finish(callback: Callable[[Any], None], value: Any) -> None:
        _running.discard(task)
        callback(value)

    task.signals.done.connect(lambda result: finish(on_done, result))
    task.signals.failed.connect(lambda message: finish(on_failed, message))
    QThreadPool.globalInstance().start(task)


def wait_for_background(timeout_ms: int = 10000) -> bool:
    """Wait for running file tasks (used on close and in tests)."""
    return QThreadPool.globalInstance().waitForDone(timeout_ms)
