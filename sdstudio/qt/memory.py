"""Memory budgets of the editor: undo history and waiting results, in MiB in the settings.

When either would outgrow its budget, the oldest entries are dropped first and the status bar
says so (the undo history in ``core.history``, the results in ``EditorSession``).
"""

from __future__ import annotations

from PySide6.QtCore import QSettings

UNDO_KEY, RESULTS_KEY = "memory/undo_mib", "memory/results_mib"
UNDO_MIB, RESULTS_MIB = 512, 1024
MIN_MIB = 16


def memory_budget(settings: QSettings, key: str, default_mib: int) -> int:
    """A budget in bytes from the settings (MiB, at least ``MIN_MIB``), else the default."""
    try:
        return max(MIN_MIB, int(float(settings.value(key, default_mib)))) * 2**20
    except (TypeError, ValueError, OverflowError):
        return default_mib * 2**20
