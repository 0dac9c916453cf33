"""LoRAs and textual-inversion embeddings on a loaded pipeline (tiny models, CPU, offline)."""

from pathlib import Path

import numpy as np
import pytest

from sdstudio.core.errors import ModelError
from sdstudio.engine.diffusion.adapters import (
    AdapterState,
    find_embeddings,
    find_lora,
    load_embedding,
)
from sdstudio.engine.diffusion.prompts import count_tokens, encode_prompt

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _lora_file(folder: Path, seed: int, text_encoder: bool = False) -> Path:
    """A random, non-zero LoRA for the tiny SD1 model, saved as diffusers does it."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict
    from tiny_models import tiny_sd1

    source = tiny_sd1(inpainting=False)  # same shapes as the pipeline under test
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=UNET_TARGETS, init_lora_weights=False)
    source.unet.add_adapter(config)  # random B: a real change
    layers = {"unet_lora_layers": get_peft_model_state_dict(source.unet)}
    if text_encoder:
        # written by hand with the key names of LoRAs made before transformers 5 (which has no
        # ``text_model`` wrapper): the LoRA files people have. (transformers' own add_adapter
        # wants peft >= 0.22, which is not released yet.)
        layers["text_encoder_lora_layers"] = {
            f"text_model.encoder.layers.{i}.self_attn.{proj}.lora_{ab}.weight": torch.randn(shape)
            for i in range(2)
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj")
            for ab, shape in (("A", (4, 32)), ("B", (32, 4)))
        }
    folder.mkdir(parents=True, exist_ok=True)
    name = f"lora{seed}.safetensors"
    StableDiffusionPipeline.save_lora_weights(folder, weight_name=name, **layers)
    return folder / name


def _kohya_file(path: Path) -> Path:
    """A LoRA in kohya's sd-scripts layout (lora_down/lora_up/alpha), as most shared LoRAs are."""
    import torch
    from safetensors.torch import save_file
    from tiny_models import tiny_sd1

    source = tiny_sd1(inpainting=False)
    torch.manual_seed(5)
    tensors = {}
    modules = [("lora_unet", n, m) for n, m in source.unet.named_modules()]
    modules += [("lora_te_text_model", n, m) for n, m in source.text_encoder.named_modules()]
    for prefix, name, module in modules:
        if name.endswith(("attn1.to_q", "attn2.to_k", "self_attn.q_proj", "self_attn.out_proj")):
            key = f"{prefix}_{name.replace('.', '_')}"
            tensors[f"{key}.lora_down.weight"] = torch.randn(2, module.in_features)
            tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, 2)
            tensors[f"{key}.alpha"] = torch.tensor(1.0)
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> dict[str, Path]:
    import torch

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("loras")
    return {
        "unet": _lora_file(folder, 1),
        "other": _lora_file(folder / "style", 2),
        "text": _lora_file(folder, 3, text_encoder=True),
        "kohya": _kohya_file(folder / "kohya.safetensors"),
    }


@pytest.fixture
def sd1():
    import torch
    from tiny_models import tiny_sd1

    torch.set_num_threads(1)
    return tiny_sd1(inpainting=False)


def _run(pipe, prompt="a cat", **kwargs):
    import torch

    return pipe(
        prompt=prompt,
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="np",
        **kwargs,
    ).images


def _inpaint_inputs():
    from PIL import Image

    image = Image.fromarray(np.full((64, 64, 3), 128, np.uint8))
    mask = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))
    return {"image": image, "mask_image": mask, "strength": 1.0}


# --- LoRA --------------------------------------------------------------------------------------


def test_lora_changes_the_output_and_removal_restores_it(sd1, loras):
    base = _run(sd1)
    state = AdapterState()
    state.apply(sd1, [(loras["unet"], 1.0)])
    with_lora = _run(sd1)
    assert np.abs(with_lora - base).max() > 1e-3
    assert np.isfinite(with_lora).all()

    state.apply(sd1, [(loras["unet"], 0.0)])
    np.testing.assert_array_equal(_run(sd1), base)  # weight 0: the base model, exactly
    state.apply(sd1, [])
    np.testing.assert_array_equal(_run(sd1), base)  # removed: the base model, exactly
    assert state.active == () and state.loaded == (loras["unet"].resolve(),)

    state.apply(sd1, [(loras["unet"], 1.0)])  # back on without loading again
    np.testing.assert_array_equal(_run(sd1), with_lora)
    state.apply(sd1, [(loras["unet"], 0.5)])
    half = _run(sd1)
    assert np.abs(half - base).max() > 1e-4
    assert np.abs(half - with_lora).max() > 1e-4


def test_several_loras_and_a_text_encoder_lora(sd1, loras):
    base_embeds = encode_prompt(sd1, "a cat", None)["prompt_embeds"]
    state = AdapterState()
    state.apply(sd1, [(loras["unet"], 1.0)])
    one = _run(sd1)
    np.testing.assert_array_equal(encode_prompt(sd1, "a cat", None)["prompt_embeds"], base_embeds)
    state.apply(sd1, [(loras["unet"], 1.0), (loras["text"], 1.0)])
    assert (encode_prompt(sd1, "a cat", None)["prompt_embeds"] - base_embeds).abs().max() > 1e-3
    assert np.abs(_run(sd1) - one).max() > 1e-3
    assert sorted(sd1.get_active_adapters()) == sorted(state._names.values())
    state.apply(sd1, [(loras["unet"], 1.0)])
    np.testing.assert_array_equal(encode_prompt(sd1, "a cat", None)["prompt_embeds"], base_embeds)
    np.testing.assert_array_equal(_run(sd1), one)


def test_kohya_lora(sd1, loras):
    base, base_embeds = _run(sd1), encode_prompt(sd1, "a cat", None)["prompt_embeds"]
    state = AdapterState()
    state.apply(sd1, [(loras["kohya"], 1.0)])
    assert set(sd1.get_list_adapters()) == {"unet", "text_encoder"}
    assert (encode_prompt(sd1, "a cat", None)["prompt_embeds"] - base_embeds).abs().max() > 1e-3
    assert np.abs(_run(sd1) - base).max() > 1e-3
    state.apply(sd1, [])
    np.testing.assert_array_equal(_run(sd1), base)


def test_lora_applied_to_one_task_pipeline_is_seen_by_the_others(sd1, loras):
    from diffusers import StableDiffusionInpaintPipeline

    inpaint = StableDiffusionInpaintPipeline.from_pipe(sd1)  # shares the UNet and encoders
    inpaint.set_progress_bar_config(disable=True)
    assert inpaint.unet is sd1.unet
    base = _run(inpaint, **_inpaint_inputs())
    state = AdapterState()
    state.apply(sd1, [(loras["unet"], 1.0)])  # through the txt2img pipeline
    assert np.abs(_run(inpaint, **_inpaint_inputs()) - base).max() > 1e-3
    state.apply(inpaint, [])  # and off through the inpaint one: the same modules
    np.testing.assert_array_equal(_run(inpaint, **_inpaint_inputs()), base)
    assert state.loaded == (loras["unet"].resolve(),)  # same UNet: nothing forgotten


def test_least_recently_used_loras_are_unloaded(sd1, loras):
    state = AdapterState(keep=1)
    state.apply(sd1, [(loras["unet"], 1.0)])
    state.apply(sd1, [(loras["other"], 1.0)])
    assert state.loaded == (loras["other"].resolve(),)
    assert list(sd1.get_list_adapters()["unet"]) == list(state._names.values())


def test_a_new_model_starts_afresh(sd1, loras):
    from tiny_models import tiny_sd1

    state = AdapterState()
    state.apply(sd1, [(loras["unet"], 1.0)])
    other = tiny_sd1(inpainting=False)
    base = _run(other)
    state.apply(other, [(loras["unet"], 1.0)])  # loads it into the new model's UNet
    assert np.abs(_run(other) - base).max() > 1e-3


def test_sdxl_lora_and_a_lora_of_the_wrong_family(loras, tmp_path):
    import torch
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig, get_peft_model_state_dict
    from tiny_models import tiny_sdxl

    torch.set_num_threads(1)
    source = tiny_sdxl()
    torch.manual_seed(4)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=UNET_TARGETS, init_lora_weights=False)
    source.unet.add_adapter(config)
    layers = get_peft_model_state_dict(source.unet)
    StableDiffusionXLPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=layers, weight_name="xl.safetensors"
    )

    pipe = tiny_sdxl()
    base = _run(pipe)
    state = AdapterState()
    state.apply(pipe, [(tmp_path / "xl.safetensors", 1.0)])
    assert np.abs(_run(pipe) - base).max() > 1e-3
    with_lora = _run(pipe)
    with pytest.raises(ModelError, match="Could not load the LoRA .lora1.safetensors."):
        state.apply(pipe, [(loras["unet"], 1.0)])  # an SD1 LoRA: the shapes do not fit
    assert state.loaded == ((tmp_path / "xl.safetensors").resolve(),)
    assert set(pipe.get_list_adapters()["unet"]) == set(state._names.values())
    state.apply(pipe, [(tmp_path / "xl.safetensors", 1.0)])
    np.testing.assert_array_equal(_run(pipe), with_lora)
    state.apply(pipe, [])
    np.testing.assert_array_equal(_run(pipe), base)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickled_loras_are_refused(sd1, tmp_path, suffix):
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(b"not opened")
    with pytest.raises(ModelError, match=r"only \.safetensors"):
        AdapterState().apply(sd1, [(path, 1.0)])
    assert sd1.get_list_adapters() == {}


def test_broken_lora_file_gives_a_clear_error(sd1, tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00" * 64)
    state = AdapterState()
    with pytest.raises(ModelError, match="Could not load the LoRA 'broken.safetensors'"):
        state.apply(sd1, [(path, 1.0)])
    assert state.loaded == ()
    with pytest.raises(ModelError, match="does not exist"):
        state.apply(sd1, [(tmp_path / "gone.safetensors", 1.0)])


# --- finding LoRAs -----------------------------------------------------------------------------


def test_find_lora(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "style").mkdir(parents=True)
    second.mkdir()
    for path in [first / "Ink.safetensors", first / "style" / "Watercolor.safetensors"]:
        path.write_bytes(b"")
    (second / "ink.safetensors").write_bytes(b"")
    (second / "old.ckpt").write_bytes(b"")
    folders = [first, second, tmp_path / "missing"]
    assert find_lora("Ink", folders) == first / "Ink.safetensors"  # the first folder wins
    assert find_lora("INK.safetensors", folders) == first / "Ink.safetensors"
    assert find_lora("watercolor", folders) == first / "style" / "Watercolor.safetensors"
    assert find_lora("style/watercolor", folders) == first / "style" / "Watercolor.safetensors"
    with pytest.raises(ModelError, match=r"No LoRA named 'oil'.*Available: Ink, ink, style/Water"):
        find_lora("oil", folders)
    with pytest.raises(ModelError, match=r"only there as old\.ckpt.*only \.safetensors"):
        find_lora("old", folders)
    with pytest.raises(ModelError, match=r"\.pt file"):
        find_lora("ink.pt", folders)
    with pytest.raises(ModelError, match="there are no .safetensors LoRAs"):
        find_lora("ink", [tmp_path / "missing"])


# --- textual inversion -------------------------------------------------------------------------


def _save(path: Path, tensors: dict) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


def test_embedding_adds_a_token_that_changes_the_prompt(sd1, tmp_path):
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    inpaint = StableDiffusionInpaintPipeline.from_pipe(sd1)
    without = encode_prompt(sd1, "a cat", None)["prompt_embeds"]
    torch.manual_seed(0)
    path = _save(tmp_path / "shiny-style.safetensors", {"emb_params": torch.randn(1, 32) * 3})
    assert load_embedding(sd1, path) == "shiny-style"
    assert "shiny-style" in sd1.tokenizer.get_vocab()
    assert inpaint.tokenizer is sd1.tokenizer  # shared with the task pipelines
    assert count_tokens(sd1.tokenizer, "a cat shiny-style") == 5
    with_token = encode_prompt(inpaint, "a cat shiny-style", None)["prompt_embeds"]
    assert (with_token - without).abs().max() > 1e-3
    theirs = sd1.encode_prompt("a cat shiny-style", "cpu", 1, False)[0]
    assert (with_token - theirs).abs().max() < 1e-5
    assert load_embedding(sd1, path) == "shiny-style"  # loading again: nothing to do
    image = _run(sd1, "a cat shiny-style")
    assert np.abs(image - _run(sd1)).max() > 1e-4


def test_diffusers_and_multi_vector_embeddings(sd1, tmp_path):
    import torch

    vectors = torch.randn(3, 32)
    path = _save(tmp_path / "trio.safetensors", {"<trio>": vectors})
    assert load_embedding(sd1, path, token="<trio>") == "<trio>"
    assert count_tokens(sd1.tokenizer, "a <trio>") == 4  # a, and three vectors
    ours = encode_prompt(sd1, "a <trio>", "<trio> dark")
    theirs = sd1.encode_prompt("a <trio>", "cpu", 1, True, negative_prompt="<trio> dark")
    assert (ours["prompt_embeds"] - theirs[0]).abs().max() < 1e-5
    assert (ours["negative_prompt_embeds"] - theirs[1]).abs().max() < 1e-5
    rows = sd1.text_encoder.get_input_embeddings().weight
    assert torch.equal(rows[sd1.tokenizer.convert_tokens_to_ids("<trio>_2")], vectors[2])


def test_sdxl_embeddings_go_into_both_encoders(tmp_path):
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline
    from tiny_models import tiny_sdxl

    torch.set_num_threads(1)
    pipe = tiny_sdxl()
    inpaint = StableDiffusionXLInpaintPipeline.from_pipe(pipe)
    without = encode_prompt(pipe, "a cat", None)
    tensors = {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 32)}
    path = _save(tmp_path / "xl-look.safetensors", tensors)
    assert load_embedding(pipe, path) == "xl-look"
    for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
        assert {"xl-look", "xl-look_1"} <= set(tokenizer.get_vocab())
    with_token = encode_prompt(inpaint, "a cat xl-look", None)
    theirs = pipe.encode_prompt("a cat xl-look", device="cpu")
    assert (with_token["prompt_embeds"] - theirs[0]).abs().max() < 1e-5
    assert (with_token["pooled_prompt_embeds"] - theirs[2]).abs().max() < 1e-5
    delta = (with_token["prompt_embeds"] - without["prompt_embeds"]).abs()
    assert delta[..., :32].max() > 1e-3 and delta[..., 32:].max() > 1e-3  # both encoders

    sd1_style = _save(tmp_path / "old.safetensors", {"emb_params": torch.randn(1, 32)})
    with pytest.raises(ModelError, match="SD1.x-style embedding"):
        load_embedding(pipe, sd1_style)


def test_find_embeddings(tmp_path):
    (tmp_path / "neg").mkdir()
    for name in ["shiny.safetensors", "neg/bad-hands.safetensors", "old.pt", "cat.safetensors"]:
        (tmp_path / name).write_bytes(b"")
    folders = [tmp_path, tmp_path / "missing"]
    found = find_embeddings("a shiny cats, (bad-hands:1.2), old", folders)
    assert found == [tmp_path / "neg" / "bad-hands.safetensors", tmp_path / "shiny.safetensors"]
    assert find_embeddings("shinyness, bad-hands-2", folders) == []


def test_unusable_embeddings_are_refused(sd1, tmp_path):
    import torch

    for suffix in (".pt", ".bin", ".ckpt"):
        path = tmp_path / f"emb{suffix}"
        path.write_bytes(b"never opened")
        with pytest.raises(ModelError, match=r"only \.safetensors"):
            load_embedding(sd1, path)
    wide = _save(tmp_path / "wide.safetensors", {"emb_params": torch.randn(1, 768)})
    with pytest.raises(ModelError, match="768-wide vectors.*takes 32"):
        load_embedding(sd1, wide)
    xl = _save(
        tmp_path / "xl.safetensors", {"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 32)}
    )
    with pytest.raises(ModelError, match="SDXL embedding"):
        load_embedding(sd1, xl)
    known = _save(tmp_path / "a.safetensors", {"emb_params": torch.randn(1, 32)})
    with pytest.raises(ModelError, match="already knows"):
        load_embedding(sd1, known)  # "a" is a word of the vocabulary
    assert "wide" not in sd1.tokenizer.get_vocab() and "xl" not in sd1.tokenizer.get_vocab()


# --- few-step LoRAs (LCM-LoRA's layout: convolutions too) --------------------------------------


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
def test_lcm_style_lora_adapts_every_module_it_names(sd1, tmp_path, layout):
    """lcm-lora-sdv1-5 adapts ResNet and resampling convolutions besides attention: every one
    of them must take the LoRA (a key layout diffusers skipped would drop them silently)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict
    from peft.tuners.lora import LoraLayer
    from test_presets import LCM_TARGETS, lcm_style_lora
    from tiny_models import tiny_sd1

    if layout == "kohya":
        path = lcm_style_lora(tmp_path / "lcm.safetensors")
    else:
        source = tiny_sd1(inpainting=False)
        torch.manual_seed(3)
        config = LoraConfig(
            r=4, lora_alpha=4, target_modules=list(LCM_TARGETS), init_lora_weights=False
        )
        source.unet.add_adapter(config)
        layers = get_peft_model_state_dict(source.unet)
        StableDiffusionPipeline.save_lora_weights(
            tmp_path, unet_lora_layers=layers, weight_name="lcm.safetensors"
        )
        path = tmp_path / "lcm.safetensors"
    targets = {n for n, m in sd1.unet.named_modules() if n.endswith(LCM_TARGETS)}
    assert any(".resnets." in n and n.endswith("conv1") for n in targets)
    base = _run(sd1)
    unet = sd1.unet
    AdapterState().apply(sd1, [(path, 1.0)])
    adapted = {n for n, m in sd1.unet.named_modules() if isinstance(m, LoraLayer)}
    assert adapted == targets and sd1.unet is unet
    assert np.abs(_run(sd1) - base).max() > 1e-3
