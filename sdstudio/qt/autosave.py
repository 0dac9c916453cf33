"""Autosave and crash recovery for the editor window.

Every few minutes (``autosave/minutes`` in the settings, 0 turns it off) and after each accepted
result, a changed document is copied on the GUI thread (a memory copy: milliseconds) and written
on a background thread into this session's recovery snapshot, never over the person's own file.
At start-up the snapshots of editors that did not close normally are offered back one by one.
"""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMessageBox

from sdstudio.core.document import Document
from sdstudio.core.recovery import Orphan, RecoverySession, discard, orphans, restore
from sdstudio.qt.tasks import run_in_background

log = logging.getLogger(__name__)

MINUTES_KEY = "autosave/minutes"
DEFAULT_MINUTES = 2.0


class Autosave:
    """Mixed into MainWindow (which provides session, settings, statusBar, and FileHandling's
    project_snapshot and show_project)."""

    recovery: RecoverySession | None = None
    autosave_pause: float = 0.0
    """GUI-thread seconds the last autosave took (the copy; the write is in the background)."""

    def start_autosave(self, recovery: RecoverySession) -> None:
        """Autosave into ``recovery`` from now on (the window closes it on a normal exit)."""
        self.recovery = recovery
        self._autosave_busy = False
        self._autosaved: tuple[weakref.ref, object] | None = None  # (document, version) written
        self._autosave_timer = QTimer(self)
        self._autosave_timer.timeout.connect(self.autosave_now)
        try:
            minutes = float(self.settings.value(MINUTES_KEY, DEFAULT_MINUTES))
        except (TypeError, ValueError):
            minutes = DEFAULT_MINUTES
        if minutes > 0:
            self._autosave_timer.start(max(1000, int(minutes * 60_000)))
        self.session.accepted.connect(self.autosave_now)

    def autosave_now(self) -> bool:
        """Snapshot a changed document and write it in the background; False when there was
        nothing to do (no recovery, nothing changed, or a write still under way)."""
        document: Document | None = self.session.document
        if self.recovery is None or document is None or self._autosave_busy:
            return False
        last = self._autosaved
        if not document.modified or (
            last and last[0]() is document and last[1] == document.version
        ):
            return False  # nothing new since the last save or autosave
        start = time.perf_counter()
        image, mask, extra, results, sketch = self.project_snapshot(document)  # as a save does
        source = document.path
        self.autosave_pause = time.perf_counter() - start
        self._autosave_busy = True
        recovery, written = self.recovery, (weakref.ref(document), document.version)

        def done(_result=None) -> None:
            self._autosave_busy = False
            self._autosaved = written

        def failed(message: str) -> None:
            self._autosave_busy = False
            log.warning("autosave failed: %s", message)
            self.statusBar().showMessage(f"Autosave failed: {message}", 10000)

        run_in_background(
            lambda: recovery.autosave(image, mask, extra, source, results, sketch), done, failed
        )
        return True

    def autosave_saved(self) -> None:
        """The person saved: the snapshot is not needed until the next change."""
        if self.recovery is not None and not self._autosave_busy:
            self.recovery.clear()

    def stop_autosave(self) -> None:
        """A normal exit: nothing is left for the next start to offer."""
        if self.recovery is not None:
            self._autosave_timer.stop()
            self.recovery.close()
            self.recovery = None

    def offer_recovery(self, folder=None) -> Orphan | None:
        """Ask about each snapshot a crashed editor left, newest first: Discard forgets it,
        Ignore keeps it for the next start, Open restores it (read in the background) and asks
        no more, since the window holds one picture. Returns the one being restored."""
        for orphan in orphans(folder):
            answer = self.ask_recovery(orphan)
            if answer == QMessageBox.StandardButton.Discard:
                discard(orphan)
            elif answer == QMessageBox.StandardButton.Open:
                self.statusBar().showMessage(f"Restoring {orphan.describe()} …")
                run_in_background(
                    lambda orphan=orphan: restore(orphan),
                    lambda project, orphan=orphan: self._restored(orphan, project),
                    lambda message, orphan=orphan: self.show_error(
                        f"{message} The snapshot is kept at {orphan.snapshot}."
                    ),
                )
                return orphan
        return None

    def ask_recovery(self, orphan: Orphan) -> QMessageBox.StandardButton:
        """Open (shown as Restore), Discard, or Ignore (shown as Later: ask again next time).
        Tests replace this."""
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "SD Studio",
            f"SD Studio did not close normally. Restore the work it kept: {orphan.describe()}?",
            QMessageBox.StandardButton.Open
            | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Ignore,
            self,
        )
        box.button(QMessageBox.StandardButton.Open).setText("Restore")
        box.button(QMessageBox.StandardButton.Ignore).setText("Later")
        box.setDefaultButton(QMessageBox.StandardButton.Open)
        box.exec()
        return box.standardButton(box.clickedButton())

    def _restored(self, orphan: Orphan, project) -> None:
        source = Path(orphan.source) if orphan.source else None
        document, _ = self.show_project(project, source)
        document.modified = True  # not in any file of the person's yet
        self._update_title()
        if self.recovery is None:
            discard(orphan)
        else:  # safe in this session's own snapshot (taken as any autosave) before the old goes
            recovery = self.recovery
            image, mask, extra, results, sketch = self.project_snapshot(document)
            run_in_background(
                lambda: recovery.autosave(image, mask, extra, source, results, sketch),
                lambda _result=None: discard(orphan),
                lambda message: log.warning("could not re-save a restored snapshot: %s", message),
            )
        self.statusBar().showMessage(
            f"Restored {orphan.describe()}. Save it (Ctrl+S) to keep it.", 15000
        )
