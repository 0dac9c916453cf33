"""Prompt syntax and long prompts: ``<lora:name:weight>`` tags, and encoding past 75 tokens.

CLIP's text encoder sees 77 positions: a start token, 75 prompt tokens and an end token. Like
AUTOMATIC1111, a longer prompt is cut into 75-token chunks; each chunk is wrapped in start/end
tokens, padded to 77 and encoded on its own, and the embeddings are joined along the sequence
axis (the UNet's cross-attention takes any length). Prompt and negative prompt are padded to the
same number of chunks with empty chunks, because the pipeline batches them together.

Prompts within 75 tokens give exactly what the pipeline computes from the string, so they make
the same pictures as before. torch is imported inside the functions, never at module import.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sdstudio.core.errors import RequestError
from sdstudio.core.tokens import CLIP_WINDOW, chunks

_LORA_TAG = re.compile(r"<\s*lora\s*:([^<>]*)>", re.IGNORECASE)


@dataclass(frozen=True)
class LoraRef:
    """A LoRA named in a prompt, with the weight to apply it at."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class ParsedPrompt:
    """The prompt text the encoder should see, and the LoRAs its tags asked for."""

    text: str
    loras: tuple[LoraRef, ...] = ()


def parse_prompt(text: str) -> ParsedPrompt:
    """Take ``<lora:name>`` and ``<lora:name:weight>`` tags out of ``text``.

    A LoRA named twice gets the sum of its weights (applying a LoRA twice adds its change twice).
    Text without tags comes back unchanged; where tags were removed, the doubled spaces and
    commas they leave behind are tidied up.
    """
    weights: dict[str, LoraRef] = {}
    for match in _LORA_TAG.finditer(text):
        ref = _lora_ref(match.group(0), match.group(1))
        key = ref.name.casefold()
        if key in weights:
            ref = LoraRef(weights[key].name, weights[key].weight + ref.weight)
        weights[key] = ref
    if not weights:
        return ParsedPrompt(text)
    return ParsedPrompt(_tidy(_LORA_TAG.sub(" ", text)), tuple(weights.values()))


def _lora_ref(tag: str, inner: str) -> LoraRef:
    name, *rest = inner.split(":")
    name = name.strip()
    if not name:
        raise RequestError(f"{tag} names no LoRA: write <lora:name> or <lora:name:0.8>.")
    if len(rest) > 1:
        raise RequestError(
            f"{tag} has more than one weight: write <lora:{name}:0.8> (one weight for the "
            "whole LoRA)."
        )
    if not rest:
        return LoraRef(name)
    try:
        weight = float(rest[0].strip())
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise RequestError(
            f"{tag} has weight '{rest[0].strip()}', which is not a number: write a weight such "
            f"as <lora:{name}:0.8>, or <lora:{name}> for 1.0."
        )
    return LoraRef(name, weight)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,(?:\s*,)+", ",", text)  # ", ," left where a tag stood
    text = re.sub(r"\s+,", ",", text)
    return text.strip(" ,")


def count_tokens(tokenizer: Any, text: str) -> int:
    """How many tokens the encoder reads for ``text`` (start/end tokens not counted).

    ``<lora:...>`` tags are not counted (they never reach the encoder), and a multi-vector
    textual-inversion token counts as the vectors it stands for.
    """
    text = _LORA_TAG.sub(" ", text)
    return len(_token_ids(tokenizer, text))


def chunk_count(n_tokens: int) -> int:
    """How many 75-token chunks ``n_tokens`` prompt tokens are encoded in (at least one)."""
    return chunks(n_tokens)


def encode_prompt(
    pipe: Any,
    prompt: str,
    negative: str | None,
    *,
    device: Any = None,
    clip_skip: int | None = None,
) -> dict[str, Any]:
    """Pipeline keyword arguments holding the encoded prompt and negative prompt.

    Returns ``prompt_embeds`` and ``negative_prompt_embeds`` (``[1, chunks * 77, dim]``), plus
    ``pooled_prompt_embeds`` and ``negative_pooled_prompt_embeds`` for SDXL pipelines. An empty
    or ``None`` negative is treated as the pipeline treats ``negative_prompt=None`` (SDXL: zeros
    when the model says ``force_zeros_for_empty_prompt``). ``clip_skip`` counts as in diffusers
    (1 = the layer before the last) and, unlike diffusers, applies to the negative prompt too.
    Works with the txt2img, img2img and inpaint pipelines of both families.
    """
    import torch

    device = device if device is not None else pipe._execution_device
    with torch.no_grad():
        if not hasattr(pipe, "text_encoder_2"):
            return _encode_sd1(pipe, prompt or "", negative or "", device, clip_skip)
        return _encode_sdxl(pipe, prompt or "", negative or "", device, clip_skip)


def _encode_sdxl(
    pipe: Any, prompt: str, negative: str, device: Any, clip_skip: int | None
) -> dict[str, Any]:
    import torch

    pairs = [
        (tokenizer, encoder)
        for tokenizer, encoder in (
            (pipe.tokenizer, pipe.text_encoder),
            (pipe.tokenizer_2, pipe.text_encoder_2),
        )
        if tokenizer is not None and encoder is not None
    ]
    zero_negative = not negative and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", 0))
    texts = [prompt] if zero_negative else [prompt, negative]
    ids = [[_token_ids(tokenizer, t) for tokenizer, _ in pairs] for t in texts]
    n = max(chunk_count(len(i)) for per_text in ids for i in per_text)
    layer = -2 if clip_skip is None else -(clip_skip + 2)  # SDXL reads the penultimate layer
    dtype = pipe.text_encoder_2.dtype if pipe.text_encoder_2 is not None else pipe.unet.dtype

    encoded = []
    for per_text in ids:
        hidden, pooled = [], None
        for (tokenizer, encoder), token_ids in zip(pairs, per_text, strict=True):
            batch, _mask = _chunk_batch(tokenizer, encoder, token_ids, n)
            output = encoder(batch.to(_module_device(encoder)), output_hidden_states=True)
            if output[0].ndim == 2:  # the projected, pooled output of text_encoder_2
                pooled = output[0][:1]  # from the first chunk, as A1111 does
            hidden.append(output.hidden_states[layer].to(device))
        embeds = torch.cat(hidden, dim=-1)
        embeds = embeds.reshape(1, -1, embeds.shape[-1]).to(dtype=dtype, device=device)
        encoded.append((embeds, pooled.to(dtype=dtype, device=device)))
    if zero_negative:
        encoded.append((torch.zeros_like(encoded[0][0]), torch.zeros_like(encoded[0][1])))
    (positive, pooled), (negative_embeds, negative_pooled) = encoded
    return {
        "prompt_embeds": positive,
        "negative_prompt_embeds": negative_embeds,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
    }


def _encode_sd1(
    pipe: Any, prompt: str, negative: str, device: Any, clip_skip: int | None
) -> dict[str, Any]:
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    ids = [_token_ids(tokenizer, prompt), _token_ids(tokenizer, negative)]
    n = max(chunk_count(len(i)) for i in ids)
    dtype = encoder.dtype
    embeds = []
    for token_ids in ids:
        batch, mask = _chunk_batch(tokenizer, encoder, token_ids, n)
        batch = batch.to(_module_device(encoder))
        mask = mask.to(batch.device) if getattr(encoder.config, "use_attention_mask", 0) else None
        if clip_skip is None:
            hidden = encoder(batch, attention_mask=mask)[0]
        else:
            output = encoder(batch, attention_mask=mask, output_hidden_states=True)
            # transformers 5 has no ``text_model`` wrapper (diffusers 0.42.1 still looks for it)
            norm = getattr(encoder, "text_model", encoder).final_layer_norm
            hidden = norm(output.hidden_states[-(clip_skip + 1)])
        embeds.append(hidden.reshape(1, -1, hidden.shape[-1]).to(dtype=dtype, device=device))
    return {"prompt_embeds": embeds[0], "negative_prompt_embeds": embeds[1]}


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    """The prompt's token ids without start/end tokens, multi-vector embeddings expanded."""
    # a max_length with truncation off keeps transformers from warning about > 77 tokens
    encoded = tokenizer(text, add_special_tokens=False, truncation=False, max_length=1 << 20)
    return _expand_multivector(tokenizer, list(encoded.input_ids))


def _expand_multivector(tokenizer: Any, ids: list[int]) -> list[int]:
    """``tok`` -> ``tok tok_1 tok_2`` for textual inversions with several vectors (as diffusers
    does on the prompt string before tokenizing)."""
    added = tokenizer.added_tokens_encoder
    names = {i: token for token, i in added.items() if f"{token}_1" in added}
    if not names or not names.keys() & set(ids):
        return ids
    expanded = []
    for i in ids:
        expanded.append(i)
        if i in names:
            k = 1
            while f"{names[i]}_{k}" in added:
                expanded.append(added[f"{names[i]}_{k}"])
                k += 1
    return expanded


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _chunk_batch(
    tokenizer: Any, encoder: Any, token_ids: list[int], n_chunks: int
) -> tuple[Any, Any]:
    """``[n_chunks, 77]`` input ids (each chunk of 75 wrapped in start/end tokens and padded)
    and the matching attention mask (1 on the start, prompt and end tokens)."""
    import torch

    length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
    window = min(length - 2, CLIP_WINDOW)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, _pad_id(tokenizer)
    rows, masks = [], []
    for index in range(n_chunks):
        piece = token_ids[index * window : (index + 1) * window]
        row = [bos, *piece, eos]
        rows.append(row + [pad] * (length - len(row)))
        masks.append([1] * len(row) + [0] * (length - len(row)))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)


def _module_device(module: Any) -> Any:
    """Where the module's inputs go (with CPU offload: where its hook runs it, not its weights)."""
    from diffusers.utils.torch_utils import get_module_execution_device

    return get_module_execution_device(module)
