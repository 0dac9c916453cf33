"""Prompt syntax (<lora:...> tags) and long prompts encoded in 75-token chunks."""

import numpy as np
import pytest

from sdstudio.core.errors import RequestError
from sdstudio.engine.diffusion.prompts import (
    LoraRef,
    ParsedPrompt,
    chunk_count,
    count_tokens,
    encode_prompt,
    parse_prompt,
)


# The tiny test tokenizer has no merges: every letter is one token, spaces are free.
def words(n: int) -> str:
    return " ".join("x" * n)  # n tokens, all the same ("x</w>")


LONG = words(200)  # chunks of 75, 75 and 50 tokens


# --- <lora:...> tags ---------------------------------------------------------------------------


def test_text_without_tags_is_unchanged():
    text = "a cat,,  on a mat , (best:1.2)"
    assert parse_prompt(text) == ParsedPrompt(text, ())


@pytest.mark.parametrize(
    ("text", "clean", "loras"),
    [
        ("a cat <lora:ink>", "a cat", (LoraRef("ink", 1.0),)),
        ("<lora:ink:0.8>, a cat", "a cat", (LoraRef("ink", 0.8),)),
        ("a cat, <lora:ink:0.5>, on a mat", "a cat, on a mat", (LoraRef("ink", 0.5),)),
        ("a  cat <  LoRA : my ink : -1.5e-1 >  ", "a cat", (LoraRef("my ink", -0.15),)),
        (
            "<lora:a:1><lora:b:.3> cat,, <lora:style/c:2>",
            "cat",
            (LoraRef("a", 1.0), LoraRef("b", 0.3), LoraRef("style/c", 2.0)),
        ),
        ("<lora:Ink:0.5> a <lora:ink:0.25>", "a", (LoraRef("Ink", 0.75),)),  # weights add up
        ("<lora:ink:0.8>", "", (LoraRef("ink", 0.8),)),
    ],
)
def test_lora_tags_are_taken_out(text, clean, loras):
    assert parse_prompt(text) == ParsedPrompt(clean, loras)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("<lora:ink:strong>", "not a number"),
        ("<lora:ink:>", "not a number"),
        ("<lora:ink:nan>", "not a number"),
        ("<lora::0.5>", "names no LoRA"),
        ("<lora:ink:0.5:0.3>", "more than one weight"),
    ],
)
def test_bad_tags_say_what_to_write(text, words):
    with pytest.raises(RequestError, match=words) as caught:
        parse_prompt(text)
    assert "<lora:" in str(caught.value)


def test_other_angle_brackets_stay():
    assert parse_prompt("a <cat> <hypernet:x:1>").text == "a <cat> <hypernet:x:1>"


# --- counting ----------------------------------------------------------------------------------


def test_count_tokens_is_exact_and_ignores_lora_tags():
    from tiny_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    assert count_tokens(tokenizer, "") == 0
    assert count_tokens(tokenizer, "a cat") == 4  # a, c, a, t
    assert count_tokens(tokenizer, "a cat <lora:ink:0.7>") == 4
    assert count_tokens(tokenizer, LONG) == 200


def test_chunk_count():
    assert [chunk_count(n) for n in (0, 1, 75, 76, 150, 151, 200)] == [1, 1, 1, 2, 2, 3, 3]


# --- encoding ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd1():
    import torch
    from tiny_models import tiny_sd1

    torch.set_num_threads(1)
    return tiny_sd1(inpainting=False)


@pytest.fixture(scope="module")
def sdxl():
    import torch
    from tiny_models import tiny_sdxl

    torch.set_num_threads(1)
    return tiny_sdxl()


def _close(a, b):
    assert a.shape == b.shape
    assert float((a - b).abs().max().detach()) < 1e-5


@pytest.mark.parametrize("negative", [None, "", "blurry, dark"])
@pytest.mark.parametrize("prompt", ["", "a cat on a mat", "y" * 75])
def test_short_prompts_match_the_pipeline_sd1(sd1, prompt, negative):
    ours = encode_prompt(sd1, prompt, negative, device="cpu")
    theirs = sd1.encode_prompt(prompt, "cpu", 1, True, negative_prompt=negative or None)
    assert set(ours) == {"prompt_embeds", "negative_prompt_embeds"}
    _close(ours["prompt_embeds"], theirs[0])
    _close(ours["negative_prompt_embeds"], theirs[1])


@pytest.mark.parametrize("negative", [None, "blurry, dark"])
@pytest.mark.parametrize("prompt", ["", "a cat on a mat", "y" * 75])
def test_short_prompts_match_the_pipeline_sdxl(sdxl, prompt, negative):
    ours = encode_prompt(sdxl, prompt, negative, device="cpu")
    theirs = sdxl.encode_prompt(prompt, device="cpu", negative_prompt=negative)
    keys = [
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    ]
    assert sorted(ours) == sorted(keys)
    for key, expected in zip(keys, theirs, strict=True):
        _close(ours[key], expected)
    if negative is None:  # force_zeros_for_empty_prompt, as the pipeline does
        assert not ours["negative_prompt_embeds"].any()
        assert not ours["negative_pooled_prompt_embeds"].any()


def test_clip_skip_reads_an_earlier_layer(sd1, sdxl):
    import torch

    # diffusers 0.42.1 cannot do clip_skip for SD1 with transformers 5 (it looks for
    # ``text_encoder.text_model``, which is gone): compute the expected value by hand
    ours = encode_prompt(sd1, "a cat", None, device="cpu", clip_skip=1)
    ids = sd1.tokenizer("a cat", padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        output = sd1.text_encoder(ids.input_ids, output_hidden_states=True)
        expected = sd1.text_encoder.final_layer_norm(output.hidden_states[-2])
    _close(ours["prompt_embeds"], expected)
    plain = encode_prompt(sd1, "a cat", None, device="cpu")["prompt_embeds"]
    assert float((ours["prompt_embeds"] - plain).abs().max()) > 1e-3

    ours = encode_prompt(sdxl, "a cat", None, device="cpu", clip_skip=1)
    _close(ours["prompt_embeds"], sdxl.encode_prompt("a cat", device="cpu", clip_skip=1)[0])


def test_long_prompt_is_encoded_in_chunks_sd1(sd1):
    ours = encode_prompt(sd1, LONG, "blurry", device="cpu")
    assert ours["prompt_embeds"].shape == (1, 3 * 77, 32)
    assert ours["negative_prompt_embeds"].shape == (1, 3 * 77, 32)  # padded to the same length
    # each chunk is encoded on its own: chunk 1 is what the pipeline makes of the first 75 tokens
    # (it cuts the rest off), chunk 3 what it makes of the last 50
    first, *_ = sd1.encode_prompt(words(75), "cpu", 1, False)
    last, *_ = sd1.encode_prompt(words(50), "cpu", 1, False)
    chunks = ours["prompt_embeds"].split(77, dim=1)
    _close(chunks[0], first)
    _close(chunks[1], first)
    _close(chunks[2], last)
    # the negative: "blurry" then two empty chunks
    empty, blurry = sd1.encode_prompt("", "cpu", 1, True, negative_prompt="blurry")
    negative = ours["negative_prompt_embeds"].split(77, dim=1)
    _close(negative[0], blurry)
    _close(negative[1], empty)
    _close(negative[2], empty)


def test_long_negative_pads_the_prompt(sd1):
    ours = encode_prompt(sd1, "a cat", LONG)
    assert ours["prompt_embeds"].shape == ours["negative_prompt_embeds"].shape == (1, 231, 32)


def test_long_prompt_is_encoded_in_chunks_sdxl(sdxl):
    ours = encode_prompt(sdxl, LONG, None, device="cpu")
    assert ours["prompt_embeds"].shape == (1, 3 * 77, 64)  # both encoders' 32 side by side
    assert ours["negative_prompt_embeds"].shape == (1, 3 * 77, 64)
    assert ours["pooled_prompt_embeds"].shape == (1, 32)
    assert ours["negative_pooled_prompt_embeds"].shape == (1, 32)
    first, _, pooled, _ = sdxl.encode_prompt(words(75), device="cpu")
    last, *_ = sdxl.encode_prompt(words(50), device="cpu")
    chunks = ours["prompt_embeds"].split(77, dim=1)
    _close(chunks[0], first)
    _close(chunks[2], last)
    _close(ours["pooled_prompt_embeds"], pooled)  # pooled from the first chunk
    assert encode_prompt(sdxl, LONG, "z" * 80)["negative_prompt_embeds"].shape == (1, 231, 64)


def _run(pipe, **kwargs):
    import torch

    return pipe(
        num_inference_steps=2,
        guidance_scale=5.0,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(3),
        output_type="np",
        **kwargs,
    ).images


def test_short_prompt_embeds_give_the_same_picture(sd1):
    by_string = _run(sd1, prompt="a cat", negative_prompt="dark")
    by_embeds = _run(sd1, **encode_prompt(sd1, "a cat", "dark"))
    np.testing.assert_allclose(by_embeds, by_string, atol=1e-5)


def test_pipelines_run_with_long_prompts(sd1, sdxl):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLImg2ImgPipeline
    from PIL import Image

    long_image = _run(sd1, **encode_prompt(sd1, LONG, "blurry"))
    assert long_image.shape == (1, 64, 64, 3) and np.isfinite(long_image).all()
    assert not np.array_equal(long_image, _run(sd1, **encode_prompt(sd1, words(75), "blurry")))

    image = Image.fromarray(np.full((64, 64, 3), 128, np.uint8))
    mask = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))
    inpaint = StableDiffusionInpaintPipeline.from_pipe(sd1)
    embeds = encode_prompt(inpaint, LONG, None)
    _close(embeds["prompt_embeds"], encode_prompt(sd1, LONG, None)["prompt_embeds"])
    result = _run(inpaint, image=image, mask_image=mask, strength=1.0, **embeds)
    assert np.isfinite(result).all()

    assert np.isfinite(_run(sdxl, **encode_prompt(sdxl, LONG, "blurry"))).all()
    img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(sdxl)
    result = _run(img2img, image=image, strength=0.9, **encode_prompt(img2img, LONG, None))
    assert np.isfinite(result).all()
