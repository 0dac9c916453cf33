"""Temporary files of interrupted saves: the next save or opening removes those nobody writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sdstudio.core import project_save, temporaries
from sdstudio.core.imageio import save_image
from sdstudio.core.project import load_project
from sdstudio.core.project_save import save_project

# Saves the project named in argv[1] and stops for good once the temporary file is written, read
# back and the previous version linked as the backup: the moment a kill leaves most behind.
STALLED_SAVE = """
import sys, time
import numpy as np
from sdstudio.core import project_save

copy_backup = project_save._backup_copy

def stall(target):
    copy = copy_backup(target)
    print("stalled", flush=True)
    time.sleep(120)
    return copy

project_save._backup_copy = stall
image = np.random.default_rng(1).integers(0, 256, (400, 600, 3), dtype=np.uint8)
project_save.save_project(sys.argv[1], image, extra={"by": "the killed save"})
"""


def pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def dead_pid() -> int:
    """The id of a process that has ended (and been waited for)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("then", ["save", "open"])
def test_a_killed_save_leaves_temporaries_the_next_save_or_opening_removes(tmp_path, then):
    target = tmp_path / "work.ora"
    save_project(target, pixels(1), extra={"n": 1})
    child = subprocess.Popen(
        [sys.executable, "-c", STALLED_SAVE, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        if line.strip() != "stalled":
            child.kill()
            pytest.fail(f"The saving process did not get under way: {child.communicate()[1]}")
        left = [name for name in listing(tmp_path) if name.endswith(".tmp")]
        writer = f"{child.pid}-{temporaries._HOST}"
        assert sorted(name.rsplit("-", 1)[0] for name in left) == [
            f".work.ora.{writer}",  # the new version, written and read back
            f".work.ora~.{writer}",  # the previous one, linked to become the backup
        ]
        # While it runs, its files are a save under way: ours must leave them alone.
        save_project(target, pixels(2), extra={"n": 2})
        assert [name for name in listing(tmp_path) if name.endswith(".tmp")] == left
    finally:
        child.kill()
        child.communicate()
    assert sorted(listing(tmp_path)) == sorted(["work.ora", "work.ora~", *left])

    if then == "save":
        save_project(target, pixels(3), extra={"n": 3})
    else:
        assert load_project(target).extra == {"n": 2}
    assert listing(tmp_path) == ["work.ora", "work.ora~"]


def test_leftovers_of_dead_processes_go_and_everything_else_stays(tmp_path, monkeypatch):
    host, dead, alive = temporaries._HOST, dead_pid(), os.getppid()
    stale = [
        f".x.ora.{dead}-{host}-abcd_f12.tmp",  # a killed save
        f".x.ora~.{dead}-{host}-0123456789ab.tmp",  # its backup link
        f".x.ora.{os.getpid()}-{host}-abcdefgh.tmp",  # an earlier process with our id
    ]
    unknown_writer = [  # another machine's, or an older SD Studio's: kept for a day
        f".x.ora.{dead}-0badc0de-abcdefgh.tmp",
        ".x.ora.k3j_9x2a.tmp",
        ".x.ora~.0123456789ab.tmp",
    ]
    kept = [
        f".x.ora.{alive}-{host}-abcdefgh.tmp",  # a live process is writing it
        f".y.ora.{dead}-{host}-abcdefgh.tmp",  # another project's
        f".x.ora.png.{dead}-{host}-abcdefgh.tmp",  # another file's
        f".x.oral.{dead}-{host}-abcdefgh.tmp",
        f"x.ora.{dead}-{host}-abcdefgh.tmp",
        f".x.ora.{dead}-{host}-abcdefgh.tmp.keep",
        "x.ora~",
        "notes.txt",
    ]
    for name in stale + unknown_writer + kept:
        (tmp_path / name).write_bytes(b"left over")
    (tmp_path / f".x.ora.{dead}-{host}-folder__.tmp").mkdir()  # not a file: not ours
    kept.append(f".x.ora.{dead}-{host}-folder__.tmp")
    link = tmp_path / f".x.ora.{dead}-{host}-link____.tmp"
    try:
        link.symlink_to(tmp_path / "notes.txt")  # nor a link
        kept.append(link.name)
    except OSError:  # Windows without the right to make links
        pass

    save_project(tmp_path / "x.ora", pixels())
    assert listing(tmp_path) == sorted([*unknown_writer, *kept, "x.ora"])

    a_day_later = time.time() + temporaries.UNKNOWN_WRITER_AGE + 60
    monkeypatch.setattr(temporaries.time, "time", lambda: a_day_later)
    load_project(tmp_path / "x.ora")
    assert listing(tmp_path) == sorted([*kept, "x.ora"])


def test_picture_saves_remove_their_own_leftovers(tmp_path):
    (tmp_path / f".x.png.{dead_pid()}-{temporaries._HOST}-abcdefgh.tmp").write_bytes(b"left")
    save_image(tmp_path / "x.png", pixels())
    assert listing(tmp_path) == ["x.png"]


def test_a_save_under_way_in_this_process_keeps_its_temporary(tmp_path, monkeypatch):
    # A second save of the same file starts while the first is being checked (two windows, or
    # an autosave): the second must not take the first one's temporary file for a leftover.
    target = tmp_path / "x.ora"
    save_project(target, pixels(1))
    verify, nested = project_save._verify, []

    def verify_and_save_again(name, temporary, expected):
        verify(name, temporary, expected)
        if not nested:
            nested.append(temporary)
            save_project(target, pixels(2))
            assert Path(temporary).exists()

    monkeypatch.setattr(project_save, "_verify", verify_and_save_again)
    save_project(target, pixels(3))
    np.testing.assert_array_equal(load_project(target).image, pixels(3))
    np.testing.assert_array_equal(load_project(tmp_path / "x.ora~").image, pixels(2))
    assert listing(tmp_path) == ["x.ora", "x.ora~"]


def test_opening_where_nothing_can_be_removed_still_opens(tmp_path):
    target = tmp_path / "x.ora"
    save_project(target, pixels())
    assert temporaries.remove_stale(tmp_path / "missing" / "x.ora") == []
    assert temporaries.remove_stale("bad\0name.ora") == []
    np.testing.assert_array_equal(load_project(target).image, pixels())
