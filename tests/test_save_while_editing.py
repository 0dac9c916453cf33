"""A background save that ends after more edits: the document knows which pixels the file has."""

import numpy as np
from test_main_window import make_window, open_photo  # noqa: F401 - the window fixture

from sdstudio.qt.tasks import wait_for_background


def test_undoing_past_what_a_background_save_wrote_asks_to_save_again(
    qtbot,
    make_window,  # noqa: F811 - the fixture imported above
    tmp_path,
    photo,
):
    window = make_window()
    document = open_photo(qtbot, window, tmp_path, photo)
    document.set_mask(np.full(photo.shape[:2], 255, np.uint8))
    project = tmp_path / "work.ora"
    window.save_to(project)  # writes a copy on a worker
    document.clear_mask()  # an edit made before the save has finished
    assert wait_for_background()
    qtbot.waitUntil(lambda: document.path == project, timeout=5000)
    assert document.modified  # the file has the mask, the screen has none
    document.undo()
    assert not document.modified  # back to what the file holds
    document.undo()
    assert document.modified  # the photo as opened: not what the file holds
