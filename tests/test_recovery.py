"""Crash recovery: a killed editor's last autosave is offered at the next start, a closed one's
is not."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sdstudio.core.recovery import RecoverySession, discard, orphans, restore


def picture(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 2, (48, 64)) * 255


def test_a_running_session_is_not_an_orphan_and_a_closed_one_leaves_nothing(tmp_path):
    session = RecoverySession(tmp_path)
    image, mask = picture()
    session.autosave(image, mask.astype(np.uint8), {"parameters": "a cat"}, tmp_path / "mine.ora")
    assert session.snapshot_path.exists()
    assert orphans(tmp_path) == []  # its lock is held
    session.close()
    assert list(tmp_path.iterdir()) == []


def test_autosave_never_writes_the_persons_file(tmp_path):
    mine = tmp_path / "mine.ora"
    mine.write_bytes(b"the person's own file")
    session = RecoverySession(tmp_path / "recovery")
    image, mask = picture()
    session.autosave(image, mask.astype(np.uint8), source=mine)
    assert mine.read_bytes() == b"the person's own file"
    session.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from pathlib import Path
    from sdstudio.core.recovery import RecoverySession
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = (rng.integers(0, 2, (48, 64)) * 255).astype(np.uint8)
    session = RecoverySession(Path(sys.argv[1]))
    session.autosave(image, mask, {"parameters": "a cat"}, Path("/photos/holiday.ora"))
    image[:8] = 0  # work after the last autosave: lost by the crash, by design
    print("saved", flush=True)
    time.sleep(60)
    """
)


def test_a_killed_editor_leaves_its_last_autosave_to_restore(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "saved"
        assert orphans(tmp_path) == []  # alive: not offered
    finally:
        child.kill()
        child.wait()
    found = orphans(tmp_path)
    assert len(found) == 1
    orphan = found[0]
    assert orphan.source == "/photos/holiday.ora" and "holiday.ora" in orphan.describe()
    project = restore(orphan)
    image, mask = picture()
    np.testing.assert_array_equal(project.image, image)
    np.testing.assert_array_equal(project.mask, mask.astype(np.uint8))
    assert project.extra["parameters"] == "a cat"
    discard(orphan)
    assert orphans(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_a_stale_lock_without_a_snapshot_is_cleaned_up(tmp_path):
    (tmp_path / "old.lock").write_bytes(b"")
    assert orphans(tmp_path) == []
    assert not (tmp_path / "old.lock").exists()


def test_an_unreadable_snapshot_is_still_offered_and_says_why_on_restore(tmp_path):
    from sdstudio.core.errors import ProjectError

    (tmp_path / "broken.ora").write_bytes(b"half a file")
    found = orphans(tmp_path)
    assert len(found) == 1
    with pytest.raises(ProjectError):
        restore(found[0])
    discard(found[0])
    assert orphans(tmp_path) == []
