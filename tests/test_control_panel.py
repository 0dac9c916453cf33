"""The Generate panel's Control section and live widgets, and the controls the session builds
from them: off -> no controls; on -> the Sketch layer (or the picture) with the panel's
strength, start and end; one-line errors; remembered settings; the ``changed`` signal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QFileDialog
from test_panel import reopened

from sdstudio.core.brush import BrushSettings, Tool
from sdstudio.core.document import Document
from sdstudio.core.errors import RequestError
from sdstudio.core.pixels import to_rgb8
from sdstudio.core.region import Box
from sdstudio.core.request import ControlKind, Mode, ModelFamily, Scheduler
from sdstudio.core.sketch import flatten_sketch, sketch_control_image
from sdstudio.qt.control_panel import DEFAULT_VALUE, NONE_TEXT
from sdstudio.qt.control_request import EMPTY_SKETCH, NO_CONTROLNET
from sdstudio.qt.panel import GenerationPanel
from sdstudio.qt.session import EditorSession

CONTROL = {
    "reference": "/models/controlnet/my-scribble",
    "kind": ControlKind.SCRIBBLE,
    "strength": 1.35,
    "start": 0.1,
    "end": 0.8,
}


class StubWorker(QObject):
    started = Signal(object)
    step = Signal(int, int)
    preview = Signal(object, object)
    finished = Signal(object)
    cancelled = Signal()
    failed = Signal(str)
    batch_done = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.submitted: list = []

    def submit(self, requests) -> None:
        self.submitted.append(requests)

    def cancel(self) -> None:
        pass


class StubCanvas:
    def set_document(self, document) -> None:
        pass

    def set_preview(self, *args) -> None:
        pass

    def set_candidate(self, *args) -> None:
        pass


@dataclass(frozen=True)
class Entry:
    reference: str
    name: str
    family: ModelFamily | None
    source: str = "folder"
    size_bytes: int = 0
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


@pytest.fixture
def panel(qtbot):
    widget = GenerationPanel()
    qtbot.addWidget(widget)
    return widget


@pytest.fixture
def session(panel):
    session = EditorSession(StubCanvas(), panel, StubWorker(), StubWorker())
    messages: list[str] = []
    session.status.connect(messages.append)
    session.messages = messages
    return session


@pytest.fixture
def doc(photo) -> Document:
    return Document(photo.copy())


def draw(document: Document, points, color=(255, 0, 0)) -> None:
    stroke = document.begin_stroke(Tool.PAINT, BrushSettings(size=12, hardness=1.0), color)
    for point in points:
        stroke.add(*point)
    stroke.end()


def combo_items(panel) -> list[tuple[str, str, bool]]:
    combo = panel.control.combo
    return [
        (combo.itemText(i), combo.itemData(i), combo.model().item(i).isEnabled())
        for i in range(combo.count())
    ]


# -- requests ---------------------------------------------------------------------------------


def test_control_off_by_default_and_requests_carry_no_controls(panel, session, doc):
    draw(doc, [(20, 20), (120, 90)])
    session.set_document(doc)
    assert not panel.control.isChecked() and panel.settings()["control"] is None
    assert session.controls() == ()
    for mode in (Mode.TXT2IMG, Mode.IMG2IMG):
        assert session.requests(mode)[0].controls == ()


def test_control_on_gives_every_request_the_sketch_with_the_panel_settings(panel, session, doc):
    draw(doc, [(20, 20), (120, 90)], color=(30, 200, 10))
    doc.set_sketch_visible(False)  # a hidden sketch still steers
    mask = np.zeros(doc.image.shape[:2], np.uint8)
    mask[40:80, 50:100] = 255
    doc.mask[:] = mask
    session.set_document(doc)
    assert panel.apply({"control": CONTROL, "batch_count": 2}) == []
    assert panel.settings()["control"] == CONTROL
    expected = sketch_control_image(doc)
    assert tuple(expected[55, 70]) == (255, 255, 255)  # on the stroke: white, whatever colour
    assert tuple(expected[120, 10]) == (0, 0, 0)  # elsewhere: black
    for mode in (Mode.TXT2IMG, Mode.IMG2IMG, Mode.INPAINT):
        requests = session.requests(mode)
        for request in requests:  # the batch too
            (control,) = request.controls
            np.testing.assert_array_equal(control.image, expected)
            assert control.model == CONTROL["reference"]
            assert control.kind is ControlKind.SCRIBBLE
            assert (control.strength, control.start, control.end) == (1.35, 0.1, 0.8)
    assert session.requests(Mode.REMOVE)[0].controls == ()  # a model-free fill takes none
    box = Box(10, 15, 90, 70)
    (cropped,) = session.controls(box)
    np.testing.assert_array_equal(cropped.image, sketch_control_image(doc, box))


@pytest.mark.parametrize("kind", [ControlKind.CANNY, ControlKind.TILE])
def test_canny_and_tile_take_the_picture_as_shown(panel, session, doc, kind):
    session.set_document(doc)
    panel.apply({"control": {**CONTROL, "kind": kind}})
    (control,) = session.controls()  # no sketch: no error, the picture itself
    np.testing.assert_array_equal(control.image, to_rgb8(doc.image))
    assert control.kind is kind
    draw(doc, [(20, 20), (120, 90)])
    (control,) = session.controls()
    np.testing.assert_array_equal(control.image, to_rgb8(flatten_sketch(doc)))
    doc.set_sketch_visible(False)
    (control,) = session.controls()
    np.testing.assert_array_equal(control.image, to_rgb8(doc.image))


def test_control_without_a_controlnet_or_a_sketch_says_what_to_do_in_one_line(panel, session, doc):
    session.set_document(doc)
    panel.apply({"control": {**CONTROL, "reference": ""}})
    with pytest.raises(RequestError, match="Choose a ControlNet"):
        session.controls()
    session.generate()
    assert session.messages[-1] == NO_CONTROLNET and "\n" not in NO_CONTROLNET
    assert session.workers[0].submitted == [] and not session.running

    panel.apply({"control": CONTROL})
    for kind in (ControlKind.SCRIBBLE, ControlKind.LINEART):
        panel.apply({"control": {"kind": kind}})
        session.generate()
        assert session.messages[-1] == EMPTY_SKETCH and "\n" not in EMPTY_SKETCH
    draw(doc, [(20, 20)])
    doc.clear_sketch()  # a cleared sketch is empty too
    session.generate()
    assert session.messages[-1] == EMPTY_SKETCH
    assert session.workers[0].submitted == []
    draw(doc, [(20, 20)])
    session.generate()
    ((request, *_),) = session.workers[0].submitted
    assert request.controls[0].kind is ControlKind.LINEART


# -- settings ---------------------------------------------------------------------------------


def test_control_and_live_strength_survive_a_restart(panel, qtbot, tmp_path):
    panel.control.choose("/elsewhere/browsed.safetensors")
    panel.apply({"control": {**CONTROL, "kind": ControlKind.CANNY}, "live_strength": 0.35})
    settings = QSettings(str(tmp_path / "state.ini"), QSettings.Format.IniFormat)
    panel.save_state(settings)
    other = GenerationPanel()
    qtbot.addWidget(other)
    other.restore_state(reopened(settings))
    assert other.settings()["control"] == {**CONTROL, "kind": ControlKind.CANNY}
    assert other.settings()["live_strength"] == 0.35
    assert other.control.recent() == ["/elsewhere/browsed.safetensors"]
    assert other.settings() == panel.settings()

    panel.apply({"control": None})  # off: the fields are kept for next time
    panel.save_state(settings)
    other.restore_state(reopened(settings))
    assert other.settings()["control"] is None
    other.control.setChecked(True)
    assert other.settings()["control"] == {**CONTROL, "kind": ControlKind.CANNY}
    other.reset()
    assert other.settings()["control"] is None and other.settings()["live_strength"] == 0.5
    other.control.setChecked(True)
    assert other.settings()["control"] == DEFAULT_VALUE


def test_unusable_stored_or_applied_control_values_are_ignored(panel, tmp_path):
    path = tmp_path / "garbage.ini"
    path.write_text(
        "[generation]\n"
        "live_strength=3\n"
        "control\\on=true\n"
        "control\\reference=/models/cn\n"
        "control\\kind=warp drive\n"
        "control\\strength=lots\n"
        "control\\start=nan\n"
        "control\\end=0.5\n"
        "control\\recent=@Invalid()\n",
        encoding="utf-8",
    )
    panel.restore_state(QSettings(str(path), QSettings.Format.IniFormat))
    assert panel.settings()["live_strength"] == 0.5
    assert panel.settings()["control"] == {**DEFAULT_VALUE, "reference": "/models/cn", "end": 0.5}

    before = panel.settings()
    for bad in (
        {"strength": 2.5},
        {"kind": "depth"},
        {"reference": 5},
        {"colour": "red"},
        "scribble",
        {"start": True},
    ):
        assert panel.apply({"control": bad}) == ["control"], bad
        assert panel.settings() == before


# -- the ControlNet list ----------------------------------------------------------------------


def test_installed_controlnets_are_listed_marked_and_rescanned_when_the_list_opens(qtbot, tmp_path):
    scans = []
    entries = [
        Entry("/m/controlnet/sd15-scribble", "sd15-scribble", ModelFamily.SD1),
        Entry("/m/controlnet/xl-scribble", "xl-scribble", ModelFamily.SDXL),
        Entry("/m/controlnet/old.pth", "old.pth", None, "file", problem="a pickle: refused"),
    ]

    def scan(folder: Path):
        scans.append(folder)
        return list(entries)

    panel = GenerationPanel(models_folder=lambda: tmp_path)
    qtbot.addWidget(panel)
    panel.control._scan = scan
    panel.refresh()
    assert scans == [tmp_path]
    panel.control.set_model_family(None)  # unknown: nothing is marked
    assert combo_items(panel) == [
        (NONE_TEXT, "", True),
        ("sd15-scribble", "/m/controlnet/sd15-scribble", True),
        ("xl-scribble", "/m/controlnet/xl-scribble", True),
        ("old.pth (unusable)", "/m/controlnet/old.pth", False),
    ]
    panel.control.set_model_family(ModelFamily.SD1)
    assert combo_items(panel)[2][0] == "⚠ xl-scribble (SDXL: not for this model)"
    assert combo_items(panel)[1][0] == "sd15-scribble"
    panel.apply({"control": {"reference": "/m/controlnet/xl-scribble"}})  # shown, choosable
    assert panel.settings()["control"]["reference"] == "/m/controlnet/xl-scribble"

    entries.append(Entry("/m/controlnet/new", "new", None))
    entries.pop(1)  # the chosen one was deleted: it stays chosen (the engine will say so)
    panel.control.combo.showPopup()
    panel.control.combo.hidePopup()
    assert len(scans) == 2
    assert [item[1] for item in combo_items(panel)] == [
        "",
        "/m/controlnet/sd15-scribble",
        "/m/controlnet/old.pth",
        "/m/controlnet/new",
        "/m/controlnet/xl-scribble",
    ]
    assert panel.settings()["control"]["reference"] == "/m/controlnet/xl-scribble"


def test_the_chosen_model_family_marks_controlnets_of_the_other(qtbot, tmp_path):
    panel = GenerationPanel(models_folder=lambda: tmp_path)
    qtbot.addWidget(panel)
    panel.control._scan = lambda _folder: [Entry("/xl", "xl", ModelFamily.SDXL)]
    panel.refresh()
    model = tmp_path / "sd15"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (model / "unet").mkdir()
    panel.apply({"model": str(model)})
    assert panel.preset_combo.family is ModelFamily.SD1
    assert combo_items(panel)[1][0] == "⚠ xl (SDXL: not for this model)"
    panel.apply({"model": "someone/unknown-model"})  # family unknown: nothing is marked
    assert combo_items(panel)[1][0] == "xl"


def test_the_real_scan_lists_a_tiny_controlnet_folder(qtbot, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants
    from safetensors.numpy import save_file

    from sdstudio.engine.models.controlnets import controlnets_dir

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    folder = controlnets_dir(tmp_path / "models")
    folder.mkdir(parents=True)
    for name, width, xl in (("sd15-scribble", 768, False), ("xl-scribble", 2048, True)):
        tensors = {
            "controlnet_cond_embedding.conv_in.weight": np.zeros((16, 3, 3, 3), np.float16),
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": np.zeros(
                (4, width), np.float16
            ),
        }
        if xl:
            tensors["add_embedding.linear_1.weight"] = np.zeros((8, 4), np.float16)
        save_file(tensors, str(folder / f"{name}.safetensors"))
    panel = GenerationPanel(models_folder=lambda: tmp_path / "models")
    qtbot.addWidget(panel)
    panel.refresh()
    panel.control.set_model_family(ModelFamily.SD1)
    assert [text for text, _ref, _ok in combo_items(panel)] == [
        NONE_TEXT,
        "sd15-scribble",
        "⚠ xl-scribble (SDXL: not for this model)",
    ]
    assert combo_items(panel)[1][1] == str(folder / "sd15-scribble.safetensors")


def test_browse_chooses_and_remembers_a_controlnet(panel, qtbot, monkeypatch, tmp_path):
    chosen = str(tmp_path / "cn-folder")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: chosen)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: ("/x/cn.safetensors", ""))
    panel.control.setChecked(True)
    with qtbot.waitSignal(panel.changed):
        panel.control.browse_folder()
    assert panel.settings()["control"]["reference"] == chosen
    panel.control.browse_file()
    assert panel.settings()["control"]["reference"] == "/x/cn.safetensors"
    assert panel.control.recent() == ["/x/cn.safetensors", chosen]
    assert [item[0] for item in combo_items(panel)] == [NONE_TEXT, "cn.safetensors", "cn-folder"]


# -- live widgets and the changed signal ------------------------------------------------------


def test_live_button_and_live_strength(panel, qtbot):
    assert panel.live_button.isCheckable() and not panel.live_button.isChecked()
    assert panel.live_button.text() == "Live"
    assert panel.live_button.toolTip() == "Regenerate while you draw (F5)"
    spin = panel.live_strength
    assert (spin.minimum(), spin.maximum(), spin.singleStep(), spin.value()) == (
        0.05,
        1.0,
        0.05,
        0.5,
    )
    with qtbot.waitSignal(panel.live_toggled) as blocker:
        panel.live_button.click()
    assert blocker.args == [True]
    seen = []
    panel.live_toggled.connect(seen.append)
    panel.set_live(False)
    panel.set_live(True)
    assert seen == [] and panel.live_button.isChecked()
    panel.live_button.click()
    assert seen == [False]


EDITS = {
    "prompt": lambda p: p.prompt_edit.setPlainText("a lighthouse"),
    "negative prompt": lambda p: p.negative_edit.setPlainText("fog"),
    "model": lambda p: p.apply({"model": "someone/other-model"}),
    "steps": lambda p: p.spins["steps"].setValue(9),
    "guidance": lambda p: p.spins["guidance"].setValue(3.0),
    "strength": lambda p: p.spins["strength"].setValue(0.4),
    "scheduler": lambda p: p.apply({"scheduler": Scheduler.DDIM}),
    "seed": lambda p: p.apply({"seed": 42}),
    "random seed": lambda p: p.random_check.setChecked(False),
    "preset": lambda p: p.preset_combo.setCurrentIndex(1),
    "live strength": lambda p: p.live_strength.setValue(0.7),
    "control on": lambda p: p.control.setChecked(True),
    "control kind": lambda p: p.control.kind_combo.setCurrentIndex(3),
    "control strength": lambda p: p.control.spins["strength"].setValue(0.5),
    "control start": lambda p: p.control.spins["start"].setValue(0.2),
    "control end": lambda p: p.control.spins["end"].setValue(0.9),
    "controlnet": lambda p: p.control.choose("/a/controlnet"),
}
UNRELATED = {
    "batch count": lambda p: p.spins["batch_count"].setValue(4),
    "width": lambda p: p.spins["width"].setValue(768),
    "padding": lambda p: p.spins["padding"].setValue(64),
    "advanced": lambda p: p.set_advanced_open(True),
    "running": lambda p: p.set_running(True),
    "mode text": lambda p: p.set_mode_text("Mode: inpaint"),
    "last seed": lambda p: p.set_last_seed(7),
    "recent model": lambda p: p.add_recent_model("owner/another"),
    "live on": lambda p: p.set_live(True),
    "live button": lambda p: p.live_button.click(),
    "same prompt": lambda p: p.apply({"prompt": ""}),
    "rescan": lambda p: p.refresh(),
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_changed_fires_for_what_matters_to_a_generation(panel, edit):
    if edit == "preset":
        assert panel.preset_combo.count() > 1
    if edit.startswith("control") and edit != "control on":
        panel.control.setChecked(True)  # switching it on is a change of its own
    seen = []
    panel.changed.connect(lambda: seen.append(True))
    EDITS[edit](panel)
    assert seen, edit


@pytest.mark.parametrize("edit", UNRELATED, ids=list(UNRELATED))
def test_changed_stays_quiet_for_what_does_not(panel, edit):
    seen = []
    panel.changed.connect(lambda: seen.append(True))
    UNRELATED[edit](panel)
    assert not seen, edit
