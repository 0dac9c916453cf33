import pytest
from PySide6.QtCore import QSettings

from sdstudio.engine.fake import FakeEngine
from sdstudio.qt.lora_panel import set_lora_tag
from sdstudio.qt.main_window import MainWindow


@pytest.mark.parametrize(
    ("prompt", "name", "weight", "expected"),
    [
        ("a cat", "ink", 0.8, "a cat <lora:ink:0.8>"),
        ("a cat <lora:ink:0.8>", "ink", 0.5, "a cat <lora:ink:0.5>"),
        ("a cat <lora:INK:0.8>, sunny", "ink", None, "a cat, sunny"),
        ("a cat <lora:ink:1> <lora:film:0.3>", "ink", None, "a cat <lora:film:0.3>"),
        ("", "ink", 1.0, "<lora:ink:1>"),
    ],
)
def test_set_lora_tag(prompt, name, weight, expected):
    assert set_lora_tag(prompt, name, weight) == expected


def test_panel_and_prompt_follow_each_other(qtbot, tmp_path):
    models = tmp_path / "models"
    (models / "loras").mkdir(parents=True)
    for name in ("ink", "film"):
        (models / "loras" / f"{name}.safetensors").write_bytes(b"x")
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("models/folder", str(models))
    window = MainWindow(settings=settings, engine_factory=FakeEngine)
    window.confirm_discard = lambda: True
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: len(window.loras._rows) == 2, timeout=5000)
    window.panel.apply({"prompt": "a lighthouse"})
    ink_check, ink_weight = window.loras._rows["ink"]
    ink_check.setChecked(True)
    assert window.panel.settings()["prompt"] == "a lighthouse <lora:ink:0.8>"
    ink_weight.setValue(0.5)
    assert window.panel.settings()["prompt"] == "a lighthouse <lora:ink:0.5>"
    window.panel.apply({"prompt": "a lighthouse <lora:film:1.2>"})  # typed by hand
    film_check, film_weight = window.loras._rows["film"]
    assert film_check.isChecked() and film_weight.value() == pytest.approx(1.2)
    assert not ink_check.isChecked()
    film_check.setChecked(False)
    assert window.panel.settings()["prompt"] == "a lighthouse"
    window.close()
