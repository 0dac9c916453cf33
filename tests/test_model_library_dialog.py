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


def test_few_step_downloads_show_their_licence_and_a_lora_lands_in_the_loras_list(
    qtbot, tmp_path, monkeypatch
):
    from pathlib import Path

    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    fetched = []

    def fake_hf_hub_download(repo_id, filename, *, local_dir, tqdm_class, **kwargs):
        fetched.append((repo_id, filename))  # stands in for the hub: no network
        bar = tqdm_class(desc=filename, unit="B", total=3)
        bar.update(3)
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"abc")
        return str(path)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hf_hub_download)
    models = tmp_path / "models"
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("models/folder", str(models))
    dialog = ModelLibraryDialog(settings)
    qtbot.addWidget(dialog)
    rows = {
        dialog.presets.topLevelItem(i).text(0): dialog.presets.topLevelItem(i)
        for i in range(dialog.presets.topLevelItemCount())
    }
    assert "Licence" in [dialog.presets.headerItem().text(c) for c in range(6)]
    assert "non-commercial" in rows["sdxl-turbo"].text(3).lower()
    assert "Open RAIL++-M" in rows["lcm-lora-sdv1-5"].text(3)
    assert rows["lcm-lora-sdv1-5"].text(2) == "LoRA" and rows["SD 1.5"].text(3)

    dialog.presets.setCurrentItem(rows["lcm-lora-sdv1-5"])
    dialog._download()
    qtbot.waitUntil(lambda: not dialog.downloads, timeout=5000)
    assert fetched == [("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors")]
    assert (models / "loras" / "lcm-lora-sdv1-5.safetensors").read_bytes() == b"abc"
    qtbot.waitUntil(lambda: dialog.loras.topLevelItemCount() == 1, timeout=5000)
    assert dialog.loras.topLevelItem(0).text(0) == "lcm-lora-sdv1-5"
