"""Reading how a picture was made (AUTOMATIC1111, ComfyUI, InvokeAI, SD Studio), checked against
an independent reader from PyPI (sd-parsers) on the same files."""

import json

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.core.imageio import read_texts, save_image
from sdstudio.core.provenance import read_provenance

sd_parsers = pytest.importorskip("sd_parsers")

COMFY_GRAPH = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "dpmpp_2m",
            "scheduler": "karras",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["10", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "sd_xl_base.safetensors"},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 832, "height": 1216, "batch_size": 1},
    },
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "a lighthouse at dusk, film photo", "clip": ["4", 1]},
    },
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "10": {  # a conditioning node between the encoder and the sampler
        "class_type": "ConditioningSetTimestepRange",
        "inputs": {"conditioning": ["6", 0], "start": 0.0, "end": 1.0},
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}
COMFY_LINKS = [
    [1, 4, 0, 3, 0, "MODEL"],
    [2, 10, 0, 3, 1, "CONDITIONING"],
    [3, 7, 0, 3, 2, "CONDITIONING"],
    [4, 5, 0, 3, 3, "LATENT"],
    [5, 4, 1, 6, 0, "CLIP"],
    [6, 4, 1, 7, 0, "CLIP"],
    [7, 3, 0, 8, 0, "LATENT"],
    [8, 4, 2, 8, 1, "VAE"],
    [9, 8, 0, 9, 0, "IMAGE"],
    [10, 6, 0, 10, 0, "CONDITIONING"],
]
INVOKEAI = {
    "positive_prompt": "an old stone bridge, autumn",
    "negative_prompt": "blurry",
    "seed": 3150283349,
    "steps": 30,
    "cfg_scale": 7.5,
    "scheduler": "euler_a",
    "width": 768,
    "height": 512,
    "model": {"model_name": "juggernaut", "base_model": "sdxl", "model_type": "main"},
}


def png_with(path, **texts):
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(path, pnginfo=info)
    return path


def reference(path):
    """What sd-parsers reads: prompt, negative, and the first sampler's settings."""
    info = sd_parsers.ParserManager().parse(str(path))
    sampler = info.samplers[0]
    return {
        "generator": info.generator.name,
        "prompt": info.full_prompt,
        "negative_prompt": info.full_negative_prompt,
        "seed": int(sampler.parameters["seed"]),
        "steps": int(sampler.parameters["steps"]),
        "guidance": float(sampler.parameters["cfg_scale"]),
        "model": sampler.model.name if sampler.model else None,
    }


def ours(path):
    found = read_provenance(read_texts(path))
    assert found is not None
    s = found.settings
    keys = ("prompt", "negative_prompt", "seed", "steps", "guidance", "model")
    return found, {"generator": found.generator, **{key: s.get(key) for key in keys}}


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_our_exports_read_the_same_with_sd_parsers(tmp_path, suffix):
    text = (
        'a cat on a "red" sofa, 35mm\nNegative prompt: blurry, lowres\n'
        "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 4242, Size: 640x480, "
        "Model: my-model, Denoising strength: 0.75, Version: sdstudio 0.1.0"
    )
    path = tmp_path / f"out{suffix}"
    save_image(path, np.zeros((48, 64, 3), np.uint8), text)
    found, mine = ours(path)
    theirs = reference(path)
    assert theirs["generator"] == "AUTOMATIC1111" and mine["generator"] == "SD Studio"
    assert {k: v for k, v in mine.items() if k != "generator"} == {
        k: v for k, v in theirs.items() if k != "generator"
    }
    assert found.settings["scheduler"] == "DPM++ 2M Karras"
    assert (found.settings["width"], found.settings["height"]) == (640, 480)
    assert found.settings["strength"] == 0.75


def test_automatic1111_png(tmp_path):
    text = (
        "masterpiece, castle\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 99, "
        "Size: 512x768, Model hash: abc123, Model: dreamshaper_8, Version: v1.7.0"
    )
    path = png_with(tmp_path / "a1111.png", parameters=text)
    found, mine = ours(path)
    assert mine == {**reference(path), "negative_prompt": None} | {"generator": "AUTOMATIC1111"}
    assert found.settings["scheduler"] == "Euler a" and found.settings["height"] == 768


def test_comfyui_graph_is_followed_to_its_prompts_model_and_size(tmp_path):
    path = png_with(
        tmp_path / "comfy.png",
        prompt=json.dumps(COMFY_GRAPH),
        workflow=json.dumps({"links": COMFY_LINKS, "nodes": []}),
    )
    found, mine = ours(path)
    assert mine == {**reference(path), "generator": "ComfyUI"}
    assert mine["prompt"] == "a lighthouse at dusk, film photo"  # through the middle node
    assert found.settings["scheduler"] == "DPM++ 2M Karras"
    assert (found.settings["width"], found.settings["height"]) == (832, 1216)
    assert "ComfyUI" in found.summary() and "lighthouse" in found.summary()


def test_invokeai_metadata(tmp_path):
    path = png_with(tmp_path / "invoke.png", invokeai_metadata=json.dumps(INVOKEAI))
    found, mine = ours(path)
    assert mine == {**reference(path), "generator": "InvokeAI"}
    assert (found.settings["width"], found.settings["height"]) == (768, 512)


def test_old_invokeai_sd_metadata():
    meta = {
        "model_weights": "stable-diffusion-1.5",
        "image": {
            "prompt": [{"prompt": "a fox", "weight": 1}],
            "seed": 7,
            "steps": 50,
            "cfg_scale": 7.5,
            "sampler": "k_lms",
            "width": 512,
            "height": 512,
        },
    }
    found = read_provenance({"sd-metadata": json.dumps(meta)})
    assert found.generator == "InvokeAI" and found.settings["prompt"] == "a fox"
    assert found.settings["seed"] == 7 and found.settings["model"] == "stable-diffusion-1.5"


@pytest.mark.parametrize(
    "texts",
    [
        {},
        {"parameters": ""},
        {"prompt": "not json"},
        {"prompt": "[1, 2, 3]"},
        {"prompt": json.dumps({"1": {"class_type": "KSampler", "inputs": "oops"}})},
        {"invokeai_metadata": "null"},
        {"invokeai_metadata": json.dumps({"seed": "NaN", "steps": [1], "model": 5})},
        {"sd-metadata": json.dumps({"image": "x"})},
        {"prompt": "x" * (5 * 2**20)},
    ],
)
def test_malformed_metadata_gives_nothing_or_what_is_usable_never_an_error(texts):
    found = read_provenance(texts)
    assert found is None or isinstance(found.settings, dict)


def test_a_cyclic_comfyui_graph_ends():
    graph = {
        "1": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 1,
                "steps": 5,
                "cfg": 2,
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
            },
        },
        "2": {"class_type": "Loop", "inputs": {"a": ["3", 0]}},
        "3": {"class_type": "Loop", "inputs": {"a": ["2", 0]}},
        "4": {"class_type": "Loop", "inputs": {"a": ["4", 0]}},
    }
    found = read_provenance({"prompt": json.dumps(graph)})
    assert found.settings == {"seed": 1, "steps": 5, "guidance": 2.0}


def test_cli_info_reads_a_comfyui_picture(tmp_path, capsys):
    from sdstudio.cli import main

    path = png_with(
        tmp_path / "comfy.png",
        prompt=json.dumps(COMFY_GRAPH),
        workflow=json.dumps({"links": COMFY_LINKS, "nodes": []}),
    )
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Made with ComfyUI" in out and "Prompt: a lighthouse at dusk" in out
    assert "Seed: 156680208700286" in out
