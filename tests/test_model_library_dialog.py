import shutil

from PySide6.QtCore import QSettings

from sdstudio.qt.model_library import ModelLibraryDialog


def test_dialog_lists_models_and_loras_and_chooses_one(
    qtbot, tmp_path, sd1_inpaint_model, monkeypatch
):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    models = tmp_path / "models"
    shutil.copytree(sd1_inpaint_model, models / "tiny-inpaint")
    (models / "loras").mkdir()
    (models / "loras" / "watercolor.safetensors").write_bytes(b"x")
    (models / "bad.pt").write_bytes(b"x")
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("models/folder", str(models))
    dialog = ModelLibraryDialog(settings)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.models.topLevelItemCount() == 2, timeout=5000)
    rows = {dialog.models.topLevelItem(i).text(0): dialog.models.topLevelItem(i) for i in range(2)}
    assert rows["tiny-inpaint"].text(1) == "SD1" and rows["tiny-inpaint"].text(2) == "inpainting"
    assert rows["bad.pt"].text(2) == "cannot use" and "pickle" in rows["bad.pt"].toolTip(2)
    chosen, loras = [], []
    dialog.model_chosen.connect(chosen.append)
    dialog.lora_chosen.connect(loras.append)
    dialog.models.setCurrentItem(rows["bad.pt"])
    dialog._use(rows["bad.pt"])
    assert chosen == [] and "pickle" in dialog.status.text()
    dialog._use(rows["tiny-inpaint"])
    assert chosen == [str(models / "tiny-inpaint")]
    dialog.loras.setCurrentItem(dialog.loras.topLevelItem(0))
    dialog._insert_lora()
    assert loras == ["<lora:watercolor:0.8>"]
    assert dialog.presets.topLevelItemCount() >= 5
