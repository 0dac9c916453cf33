"""Atomic saves: a file is written beside its target, checked, and swapped in whole, so a save
that fails or is killed never leaves a half-written file where the old one was. Pictures and
projects are saved through ``write_atomically``."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path

from sdstudio.core import temporaries
from sdstudio.core.errors import ImageSaveError


def write_atomically(
    name: str,
    target: Path,
    payload: bytes,
    *,
    error: type[Exception] = ImageSaveError,
    before_replace: Callable[[str], None] | None = None,
) -> None:
    """Write ``payload`` to a temporary file beside ``target``, fsync it, let ``before_replace``
    check it (projects read it back and keep a backup), then swap it in and fsync the folder.
    Any failure removes the temporary file, leaves ``target`` as it was and raises ``error``
    (OSErrors become a message saying what to do). Temporary files of ``target`` that killed
    saves left behind are removed first (``core.temporaries``)."""
    folder = target.parent
    if not folder.is_dir():
        raise error(
            f"Cannot save '{name}': the folder '{folder}' does not exist. "
            "Create it or choose another folder."
        )
    temporaries.remove_stale(target)  # those of earlier saves that were killed
    try:
        handle, temporary = temporaries.create(target)
    except OSError as exc:
        raise error(_save_failure(name, folder, exc)) from exc
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; give the file its usual mode
                os.fchmod(file.fileno(), _file_mode(target))
        if before_replace is not None:
            before_replace(temporary)
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise error(_save_failure(name, folder, exc)) from exc
        raise
    finally:
        temporaries.done(temporary)
    with contextlib.suppress(OSError, AttributeError):  # make the renames durable (POSIX)
        folder_handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_handle)
        finally:
            os.close(folder_handle)


def _file_mode(target: Path) -> int:
    """The mode of the file being replaced, else 0666 less the umask (0644 if unknown)."""
    with contextlib.suppress(OSError):
        return target.stat().st_mode & 0o7777
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    return 0o644


def _save_failure(name: str, folder: Path, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        why = f"permission denied in '{folder}'. Choose a folder you can write to"
    elif isinstance(exc, IsADirectoryError):
        why = "a folder has that name. Choose another file name"
    elif exc.errno == errno.ENOSPC:
        why = "the disk is full. Free some space or save elsewhere"
    else:
        why = f"{exc.strerror or exc}"
    return f"Cannot save '{name}': {why}. The previous file, if any, is unchanged."
