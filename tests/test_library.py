"""The model library: scanning folders and the hub cache, presets, downloads with progress."""

import shutil
import threading

import pytest

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models import downloads
from sdstudio.engine.models.library import (
    PRESETS,
    guess_family,
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


# --- few-step presets: LoRA downloads and families ---------------------------------------------


def test_sampler_presets_are_offered_for_download_with_their_licence():
    from sdstudio.core.presets import PRESETS as SAMPLER_PRESETS

    assert all(p.licence for p in PRESETS)
    loras = {p.lora_name: p for p in PRESETS if p.kind == "LoRA"}
    for sampler in SAMPLER_PRESETS:
        if sampler.lora is not None:
            offered = loras[sampler.lora.name]  # lands where the preset looks for it
            assert (offered.repo_id, offered.filename) == (
                sampler.lora.repo_id,
                sampler.lora.filename,
            )
            assert offered.family is sampler.family and offered.licence == sampler.licence
        else:
            (offered,) = [p for p in PRESETS if p.repo_id == sampler.model]
            assert offered.filename is None and not offered.commercial
            assert "non-commercial" in offered.licence.lower()
    assert len({p.key for p in PRESETS}) == len(PRESETS)


def fake_file_download(chunks, fail=None, calls=None):
    def fake_hf_hub_download(repo_id, filename, *, local_dir, tqdm_class, **kwargs):
        if calls is not None:
            calls.append((repo_id, filename))
        bar = tqdm_class(desc=filename, unit="B", total=sum(chunks), initial=0)
        network = tqdm_class(desc=f"{filename}: downloading bytes", unit="B", total=0)
        for chunk in chunks:
            bar.update(chunk)
            network.update(chunk)  # xet's transfer bar: the same bytes, not counted twice
        if fail:
            raise fail
        path = __import__("pathlib").Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * sum(chunks))
        return str(path)

    return fake_hf_hub_download


def test_a_preset_lora_download_lands_where_find_lora_finds_it(tmp_path, monkeypatch):
    from sdstudio.core.paths import loras_dir
    from sdstudio.engine.diffusion.adapters import find_lora

    calls = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_file_download([5, 7], None, calls))
    models = tmp_path / "models"
    preset = next(p for p in PRESETS if p.lora_name == "lcm-lora-sdv1-5")
    seen = []
    path = downloads.download_lora(
        preset.repo_id,
        preset.filename,
        loras_dir(models),
        preset.lora_name,
        lambda done, total, speed: seen.append((done, total)),
        threading.Event(),
    )
    assert path == loras_dir(models) / "lcm-lora-sdv1-5.safetensors" and path.stat().st_size == 12
    assert find_lora("lcm-lora-sdv1-5", [loras_dir(models)]) == path
    assert seen == [(5, 12), (12, 12)]
    assert calls == [("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors")]
    assert [p.name for p in scan_folder(models)] == []  # the staging folder is no model
    again = downloads.download_lora(
        preset.repo_id, preset.filename, loras_dir(models), "lcm-lora-sdv1-5", print, None
    )
    assert again == path and len(calls) == 1  # there already: not fetched again


def test_a_failed_or_cancelled_lora_download_leaves_no_file_under_its_name(tmp_path, monkeypatch):
    loras = tmp_path / "models" / "loras"
    monkeypatch.setattr(
        "huggingface_hub.hf_hub_download", fake_file_download([1], OSError("unreachable"))
    )
    with pytest.raises(ModelError, match="pytorch_lora_weights.*kept"):
        downloads.download_lora(
            "a/b", "pytorch_lora_weights.safetensors", loras, "x", print, threading.Event()
        )
    cancel = threading.Event()
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_file_download([1, 1, 1]))

    def report(done, total, speed):
        if done >= 2:
            cancel.set()

    with pytest.raises(downloads.DownloadCancelled):
        downloads.download_lora("a/b", "w.safetensors", loras, "x", report, cancel)
    assert not (loras / "x.safetensors").exists()
    with pytest.raises(ModelError, match="only those are loaded"):
        downloads.download_lora("a/b", "w.ckpt", loras, "x", print, threading.Event())


def test_guess_family(tmp_path, monkeypatch, sd1_model, sdxl_model):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert guess_family(sd1_model) is ModelFamily.SD1
    assert guess_family(sdxl_model) is ModelFamily.SDXL
    assert guess_family("stabilityai/sdxl-turbo") is ModelFamily.SDXL  # a download offered
    assert guess_family("someone/unknown-model") is None  # not cached: unknown, no network
    assert guess_family("") is None and guess_family(str(tmp_path / "missing")) is None
    snapshot = tmp_path / "hub" / "models--someone--xl" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    shutil.copy(__import__("pathlib").Path(sdxl_model) / "model_index.json", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    assert guess_family("someone/xl") is ModelFamily.SDXL  # from the hub cache
