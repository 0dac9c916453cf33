"""Crash recovery: autosaved snapshots in a recovery folder, each guarded by a lock file.

Every running editor is a ``RecoverySession``: it holds an exclusive operating-system lock on
``<id>.lock`` in the recovery folder for as long as it runs, and its autosaves go to ``<id>.ora``
there (a project file, written safely like any save), never over the person's own file, with a
small ``<id>.json`` beside it saying whose work it is and when (read at start-up without opening
the picture). When a
lock can be taken, its owner is gone (crashed, killed, power cut): its snapshot is an orphan that
the next start offers to restore or discard. The operating system drops a lock when its process
dies, so neither a stale lock file nor a process id reused by another program can make a dead
session look alive.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from sdstudio.core.errors import ProjectError
from sdstudio.core.paths import data_dir
from sdstudio.core.project import Project, Result, load_project
from sdstudio.core.project_save import save_project
from sdstudio.core.sketch import SketchLayer


def recovery_dir() -> Path:
    return data_dir() / "recovery"


@dataclass(frozen=True)
class Orphan:
    """The last autosave of an editor that did not close normally."""

    snapshot: Path
    lock: Path
    saved_at: float
    """Seconds since the epoch."""
    source: str | None
    """The file the person was working on, if it had one."""

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.saved_at))
        what = Path(self.source).name if self.source else "an unsaved picture"
        return f"{what}, autosaved {when}"


class RecoverySession:
    """This process's place in the recovery folder: hold it for the editor's whole life."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else recovery_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.id = f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lock_path = self.folder / f"{self.id}.lock"
        self.snapshot_path = self.folder / f"{self.id}.ora"
        self._handle: IO[bytes] | None = open(self.lock_path, "a+b")  # noqa: SIM115 - held
        if not _try_lock(self._handle):
            self._handle.close()
            raise ProjectError(f"Could not lock {self.lock_path} for crash recovery.")

    def autosave(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        extra: dict | None = None,
        source: Path | None = None,
        results: Sequence[Result] = (),
        sketch: SketchLayer | None = None,
    ) -> None:
        """Write a snapshot (safely: the previous one stays valid until the new one is whole),
        with the waiting ``results`` and the ``sketch`` too."""
        facts = {"source": str(source) if source else None, "saved_at": time.time()}
        save_project(self.snapshot_path, image, mask, extra, results, sketch)
        _write_facts(self.snapshot_path.with_suffix(".json"), facts)

    def clear(self) -> None:
        """Forget the snapshot (the work is safe in the person's own file now)."""
        _remove_snapshot(self.snapshot_path)

    def close(self) -> None:
        """A normal exit: no snapshot and no lock left behind."""
        self.clear()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self.lock_path.unlink(missing_ok=True)


def orphans(folder: Path | None = None) -> list[Orphan]:
    """Snapshots of editors that are gone, newest first. Lock files left without a snapshot
    (an editor that died before its first autosave) are removed on the way."""
    folder = Path(folder) if folder is not None else recovery_dir()
    if not folder.is_dir():
        return []
    found = []
    for snapshot in folder.glob("*.ora"):
        lock = snapshot.with_suffix(".lock")
        if lock.exists() and not _owner_gone(lock):
            continue
        found.append(_describe(snapshot, lock))
    for lock in folder.glob("*.lock"):
        if not lock.with_suffix(".ora").exists() and _owner_gone(lock):
            lock.unlink(missing_ok=True)
    return sorted(found, key=lambda orphan: orphan.saved_at, reverse=True)


def restore(orphan: Orphan) -> Project:
    """The orphan's picture, mask, sketch and data (``ProjectError`` if the snapshot is
    unreadable)."""
    return load_project(orphan.snapshot)


def discard(orphan: Orphan) -> None:
    _remove_snapshot(orphan.snapshot)
    orphan.lock.unlink(missing_ok=True)


def _describe(snapshot: Path, lock: Path) -> Orphan:
    saved_at, source = snapshot.stat().st_mtime, None
    try:
        facts = json.loads(snapshot.with_suffix(".json").read_text("utf-8"))
        saved_at = float(facts.get("saved_at", saved_at))
        source = facts.get("source") if isinstance(facts.get("source"), str) else None
    except (OSError, AttributeError, TypeError, ValueError):
        pass  # still offered: restoring it says what is wrong with it
    return Orphan(snapshot, lock, saved_at, source)


def _write_facts(path: Path, facts: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(facts), "utf-8")
    os.replace(temporary, path)


def _remove_snapshot(snapshot: Path) -> None:
    snapshot.unlink(missing_ok=True)
    snapshot.with_name(snapshot.name + "~").unlink(missing_ok=True)  # the safe save's backup
    snapshot.with_suffix(".json").unlink(missing_ok=True)


def _owner_gone(lock: Path) -> bool:
    """True when nobody holds ``lock`` (taking it for a moment to find out)."""
    try:
        handle = open(lock, "a+b")  # noqa: SIM115 - closed below
    except OSError:
        return False
    with handle:
        return _try_lock(handle)  # closing the handle releases the lock at once


def _try_lock(handle: IO[bytes]) -> bool:
    if sys.platform == "win32":
        import msvcrt

        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
