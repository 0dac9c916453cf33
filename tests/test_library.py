"""The model library: scanning folders and the hub cache, presets, downloads with progress."""

import shutil
import threading

import pytest

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models import downloads
from sdstudio.engine.models.library import (
    PRESETS,
    human_size,
    scan_adapters,
    scan_folder,
    scan_hub_cache,
)


def test_scan_lists_folders_with_family_kind_and_refuses_pickles(
    tmp_path, sd1_inpaint_model, sdxl_model
):
    models = tmp_path / "models"
    shutil.copytree(sd1_inpaint_model, models / "my-inpainting")
    shutil.copytree(sdxl_model, models / "xl")
    (models / "old.ckpt").write_bytes(b"pickle")
    (models / "loras").mkdir()
    (models / "loras" / "style.safetensors").write_bytes(b"x")
    (models / "notes.txt").write_text("not a model")
    entries = {e.name: e for e in scan_folder(models)}
    assert set(entries) == {"my-inpainting", "xl", "old.ckpt"}
    inpainting = entries["my-inpainting"]
    assert (
        inpainting.usable
        and inpainting.family is ModelFamily.SD1
        and inpainting.kind == "inpainting"
    )
    assert inpainting.size_bytes > 0 and inpainting.reference == str(models / "my-inpainting")
    assert entries["xl"].family is ModelFamily.SDXL and entries["xl"].kind == "plain"
    assert not entries["old.ckpt"].usable and "pickle" in entries["old.ckpt"].problem
    assert [p.name for p in scan_adapters(models / "loras")] == ["style.safetensors"]


def test_broken_folder_is_listed_with_its_problem(tmp_path):
    models = tmp_path / "models"
    (models / "broken").mkdir(parents=True)
    (models / "broken" / "model_index.json").write_text("{not json")
    (entry,) = scan_folder(models)
    assert not entry.usable and "JSON" in entry.problem


def test_hub_cache_models_are_listed_by_repo_id(tmp_path, monkeypatch, sd1_model):
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-sd"
    snapshot = repo / "snapshots" / "0123abcd"
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    for number, source in enumerate(
        p for p in sorted(__import__("pathlib").Path(sd1_model).rglob("*")) if p.is_file()
    ):
        blob = blobs / f"{number:040x}"
        shutil.copy(source, blob)
        link = snapshot / source.relative_to(sd1_model)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    entries = scan_hub_cache()
    assert [e.reference for e in entries] == ["someone/tiny-sd"]
    assert entries[0].family is ModelFamily.SD1 and entries[0].source == "hub cache"


def test_presets_name_real_hub_ids():
    assert len(PRESETS) >= 5
    assert {p.family for p in PRESETS} == {ModelFamily.SD1, ModelFamily.SDXL}
    assert any(p.inpainting for p in PRESETS) and all("/" in p.repo_id for p in PRESETS)


def test_human_size():
    assert human_size(500) == "500 B" and human_size(2 * 1024**3) == "2.0 GB"


def fake_snapshot(chunks, fail=None):
    def fake_hub_download(repo_id, *, tqdm_class, **kwargs):  # stands in: no network
        bar = tqdm_class(desc="Reconstructing (incomplete total...)", unit="B", total=0, initial=0)
        files = tqdm_class(desc="Fetching 3 files", total=3)  # counts files, not bytes
        bar.total = sum(chunks)
        for chunk in chunks:
            bar.update(chunk)
            files.update(1)
        if fail:
            raise fail
        return "/cache/models--x/snapshots/abc"

    return fake_hub_download


def test_download_reports_bytes_and_speed(monkeypatch):
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot([100, 200, 300]))
    seen = []
    folder = downloads.download_model(
        "x/y", lambda done, total, speed: seen.append((done, total)), threading.Event()
    )
    assert str(folder).endswith("abc")
    assert seen == [(100, 600), (300, 600), (600, 600)]


def test_download_cancel_stops_it(monkeypatch):
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot([100] * 10))
    cancel = threading.Event()
    seen = []

    def report(done, total, speed):
        seen.append(done)
        if done >= 300:
            cancel.set()

    with pytest.raises(downloads.DownloadCancelled):
        downloads.download_model("x/y", report, cancel)
    assert seen[-1] == 300


def test_download_failure_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(
        "huggingface_hub.snapshot_download",
        fake_snapshot([1], fail=OSError("network is unreachable")),
    )
    with pytest.raises(ModelError, match="x/y.*kept"):
        downloads.download_model("x/y", lambda *a: None, threading.Event())
