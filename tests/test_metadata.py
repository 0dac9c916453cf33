"""The AUTOMATIC1111 "parameters" text: exact layout, parsing real strings, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from sdstudio import __version__
from sdstudio.core.metadata import format_parameters, parse_parameters, quote, unquote
from sdstudio.core.request import GenerationRequest, Mode, Scheduler

VERSION = f"Version: sdstudio {__version__}"

A1111_SAMPLE = (
    "a cat\nNegative prompt: ugly, blurry\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, "
    "Seed: 42, Size: 512x768, Model hash: abc123, Model: v1-5, Denoising strength: 0.5, "
    'Lora hashes: "x: 1, y: 2", Version: v1.6.0'
)


def request(mode: Mode, **changes) -> GenerationRequest:
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[8:16, 8:16] = 255
    fields = dict(prompt="a red barn", seed=1234, steps=20, guidance=7.0, strength=0.75)
    if mode is not Mode.TXT2IMG:
        fields["image"] = image
    if mode in (Mode.INPAINT, Mode.REMOVE, Mode.OUTPAINT):
        fields["mask"] = mask
    fields.update(changes)
    return GenerationRequest(mode, **fields)


def test_format_inpaint_exact():
    r = request(
        Mode.INPAINT,
        negative_prompt="blurry, low quality",
        scheduler=Scheduler.DPMPP_2M_KARRAS,
        guidance=6.5,
        strength=0.6,
        mask_blur=8,
    )
    assert format_parameters(r, width=512, height=768, model_name="sd-v1-5-inpainting") == (
        "a red barn\n"
        "Negative prompt: blurry, low quality\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, "
        f"Model: sd-v1-5-inpainting, Denoising strength: 0.6, Mask blur: 8, {VERSION}"
    )


def test_format_txt2img_leaves_out_empty_and_img2img_only_fields():
    text = format_parameters(request(Mode.TXT2IMG), width=512, height=512)
    assert text == (
        "a red barn\n"
        f"Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1234, Size: 512x512, {VERSION}"
    )


@pytest.mark.parametrize(
    ("mode", "tail"),
    [
        (Mode.IMG2IMG, "Denoising strength: 0.75, "),
        (Mode.OUTPAINT, "Denoising strength: 0.75, "),
        (Mode.REMOVE, "Denoising strength: 0.75, Mask blur: 4, "),
    ],
)
def test_format_mode_specific_fields(mode, tail):
    text = format_parameters(request(mode), width=64, height=64, model_name="m")
    assert text.endswith(f"Size: 64x64, Model: m, {tail}{VERSION}")


def test_format_quotes_values_that_would_break_the_line():
    text = format_parameters(
        request(Mode.TXT2IMG), width=512, height=512, model_name='C:\\models\\a, "b": c'
    )
    assert 'Model: "C:\\\\models\\\\a, \\"b\\": c", ' in text
    assert parse_parameters(text)["Model"] == 'C:\\models\\a, "b": c'


def test_quote_and_unquote():
    assert quote("plain value") == "plain value"
    assert quote(7.0) == "7.0"
    assert quote("a, b") == '"a, b"'
    assert quote("key: v") == '"key: v"'
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert quote("two\nlines") == '"two\\nlines"'
    assert unquote('"a, b"') == "a, b"
    assert unquote('"broken') == '"broken'
    assert unquote('"not json\\x"') == '"not json\\x"'


def test_parse_real_a1111_sample():
    assert parse_parameters(A1111_SAMPLE) == {
        "Prompt": "a cat",
        "Negative prompt": "ugly, blurry",
        "Steps": "20",
        "Sampler": "DPM++ 2M Karras",
        "CFG scale": "7",
        "Seed": "42",
        "Size": "512x768",
        "Model hash": "abc123",
        "Model": "v1-5",
        "Denoising strength": "0.5",
        "Lora hashes": "x: 1, y: 2",
        "Version": "v1.6.0",
    }


def test_parse_multiline_prompts_and_windows_line_ends():
    text = (
        "masterpiece,\r\nold photo of a street\r\nNegative prompt: text,\r\nwatermark\r\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 5.5, Seed: 7, Size: 640x480"
    )
    parsed = parse_parameters(text)
    assert parsed["Prompt"] == "masterpiece,\nold photo of a street"
    assert parsed["Negative prompt"] == "text,\nwatermark"
    assert parsed["Size"] == "640x480" and parsed["CFG scale"] == "5.5"


def test_parse_without_settings_line_or_without_prompt():
    assert parse_parameters("just a prompt: with a colon") == {
        "Prompt": "just a prompt: with a colon",
        "Negative prompt": "",
    }
    only_settings = parse_parameters("Steps: 4, Sampler: LCM, CFG scale: 1.0, Seed: 3")
    assert only_settings["Prompt"] == "" and only_settings["Sampler"] == "LCM"
    assert only_settings["Negative prompt"] == ""


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize(
    ("prompt", "negative"),
    [
        ("a cat", ""),
        ("restore this photo,\nsharp details, 1950s", "scratches, dust\nnoise: heavy"),
        ('a sign saying "open", 24/7', "Negative prompt: inside"),
    ],
    ids=["simple", "multiline", "tricky"],
)
def test_round_trip(mode, prompt, negative):
    r = request(
        mode,
        prompt=prompt,
        negative_prompt=negative,
        scheduler=Scheduler.DPMPP_2M,
        steps=33,
        guidance=4.5,
        seed=2**32 - 1,
    )
    parsed = parse_parameters(format_parameters(r, width=768, height=512, model_name="x/y"))
    assert parsed["Prompt"] == prompt
    assert parsed["Negative prompt"] == negative
    assert parsed["Steps"] == "33"
    assert parsed["Sampler"] == "DPM++ 2M"
    assert Scheduler.parse(parsed["Sampler"]) is Scheduler.DPMPP_2M
    assert float(parsed["CFG scale"]) == 4.5
    assert int(parsed["Seed"]) == 2**32 - 1
    assert parsed["Size"] == "768x512"
    assert parsed["Model"] == "x/y"
    assert parsed["Version"] == f"sdstudio {__version__}"
    assert ("Denoising strength" in parsed) is (mode is not Mode.TXT2IMG)
    assert ("Mask blur" in parsed) is (mode in (Mode.INPAINT, Mode.REMOVE))


def test_controls_are_written_as_the_controlnet_extension_writes_them_and_read_back():
    from sdstudio.core.metadata import parse_control
    from sdstudio.core.provenance import read_provenance
    from sdstudio.core.request import Control, ControlKind

    sketch = np.zeros((64, 64, 3), np.uint8)
    controls = (
        Control("lllyasviel/control_v11p_sd15_scribble", sketch, strength=0.8, end=0.6),
        Control("/models/edges, v2.safetensors", sketch, ControlKind.CANNY, start=0.1),
    )
    r = request(Mode.IMG2IMG, controls=controls)
    text = format_parameters(r, width=64, height=64, model_name="v1-5")
    assert (
        'ControlNet 0: "Module: scribble, Model: control_v11p_sd15_scribble, Weight: 0.8, '
        'Guidance Start: 0.0, Guidance End: 0.6", ControlNet 1: "Module: canny, Model: edges  v2, '
        f'Weight: 1.0, Guidance Start: 0.1, Guidance End: 1.0", {VERSION}'
    ) in text
    values = parse_parameters(text)
    assert values["Model"] == "v1-5" and values["Denoising strength"] == "0.75"
    assert parse_control(values["ControlNet 1"]) == {
        "Module": "canny",
        "Model": "edges  v2",
        "Weight": "1.0",
        "Guidance Start": "0.1",
        "Guidance End": "1.0",
    }
    found = read_provenance({"parameters": text})
    assert found is not None and found.settings["model"] == "v1-5"
    assert found.settings["seed"] == 1234 and found.settings["strength"] == 0.75
