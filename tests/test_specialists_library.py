"""Specialist models in the model library and the editor: the list (architecture, licence, a
pickle that needs converting, converted off the GUI thread after one plain question), their
downloads (licence and source, landing where find_lama and find_sam look; faked, never the
network) and the Remove fill menu's LaMa entry."""

from __future__ import annotations

import hashlib
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from sdstudio.core.errors import ModelError
from sdstudio.engine.models.specialist_presets import (
    LAMA_PRESET,
    SAM_ALLOW_PATTERNS,
    SAM_PRESETS,
    SPECIALIST_PRESETS,
)


@pytest.fixture(scope="module")
def lama_files(tmp_path_factory) -> dict[str, Path]:
    """A random-weight LaMa (spandrel's architecture, full size: about 200 MB) saved once as
    safetensors and as a plain .pth state dict."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in LaMa(in_nc=4, out_nc=3).state_dict().items()}
    folder = tmp_path_factory.mktemp("lama")
    save_file(state, str(folder / "lama.safetensors"))
    torch.save(state, folder / "lama.pth")
    return {"safetensors": folder / "lama.safetensors", "pth": folder / "lama.pth"}


def settings_for(tmp_path: Path, models: Path) -> QSettings:
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("models/folder", str(models))
    return settings


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the downloads -------------------------------------------------------------------------------


def test_specialist_downloads_say_their_licence_and_where_they_came_from():
    from sdstudio.qt.model_library import DOWNLOADS

    assert set(SPECIALIST_PRESETS) <= set(DOWNLOADS)
    for preset in SPECIALIST_PRESETS:
        permissive = ("Apache-2.0", "BSD-3-Clause", "MIT")
        assert any(name in preset.licence for name in permissive) and preset.commercial
        assert preset.source and "huggingface.co" in preset.source
    lama = LAMA_PRESET
    assert lama.architecture == "LaMa" and lama.purpose == "removal"
    assert lama.filename.endswith(".safetensors") and lama.target.endswith(".safetensors")
    assert len(lama.revision) == 40 and len(lama.sha256) == 64  # pinned and checked
    assert [p.repo_id for p in SAM_PRESETS] == [
        "Zigeng/SlimSAM-uniform-77",
        "facebook/sam-vit-base",
    ]
    assert all(p.filename is None and p.purpose == "selection" for p in SAM_PRESETS)
    assert not any(p.endswith((".bin", ".pth", ".h5", ".pt")) for p in SAM_ALLOW_PATTERNS)


def fake_hf_hub_download(source: Path, calls: list):
    """Stands in for huggingface_hub.hf_hub_download: copies ``source`` into ``local_dir`` as the
    hub's file, reporting its bytes through the progress bar."""

    def hf_hub_download(repo_id, filename, *, local_dir, tqdm_class, revision=None, **kwargs):
        calls.append((repo_id, filename, revision))
        size = source.stat().st_size
        bar = tqdm_class(desc=filename, unit="B", total=size)
        bar.update(size)
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, path)
        return str(path)

    return hf_hub_download


def test_a_lama_download_lands_where_find_lama_finds_it(tmp_path, lama_files, monkeypatch):
    from sdstudio.engine.models.downloads import download_specialist
    from sdstudio.engine.specialists.lama import find_lama
    from sdstudio.engine.specialists.loading import specialists_dir

    models = tmp_path / "models"
    assert find_lama(models) is None
    calls: list = []
    source = lama_files["safetensors"]
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hf_hub_download(source, calls))
    preset = replace(LAMA_PRESET, sha256=sha256(source))  # the published file, as far as we know
    seen = []
    landed = download_specialist(
        preset, models, lambda done, total, speed: seen.append((done, total)), threading.Event()
    )
    assert calls == [(preset.repo_id, preset.filename, preset.revision)]
    assert landed == specialists_dir(models) / "big-lama.safetensors"
    assert seen[-1] == (source.stat().st_size, source.stat().st_size)
    assert find_lama(models) == landed


def test_a_download_that_is_not_the_published_file_is_refused_and_deleted(tmp_path, monkeypatch):
    from sdstudio.engine.models.downloads import download_specialist
    from sdstudio.engine.specialists.loading import specialists_dir

    source = tmp_path / "tampered.safetensors"
    source.write_bytes(b"not the published bytes")
    calls: list = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hf_hub_download(source, calls))
    models = tmp_path / "models"
    with pytest.raises(ModelError, match="sha256") as error:
        download_specialist(LAMA_PRESET, models, lambda *a: None, threading.Event())
    assert "\n" not in str(error.value)
    assert not (specialists_dir(models) / "big-lama.safetensors").exists()
    assert not list((models / ".downloads").rglob("big-lama.safetensors"))
    sized = replace(LAMA_PRESET, sha256=None, size_bytes=3)
    with pytest.raises(ModelError, match="bytes, expected 3"):
        download_specialist(sized, models, lambda *a: None, threading.Event())


def sam_source(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "sam"}')
    (folder / "preprocessor_config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")  # never fetched
    return folder


def test_a_sam_download_lands_where_find_sam_finds_it(tmp_path, empty_hub, monkeypatch):
    from test_controlnet_library import fake_controlnet_snapshot

    from sdstudio.engine.models.downloads import download_specialist
    from sdstudio.engine.models.sam import find_sam, sam_dir

    models = tmp_path / "models"
    assert find_sam(models) is None
    source = sam_source(tmp_path / "published")
    calls: list = []
    monkeypatch.setattr(
        "huggingface_hub.snapshot_download", fake_controlnet_snapshot(empty_hub, source, calls)
    )
    for preset in reversed(SAM_PRESETS):  # base first: SlimSAM is still the one found
        folder = download_specialist(preset, models, lambda *a: None, threading.Event())
        assert not (folder / "pytorch_model.bin").exists()
    assert calls[0][1] == sorted(SAM_ALLOW_PATTERNS)
    assert find_sam(models) == "Zigeng/SlimSAM-uniform-77"
    # a folder under models/sam comes first; one with pickled weights only is not a model
    shutil.copytree(source, sam_dir(models) / "pickled", ignore=shutil.ignore_patterns("*.safe*"))
    assert find_sam(models) == "Zigeng/SlimSAM-uniform-77"
    shutil.copytree(source, sam_dir(models) / "mine")
    assert find_sam(models) == str(sam_dir(models) / "mine")


def test_a_sam_repo_without_safetensors_is_refused(tmp_path, empty_hub, monkeypatch):
    from test_controlnet_library import fake_controlnet_snapshot

    from sdstudio.engine.models.downloads import download_specialist
    from sdstudio.engine.models.sam import find_sam

    source = sam_source(tmp_path / "published")
    (source / "model.safetensors").unlink()
    monkeypatch.setattr(
        "huggingface_hub.snapshot_download", fake_controlnet_snapshot(empty_hub, source, [])
    )
    with pytest.raises(ModelError, match="safetensors"):
        download_specialist(SAM_PRESETS[0], tmp_path / "models", lambda *a: None, threading.Event())
    assert find_sam(tmp_path / "models") is None


# --- the library dialog --------------------------------------------------------------------------


def rows_of(tree) -> dict:
    items = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
    return {item.text(0): item for item in items}


def test_the_library_lists_specialists_and_converts_a_pickle_off_the_gui_thread(
    qtbot, tmp_path, empty_hub, lama_files, monkeypatch
):
    import sdstudio.engine.specialists.loading as loading
    from sdstudio.engine.specialists.lama import find_lama
    from sdstudio.qt.model_library import ModelLibraryDialog
    from sdstudio.qt.specialists_library import CONSENT

    models = tmp_path / "models"
    folder = loading.specialists_dir(models)
    folder.mkdir(parents=True)
    shutil.copy(lama_files["safetensors"], folder / "tiny-lama.safetensors")
    shutil.copy(lama_files["pth"], folder / "old-lama.pth")
    threads = []
    original = loading.convert_to_safetensors

    def convert(path):
        threads.append(threading.current_thread() is threading.main_thread())
        return original(path)

    monkeypatch.setattr(loading, "convert_to_safetensors", convert)
    dialog = ModelLibraryDialog(settings_for(tmp_path, models))
    qtbot.addWidget(dialog)
    section = dialog.specialists
    qtbot.waitUntil(lambda: section.tree.topLevelItemCount() == 2, timeout=5000)
    header = section.tree.headerItem()
    assert [header.text(c) for c in range(6)] == [
        "Specialist model", "Architecture", "Purpose", "Licence", "Size", "Note",
    ]  # fmt: skip
    shown = rows_of(section.tree)
    lama = shown["tiny-lama"]
    assert lama.text(1) == "LaMa" and lama.text(2) == "removal" and "Apache" in lama.text(3)
    assert lama.text(4).endswith("MB") and lama.text(5) == ""
    old = shown["old-lama"]
    assert "convert" in old.text(5).lower()
    section.tree.setCurrentItem(lama)
    assert not section.convert_button.isEnabled()
    section.tree.setCurrentItem(old)
    assert section.convert_button.isEnabled()

    asked = []
    section.ask = lambda text: asked.append(text) or False  # declined: nothing happens
    section.convert_button.click()
    assert len(asked) == 1 and CONSENT in asked[0]
    assert not (folder / "old-lama.safetensors").exists() and threads == []

    section.ask = lambda text: asked.append(text) or True
    section.convert_button.click()
    assert len(asked) == 2
    qtbot.waitUntil(lambda: "used from now on" in dialog.status.text(), timeout=20000)
    assert threads == [False]  # converted on a pool thread, not the GUI's
    assert (folder / "old-lama.safetensors").is_file()
    qtbot.waitUntil(lambda: rows_of(section.tree)["old-lama"].text(1) == "LaMa", timeout=5000)
    assert rows_of(section.tree)["old-lama"].text(5) == ""
    assert find_lama(models) is not None

    # the downloads: LaMa and Segment Anything with their licences, no SD family
    presets = rows_of(dialog.presets)
    assert "Apache-2.0" in presets["LaMa (big-lama)"].text(3)
    assert presets["LaMa (big-lama)"].text(1) == "—"
    assert "Apache-2.0" in presets["SlimSAM (small Segment Anything)"].text(3)
    assert "michaelgold/big-lama" in presets["LaMa (big-lama)"].toolTip(3)


def test_a_conversion_that_fails_says_so_in_one_line(qtbot, tmp_path, empty_hub):
    from sdstudio.engine.specialists.loading import specialists_dir
    from sdstudio.qt.specialists_library import SpecialistsSection

    models = tmp_path / "models"
    folder = specialists_dir(models)
    folder.mkdir(parents=True)
    (folder / "broken.pth").write_bytes(b"\x80\x02 not a pickle of tensors")
    said = []
    section = SpecialistsSection(said.append)
    qtbot.addWidget(section)
    section.ask = lambda text: True
    section.rescan(models)
    qtbot.waitUntil(lambda: section.tree.topLevelItemCount() == 1, timeout=5000)
    section.tree.setCurrentItem(section.tree.topLevelItem(0))
    section.convert_current()
    qtbot.waitUntil(lambda: said and "failed" in said[-1], timeout=5000)
    assert said[-1].startswith("Converting broken.pth failed: ") and "\n" not in said[-1]
    assert not (folder / "broken.safetensors").exists()
    assert section.converting is None and section.convert_button.isEnabled()


def test_a_downloaded_pickle_is_offered_for_conversion_at_once(qtbot, tmp_path, lama_files):
    from sdstudio.qt.specialists_library import SpecialistsSection

    section = SpecialistsSection(lambda text: None)
    qtbot.addWidget(section)
    asked = []
    section.ask = lambda text: asked.append(text) or False
    safe = tmp_path / "a.safetensors"
    safe.write_bytes(b"x")
    section.after_download(safe)
    section.after_download(tmp_path)  # a snapshot folder (Segment Anything)
    assert asked == []
    pickle = tmp_path / "b.pth"
    pickle.write_bytes(b"x")
    section.after_download(pickle)
    assert len(asked) == 1 and "b.pth" in asked[0]


# --- the fill menu -------------------------------------------------------------------------------


def fill_window(qtbot, tmp_path, models: Path):
    from PySide6.QtGui import QAction
    from PySide6.QtWidgets import QMainWindow

    from sdstudio.qt.fill_menu import build_fill_menu

    class Window(QMainWindow):
        def _action(self, menu, text, slot, shortcuts=(), checkable=False):
            action = QAction(text, self)
            action.setCheckable(checkable)
            action.triggered.connect(slot)
            menu.addAction(action)
            return action

    window = Window()
    qtbot.addWidget(window)
    window.settings = settings_for(tmp_path, models)
    window.fill_method = "auto"
    build_fill_menu(window, window.menuBar().addMenu("Generate"))
    (fills,) = [a.menu() for a in window.menuBar().actions()[0].menu().actions() if a.menu()]
    return window, {a.text().replace("&", ""): a for a in fills.actions()}


def test_the_fill_menu_offers_lama_and_says_where_to_get_it(qtbot, tmp_path, lama_files):
    from sdstudio.engine.specialists.loading import specialists_dir
    from sdstudio.qt.fill_menu import read_fill_method

    models = tmp_path / "models"
    window, actions = fill_window(qtbot, tmp_path, models)
    lama = actions["LaMa (learned; download it in Models > Model library)"]
    auto = next(a for label, a in actions.items() if label.startswith("Best for the hole"))
    assert "LaMa when installed" in auto.text()
    lama.trigger()  # none installed: not chosen, one line says where to get it
    assert window.fill_method == "auto" and auto.isChecked() and not lama.isChecked()
    message = window.statusBar().currentMessage()
    assert "Models > Model library" in message and "\n" not in message
    specialists_dir(models).mkdir(parents=True)
    shutil.copy(lama_files["safetensors"], specialists_dir(models) / "big-lama.safetensors")
    lama.trigger()
    assert window.fill_method == "lama" and lama.isChecked()
    assert read_fill_method(window.settings) == "lama"
