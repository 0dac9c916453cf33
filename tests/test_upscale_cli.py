"""``sdstudio upscale`` end to end, and its one-line refusals (before any model loads)."""

from pathlib import Path

import numpy as np
import pytest
from test_upscale import compact, save_state

from sdstudio.cli import main
from sdstudio.core.imageio import load_image, read_parameters, save_image


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    save_image(folder / "photo.png", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    save_image(folder / "deep.png", rng.integers(0, 65536, (30, 40), dtype=np.uint16))
    save_state(compact(2), folder / "models" / "upscalers" / "RealESRGAN_x2plus.safetensors")
    save_state(compact(4), folder / "models" / "upscalers" / "realesr-general-x4v3.safetensors")
    return folder


def run(files: Path, *args: str) -> int:
    return main(["upscale", *args, "--models-dir", str(files / "models")])


def test_upscale_2x_with_the_installed_model(files, tmp_path, capsys):
    out = tmp_path / "big.png"
    assert run(files, str(files / "photo.png"), "--scale", "2", "-o", str(out)) == 0
    result = load_image(out)
    assert result.shape == (60, 80, 3)
    err = capsys.readouterr().err
    assert "RealESRGAN_x2plus" in err and "Saved" in err and "60" in err
    texts = read_parameters(out) or ""
    assert "upscaled 2x with RealESRGAN_x2plus" in texts


def test_a_16_bit_grey_picture_stays_so(files, tmp_path):
    out = tmp_path / "deep4.png"
    args = [str(files / "deep.png"), "--scale", "4", "--tile", "32", "-o", str(out)]
    assert run(files, *args, "--model", "realesr-general-x4v3") == 0
    result = load_image(out)
    assert result.shape == (120, 160) and result.dtype == np.uint16


def test_lanczos_forced_and_when_nothing_is_installed(files, tmp_path, capsys):
    out = tmp_path / "l.png"
    assert (
        run(files, str(files / "photo.png"), "--scale", "4", "--model", "lanczos", "-o", str(out))
        == 0
    )
    assert load_image(out).shape == (120, 160, 3)
    empty = tmp_path / "empty"
    args = ["upscale", str(files / "photo.png"), "--scale", "2", "-o", str(out)]
    assert main([*args, "--models-dir", str(empty)]) == 0
    assert "Lanczos" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--scale", "3"], "2 or 4"),
        (["--scale", "2", "--tile", "8"], "at least"),
        (["--scale", "2", "--model", "nonesuch"], "No upscaler 'nonesuch'"),
        (["--scale", "2", "--model", "BROKEN"], "Cannot use"),
        (["--scale", "2", "--model", "EVIL"], "pickle-format"),
    ],
)
def test_bad_input_is_one_line_before_any_model_loads(
    files, tmp_path, capsys, monkeypatch, extra, words
):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 3)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"not really")
    extra = [str(broken) if e == "BROKEN" else str(evil) if e == "EVIL" else e for e in extra]
    monkeypatch.setattr(
        "sdstudio.engine.specialists.loading.load_model", lambda *_: pytest.fail("a model loaded")
    )
    out = tmp_path / "x.png"
    assert run(files, str(files / "photo.png"), *extra, "-o", str(out)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdstudio: error:") and words in err and "\n" not in err
    assert not out.exists()
