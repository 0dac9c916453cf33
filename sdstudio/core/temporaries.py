"""Temporary files beside a file being saved, and removing those a killed save left behind.

A safe save writes ``.NAME.PID-HOST-RANDOM.tmp`` beside ``NAME`` (a project's backup copy:
``.NAME~.PID-HOST-RANDOM.tmp``) and renames it over ``NAME``; a process killed in between leaves
it behind, and a picture's worth of disk with it. The name says which process on which machine
writes it, so the next save or opening of ``NAME`` removes those whose writer is gone: a process
of this machine that no longer runs, or this process when the file is none of its saves under
way. Files from another machine (a shared folder) and from SD Studio versions that did not name
their writer are removed once they are a day old: no save takes that long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

UNKNOWN_WRITER_AGE = 24 * 3600
"""Seconds after which a temporary file whose writer cannot be asked is taken as abandoned."""

_HOST = f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')):08x}"
_RANDOM = r"(?:[a-z0-9_]{8}|[0-9a-f]{12})"  # mkstemp's eight characters, or token_hex(6)
_lock = threading.Lock()
_writing: set[str] = set()  # this process's temporary files of saves under way


def _prefix(target: Path, backup: bool) -> str:
    return f".{target.name}{'~' if backup else ''}.{os.getpid()}-{_HOST}-"


def create(target: Path, *, backup: bool = False) -> tuple[int, str]:
    """A new temporary file beside ``target`` (``mkstemp``'s handle and path), marked as this
    process's save under way until ``done``."""
    with _lock:
        handle, path = tempfile.mkstemp(
            prefix=_prefix(target, backup), suffix=".tmp", dir=target.parent
        )
        _writing.add(path)
    return handle, path


def link(target: Path) -> str:
    """A hard link to ``target`` under a backup temporary name, marked like ``create``'s."""
    path = str(target.with_name(f"{_prefix(target, True)}{secrets.token_hex(6)}.tmp"))
    with _lock:
        os.link(target, path)
        _writing.add(path)
    return path


def done(path: str) -> None:
    """The save that wrote ``path`` has renamed or removed it."""
    with _lock:
        _writing.discard(path)


def remove_stale(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of saves of ``target`` that nobody is writing any more, and
    return them. Never raises: what cannot be removed (a read-only folder) is left."""
    removed: list[Path] = []
    try:
        target = Path(os.path.realpath(target))  # a save through a link writes beside its file
        entries = list(os.scandir(target.parent))
    except (OSError, ValueError):
        return removed
    name = re.escape(target.name)
    ours = re.compile(rf"\.{name}~?\.(\d+)-([0-9a-f]{{8}})-{_RANDOM}\.tmp")
    older = re.compile(rf"\.{name}~?\.{_RANDOM}\.tmp")
    for entry in entries:
        if not entry.name.startswith(f".{target.name}"):
            continue
        match = ours.fullmatch(entry.name)
        if match is None and older.fullmatch(entry.name) is None:
            continue
        with contextlib.suppress(OSError):
            if not entry.is_file(follow_symlinks=False):
                continue
            if match is not None and match.group(2) == _HOST:
                if not _abandoned(entry.path, int(match.group(1))):
                    continue
            elif time.time() - _changed(entry) < UNKNOWN_WRITER_AGE:
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
            log.info("Removed %s, left behind by an interrupted save.", entry.path)
    return removed


def _changed(entry: os.DirEntry[str]) -> float:
    """When the file was last written or linked (a hard link keeps its file's mtime)."""
    facts = entry.stat(follow_symlinks=False)
    return max(facts.st_mtime, facts.st_ctime)


def _abandoned(path: str, pid: int) -> bool:
    if pid == os.getpid():
        with _lock:
            return path not in _writing
    return not _running(pid)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told)."""
    if pid <= 0:
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it there
        return _running_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def _running_windows(pid: int) -> bool:
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
