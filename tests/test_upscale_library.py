"""The Real-ESRGAN downloads land in the 'upscalers' folder, are converted once (a .pth) and then
found by find_upscaler; the model library lists that folder."""

import threading
from dataclasses import replace
from hashlib import sha256 as sha

from test_specialists_library import fake_hf_hub_download
from test_upscale import compact

from sdstudio.engine.models.specialist_presets import SPECIALIST_PRESETS, UPSCALE_PRESETS, UPSCALING
from sdstudio.engine.specialists.loading import convert_to_safetensors
from sdstudio.engine.specialists.upscale import find_upscaler, upscalers_dir


def test_upscale_presets_say_licence_and_source():
    assert set(UPSCALE_PRESETS) <= set(SPECIALIST_PRESETS)
    for preset in UPSCALE_PRESETS:
        assert preset.purpose == UPSCALING and "BSD-3-Clause" in preset.licence
        assert "github.com/xinntao/Real-ESRGAN" in preset.source and len(preset.revision) == 40
    assert [p.filename for p in UPSCALE_PRESETS] == [
        "RealESRGAN_x2plus.pth",
        "RealESRGAN_x4plus.pth",
    ]


def test_a_real_esrgan_download_lands_in_upscalers_and_is_found_once_converted(
    tmp_path, monkeypatch
):
    import torch

    from sdstudio.engine.models.downloads import download_specialist
    from sdstudio.qt.specialists_library import scan_rows

    source = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": compact(2).state_dict()}, source)  # as the authors publish it
    calls: list = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hf_hub_download(source, calls))
    preset = replace(
        UPSCALE_PRESETS[0], sha256=sha(source.read_bytes()).hexdigest(), size_bytes=None
    )
    models = tmp_path / "models"
    landed = download_specialist(preset, models, lambda *a: None, threading.Event())
    assert landed == upscalers_dir(models) / "RealESRGAN_x2plus.pth"
    assert find_upscaler(models, 2) is None  # a pickle: not usable until converted
    rows = [r for r in scan_rows(models) if r.name == "RealESRGAN_x2plus"]
    assert len(rows) == 1 and rows[0].convert and rows[0].purpose == UPSCALING
    assert "BSD-3-Clause" in rows[0].licence

    converted = convert_to_safetensors(landed)
    assert find_upscaler(models, 2) == converted
    rows = [r for r in scan_rows(models) if r.name == "RealESRGAN_x2plus"]
    assert len(rows) == 1 and not rows[0].convert and rows[0].path == converted
