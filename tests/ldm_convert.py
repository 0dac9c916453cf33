"""Diffusers pipeline -> original "LDM" single-file state dict (the layout model sites publish).

The inverse of diffusers' own single-file converters (``diffusers.loaders.single_file_utils``),
general over block counts and layers per block so that it works for the tiny test pipelines
as well as for full-size SD 1.5 and SDXL:

- UNet  ``model.diffusion_model.*``  (input_blocks / middle_block / output_blocks)
- VAE   ``first_stage_model.*``      (encoder.down.N.block.M, 1x1-conv attention)
- SD1 text encoder   ``cond_stage_model.transformer.text_model.*`` (Hugging Face CLIP names)
- SDXL text encoders ``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L) and
  ``conditioner.embedders.1.model.*`` (OpenCLIP names: resblocks, fused in_proj, text_projection)

``tiny_sdxl_for_ldm`` builds a tiny SDXL pipeline that survives that round trip.
"""

from __future__ import annotations

import re
from pathlib import Path

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
          ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
          ("conv_shortcut", "skip_connection")]  # fmt: skip
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip


def _resnet(rest: str) -> str:
    for new, old in RESNET:
        rest = rest.replace(new + ".", old + ".", 1) if rest.startswith(new + ".") else rest
    return rest


def unet_to_ldm(state: dict, config) -> dict:
    """UNet2DConditionModel state dict -> ``model.diffusion_model.*`` keys."""
    per = config["layers_per_block"] + 1  # resnets per down block, plus the downsampler slot
    up_with_attention = {
        i for i, kind in enumerate(config["up_block_types"]) if kind.startswith("CrossAttn")
    }
    out = {}
    for key, value in state.items():
        head, _, tail = key.rpartition(".")
        if head in UNET_TOP:
            new = f"{UNET_TOP[head]}.{tail}"
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = 1 + block * per + j
            new = f"input_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"  # fmt: skip
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = block * per + j
            new = f"output_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"  # fmt: skip
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            block = int(m[1])
            slot = 2 if block in up_with_attention else 1
            new = f"output_blocks.{block * per + per - 1}.{slot}.conv.{m[2]}"
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
VAE_TOP = {"conv_norm_out": "norm_out"}


def vae_to_ldm(state: dict, config) -> dict:
    """AutoencoderKL state dict -> ``first_stage_model.*`` keys."""
    blocks = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        new = key.replace("conv_shortcut", "nin_shortcut")
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}"
            if m[3] == "weight" and value.ndim == 2:
                value = value[:, :, None, None]
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", new):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(.*)", new):
            new = f"encoder.down.{m[1]}.block.{m[2]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", new):
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(.*)", new):
            new = f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", new):
            new = f"decoder.up.{blocks - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", new):
            new = f"{m[1]}.norm_out.{m[2]}"
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(state: dict, prefix: str) -> dict:
    """Hugging Face CLIPTextModel state dict -> ``prefix + text_model.*`` (the same names)."""
    import torch

    out = {
        prefix + (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in state.items()
    }
    length = out[prefix + "text_model.embeddings.position_embedding.weight"].shape[0]
    # Real SD 1.x checkpoints carry this buffer; diffusers must ignore it.
    out.setdefault(prefix + "text_model.embeddings.position_ids", torch.arange(length)[None])
    return out


OPEN_CLIP = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
             ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")]  # fmt: skip


def open_clip_to_ldm(state: dict, prefix: str) -> dict:
    """CLIPTextModelWithProjection state dict -> OpenCLIP names under ``prefix``."""
    import torch

    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {
        prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        prefix + "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    layers = {int(m[1]) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    for i in sorted(layers):
        source, target = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{source}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{target}attn.in_proj_{kind}"] = torch.cat(qkv)
        for key in [k for k in state if k.startswith(source)]:
            rest = key.removeprefix(source)
            for new, old in OPEN_CLIP:
                rest = rest.replace(new, old)
            out[target + rest] = state.pop(key)
    for kind in ("weight", "bias"):
        out[f"{prefix}ln_final.{kind}"] = state.pop(f"final_layer_norm.{kind}")
    state.pop("embeddings.position_ids", None)
    assert not state, f"unconverted text encoder keys: {sorted(state)}"
    return out


def pipeline_to_ldm(pipe) -> dict:
    """A whole SD 1.x or SDXL pipeline -> one LDM state dict."""
    out = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    out.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    if getattr(pipe, "text_encoder_2", None) is None:
        out.update(clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.transformer."))
    else:
        out.update(clip_to_ldm(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer."))  # fmt: skip
        out.update(open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))  # fmt: skip
    return out


def save_ldm(pipe, path: Path) -> Path:
    """Write ``pipe`` as a single LDM-layout ``.safetensors`` file, as model sites publish them."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in pipeline_to_ldm(pipe).items()}
    save_file(state, str(path))
    return path


def tiny_sdxl_for_ldm(inpainting: bool):
    """tiny_models.tiny_sdxl with text encoders of different widths (32 and 48), as in real SDXL
    (768 and 1280): diffusers tells the two encoders of a single file apart by their width."""
    from tiny_models import tiny_sdxl

    return tiny_sdxl(inpainting, width_2=48)
