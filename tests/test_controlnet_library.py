"""ControlNets in the model library: found with their family, pickles listed and never opened."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sdstudio.core.request import ModelFamily
from sdstudio.engine.models.controlnets import controlnets_dir, scan_controlnets


@pytest.fixture(scope="module")
def sd1_controlnet(tmp_path_factory) -> Path:
    from tiny_models import saved_controlnet

    return saved_controlnet(tmp_path_factory.mktemp("cn") / "sd1-scribble")


def sdxl_header_file(path: Path) -> Path:
    """A single-file SDXL ControlNet as far as its header tells: only the tensors that identify
    it (the conditioning input, SDXL's added time embedding, a 2048-wide cross-attention)."""
    from safetensors.numpy import save_file

    tensors = {
        "controlnet_cond_embedding.conv_in.weight": np.zeros((16, 3, 3, 3), np.float16),
        "add_embedding.linear_1.weight": np.zeros((8, 4), np.float16),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": np.zeros(
            (4, 2048), np.float16
        ),
    }
    save_file(tensors, str(path))
    return path


def test_scan_finds_folders_and_files_with_their_family_and_lists_pickles_unopened(
    tmp_path, empty_hub, sd1_controlnet
):
    from tiny_models import pickle_trap

    models = tmp_path / "models"
    folder = controlnets_dir(models)
    shutil.copytree(sd1_controlnet, folder / "my-scribble")
    sdxl_header_file(folder / "xl-scribble.safetensors")
    marker = tmp_path / "ran"
    pickle_trap(folder / "old-canny.pth", marker, torch_zip=True)
    (folder / "readme.txt").write_text("not a ControlNet")
    (folder / ".downloads").mkdir()
    entries = {e.name: e for e in scan_controlnets(models)}
    assert set(entries) == {"my-scribble", "xl-scribble", "old-canny.pth"}
    scribble = entries["my-scribble"]
    assert scribble.usable and scribble.family is ModelFamily.SD1 and scribble.source == "folder"
    assert scribble.reference == str(folder / "my-scribble") and scribble.size_bytes > 0
    xl = entries["xl-scribble"]
    assert xl.usable and xl.family is ModelFamily.SDXL and xl.source == "file"
    assert xl.reference == str(folder / "xl-scribble.safetensors")
    old = entries["old-canny.pth"]
    assert not old.usable and old.family is None and "pickle" in old.problem
    assert not marker.exists()  # listed, never unpickled


def test_unusable_controlnets_say_why(tmp_path, empty_hub, sd1_controlnet):
    folder = controlnets_dir(tmp_path / "models")
    folder.mkdir(parents=True)
    (folder / "empty").mkdir()
    (folder / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    model = folder / "a-whole-model"
    shutil.copytree(sd1_controlnet, model)
    config = (model / "config.json").read_text().replace("ControlNetModel", "UNet2DConditionModel")
    (model / "config.json").write_text(config)
    entries = {e.name: e for e in scan_controlnets(tmp_path / "models")}
    assert not any(e.usable for e in entries.values())
    assert "no config.json" in entries["empty"].problem
    assert "not a ControlNet" in entries["a-whole-model"].problem
    assert entries["broken"].problem and entries["broken"].family is None


def test_no_models_folder_lists_nothing(tmp_path, empty_hub):
    assert scan_controlnets(tmp_path / "missing") == []


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """A hub cache entry as huggingface_hub lays it out (blobs, a snapshot of links, refs)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    for number, (name, source) in enumerate(sorted(files.items())):
        blob = repo / "blobs" / f"{number:040x}"
        shutil.copy(source, blob)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_hub_cache_controlnets_are_listed_by_repo_id_and_models_are_not(
    tmp_path, empty_hub, sd1_controlnet, sd1_model
):
    files = {p.name: p for p in sd1_controlnet.iterdir()}
    cache_repo(empty_hub, "someone/cn-scribble", files)
    cache_repo(empty_hub, "someone/cn-partial", {"config.json": sd1_controlnet / "config.json"})
    model = Path(sd1_model)
    cache_repo(empty_hub, "someone/tiny-sd", {"model_index.json": model / "model_index.json"})
    entries = scan_controlnets(tmp_path / "models")
    assert [e.reference for e in entries] == ["someone/cn-partial", "someone/cn-scribble"]
    partial, scribble = entries
    assert scribble.usable and scribble.family is ModelFamily.SD1
    assert scribble.source == "hub cache" and scribble.size_bytes > 0
    assert not partial.usable and "someone/cn-partial" in partial.problem
    assert "snapshots" not in partial.problem  # says the repo, not the cache's inner path


# --- downloads -----------------------------------------------------------------------------------


def test_controlnet_presets_are_well_known_diffusers_controlnets_with_their_licence():
    from sdstudio.engine.models.controlnets import CONTROLNET_PRESETS
    from sdstudio.engine.models.library import PRESETS

    assert all(p.kind == "ControlNet" and p.licence and p.commercial for p in CONTROLNET_PRESETS)
    by_repo = {p.repo_id: p for p in CONTROLNET_PRESETS}
    for name in ("scribble", "lineart", "canny", "inpaint"):
        preset = by_repo[f"lllyasviel/control_v11p_sd15_{name}"]
        assert preset.family is ModelFamily.SD1 and "OpenRAIL" in preset.licence
    xl = by_repo["xinsir/controlnet-scribble-sdxl-1.0"]
    assert xl.family is ModelFamily.SDXL and "Apache" in xl.licence
    union = by_repo["xinsir/controlnet-union-sdxl-1.0"]  # runs since the union pipelines
    assert union.family is ModelFamily.SDXL and "Apache" in union.licence
    assert all(p.filename is None and p.lora_name is None for p in CONTROLNET_PRESETS)
    assert not any(p.kind == "ControlNet" for p in PRESETS)  # models stay models


def fake_controlnet_snapshot(cache: Path, source: Path, calls: list, chunks=(10, 20)):
    """Stands in for huggingface_hub.snapshot_download: lays the allowed files of ``source`` out
    in ``cache`` as the hub does, reporting bytes like its "Reconstructing" bar."""

    def snapshot_download(repo_id, *, allow_patterns=None, tqdm_class=None, **kwargs):
        calls.append((repo_id, sorted(allow_patterns or []), kwargs))
        bar = tqdm_class(desc="Reconstructing (incomplete total...)", unit="B", total=sum(chunks))
        for chunk in chunks:
            bar.update(chunk)
        files = {p.name: p for p in source.iterdir() if p.name in (allow_patterns or [])}
        return str(cache_repo(cache, repo_id, files))

    return snapshot_download


def test_a_controlnet_download_lands_where_the_scan_and_the_engine_find_it(
    tmp_path, empty_hub, sd1_controlnet, monkeypatch
):
    import threading

    from sdstudio.engine.diffusion.controlnet import resolve_controlnet
    from sdstudio.engine.models.downloads import download_controlnet

    source = tmp_path / "published"
    shutil.copytree(sd1_controlnet, source)
    (source / "diffusion_pytorch_model.bin").write_bytes(b"pickle")  # never fetched
    calls: list = []
    fake = fake_controlnet_snapshot(empty_hub, source, calls)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake)
    seen = []
    folder = download_controlnet(
        "lllyasviel/control_v11p_sd15_scribble",
        lambda done, total, speed: seen.append((done, total)),
        threading.Event(),
    )
    assert calls[0][1] == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert seen == [(10, 30), (30, 30)]
    assert not (folder / "diffusion_pytorch_model.bin").exists()
    (entry,) = scan_controlnets(tmp_path / "models")
    assert entry.reference == "lllyasviel/control_v11p_sd15_scribble"
    assert entry.usable and entry.family is ModelFamily.SD1 and entry.source == "hub cache"
    monkeypatch.undo()  # the engine's own (offline) cache lookup, as the panel's run takes it
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(empty_hub))
    info = resolve_controlnet(entry.reference)
    assert info.folder == folder and info.family is ModelFamily.SD1


def test_a_controlnet_repo_without_safetensors_is_refused_after_download(
    tmp_path, empty_hub, sd1_controlnet, monkeypatch
):
    import threading

    from sdstudio.core.errors import ModelError
    from sdstudio.engine.models.downloads import download_controlnet

    source = tmp_path / "pickled-only"
    source.mkdir()
    shutil.copy(sd1_controlnet / "config.json", source)
    (source / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    fake = fake_controlnet_snapshot(empty_hub, source, [])
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake)
    with pytest.raises(
        ModelError, match="only as diffusers safetensors weights. Choose another ControlNet"
    ):
        download_controlnet("someone/old-cn", print, threading.Event())


# --- the library dialog --------------------------------------------------------------------------


def test_dialog_lists_controlnets_notes_another_family_and_downloads_one(
    qtbot, tmp_path, empty_hub, sd1_controlnet, sd1_model, sdxl_model, monkeypatch
):
    from PySide6.QtCore import QSettings, Qt
    from tiny_models import pickle_trap

    from sdstudio.qt.model_library import ModelLibraryDialog

    models = tmp_path / "models"
    folder = controlnets_dir(models)
    shutil.copytree(sd1_controlnet, folder / "my-scribble")
    sdxl_header_file(folder / "xl-scribble.safetensors")
    pickle_trap(folder / "old.pth", tmp_path / "ran", torch_zip=True)
    shutil.copytree(sdxl_model, models / "an-xl-model")
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("models/folder", str(models))
    dialog = ModelLibraryDialog(settings, model=sd1_model)
    qtbot.addWidget(dialog)
    tree = dialog.controlnets
    qtbot.waitUntil(lambda: tree.topLevelItemCount() == 3, timeout=5000)

    def rows():
        items = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
        return {item.text(0): item for item in items}

    shown = rows()
    assert [tree.headerItem().text(c) for c in range(5)] == [
        "ControlNet", "Family", "Size", "Where", "Note",
    ]  # fmt: skip
    assert shown["my-scribble"].text(1) == "SD1" and shown["my-scribble"].text(4) == ""
    assert shown["my-scribble"].text(3) == "folder" and shown["my-scribble"].text(2)
    assert shown["xl-scribble"].text(1) == "SDXL"
    assert "For SDXL models; the current model is SD 1.x" in shown["xl-scribble"].text(4)
    assert "pickle" in shown["old.pth"].text(4) and not (tmp_path / "ran").exists()
    chosen = []
    dialog.controlnet_chosen.connect(chosen.append)
    dialog._use_controlnet(shown["old.pth"])
    assert chosen == [] and "pickle" in dialog.status.text()
    dialog._use_controlnet(shown["xl-scribble"])  # another family: a note, not an error
    assert chosen == [str(folder / "xl-scribble.safetensors")]

    # choosing the SDXL model moves the note to the SD 1.x ControlNet
    model_rows = [dialog.models.topLevelItem(i) for i in range(dialog.models.topLevelItemCount())]
    dialog._use(next(item for item in model_rows if item.text(0) == "an-xl-model"))
    assert rows()["xl-scribble"].text(4) == ""
    assert "the current model is SDXL" in rows()["my-scribble"].text(4)

    # a ControlNet download: licence shown, fetched into the hub cache, then listed by repo id
    calls: list = []
    fake = fake_controlnet_snapshot(empty_hub, sd1_controlnet, calls)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake)
    presets = {
        dialog.presets.topLevelItem(i).text(0): dialog.presets.topLevelItem(i)
        for i in range(dialog.presets.topLevelItemCount())
    }
    scribble = presets["ControlNet SD 1.5 scribble"]
    assert scribble.text(2) == "ControlNet" and "OpenRAIL" in scribble.text(3)
    assert presets["ControlNet SDXL scribble"].text(1) == "SDXL"
    assert "SD 1.5" in presets and "lcm-lora-sdv1-5" in presets  # the model downloads stay
    dialog.presets.setCurrentItem(scribble)
    dialog._download()
    qtbot.waitUntil(lambda: not dialog.downloads, timeout=5000)
    assert [call[0] for call in calls] == ["lllyasviel/control_v11p_sd15_scribble"]
    reference = "lllyasviel/control_v11p_sd15_scribble"
    qtbot.waitUntil(lambda: reference in rows(), timeout=5000)
    assert rows()[reference].text(3) == "hub cache" and rows()[reference].text(1) == "SD1"
    assert rows()[reference].data(0, Qt.ItemDataRole.UserRole) == reference


def test_a_bare_name_is_found_in_the_controlnet_folder(tmp_path, sd1_controlnet):
    from sdstudio.core.errors import ModelError
    from sdstudio.engine.diffusion.controlnet import resolve_controlnet

    folder = controlnets_dir(tmp_path / "models")
    shutil.copytree(sd1_controlnet, folder / "my-scribble")
    sdxl_header_file(folder / "xl-scribble.safetensors")
    found = resolve_controlnet("my-scribble", [folder])
    assert found.folder == folder / "my-scribble" and found.family is ModelFamily.SD1
    assert resolve_controlnet("xl-scribble", [folder]).file == folder / "xl-scribble.safetensors"
    assert resolve_controlnet("xl-scribble.safetensors", [folder]).family is ModelFamily.SDXL
    with pytest.raises(ModelError, match="nor a name in .*controlnet"):
        resolve_controlnet("missing", [folder])
    with pytest.raises(ModelError, match="No ControlNet"):
        resolve_controlnet("my-scribble")  # no folders given: names are not guessed
    with pytest.raises(ModelError, match="No ControlNet"):
        resolve_controlnet("../controlnet/my-scribble", [folder])  # names only


def test_a_tiny_vae_download_from_the_dialog_lands_where_the_engine_finds_it(
    qtbot, tmp_path, empty_hub, monkeypatch
):
    from sdstudio.engine.diffusion.tiny_vae import find_tiny_vae
    from sdstudio.engine.models.tiny_vae import TINY_VAE_PRESETS
    from sdstudio.qt.model_library import DOWNLOADS, Download

    assert set(TINY_VAE_PRESETS) <= set(DOWNLOADS)
    source = tmp_path / "published"
    source.mkdir()
    (source / "config.json").write_text('{"_class_name": "AutoencoderTiny"}')
    (source / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    (source / "taesd_decoder.pth").write_bytes(b"pickle")  # never fetched
    calls: list = []
    monkeypatch.setattr(
        "huggingface_hub.snapshot_download", fake_controlnet_snapshot(empty_hub, source, calls)
    )
    preset = next(p for p in TINY_VAE_PRESETS if p.family is ModelFamily.SD1)
    download = Download(preset)
    with qtbot.waitSignal(download.signals.done, timeout=5000) as done:
        download.start()
    assert calls[0][1] == ["config.json", "diffusion_pytorch_model.safetensors"]
    monkeypatch.undo()  # the engine's own offline lookup
    found = find_tiny_vae(ModelFamily.SD1, None, hub_cache=empty_hub)
    assert found is not None and str(found) == done.args[0]
    assert not (found / "taesd_decoder.pth").exists()
