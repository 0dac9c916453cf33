import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QFileDialog

from sdstudio.core.request import MAX_SEED, Scheduler
from sdstudio.engine.models.resolve import DEFAULT_INPAINT_MODEL, DEFAULT_MODEL
from sdstudio.qt.panel import GenerationPanel

DEFAULT_SETTINGS = {
    "prompt": "",
    "negative_prompt": "",
    "model": DEFAULT_INPAINT_MODEL,
    "seed": None,
    "steps": 20,
    "guidance": 7.0,
    "strength": 0.75,
    "scheduler": Scheduler.EULER_A,
    "batch_count": 1,
    "padding": 32,
    "mask_blur": 4,
    "width": 512,
    "height": 512,
    "loras": (),
    "live_strength": 0.5,
    "control": None,
}
CHANGED = {
    "prompt": '@first, a "quoted" cat\non two lines, ünïcode 東京; 50% = done\\',
    "negative_prompt": "blurry, lowres",
    "model": "/models/my model, v2",
    "seed": MAX_SEED,
    "steps": 37,
    "guidance": 4.5,
    "strength": 1.0,
    "scheduler": Scheduler.DPMPP_2M_KARRAS,
    "batch_count": 3,
    "padding": 100,
    "mask_blur": 9,
    "width": 768,
    "height": 1024,
    "loras": (),
    "live_strength": 0.35,
    "control": None,
}


@pytest.fixture
def panel(qtbot):
    widget = GenerationPanel()
    qtbot.addWidget(widget)
    return widget


@pytest.fixture
def ini(tmp_path):
    def make(name="state.ini"):
        return QSettings(str(tmp_path / name), QSettings.Format.IniFormat)

    return make


def reopened(settings: QSettings) -> QSettings:
    """The same ini file read from disk again.

    QSettings caches values per file inside a process, so reading through the same path hands
    back the Python objects that were stored (ints, bools, lists); read from disk they come back
    as strings, and a one-item list as a plain string. Copying the file bypasses the cache.
    """
    settings.sync()
    assert settings.status() == QSettings.Status.NoError
    source = Path(settings.fileName())
    copy = source.with_name(f"{source.stem}-{next(_copies)}.ini")
    shutil.copyfile(source, copy)
    return QSettings(str(copy), QSettings.Format.IniFormat)


_copies = itertools.count()


def test_default_settings(panel):
    assert panel.settings() == DEFAULT_SETTINGS
    assert panel.recent_models() == [DEFAULT_INPAINT_MODEL, DEFAULT_MODEL]
    items = [panel.model_combo.itemText(i) for i in range(panel.model_combo.count())]
    assert items == [DEFAULT_INPAINT_MODEL, DEFAULT_MODEL]
    schedulers = [panel.scheduler_combo.itemText(i) for i in range(panel.scheduler_combo.count())]
    assert schedulers == [member.value for member in Scheduler]
    assert panel.random_check.isChecked()
    assert panel.minimumWidth() >= 280


def test_typing_into_the_prompt_updates_the_counter(panel, qtbot):
    assert panel.prompt_tokens.text() == "0 / 75 tokens"
    qtbot.keyClicks(panel.prompt_edit, "a cat, sitting")
    assert panel.prompt_tokens.text() == "4 / 75 tokens"
    assert panel.prompt_tokens.property("warning") is False
    qtbot.keyClicks(panel.negative_edit, "blurry")
    assert panel.negative_tokens.text() == "1 / 75 tokens"
    assert panel.prompt_tokens.text() == "4 / 75 tokens"


def test_counter_warns_above_one_window(panel):
    panel.prompt_edit.setPlainText("cat " * 75)
    assert panel.prompt_tokens.text() == "75 / 75 tokens"
    assert panel.prompt_tokens.styleSheet() == ""
    panel.prompt_edit.setPlainText("cat " * 81)
    label = panel.prompt_tokens
    assert label.text() == "81 / 75 tokens — 2 chunks of 75, each encoded on its own"
    assert label.property("warning") is True
    assert label.styleSheet() != ""
    panel.prompt_edit.setPlainText("cat " * 160)
    assert label.text().startswith("160 / 75 tokens — 3 chunks")
    panel.prompt_edit.setPlainText("cat")
    assert label.property("warning") is False
    assert label.styleSheet() == ""


def test_random_means_no_seed(panel, qtbot):
    panel.apply({"seed": 1234})
    assert panel.settings()["seed"] == 1234
    panel.random_check.setChecked(True)
    assert panel.settings()["seed"] is None
    assert panel.seed_edit.text() == "1234"  # kept for when Random is turned off again
    panel.random_check.setChecked(False)
    assert panel.settings()["seed"] == 1234


def test_typing_a_seed_turns_random_off_and_only_digits_in_range_are_accepted(panel, qtbot):
    qtbot.keyClicks(panel.seed_edit, "12a3")
    assert panel.seed_edit.text() == "123"
    assert not panel.random_check.isChecked()
    assert panel.settings()["seed"] == 123
    panel.seed_edit.clear()
    qtbot.keyClicks(panel.seed_edit, str(MAX_SEED) + "9")
    assert panel.seed_edit.text() == str(MAX_SEED)
    assert panel.settings()["seed"] == MAX_SEED
    panel.seed_edit.selectAll()
    qtbot.keyClick(panel.seed_edit, Qt.Key.Key_Backspace)
    assert panel.random_check.isChecked()  # clearing the field means random again
    assert panel.settings()["seed"] is None


def test_reuse_last_fills_the_seed_and_unchecks_random(panel, qtbot):
    assert not panel.reuse_button.isEnabled()
    panel.set_last_seed(MAX_SEED)
    assert panel.reuse_button.isEnabled()
    assert panel.random_check.isChecked()
    qtbot.mouseClick(panel.reuse_button, Qt.MouseButton.LeftButton)
    assert panel.seed_edit.text() == str(MAX_SEED)
    assert not panel.random_check.isChecked()
    assert panel.settings()["seed"] == MAX_SEED


@pytest.mark.parametrize("seed", [0, 1, 2**31 - 1, 2**31, MAX_SEED])
def test_seeds_up_to_2_32_round_trip(panel, qtbot, ini, seed):
    assert panel.apply({"seed": seed}) == []
    assert panel.settings()["seed"] == seed
    settings = ini()
    panel.save_state(settings)
    other = GenerationPanel()
    qtbot.addWidget(other)
    other.restore_state(reopened(settings))
    assert other.settings()["seed"] == seed


def test_seeds_out_of_range_are_refused(panel):
    assert panel.apply({"seed": MAX_SEED + 1}) == ["seed"]
    assert panel.apply({"seed": -1}) == ["seed"]
    assert panel.apply({"seed": True}) == ["seed"]
    assert panel.settings()["seed"] is None


def test_apply_sets_fields_and_reports_what_it_could_not(panel):
    assert panel.apply(CHANGED) == []
    assert panel.settings() == CHANGED
    assert panel.spins["steps"].value() == 37
    assert panel.scheduler_combo.currentText() == "DPM++ 2M Karras"
    assert panel.model_combo.currentText() == "/models/my model, v2"

    skipped = panel.apply(
        {
            "steps": 151,
            "guidance": "lots",
            "scheduler": "No Such Sampler",
            "model": "  ",
            "prompt": 5,
            "colour": "red",
            "width": 1000,  # snapped to a multiple of 8
            "height": "640",  # a string as a metadata reader may hand it over
        }
    )
    assert sorted(skipped) == ["colour", "guidance", "model", "prompt", "scheduler", "steps"]
    after = panel.settings()
    assert after == {**CHANGED, "width": 1000, "height": 640}
    assert panel.apply({"scheduler": "euler"}) == []
    assert panel.settings()["scheduler"] is Scheduler.EULER
    assert panel.apply({"seed": None}) == []
    assert panel.settings()["seed"] is None


def test_width_and_height_are_snapped_to_multiples_of_8(panel):
    panel.spins["width"].setValue(517)
    assert panel.settings()["width"] == 520
    panel.spins["width"].editingFinished.emit()
    assert panel.spins["width"].value() == 520
    assert panel.apply({"height": 2047}) == []
    assert panel.settings()["height"] == 2048


@pytest.mark.parametrize("from_disk", [True, False], ids=["ini-file", "typed-values"])
def test_save_and_restore_round_trip(panel, qtbot, ini, from_disk):
    panel.apply(CHANGED)
    panel.random_check.setChecked(True)  # a typed seed survives while Random is on
    panel.set_last_seed(2**32 - 2)
    panel.add_recent_model("/models/my model, v2")
    panel.set_advanced_open(True)
    settings = ini()
    panel.save_state(settings)
    assert settings.allKeys() and all(k.startswith("generation/") for k in settings.allKeys())

    other = GenerationPanel()
    qtbot.addWidget(other)
    other.restore_state(reopened(settings) if from_disk else settings)
    assert other.settings() == {**CHANGED, "seed": None}
    assert other.seed_edit.text() == str(MAX_SEED)
    other.random_check.setChecked(False)
    assert other.settings() == CHANGED
    assert other.recent_models() == panel.recent_models()
    assert other.recent_models()[0] == "/models/my model, v2"
    assert other.advanced_button.isChecked() and not other.advanced_frame.isHidden()
    other.reuse_last_seed()
    assert other.settings()["seed"] == 2**32 - 2


def test_recent_models_keep_ten_and_one_item_survives_an_ini_file(panel, qtbot, ini):
    settings = ini()
    settings.setValue("generation/recent_models", ["only/one"])
    other = GenerationPanel()
    qtbot.addWidget(other)
    other.restore_state(reopened(settings))  # from disk, a one-item list reads as a str
    assert other.recent_models() == ["only/one"]
    combo = [other.model_combo.itemText(i) for i in range(other.model_combo.count())]
    assert combo == ["only/one", DEFAULT_INPAINT_MODEL, DEFAULT_MODEL]  # defaults stay offered
    for i in range(12):
        other.add_recent_model(f"owner/model-{i}")
    other.add_recent_model("owner/model-5")  # again: moves to the front, no duplicate
    recent = other.recent_models()
    assert len(recent) == 10
    assert recent[:2] == ["owner/model-5", "owner/model-11"]
    assert len(set(recent)) == 10


def test_restore_with_garbage_falls_back_to_defaults(panel, ini, tmp_path):
    path = tmp_path / "garbage.ini"
    path.write_text(
        "[generation]\n"
        "prompt=@Variant(\\0\\0\\0\\x7f\\0\\0\\0\\x1fGarbage)\n"
        "negative_prompt=1, 2, 3\n"
        "model=\n"
        "seed=-5\n"
        "random_seed=maybe\n"
        "last_seed=abc\n"
        "steps=twenty\n"
        "guidance=nan\n"
        "strength=7\n"
        "scheduler=Warp Drive\n"
        "batch_count=1e400\n"
        "padding=3.5\n"
        "mask_blur=\n"
        "width=-64\n"
        "height=@Invalid()\n"
        "recent_models=1, 2, @Invalid()\n"
        "advanced_open=17\n",
        encoding="utf-8",
    )
    panel.apply(CHANGED)
    panel.set_last_seed(5)
    panel.restore_state(QSettings(str(path), QSettings.Format.IniFormat))
    assert panel.settings() == DEFAULT_SETTINGS
    assert panel.random_check.isChecked()
    assert not panel.reuse_button.isEnabled()
    assert panel.recent_models() == [DEFAULT_INPAINT_MODEL, DEFAULT_MODEL]
    assert panel.advanced_frame.isHidden()


def test_restore_from_empty_settings_gives_defaults(panel, ini):
    panel.apply(CHANGED)
    panel.restore_state(ini("empty.ini"))
    assert panel.settings() == DEFAULT_SETTINGS


def test_restore_tolerates_values_of_the_wrong_type(panel, ini):
    settings = ini()
    for key, value in {
        "prompt": ["a", "list"],
        "steps": [1, 2],
        "seed": 3.25,
        "scheduler": 4,
        "recent_models": [1, 2],
        "random_seed": "",
    }.items():
        settings.setValue(f"generation/{key}", value)
    settings.sync()
    panel.restore_state(ini())
    assert panel.settings() == DEFAULT_SETTINGS


def test_buttons_emit_their_signals(panel, qtbot):
    panel.set_running(True)
    with qtbot.waitSignal(panel.cancel_requested, timeout=1000):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    panel.set_running(False)
    with qtbot.waitSignal(panel.generate_requested, timeout=1000):
        qtbot.mouseClick(panel.generate_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(panel.remove_requested, timeout=1000):
        qtbot.mouseClick(panel.remove_button, Qt.MouseButton.LeftButton)
    assert "Ctrl+Enter" in panel.generate_button.toolTip()
    assert "Esc" in panel.cancel_button.toolTip()
    assert "Delete" in panel.remove_button.toolTip()


def test_a_disabled_cancel_button_emits_nothing(panel, qtbot):
    with qtbot.assertNotEmitted(panel.cancel_requested, wait=50):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)


def test_set_running_toggles_the_buttons(panel):
    assert panel.generate_button.isEnabled()
    assert panel.remove_button.isEnabled()
    assert not panel.cancel_button.isEnabled()
    panel.set_running(True)
    assert not panel.generate_button.isEnabled()
    assert not panel.remove_button.isEnabled()
    assert panel.cancel_button.isEnabled()
    panel.set_running(False)
    assert panel.generate_button.isEnabled()
    assert not panel.cancel_button.isEnabled()


def test_mode_text(panel):
    panel.set_mode_text("Inpaint — 512×512 region")
    assert panel.mode_label.text() == "Inpaint — 512×512 region"


def test_advanced_section_folds(panel, qtbot):
    assert panel.advanced_frame.isHidden()
    qtbot.mouseClick(panel.advanced_button, Qt.MouseButton.LeftButton)
    assert not panel.advanced_frame.isHidden()
    assert panel.advanced_button.arrowType() == Qt.ArrowType.DownArrow
    qtbot.mouseClick(panel.advanced_button, Qt.MouseButton.LeftButton)
    assert panel.advanced_frame.isHidden()


def test_browse_folder_picks_a_model(panel, qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path))
    qtbot.mouseClick(panel.browse_button, Qt.MouseButton.LeftButton)
    assert panel.settings()["model"] == str(tmp_path)
    assert panel.recent_models()[0] == str(tmp_path)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: "")
    qtbot.mouseClick(panel.browse_button, Qt.MouseButton.LeftButton)  # cancelled dialog
    assert panel.settings()["model"] == str(tmp_path)


def test_importing_the_panel_loads_no_torch():
    probe = (
        "import sys, sdstudio.qt.panel; "
        "print(sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_counter_becomes_exact_once_clips_tokenizer_is_loaded(panel, qtbot):
    qtbot.waitUntil(lambda: "CLIP tokens" in panel.prompt_tokens.toolTip(), timeout=5000)
    panel.prompt_edit.setPlainText(
        "photorealistic <lora:ink:0.5>"
    )  # 2 real CLIP tokens; the tag: 0
    assert panel.prompt_tokens.text() == "2 / 75 tokens"


# --- sampler presets ---------------------------------------------------------------------------


def test_preset_chooser_lists_the_presets_of_the_models_family(panel, sd1_model, sdxl_model):
    chooser = panel.preset_combo
    panel.apply({"model": sd1_model})
    assert chooser.names() == ["Custom", "Live: LCM 4 steps", "Hyper-SD 8 steps"]
    panel.apply({"model": sdxl_model})
    assert chooser.names() == [
        "Custom",
        "Live: LCM 4 steps",
        "Hyper-SD 8 steps",
        "Lightning 4 steps",
    ]
    panel.apply({"model": "someone/not-downloaded"})  # family unknown: all, with family
    assert "Live: LCM 4 steps (SD 1.x)" in chooser.names()
    assert "SDXL-Turbo 1 step (SDXL)" in chooser.names()
    panel.apply({"model": "stabilityai/sdxl-turbo"})
    assert chooser.names() == ["Custom", "SDXL-Turbo 1 step"]


def test_choosing_a_preset_sets_the_sampler_and_passes_its_lora(panel, sd1_model):
    panel.apply({"model": sd1_model, "strength": 0.75})
    panel.preset_combo.choose("Live: LCM 4 steps")
    s = panel.settings()
    assert (s["scheduler"], s["steps"], s["guidance"]) == (Scheduler.LCM, 4, 1.0)
    assert s["loras"] == (("lcm-lora-sdv1-5", 1.0),)
    panel.spins["strength"].setValue(0.2)  # 4 x 0.2 runs no step: the steps follow
    assert panel.settings()["steps"] == 5 and panel.preset() is not None
    panel.spins["guidance"].setValue(2.0)  # by hand: back to Custom, no LoRA
    assert panel.preset_combo.currentText() == "Custom" and panel.settings()["loras"] == ()
    assert panel.settings()["guidance"] == 2.0 and panel.settings()["steps"] == 5

    for by_hand in (
        lambda: panel.spins["steps"].setValue(6),
        lambda: panel.apply({"scheduler": Scheduler.DDIM}),
    ):
        panel.preset_combo.choose("Hyper-SD 8 steps")
        assert panel.settings()["loras"] == (("Hyper-SD15-8steps-lora", 1.0),)
        by_hand()
        assert panel.preset() is None and panel.settings()["loras"] == ()


def test_a_turbo_preset_chooses_its_model(panel):
    panel.apply({"model": "someone/not-downloaded"})
    panel.preset_combo.choose("SDXL-Turbo 1 step (SDXL)")
    s = panel.settings()
    assert s["model"] == "stabilityai/sdxl-turbo" and s["loras"] == ()
    assert (s["scheduler"], s["guidance"]) == (Scheduler.EULER_A_TRAILING, 0.0)
    assert panel.preset_combo.currentText() == "SDXL-Turbo 1 step"


def test_the_preset_is_remembered_and_the_request_carries_its_lora(qtbot, panel, ini, sd1_model):
    panel.apply({"model": sd1_model})
    panel.preset_combo.choose("Live: LCM 4 steps")
    settings = ini()
    panel.save_state(settings)
    other = GenerationPanel()
    qtbot.addWidget(other)
    other.restore_state(reopened(settings))
    assert other.preset_combo.currentText() == "Live: LCM 4 steps"
    assert other.settings() == panel.settings()

    from sdstudio.core.document import Document
    from sdstudio.core.request import Mode
    from sdstudio.qt.session import EditorSession

    class Worker:  # the session only connects to its signals here
        def __getattr__(self, name):
            return type("Signal", (), {"connect": lambda *a: None})()

    session = EditorSession(None, other, Worker(), Worker())
    session.document = Document.blank(64, 64)
    (request,) = session.requests(Mode.IMG2IMG)
    assert request.loras == (("lcm-lora-sdv1-5", 1.0),) and request.scheduler is Scheduler.LCM
    other.reset()
    assert other.preset_combo.currentText() == "Custom" and other.settings()["loras"] == ()
