"""Model references: local folders, hub ids offline, and refusal of anything unsafe."""

import json
import pickle
import re

import pytest
from tiny_models import pickle_trap

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models.resolve import resolve_model


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


def refused_as_pickle(path) -> None:
    """``resolve_model(path)`` refuses the file in the words of ``models.pickle_refusal`` (not
    just any error: the message names the path, and pytest names the folder after the test)."""
    words = (
        f"'{path}' is a pickle file ({path.suffix}): SD Studio loads only .safetensors weights, "
        "because pickle files can run code when opened."
    )
    with pytest.raises(ModelError, match=f"^{re.escape(words)}"):
        resolve_model(str(path))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin", ".pkl", ".PT"])
def test_pickle_files_are_refused_unopened(tmp_path, monkeypatch, suffix):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # turns implicit loads unsafe
    marker = tmp_path / "payload-ran"
    evil = pickle_trap(tmp_path / f"model{suffix}", marker)
    refused_as_pickle(evil)
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # the trap is real: unpickling runs it
    assert marker.exists()


def copy_model(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def refused_at_resolve_and_load(folder, words: str) -> None:
    """Both the reference check and the loader refuse ``folder`` with ``words``."""
    import torch

    from sdstudio.engine.diffusion.pipelines import PipelineCache

    with pytest.raises(ModelError, match=words):
        resolve_model(str(folder))
    with pytest.raises(ModelError, match=words):
        PipelineCache(device="cpu", dtype=torch.float32).load(str(folder))


def test_folder_with_only_pickle_weights_is_refused(sd1_model, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    folder = copy_model(sd1_model, tmp_path / "m")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    marker = tmp_path / "payload-ran"
    # The UNet's real weights, pickled with a payload beside them, and no safetensors at all.
    pickle_trap(weights.with_suffix(".bin"), marker, torch_zip=True, **load_file(weights))
    weights.unlink()
    refused_at_resolve_and_load(
        folder,
        r"'\S+' has only pickle weights for its unet \(diffusion_pytorch_model\.bin\): SD Studio "
        r"loads only \.safetensors, because pickle files can run code\.",
    )
    assert not marker.exists()


def test_custom_code_components_are_refused(sd1_model, tmp_path):
    folder = copy_model(sd1_model, tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["my_module", "EvilUNet"]
    (folder / "model_index.json").write_text(json.dumps(index))
    marker = tmp_path / "module-ran"
    code = f"open({str(marker)!r}, 'w').close()\n"
    code += "from diffusers import UNet2DConditionModel as EvilUNet\n"
    for place in (folder / "unet", folder):  # where a custom component's code would be looked for
        (place / "my_module.py").write_text(code)
    refused_at_resolve_and_load(
        folder,
        r"asks for custom code for its unet \(\['my_module', 'EvilUNet'\]\); SD Studio never runs "
        "code that comes with a model",
    )
    assert not marker.exists()


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

    from sdstudio.engine.models.resolve import needs_download

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


@pytest.mark.parametrize(
    ("resolve", "what"),
    [
        ("sdstudio.engine.models.resolve:resolve_model", "Model"),
        ("sdstudio.engine.diffusion.controlnet:resolve_controlnet", "ControlNet"),
    ],
)
def test_a_hub_id_not_downloaded_while_offline_says_what_to_do(monkeypatch, resolve, what):
    import importlib

    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(repo_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not in the cache")
        raise ConnectionError("no network")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    module, name = resolve.split(":")
    with pytest.raises(ModelError) as caught:
        getattr(importlib.import_module(module), name)("someone/some-model")
    message = str(caught.value)
    assert message.startswith(f"{what} 'someone/some-model' is not downloaded and the Hugging")
    assert "(ConnectionError). Connect to the internet" in message
