"""Image > Upscale and refine… in the editor (qt/refine_dialog.py on qt/upscale_action.py): the
upscale, then an img2img per tile through the window's shared engine, as one undo step. The
window runs on a fake engine (no diffusion), which paints each tile it is given a solid colour."""

import threading

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QDialogButtonBox

from sdstudio.core.document import Document
from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import Mode
from sdstudio.engine.fake import FakeEngine
from sdstudio.engine.refine import DEFAULT_PROMPT, DEFAULT_STRENGTH
from sdstudio.qt.main_window import MainWindow
from sdstudio.qt.refine_dialog import RefineOptions, RefinePass, check_options, tile_count
from sdstudio.qt.tasks import wait_for_background

MAGENTA = (255, 0, 255)


class RecordingEngine(FakeEngine):
    """A fake engine with ``load`` (recorded; raises ``load_error`` when given) and, with
    ``gate``, a run that waits for the gate after telling ``started``."""

    def __init__(self, load_error=None, gate=None):
        super().__init__(steps=2, color=MAGENTA)
        self.loads, self.load_error = [], load_error
        self.gate, self.started = gate, threading.Event()

    def load(self, reference):
        self.loads.append(reference)
        if self.load_error is not None:
            raise self.load_error

    def run(self, request, cancel):
        if self.gate is not None:
            self.started.set()
            assert self.gate.wait(10)
        yield from super().run(request, cancel)


def picture(height=40, width=60, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def engine():
    return RecordingEngine()


@pytest.fixture
def window(qtbot, tmp_path, engine):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("models/folder", str(tmp_path / "models"))
    made = []
    win = MainWindow(settings=settings, engine_factory=lambda: made.append(1) or engine)
    win.engines_made = made
    win.confirm_discard = lambda: True
    win.models_folder = tmp_path / "models"  # no upscaler installed: Lanczos, then the refine
    win.panel.apply({"model": "test/sd-model", "prompt": "a red barn", "steps": 10, "seed": 5})
    qtbot.addWidget(win)
    win.show()
    yield win
    wait_for_background()
    win.generation.shutdown()
    win.fill.shutdown()


def menu_action(window, text="Upscale and &refine…"):
    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Image")
    return next(a for a in menu.actions() if a.text() == text)


def open_dialog(window):
    menu_action(window).trigger()
    return window.refine_dialog


def click_ok(dialog):
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()


def options(**changes) -> RefineOptions:
    values = dict(scale=2, strength=0.3, prompt="p", model="m", steps=20, seed=1)
    return RefineOptions(**(values | changes))


def test_upscale_and_refine_is_one_undo_step_with_the_panels_settings(qtbot, window, engine):
    original = picture(200, 300)
    document = Document(original.copy())
    window.set_document(document)
    messages, progress = [], []
    window.upscaler.status.connect(messages.append)
    window.upscaler._progressed.connect(lambda *args: progress.append(args))
    dialog = open_dialog(window)
    dialog.strength_spin.setValue(0.4)
    with qtbot.waitSignal(window.upscaler.finished, timeout=30000):
        click_ok(dialog)

    assert document.image.shape == (400, 600, 3)
    assert (document.image == MAGENTA).all()  # every tile went through the engine
    assert engine.loads == ["test/sd-model"]
    assert len(engine.requests) == tile_count(300, 200, 2) == 2
    for request in engine.requests:
        assert request.mode is Mode.IMG2IMG and request.model == "test/sd-model"
        assert request.strength == 0.4 and request.prompt == "a red barn"
        assert request.steps == 10 and request.seed == 5
        assert request.image.shape[:2] == (400, 512)  # tiles of the upscaled picture
    assert document.undo_label == "Upscale 2x and refine"
    assert "refined with test/sd-model at strength 0.4 (seed 5)" in messages[-1]
    assert "now 600 x 400" in messages[-1]
    assert progress[0] == (0, 0, "loading model") and progress[-1] == (2, 2, "refine tile")
    assert (1, 2, "refine tile") in progress and any(p[2] == "tile" for p in progress)

    window.undo()
    assert (document.image == original).all() and not document.can_undo
    assert window.canvas._rgba.shape[:2] == (200, 300)
    with qtbot.waitSignal(window.generation.batch_done, timeout=30000):
        window.generate()  # Generate then runs on the engine (and model) the refine loaded
    assert window.engines_made == [1] and len(engine.requests) == 3


def test_the_dialog_is_prefilled_from_the_generate_panel(window):
    window.set_document(Document(picture()))
    dialog = open_dialog(window)
    assert dialog.prompt_edit.toPlainText() == "a red barn"
    assert dialog.strength_spin.value() == DEFAULT_STRENGTH
    assert dialog.strength_spin.minimum() == 0.05 and dialog.strength_spin.maximum() == 1.0
    assert "test/sd-model" in dialog.info.text() and "seed 5" in dialog.info.text()
    dialog.scale_combo.setCurrentIndex(1)
    assert dialog.options().scale == 4 and "240 x 160" in dialog.info.text()
    dialog.reject()
    window.panel.apply({"prompt": ""})
    assert open_dialog(window).prompt_edit.toPlainText() == DEFAULT_PROMPT


def test_a_strength_too_low_for_the_steps_is_refused_before_anything_loads(qtbot, window):
    original = picture()
    document = Document(original.copy())
    window.set_document(document)
    window.panel.apply({"steps": 3})
    dialog = open_dialog(window)
    dialog.strength_spin.setValue(0.3)  # int(3 * 0.3) == 0 steps
    click_ok(dialog)
    assert dialog.isVisible() and dialog.error.isVisible()
    assert "runs no denoising step" in dialog.error.text()
    wait_for_background()
    assert window.engines_made == [] and not window.upscaler.busy
    assert (document.image == original).all() and not document.can_undo


def test_check_options_says_what_to_change():
    check_options(options())
    for changes, words in (
        ({"strength": 0.0}, "strength must be above 0"),
        ({"model": ""}, "Choose a model in the Generate panel"),
        ({"steps": 2, "strength": 0.4}, "raise the strength or the panel's steps"),
        ({"scale": 3}, "scale must be 2 or 4"),
    ):
        with pytest.raises(SDStudioError, match=words):
            check_options(options(**changes))
        with pytest.raises(SDStudioError, match=words):
            RefinePass(options(**changes), engine=None)  # checked before any run can start


@pytest.mark.parametrize("engine", [RecordingEngine(gate=threading.Event())])
def test_esc_during_the_refine_leaves_the_picture_unchanged(qtbot, window, engine):
    original = picture(200, 300)
    document = Document(original.copy())
    window.set_document(document)
    messages = []
    window.upscaler.status.connect(messages.append)
    with qtbot.waitSignal(window.upscaler.finished, timeout=30000):
        window.upscaler.start(2, RefinePass(options(), window.refine_engine))
        assert engine.started.wait(10)  # the upscale is done; the first tile is running
        assert window.upscaler.cancel()
        engine.gate.set()
    assert (document.image == original).all() and not document.can_undo
    assert len(engine.requests) == 1  # the second tile never ran
    assert messages[-1] == "Upscale 2x and refine cancelled; the picture is unchanged."


@pytest.mark.parametrize("engine", [RecordingEngine(load_error=OSError("no model there"))])
def test_a_model_that_fails_to_load_is_one_line_and_the_picture_unchanged(qtbot, window, engine):
    original = picture()
    document = Document(original.copy())
    window.set_document(document)
    messages = []
    window.upscaler.status.connect(messages.append)
    with qtbot.waitSignal(window.upscaler.finished, timeout=30000):
        click_ok(open_dialog(window))
    assert messages[-1] == (
        "Upscale 2x and refine failed: Could not load the model 'test/sd-model': "
        "OSError: no model there"
    )
    assert (document.image == original).all() and not document.can_undo
    assert engine.requests == []


def test_grey_16_bit_stays_grey_16_bit(qtbot, window):
    original = (picture()[:, :, 0].astype(np.uint16) * 257) + 1
    document = Document(original.copy())
    window.set_document(document)
    with qtbot.waitSignal(window.upscaler.finished, timeout=30000):
        window.upscaler.start(2, RefinePass(options(), window.refine_engine))
    assert document.image.shape == (80, 120) and document.image.dtype == np.uint16
    window.undo()
    assert np.array_equal(document.image, original)


@pytest.mark.parametrize("engine", [RecordingEngine(gate=threading.Event())])
def test_nothing_is_applied_when_the_picture_changed_meanwhile(qtbot, window, engine):
    document = Document(picture())
    window.set_document(document)
    messages = []
    window.upscaler.status.connect(messages.append)
    with qtbot.waitSignal(window.upscaler.finished, timeout=30000):
        window.upscaler.start(2, RefinePass(options(), window.refine_engine))
        assert engine.started.wait(10)
        window.invert_mask()  # an edit while the refine runs
        changed = document.mask.copy()
        engine.gate.set()
    assert document.image.shape == (40, 60, 3) and np.array_equal(document.mask, changed)
    assert messages[-1] == "The picture changed while upscaling; nothing was applied."


def test_the_tiny_sd_model_refines_through_the_real_engine(qtbot, tmp_path, sd1_model):
    """The path users take: the window's shared DiffusersEngine loads the panel's model (a
    tiny SD 1.5 folder) and refines the upscaled picture; one undo step gives the original."""
    import torch

    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache
    from sdstudio.engine.specialists.upscale import upscale

    torch.set_num_threads(1)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(
        settings=settings,
        engine_factory=lambda: DiffusersEngine(PipelineCache(device="cpu", dtype=torch.float32)),
    )
    win.confirm_discard = lambda: True
    win.models_folder = tmp_path / "models"
    qtbot.addWidget(win)
    original = picture(40, 64)
    document = Document(original.copy())
    win.set_document(document)
    win.panel.apply({"model": sd1_model, "steps": 4, "seed": 3})
    messages = []
    win.upscaler.status.connect(messages.append)
    try:
        with qtbot.waitSignal(win.upscaler.finished, timeout=120000):
            click_ok(open_dialog(win))
        assert document.image.shape == (80, 128, 3), messages[-1]
        assert "refined with" in messages[-1] and "(seed 3)" in messages[-1]
        assert not np.array_equal(document.image, upscale(original, 2))  # the model redrew it
        win.undo()
        assert np.array_equal(document.image, original)
    finally:
        wait_for_background()
        win.generation.shutdown()
        win.fill.shutdown()
