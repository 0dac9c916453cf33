"""Loading a diffusers folder reads safetensors only, whatever else the folder holds.

``models.check_folder`` accepts a component with any ``.safetensors`` file in it; the loader's
``use_safetensors=True`` (engine/pipelines.py) is what stops diffusers or transformers from
falling back to a pickled ``.bin`` when the safetensors file there is not the one they would load
(a decoy, or an fp16 variant). Without it, the folders below load from the pickle.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from tiny_models import pickle_trap

from sdstudio.core.errors import ModelError
from sdstudio.engine.models.resolve import resolve_model

# component -> (its weights' file stem when saved as safetensors, the pickle name it would load)
WEIGHTS = {
    "unet": ("diffusion_pytorch_model", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model", "pytorch_model.bin"),
}


def pickled_folder(source: str, target: Path, component: str, marker: Path | None) -> Path:
    """A copy of ``source`` whose ``component`` keeps its real weights only in a pickled
    ``.bin`` (with a payload that writes ``marker`` when ``marker`` is given) and, as a decoy,
    an fp16 variant ``.safetensors`` that the loader does not read without ``variant="fp16"``."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(source, target))
    stem, pickle_name = WEIGHTS[component]
    weights = folder / component / f"{stem}.safetensors"
    state = load_file(weights)
    if marker is None:
        torch.save(state, folder / component / pickle_name)
    else:
        pickle_trap(folder / component / pickle_name, marker, torch_zip=True, **state)
    weights.unlink()
    decoy = {name: tensor.half() for name, tensor in state.items()}
    save_file(decoy, str(folder / component / f"{stem}.fp16.safetensors"))
    return folder


@pytest.fixture
def torch_loads(monkeypatch) -> list:
    """Every ``torch.load`` call's file (diffusers and transformers read pickles through it)."""
    import torch

    calls, real = [], torch.load

    def spy(f, *args, **kwargs):
        calls.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def load(folder: Path):
    import torch

    from sdstudio.engine.diffusion.pipelines import PipelineCache

    return PipelineCache(device="cpu", dtype=torch.float32).load(str(folder))


@pytest.mark.parametrize("component", WEIGHTS)
def test_pickled_weights_beside_a_decoy_safetensors_are_never_loaded(
    sd1_inpaint_model, tmp_path, component, torch_loads
):
    folder = pickled_folder(sd1_inpaint_model, tmp_path / "m", component, marker=None)
    resolve_model(str(folder))  # the folder check lets it through: it has a .safetensors
    with pytest.raises(
        ModelError, match=rf"^Could not load '{re.escape(str(folder))}': .*safetensors"
    ):
        load(folder)
    assert torch_loads == []  # the pickle was not even opened
    load(sd1_inpaint_model)  # the same loader still loads a proper folder


@pytest.mark.parametrize("component", WEIGHTS)
def test_a_payload_in_those_pickled_weights_never_runs(
    sd1_inpaint_model, tmp_path, component, torch_loads, monkeypatch
):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # turns implicit loads unsafe
    marker = tmp_path / "payload-ran"
    folder = pickled_folder(sd1_inpaint_model, tmp_path / "m", component, marker)
    with pytest.raises(ModelError, match=rf"^Could not load '{re.escape(str(folder))}': "):
        load(folder)
    assert torch_loads == [] and not marker.exists()
    import torch

    torch.load(folder / component / WEIGHTS[component][1], weights_only=False)
    assert marker.exists()  # the trap is real: a full unpickle runs it
