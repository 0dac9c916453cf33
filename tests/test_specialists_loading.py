"""The one specialist loader (engine/specialists/loading.py): safetensors in, pickles only as
tensors after a consented conversion, TorchScript refused, a payload never runs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_models import pickle_trap

from sdstudio.core.errors import ModelError
from sdstudio.engine.specialists.loading import (
    PickleConsentNeeded,
    convert_to_safetensors,
    describe,
    load_model,
    load_state_dict,
    scan_specialists,
    specialists_dir,
)


@pytest.fixture(scope="module")
def lama_state():
    """A random-weight LaMa's state dict (spandrel's architecture, full size: about 200 MB)."""
    import torch
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in LaMa(in_nc=4, out_nc=3).eval().state_dict().items()}


@pytest.fixture(scope="module")
def lama_safetensors(lama_state, tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("lama") / "big-lama.safetensors"
    save_file(lama_state, str(path))
    return path


def same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_safetensors_load_directly_and_build_lama(lama_state, lama_safetensors):
    import torch

    assert same_tensors(load_state_dict(lama_safetensors), lama_state)
    descriptor = load_model(lama_safetensors, "cpu")
    assert type(descriptor.architecture).__name__ == "LaMaArch"
    assert not descriptor.model.training
    built = descriptor.model.state_dict()
    assert all(torch.equal(built[k], lama_state[k]) for k in lama_state)


def test_a_pth_needs_consent_then_converts_and_loads(lama_state, tmp_path):
    import torch

    folder = specialists_dir(tmp_path)
    folder.mkdir()
    pth = folder / "big-lama.pth"
    torch.save(lama_state, pth)
    info = describe(pth)
    assert info.needs_conversion and not info.usable and info.architecture is None
    with pytest.raises(PickleConsentNeeded) as refused:
        load_state_dict(pth)
    assert refused.value.path == pth and "Model library" in str(refused.value)
    with pytest.raises(PickleConsentNeeded):
        load_model(pth, "cpu")

    converted = convert_to_safetensors(pth)
    assert converted == folder / "big-lama.safetensors" and converted.is_file()
    assert same_tensors(load_state_dict(pth), lama_state)  # through the sibling from now on
    assert describe(pth) == describe(converted)
    assert describe(converted).architecture == "LaMa" and describe(converted).usable
    assert [i.path for i in scan_specialists(tmp_path)] == [converted]  # listed once
    assert type(load_model(pth, "cpu").architecture).__name__ == "LaMaArch"


@pytest.mark.parametrize("container", ["state_dict", "params_ema", "model"])
def test_training_containers_are_unwrapped_when_they_hold_tensors_only(tmp_path, container):
    import torch

    weights = {"conv.weight": torch.arange(6.0).reshape(2, 3), "conv.bias": torch.ones(2)}
    torch.save({container: weights, "epoch": 3}, tmp_path / "model.ckpt")
    assert same_tensors(load_state_dict(convert_to_safetensors(tmp_path / "model.ckpt")), weights)
    torch.save({container: {"conv.weight": weights["conv.weight"], "step": 3}}, tmp_path / "b.pt")
    with pytest.raises(ModelError, match="no plain table of weights"):
        convert_to_safetensors(tmp_path / "b.pt")


@pytest.mark.parametrize("force_no_weights_only", [False, True])
@pytest.mark.parametrize("torch_zip", [False, True])
def test_a_pickle_payload_never_runs(tmp_path, monkeypatch, force_no_weights_only, torch_zip):
    """``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns loads that leave ``weights_only`` unset into
    full unpickling (torch/serialization.py ``load``); every load here passes it."""
    if force_no_weights_only:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran.txt"
    evil = pickle_trap(
        tmp_path / "evil.pth", marker, torch_zip=torch_zip, w=np.zeros(3, np.float32)
    )
    assert describe(evil).needs_conversion
    with pytest.raises(PickleConsentNeeded):
        load_state_dict(evil)
    with pytest.raises(PickleConsentNeeded):
        load_model(evil, "cpu")
    with pytest.raises(ModelError, match="more than plain weights"):
        convert_to_safetensors(evil)
    assert not marker.exists()
    assert not evil.with_suffix(".safetensors").exists()


def test_a_torchscript_archive_is_refused(tmp_path, monkeypatch):
    import torch

    def jit_load(*_args, **_kwargs):
        raise AssertionError("torch.jit.load must never be called")

    monkeypatch.setattr(torch.jit, "load", jit_load)
    scripted = torch.jit.script(torch.nn.Conv2d(3, 3, 1))
    path = tmp_path / "big-lama.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(ModelError, match="TorchScript"):
        convert_to_safetensors(path)
    with pytest.raises(ModelError, match="TorchScript"):
        load_state_dict(path)
    info = describe(path)
    assert "TorchScript" in info.problem and not info.usable and not info.needs_conversion
    assert not path.with_suffix(".safetensors").exists()


def test_describe_reads_headers_only_and_loads_no_torch(lama_safetensors, tmp_path):
    """Listing models is cheap enough for the GUI thread: no torch, no spandrel."""
    probe = (
        "import sys; from pathlib import Path\n"
        "from sdstudio.engine.specialists.loading import describe\n"
        f"info = describe(Path({str(lama_safetensors)!r}))\n"
        "print(info.architecture, info.purpose, info.licence, 'torch' in sys.modules,"
        " 'spandrel' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["LaMa", "removal", "Apache-2.0", "False", "False"]


def test_describe_says_what_cannot_be_used(tmp_path):
    from safetensors.numpy import save_file

    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\xff" * 40)
    assert "Cannot read it" in describe(damaged).problem
    unknown = tmp_path / "unknown.safetensors"
    save_file({"a.weight": np.zeros(2, np.float32)}, str(unknown))
    info = describe(unknown)
    assert (info.architecture, info.problem, info.usable) == (None, None, True)
    mat = tmp_path / "mat.safetensors"
    save_file({"synthesis.first_stage.conv_first.conv.resample_filter": np.zeros(2)}, str(mat))
    assert "non-commercial" in describe(mat).problem
    with pytest.raises(ModelError, match="not a model architecture"):
        load_model(unknown, "cpu")


def test_a_missing_or_odd_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_state_dict(tmp_path / "nope.safetensors")
    with pytest.raises(ModelError, match="not a model file"):
        load_state_dict(tmp_path / "model.onnx")
    assert scan_specialists(tmp_path / "no-models") == []


def test_the_command_line_conversion_the_refusal_names(tmp_path, capsys):
    import torch

    from sdstudio.engine.specialists.loading import main

    torch.save({"w": torch.ones(2)}, tmp_path / "model.pth")
    pickle_trap(tmp_path / "evil.pt", tmp_path / "ran.txt")
    with pytest.raises(PickleConsentNeeded, match="python -m sdstudio.engine.specialists.loading"):
        load_state_dict(tmp_path / "model.pth")
    assert main([str(tmp_path / "model.pth"), str(tmp_path / "evil.pt")]) == 1
    assert "more than plain weights" in capsys.readouterr().err
    assert same_tensors(load_state_dict(tmp_path / "model.pth"), {"w": torch.ones(2)})
    assert not (tmp_path / "ran.txt").exists()
