"""The Restore tab's Faces group: Find faces counts them, Restore faces is one undo step run off
the GUI thread, Cancel leaves the picture untouched, and no model installed says where to get
one."""

import numpy as np
import pytest

from sdstudio.core.document import Document
from sdstudio.engine.specialists.face_detect import face_detector
from tests.test_faces import models_with_restorer, picture
from tests.test_restore_panel import make

needs_a_detector = pytest.mark.skipif(
    face_detector() is None, reason="no face detector without a download"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return models_with_restorer(tmp_path_factory.mktemp("models"))


def window_with_picture(qtbot, tmp_path, models):
    window = make(qtbot, tmp_path)
    window.models_folder = models
    window.set_document(Document(picture()))
    faces = window.restore_panel.faces
    faces.refresh_models()
    return window, faces


@needs_a_detector
def test_find_faces_says_how_many(qtbot, tmp_path, models):
    window, faces = window_with_picture(qtbot, tmp_path, models)
    panel = window.restore_panel
    image = window.session.document.image.copy()
    faces.find()
    qtbot.waitUntil(lambda: not panel.busy, timeout=20000)
    assert "Found 1 face" in faces.found.text()
    np.testing.assert_array_equal(window.session.document.image, image)  # nothing changed
    window.close()


@needs_a_detector
def test_restore_faces_is_one_undo_step(qtbot, tmp_path, models):
    window, faces = window_with_picture(qtbot, tmp_path, models)
    panel = window.restore_panel
    document = window.session.document
    original = document.image.copy()
    assert faces.model.currentData().endswith("tiny-restoreformer.safetensors")
    faces.fidelity.setValue(0)
    faces.restore()
    assert panel.busy and not faces.restore_button.isEnabled()  # off the GUI thread
    qtbot.waitUntil(lambda: not panel.busy, timeout=60000)
    assert not np.array_equal(document.image, original)
    assert faces.restore_button.isEnabled()
    assert document.history.undo_label == "Restore faces"
    window.undo()  # one step back: the picture as it was
    np.testing.assert_array_equal(document.image, original)
    window.redo()
    assert not np.array_equal(document.image, original)
    window.close()


@needs_a_detector
def test_cancel_leaves_the_picture_untouched(qtbot, tmp_path, models):
    window, faces = window_with_picture(qtbot, tmp_path, models)
    panel = window.restore_panel
    document = window.session.document
    original = document.image.copy()
    messages = []
    panel.status.connect(messages.append)
    faces.restore()
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60000)
    np.testing.assert_array_equal(document.image, original)
    assert document.history.undo_label != "Restore faces"
    # the engine stopped (its own message), not a finished result thrown away
    assert any(m.startswith("Face restoration cancelled") for m in messages), messages
    window.close()


def test_no_model_installed_says_where_to_get_one(qtbot, tmp_path):
    window = make(qtbot, tmp_path)
    window.models_folder = tmp_path / "empty"
    window.set_document(Document(picture()))
    faces = window.restore_panel.faces
    faces.refresh_models()
    assert "Model library" in faces.found.text()  # said before anything is clicked
    messages = []
    window.restore_panel.status.connect(messages.append)
    faces.restore()
    assert not window.restore_panel.busy
    assert messages and "Model library" in messages[-1]
    window.close()


def test_the_fidelity_shows_its_value(qtbot):
    from sdstudio.qt.faces_panel import FacesPanel
    from sdstudio.qt.restore_panel import RestorePanel

    restore = RestorePanel(lambda: None)
    qtbot.addWidget(restore)
    panel = restore.findChild(FacesPanel)
    assert panel.fidelity_value.text() == f"{panel.fidelity.value()}%"
    panel.fidelity.setValue(65)
    assert panel.fidelity_value.text() == "65%"
