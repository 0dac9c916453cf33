"""Model references: local folders, hub ids offline, and refusal of anything unsafe."""

import json

import pytest

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models import resolve_model


def test_local_folder_resolves_with_family(sd1_inpaint_model, sdxl_model):
    assert resolve_model(sd1_inpaint_model).family is ModelFamily.SD1
    info = resolve_model(sdxl_model)
    assert info.family is ModelFamily.SDXL and info.pipeline_class == "StableDiffusionXLPipeline"


def test_hub_id_not_cached_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError) as caught:
        resolve_model("someone/some-model")
    message = str(caught.value)
    assert "someone/some-model" in message and "\n" not in message
    assert "--model" in message  # says what to do


def test_missing_path_and_empty_reference():
    with pytest.raises(ModelError, match="No model folder"):
        resolve_model("./no/such/folder")
    with pytest.raises(ModelError, match="No model chosen"):
        resolve_model("  ")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_files_are_refused_unopened(tmp_path, suffix):
    evil = tmp_path / f"model{suffix}"
    evil.write_bytes(b"not even read")
    with pytest.raises(ModelError, match="pickle"):
        resolve_model(str(evil))


def copy_model(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_folder_with_only_pickle_weights_is_refused(sd1_model, tmp_path):
    folder = copy_model(sd1_model, tmp_path / "m")
    weights = next((folder / "unet").glob("*.safetensors"))
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ModelError, match="only pickle weights for its unet"):
        resolve_model(str(folder))


def test_custom_code_components_are_refused(sd1_model, tmp_path):
    folder = copy_model(sd1_model, tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["my_module", "EvilUNet"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="custom code"):
        resolve_model(str(folder))


def test_unsupported_pipeline_and_non_model_folder(sd1_model, tmp_path):
    folder = copy_model(sd1_model, tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "FluxPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="FluxPipeline"):
        resolve_model(str(folder))
    with pytest.raises(ModelError, match="model_index.json"):
        resolve_model(str(tmp_path))


def test_needs_download_is_offline_and_exact(tmp_path, monkeypatch, sd1_model):
    import huggingface_hub.constants as constants

    from sdstudio.engine.models import needs_download

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert needs_download("someone/not-here")
    assert not needs_download(sd1_model)  # a local folder
    assert not needs_download("./relative/path")
    cached = tmp_path / "hub" / "models--someone--here"
    (cached / "snapshots" / "abc").mkdir(parents=True)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text("abc")
    (cached / "snapshots" / "abc" / "model_index.json").write_text("{}")
    assert not needs_download("someone/here")
