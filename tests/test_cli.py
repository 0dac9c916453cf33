"""``sdstudio`` commands end to end: files in, files out, one clear line on error."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from sdstudio.cli import main
from sdstudio.core.imageio import load_image, read_parameters, save_image
from sdstudio.core.mask import blend_alpha


@pytest.fixture
def files(tmp_path, photo, edge_mask):
    save_image(tmp_path / "photo.png", photo)
    save_image(tmp_path / "mask.png", edge_mask)
    return tmp_path


def assert_unchanged_outside(result, photo, mask, blur: int) -> None:
    """Every pixel outside the blend mask is the input's, bit for bit."""
    outside = blend_alpha(mask, blur) == 0
    np.testing.assert_array_equal(result[outside], photo[outside])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("sdstudio: error: ")
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_remove_needs_no_model(files, photo, edge_mask, capsys):
    out = files / "out.png"
    assert (
        main(
            ["remove", str(files / "photo.png"), "--mask", str(files / "mask.png"), "-o", str(out)]
        )
        == 0
    )
    result = load_image(out)
    assert_unchanged_outside(result, photo, edge_mask, 4)
    assert not np.array_equal(result[edge_mask > 0], photo[edge_mask > 0])
    assert main(["info", str(out)]) == 0
    # The thick area the fill worked on gets the texture fill, and the parameters say so.
    assert "Sampler: Smooth shading + PatchMatch texture" in capsys.readouterr().out


def test_inpaint_with_local_model_and_previews(files, photo, edge_mask, sd1_inpaint_model, capsys):
    out, previews = files / "out.png", files / "previews"
    code = main(
        [
            "inpaint",
            str(files / "photo.png"),
            "--mask",
            str(files / "mask.png"),
            "--prompt",
            "a red ball",
            "--negative",
            "blurry",
            "--model",
            sd1_inpaint_model,
            "--steps",
            "3",
            "--seed",
            "42",
            "--scheduler",
            "dpmpp_2m_karras",
            "--mask-blur",
            "3",
            "--padding",
            "8",
            "--previews",
            str(previews),
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in previews.iterdir()) == [
        "step-001.png",
        "step-002.png",
        "step-003.png",
    ]
    result = load_image(out)
    assert_unchanged_outside(result, photo, edge_mask, 3)
    text = read_parameters(out)
    lines = text.splitlines()
    assert lines[0] == "a red ball" and lines[1] == "Negative prompt: blurry"
    for part in ("Steps: 3", "Sampler: DPM++ 2M Karras", "Seed: 42", "Size: 200x130"):
        assert part in lines[-1]
    assert "seed 42" in capsys.readouterr().err


def test_txt2img_and_img2img(files, sd1_model, capsys):
    out = files / "t2i.png"
    assert (
        main(
            [
                "txt2img",
                "--prompt",
                "a hut",
                "--model",
                sd1_model,
                "--steps",
                "2",
                "--width",
                "96",
                "--height",
                "64",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert load_image(out).shape == (64, 96, 3)
    out2 = files / "i2i.jpg"
    assert (
        main(
            [
                "img2img",
                str(files / "photo.png"),
                "--prompt",
                "a hut",
                "--model",
                sd1_model,
                "--steps",
                "2",
                "--strength",
                "0.5",
                "-o",
                str(out2),
            ]
        )
        == 0
    )
    assert load_image(out2).shape == (130, 200, 3)
    assert "Denoising strength: 0.5" in read_parameters(out2)


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (
            lambda p, m, t: ["remove", str(t / "nope.png"), "--mask", m, "-o", str(t / "o.png")],
            "nope.png",
        ),
        (
            lambda p, m, t: ["remove", p, "--mask", str(t / "small.png"), "-o", str(t / "o.png")],
            "same size",
        ),
        (lambda p, m, t: ["remove", p, "--mask", m, "-o", p], "overwrite the input"),
        (lambda p, m, t: ["remove", p, "--mask", m, "-o", str(t / "o.xyz")], ".png"),
        (
            lambda p, m, t: ["remove", p, "--mask", str(t / "empty.png"), "-o", str(t / "o.png")],
            "mask is empty",
        ),
        (
            lambda p, m, t: [
                "inpaint",
                p,
                "--mask",
                m,
                "--prompt",
                "x",
                "--model",
                "nobody/nothing",
                "-o",
                str(t / "o.png"),
            ],
            "nobody/nothing",
        ),
        (
            lambda p, m, t: [
                "inpaint",
                p,
                "--mask",
                m,
                "--prompt",
                "x",
                "--strength",
                "2",
                "-o",
                str(t / "o.png"),
            ],
            "Strength",
        ),
        (
            lambda p, m, t: [
                "txt2img",
                "--prompt",
                "x",
                "--scheduler",
                "fast",
                "-o",
                str(t / "o.png"),
            ],
            "euler_a",
        ),
    ],
    ids=[
        "missing image",
        "mask size",
        "overwrite input",
        "bad extension",
        "empty mask",
        "offline model",
        "strength",
        "scheduler",
    ],
)
def test_errors_are_one_clear_line(files, capsys, tmp_path, make_args, expected):
    save_image(tmp_path / "small.png", np.zeros((10, 10), np.uint8))
    save_image(tmp_path / "empty.png", np.zeros((130, 200), np.uint8))
    args = make_args(str(files / "photo.png"), str(files / "mask.png"), tmp_path)
    assert main(args) == 1
    assert expected in error_line(capsys)
    assert not (tmp_path / "o.png").exists()  # no failed command leaves a file behind


def test_info_without_parameters(files, capsys):
    assert main(["info", str(files / "photo.png")]) == 1
    assert "no generation parameters" in capsys.readouterr().err


def test_console_script_runs_remove(files, tmp_path):
    exe = shutil.which("sdstudio") or shutil.which(
        "sdstudio", path=str(__import__("pathlib").Path(sys.executable).parent)
    )
    command = [exe] if exe else [sys.executable, "-m", "sdstudio"]
    out = tmp_path / "cli.png"
    done = subprocess.run(
        [
            *command,
            "remove",
            str(files / "photo.png"),
            "--mask",
            str(files / "mask.png"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.exists()
    bad = subprocess.run(
        [*command, "remove", str(out), "--mask", str(tmp_path / "x.png"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_inpaint_with_a_single_file_checkpoint_and_a_lora(
    files, photo, edge_mask, sd1_inpaint_model, monkeypatch, capsys
):
    """A model-site style .safetensors checkpoint and a LoRA from the models folder, by the CLI."""
    from ldm_convert import save_ldm
    from test_adapters import _lora_file

    from sdstudio.engine.diffusion.pipelines import PipelineCache

    pipe = PipelineCache(device="cpu").load(sd1_inpaint_model).pipe
    (files / "models").mkdir()
    checkpoint = save_ldm(pipe, files / "models" / "my-model.safetensors")
    _lora_file(files / "models" / "loras", 1)
    monkeypatch.setenv("SDSTUDIO_CHECKPOINT_CONFIG", sd1_inpaint_model)  # the tiny model's configs
    monkeypatch.setenv("SDSTUDIO_DEVICE", "cpu")
    out = files / "single.png"
    code = main(
        [
            "inpaint",
            str(files / "photo.png"),
            "--mask",
            str(files / "mask.png"),
            "--prompt",
            "a red ball <lora:lora1:0.7>",
            "--model",
            str(checkpoint),
            "--models-dir",
            str(files / "models"),
            "--steps",
            "2",
            "--seed",
            "5",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = load_image(out)
    assert_unchanged_outside(result, photo, edge_mask, 4)
    assert "<lora:lora1:0.7>" in read_parameters(out).splitlines()[0]  # the prompt as written


def test_remove_fill_methods_match_the_engine(files, photo, edge_mask):
    from sdstudio.cli import FILL_METHODS
    from sdstudio.engine.fill import METHODS
    from sdstudio.qt.fill_menu import FILL_CHOICES

    assert set(FILL_METHODS) == set(METHODS) == set(dict(FILL_CHOICES))
    out = files / "pm.png"
    args = [
        "remove",
        str(files / "photo.png"),
        "--mask",
        str(files / "mask.png"),
        "--fill",
        "patchmatch",
    ]
    assert main([*args, "-o", str(out)]) == 0
    assert "PatchMatch" in read_parameters(out)
    assert_unchanged_outside(load_image(out), photo, edge_mask, 4)


def test_remove_with_model_refine(files, photo, edge_mask, sd1_inpaint_model, capsys):
    out = files / "refined.png"
    code = main(
        [
            "remove",
            str(files / "photo.png"),
            "--mask",
            str(files / "mask.png"),
            "--refine",
            "--model",
            sd1_inpaint_model,
            "--steps",
            "4",
            "--strength",
            "0.5",
            "--seed",
            "2",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    text = read_parameters(out)
    assert "Denoising strength: 0.5" in text and "Seed: 2" in text
    assert_unchanged_outside(load_image(out), photo, edge_mask, 4)


# -- sketch control -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def controlnets(tmp_path_factory):
    """Tiny SD1 and SDXL ControlNet folders, and two scribbles (light lines on dark)."""
    import torch
    from tiny_models import saved_controlnet

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli-cn")
    sketches = []
    for index, (rows, cols) in enumerate(((slice(40, 46), slice(10, 190)), (slice(10, 120), 100))):
        sketch = np.zeros((130, 200, 3), np.uint8)  # the photo's size: the sketch over it
        sketch[rows, cols] = 255
        save_image(root / f"sketch{index}.png", sketch)
        sketches.append(str(root / f"sketch{index}.png"))
    sd1 = str(saved_controlnet(root / "sd1-scribble"))
    return {"sd1": sd1, "sdxl": str(saved_controlnet(root / "xl", xl=True)), "sketches": sketches}


def controlled(command, files, model, out, *extra):
    source = [] if command == "txt2img" else [str(files / "photo.png")]
    size = ["--width", "64", "--height", "64"] if command == "txt2img" else ["--strength", "1"]
    mask = ["--mask", str(files / "mask.png")] if command == "inpaint" else []
    fields = ["--prompt", "a hut", "--model", model, "--steps", "2", "--seed", "5"]
    return main([command, *source, *mask, *fields, *size, *extra, "-o", str(out)])


@pytest.mark.parametrize("command", ["txt2img", "img2img"])
def test_control_flags_steer_the_picture_and_go_into_its_metadata(
    files, sd1_model, controlnets, command
):
    cn, (first, second) = controlnets["sd1"], controlnets["sketches"]
    flags = ["--controlnet", cn, "--control-strength", "1.5", "--control-end", "0.8"]
    outs = [files / f"{command}-{name}.png" for name in ("plain", "a", "a-again", "b")]
    assert controlled(command, files, sd1_model, outs[0]) == 0
    for out, sketch in zip(outs[1:], (first, first, second), strict=True):
        assert controlled(command, files, sd1_model, out, *flags, "--control", sketch) == 0
    plain, a, again, b = (load_image(out).astype(int) for out in outs)
    assert np.abs(a - plain).mean() > 1  # the control was used
    np.testing.assert_array_equal(a, again)  # the same sketch gives the same picture
    assert not np.array_equal(a, b)  # another sketch another picture
    assert (
        'ControlNet 0: "Module: scribble, Model: sd1-scribble, Weight: 1.5, Guidance Start: 0.0, '
        'Guidance End: 0.8"'
    ) in read_parameters(outs[1])


def test_control_flags_with_inpaint_keep_unmasked_pixels(
    files, photo, edge_mask, sd1_inpaint_model, controlnets
):
    out = files / "inpaint-control.png"
    flags = ["--controlnet", controlnets["sd1"], "--control", controlnets["sketches"][1]]
    code = controlled("inpaint", files, sd1_inpaint_model, out, *flags, "--control-kind", "canny")
    assert code == 0
    assert_unchanged_outside(load_image(out), photo, edge_mask, 4)
    assert "Module: canny" in read_parameters(out)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--control", "SKETCH"], "--control needs --controlnet REF"),
        (["--controlnet", "CN"], "--controlnet needs --control IMAGE"),
        (["--control-strength", "0.5"], "--control-strength needs --controlnet"),
        (["--controlnet", "CN", "--control", "MISSING"], "missing.png"),
        (["--controlnet", "CN", "--control", "SKETCH", "--control-strength", "3"], "0 and 2"),
        (["--controlnet", "XL", "--control", "SKETCH"], "is for SDXL models, but 'model' is a"),
    ],
)
def test_control_flag_mistakes_say_what_to_do(files, sd1_model, controlnets, capsys, flags, words):
    names = {
        "SKETCH": controlnets["sketches"][0],
        "CN": controlnets["sd1"],
        "XL": controlnets["sdxl"],
        "MISSING": str(files / "missing.png"),
    }
    flags = [names.get(flag, flag) for flag in flags]
    assert controlled("txt2img", files, sd1_model, files / "out.png", *flags) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("sdstudio: error: ") and words in err
    assert "Loading model" not in err and "Traceback" not in err  # refused before any loading
    assert not (files / "out.png").exists()
