"""Single-file checkpoints: detection from the header, clear refusals, offline loading, shipped configs."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from ldm_convert import save_ldm, tiny_sdxl_for_ldm
from tiny_models import pickle_trap, save_tiny, tiny_sd1

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models.checkpoints import (
    CONFIG_ENV,
    CONFIGS,
    inspect_checkpoint,
    load_single_file,
    with_tokenizer_files,
)
from sdstudio.engine.models.resolve import resolve_model

UNET = "model.diffusion_model."
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat", OpenAI CLIP's ids


BUILDERS = {
    "sd1": lambda: tiny_sd1(inpainting=False),
    "sd1-inpaint": lambda: tiny_sd1(inpainting=True),
    "sdxl": lambda: tiny_sdxl_for_ldm(inpainting=False),
    "sdxl-inpaint": lambda: tiny_sdxl_for_ldm(inpainting=True),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (diffusers folder, LDM single file, UNet-only file in diffusers layout)."""
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    out = {}
    for name, build in BUILDERS.items():
        root = tmp_path_factory.mktemp(name)
        pipe = build()
        unet_file = root / "unet-only.safetensors"
        save_file({k: v.contiguous() for k, v in pipe.unet.state_dict().items()}, str(unet_file))
        out[name] = (save_tiny(pipe, root / "model"), save_ldm(pipe, root / "model.safetensors"), unet_file)  # fmt: skip
    return out


def write_skeleton(path, shapes: dict[str, tuple[int, ...]]):
    """A valid safetensors file with these tensor names and shapes (int8 zeros: small)."""
    from safetensors.numpy import save_file

    save_file({name: np.zeros(shape, np.int8) for name, shape in shapes.items()}, str(path))
    return path


def refusal(path) -> str:
    with pytest.raises(ModelError) as caught:
        inspect_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and path.name in message
    return message


# -- detection -------------------------------------------------------------------------------

EXPECTED = {
    "sd1": (ModelFamily.SD1, False, "StableDiffusionPipeline"),
    "sd1-inpaint": (ModelFamily.SD1, True, "StableDiffusionInpaintPipeline"),
    "sdxl": (ModelFamily.SDXL, False, "StableDiffusionXLPipeline"),
    "sdxl-inpaint": (ModelFamily.SDXL, True, "StableDiffusionXLInpaintPipeline"),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_family_and_kind_from_ldm_and_diffusers_layouts(tiny, name, tmp_path):
    family, inpainting, pipeline = EXPECTED[name]
    _, ldm_file, unet_file = tiny[name]
    disguised = tmp_path / "totally-not-sdxl-inpainting.safetensors"  # the name says nothing
    disguised.write_bytes(ldm_file.read_bytes())
    info = inspect_checkpoint(disguised)
    assert (info.family, info.inpainting, info.layout) == (family, inpainting, "ldm")
    assert info.pipeline_class == pipeline and info.size_bytes == ldm_file.stat().st_size
    unet = inspect_checkpoint(unet_file)
    assert (unet.family, unet.inpainting, unet.layout) == (family, inpainting, "diffusers-unet")
    with pytest.raises(ModelError, match="only a UNet"):
        resolve_model(str(unet_file))


SD1_TEXT = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
XL_L = "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"
XL_G = "conditioner.embedders.1.model.positional_embedding"
VAE = {"first_stage_model.quant_conv.weight": (8, 8, 1, 1)}


def sd1_like(channels=4, context=768, text=768):
    return {
        UNET + "input_blocks.0.0.weight": (320, channels, 3, 3),
        UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, context),
        **VAE,
        SD1_TEXT: (77, text),
    }


SDXL_INPAINT = {
    UNET + "input_blocks.0.0.weight": (320, 9, 3, 3),
    UNET + "label_emb.0.0.weight": (1280, 2816),
    UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
    **VAE,
    XL_L: (77, 768),
    XL_G: (77, 1280),
}


def test_real_widths_tell_sd15_from_sdxl(tmp_path):
    info = inspect_checkpoint(write_skeleton(tmp_path / "a.safetensors", sd1_like()))
    assert (info.family, info.inpainting) == (ModelFamily.SD1, False)
    info = inspect_checkpoint(write_skeleton(tmp_path / "b.safetensors", SDXL_INPAINT))
    assert (info.family, info.inpainting, info.config_name) == (ModelFamily.SDXL, True, "sdxl-inpainting")  # fmt: skip


REFUSED = {
    "sd2": (
        {**sd1_like(context=1024), "cond_stage_model.model.positional_embedding": (77, 1024)},
        "Stable Diffusion 2",
    ),
    "refiner": (
        {
            UNET + "input_blocks.0.0.weight": (384, 4, 3, 3),
            UNET + "label_emb.0.0.weight": (1536, 2560),
            UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (768, 1280),
            "conditioner.embedders.0.model.positional_embedding": (77, 1280),
        },
        "SDXL refiner",
    ),
    "flux": ({UNET + "double_blocks.0.img_attn.norm.key_norm.scale": (128,)}, "Flux"),
    "sd3": ({UNET + "joint_blocks.0.context_block.adaLN_modulation.1.bias": (64,)}, "Diffusion 3"),
    "playground": ({**SDXL_INPAINT, "edm_mean": (1, 4, 1, 1)}, "Playground v2.5"),
    "pix2pix": (sd1_like(channels=8), "8 input channels"),
    "no-vae": ({k: v for k, v in sd1_like().items() if k not in VAE}, "no VAE"),
    "no-text": ({k: v for k, v in sd1_like().items() if k != SD1_TEXT}, "text encoder"),
    "mismatch": (sd1_like(text=1280), "text 768 wide"),
    "lora": (
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (320, 4),
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": (),
        },
        "LoRA (lora_ keys)",
    ),
    "peft-lora": (
        {"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": (4, 320)},
        "LoRA folder",
    ),
    "embedding": ({"emb_params": (2, 768)}, "textual-inversion embedding"),
    "xl-embedding": ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "embeddings folder"),
    "ldm-vae": (
        {"first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3), **VAE},
        "VAE on its own",
    ),  # fmt: skip
    "vae": (
        {"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_out.weight": (3, 128, 3, 3)},
        "VAE on its own",
    ),  # fmt: skip
    "empty": ({}, "no tensors"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_files_that_are_not_usable_models_say_what_they_are(tmp_path, name):
    shapes, expected = REFUSED[name]
    message = refusal(write_skeleton(tmp_path / f"{name}.safetensors", shapes))
    assert expected in message
    if name in ("sd2", "refiner", "flux", "sd3", "playground"):
        assert "Stable Diffusion 1.x and SDXL" in message


def test_diffusers_vae_file_is_refused_as_vae(tiny, tmp_path):
    from safetensors.torch import save_file
    from tiny_models import _vae

    path = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in _vae().state_dict().items()}, str(path))
    assert "VAE on its own" in refusal(path)


# -- damaged files ---------------------------------------------------------------------------


def header_file(path, header: dict, data: bytes = b"", length: int | None = None):
    raw = json.dumps(header).encode()
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)
    return path


def test_truncated_garbage_and_lying_files_are_clear_errors(tiny, tmp_path):
    ldm = tiny["sd1"][1].read_bytes()
    half = tmp_path / "half.safetensors"
    half.write_bytes(ldm[: len(ldm) // 2])
    assert "' is truncated (" in refusal(half) and "download it again" in refusal(half)
    cut_header = tmp_path / "cut.safetensors"
    cut_header.write_bytes(ldm[:100])
    assert "' is truncated (" in refusal(cut_header)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert "empty" in refusal(tmp_path / "empty.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a valid .safetensors" in refusal(garbage)
    not_json = header_file(tmp_path / "text.safetensors", {}, length=20)
    not_json.write_bytes(not_json.read_bytes()[:8] + b"{this is not json!!}" + b"\0" * 64)
    assert "not a valid .safetensors" in refusal(not_json)
    entry = {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}
    beyond = header_file(tmp_path / "beyond.safetensors", {"w": entry}, b"\0" * 32)
    assert "' is truncated (" in refusal(beyond)
    lies = header_file(
        tmp_path / "lies.safetensors", {"w": {**entry, "shape": [40, 40]}}, b"\0" * 64
    )
    assert "damaged" in refusal(lies) and "'w'" in refusal(lies)
    malformed = header_file(
        tmp_path / "bad.safetensors", {"w": {**entry, "shape": "4x4"}}, b"\0" * 64
    )
    assert "malformed" in refusal(malformed)
    with pytest.raises(ModelError, match=r"^'half\.safetensors' is truncated \("):
        resolve_model(str(half))


# -- pickles ---------------------------------------------------------------------------------


PICKLE_WORDS = {  # what each refusal says, in its own words (the path aside)
    "suffix": "is a pickle file ({suffix}): SD Studio loads only .safetensors weights, because "
    "pickle files can run code when opened.",
    "content": "is not a safetensors file: it is a pickled PyTorch checkpoint with a .safetensors "
    "name. SD Studio never opens pickle files, because they can run code",
}


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "model.bin", "model.safetensors"])
@pytest.mark.parametrize("torch_zip", [False, True], ids=["raw", "torch-zip"])
def test_pickles_are_refused_and_never_run(tmp_path, name, torch_zip, monkeypatch):
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # turns implicit loads unsafe
    marker = tmp_path / "payload-ran"
    evil = pickle_trap(tmp_path / name, marker, torch_zip=torch_zip, w=np.zeros(3))
    suffix = evil.suffix
    words = PICKLE_WORDS["content" if suffix == ".safetensors" else "suffix"].format(suffix=suffix)
    for attempt in (
        lambda: resolve_model(str(evil)),
        lambda: inspect_checkpoint(evil),
        lambda: load_single_file(evil),
        lambda: PipelineCache(device="cpu").load(str(evil)),
    ):
        with pytest.raises(ModelError) as caught:
            attempt()
        message = str(caught.value)
        assert words in message, message
        assert message.startswith((f"'{evil}' ", f"'{evil.name}' "))  # then the words, no other
    assert not marker.exists()
    if torch_zip:  # the trap is real: unpickling runs it
        import torch

        copy = tmp_path / "copy.pt"  # torch.load reads a .safetensors name as safetensors
        copy.write_bytes(evil.read_bytes())
        torch.load(copy, weights_only=False)
    else:
        pickle.loads(evil.read_bytes())
    assert marker.exists()


# -- loading, offline ------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the hub, or any socket connection, fails the test."""
    import importlib

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    for module in [
        "huggingface_hub",
        "huggingface_hub.file_download",
        "diffusers.configuration_utils",
        "diffusers.loaders.single_file",
        "diffusers.pipelines.pipeline_utils",
        "diffusers.utils.hub_utils",
        "transformers.utils.hub",
    ]:
        for name in ("hf_hub_download", "snapshot_download"):
            if hasattr(importlib.import_module(module), name):
                monkeypatch.setattr(f"{module}.{name}", refuse)
    for target in ("socket.socket.connect", "socket.create_connection", "socket.getaddrinfo"):
        monkeypatch.setattr(target, refuse)


def run(pipe, inpainting: bool):
    import torch

    kwargs = {"num_inference_steps": 2, "height": 64, "width": 64, "output_type": "np"}
    if inpainting:
        image = np.linspace(0, 1, 64 * 64 * 3, dtype=np.float32).reshape(1, 64, 64, 3)
        mask = np.zeros((1, 64, 64, 1), np.float32)
        mask[:, 16:48, 16:48] = 1
        kwargs.update(image=image, mask_image=mask, strength=1.0)
    generator = torch.Generator().manual_seed(42)
    return pipe("a photo of a cat", generator=generator, **kwargs).images


@pytest.mark.parametrize("name", EXPECTED)
def test_single_file_round_trip_gives_the_same_pictures(tiny, name, monkeypatch, no_network):
    import torch

    from sdstudio.engine.diffusion.pipelines import PipelineCache

    folder, ldm_file, _ = tiny[name]
    info = resolve_model(str(ldm_file))
    assert info.folder is None and info.checkpoint is not None
    assert info.pipeline_class == EXPECTED[name][2] and info.family is EXPECTED[name][0]
    monkeypatch.setenv(CONFIG_ENV, str(folder))  # the tiny model's configs, not the shipped ones
    single = PipelineCache(device="cpu", dtype=torch.float32).load(str(ldm_file))
    original = PipelineCache(device="cpu", dtype=torch.float32).load(str(folder))
    assert type(single.pipe) is type(original.pipe) and single.inpainting_unet == EXPECTED[name][1]
    if EXPECTED[name][0] is ModelFamily.SD1:
        assert single.pipe.safety_checker is None
    got, want = run(single.pipe, EXPECTED[name][1]), run(original.pipe, EXPECTED[name][1])
    assert got.shape == (1, 64, 64, 3) and np.abs(got - want).max() < 1e-4


def test_config_folder_of_another_kind_is_refused(tiny, monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, str(tiny["sd1"][0]))
    with pytest.raises(ModelError, match="different kind of model"):
        load_single_file(tiny["sdxl"][1])
    with pytest.raises(ModelError, match="different kind of model"):
        load_single_file(tiny["sd1"][1], config_folder=tiny["sd1-inpaint"][0])
    monkeypatch.setenv(CONFIG_ENV, str(tiny["sd1"][0] / "missing"))
    with pytest.raises(ModelError, match="does not exist"):
        load_single_file(tiny["sd1"][1])


# -- shipped configs -------------------------------------------------------------------------

SHIPPED = {
    "sd15": ("StableDiffusionPipeline", 4, 768, 64, "PNDMScheduler"),
    "sd15-inpainting": ("StableDiffusionInpaintPipeline", 9, 768, 64, "DDIMScheduler"),
    "sdxl": ("StableDiffusionXLPipeline", 4, 2048, 128, "EulerDiscreteScheduler"),
    "sdxl-inpainting": ("StableDiffusionXLInpaintPipeline", 9, 2048, 128, "EulerDiscreteScheduler"),
}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_offline_with_the_published_architecture(name, no_network):
    import diffusers
    from transformers import CLIPTextConfig, CLIPTokenizer

    pipeline, in_channels, context, sample_size, scheduler = SHIPPED[name]
    folder = CONFIGS / name
    assert diffusers.DiffusionPipeline.load_config(folder)["_class_name"] == pipeline
    unet = diffusers.UNet2DConditionModel.load_config(folder, subfolder="unet")
    assert (unet["in_channels"], unet["cross_attention_dim"], unet["sample_size"]) == (in_channels, context, sample_size)  # fmt: skip
    vae = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(folder, subfolder="vae"))  # fmt: skip
    assert vae.config.scaling_factor == (0.13025 if "xl" in name else 0.18215)
    config = diffusers.DDIMScheduler.load_config(folder, subfolder="scheduler")
    assert type(getattr(diffusers, config["_class_name"]).from_config(config)).__name__ == scheduler
    widths = [CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder").hidden_size]
    assembled = with_tokenizer_files(folder)
    tokenizers = [CLIPTokenizer.from_pretrained(assembled, subfolder="tokenizer")]
    if "xl" in name:
        widths.append(
            CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2").hidden_size
        )
        tokenizers.append(CLIPTokenizer.from_pretrained(assembled, subfolder="tokenizer_2"))
    assert sum(widths) == context
    for tokenizer in tokenizers:
        assert tokenizer("a photo of a cat").input_ids == CAT_IDS
        assert tokenizer.model_max_length == 77 and len(tokenizer) == 49408
    assert tokenizers[0].pad_token == "<|endoftext|>"
    if "xl" in name:
        assert (tokenizers[1].pad_token, tokenizers[1].pad_token_id) == (
            "!",
            0,
        )  # OpenCLIP pads with 0
    assert not (folder / "tokenizer" / "vocab.json").exists()  # one shared copy in the repository


def test_shared_vocabulary_is_small_and_single():
    copies = list(CONFIGS.rglob("vocab.json")) + list(CONFIGS.rglob("merges.txt"))
    assert sorted(p.parent.name for p in copies) == ["clip-tokenizer", "clip-tokenizer"]
    assert sum(p.stat().st_size for p in CONFIGS.rglob("*") if p.is_file()) < 3_000_000
