"""Running a few lines of Python as a user without privileges, for what file modes refuse.

Root ignores file modes, and the tests run as root in CI. So a test of a read-only folder runs
its code in a fresh interpreter that imports what it needs as the current user (the interpreter
may live where nobody else may read, as under /root), then calls ``drop_privileges()``: as root
it becomes 'nobody', as anybody else it stays who it is. The folders it uses must be reachable by
that user: make them inside ``reachable_folder()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

UNUSED_PID = 2**30 + 7
"""A process id no system hands out (Linux stops at 2**22, macOS at 99999)."""


def _nobody() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def reachable_folder() -> Iterator[Path]:
    """A new empty folder anybody may enter and read (pytest's tmp_path is its user's alone)."""
    if not hasattr(os, "geteuid"):
        pytest.skip("no POSIX users and file modes here (Windows)")
    folder = Path(tempfile.mkdtemp(prefix="sdstudio-test-"))
    try:
        folder.chmod(0o755)
        yield folder
    finally:
        for inner in [folder, *folder.rglob("*")]:
            if inner.is_dir() and not inner.is_symlink():
                inner.chmod(0o700)  # what a test made read-only, so it can be removed
        shutil.rmtree(folder)


def run_unprivileged(code: str, *args: str) -> str:
    """Run ``code`` (which calls ``drop_privileges()`` after its imports) with ``args`` in
    ``sys.argv[1:]``; its output. Fails the test when it fails or never dropped privileges."""
    uid, gid = _nobody()
    header = textwrap.dedent(
        f"""
        import os

        def drop_privileges():
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid({gid})
                os.setuid({uid})
            print("running as user", os.geteuid(), flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", header + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        pytest.fail(f"The code run without privileges failed:\n{done.stdout}\n{done.stderr}")
    first, _, rest = done.stdout.partition("\n")
    if not first.startswith("running as user ") or first.split()[-1] == "0":
        pytest.fail(f"The code did not drop its privileges:\n{done.stdout}")
    return rest
