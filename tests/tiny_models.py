"""Tiny random Stable Diffusion pipelines, built from configs (as diffusers' fast tests do).

No download: the CLIP tokenizer is made offline from a byte-level vocabulary with no merges.
Tests save these to a folder and load them back through ``resolve_model``, the path users take.
"""

from __future__ import annotations

from pathlib import Path


def _bytes_to_unicode() -> list[str]:
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _bytes_to_unicode():
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=1000,
        **extra,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=32,
    ).eval()


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def tiny_sd1(inpainting: bool):
    """A tiny SD1.x pipeline: 9-channel inpainting UNet or a plain 4-channel one."""
    import torch
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=9 if inpainting else 4,
        out_channels=4,
        cross_attention_dim=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
    ).eval()
    torch.manual_seed(0)
    vae = _vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config()).eval()
    cls = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    return cls(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl(inpainting: bool = False, width_2: int = 32):
    """A tiny SDXL pipeline (two text encoders, text-time conditioning). ``width_2`` is the
    second encoder's width: real SDXL's differ (768, 1280), and loading a single file needs
    them to differ, since diffusers tells the two apart by width."""
    import torch
    from diffusers import (
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=9 if inpainting else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + text_encoder_2's projection (32)
        cross_attention_dim=32 + width_2,
        norm_num_groups=32,
    ).eval()
    torch.manual_seed(0)
    vae = _vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(hidden_act="gelu", projection_dim=32)).eval()
    torch.manual_seed(0)
    config_2 = _text_config(hidden_act="gelu", projection_dim=32)
    config_2.hidden_size = width_2
    text_encoder_2 = CLIPTextModelWithProjection(config_2).eval()
    cls = StableDiffusionXLInpaintPipeline if inpainting else StableDiffusionXLPipeline
    extra = {"requires_aesthetics_score": False} if inpainting else {}
    return cls(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        scheduler=_scheduler(),
        **extra,
    )


def save_tiny(pipe, folder: Path) -> Path:
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


class Payload:
    """Unpickling this writes ``marker``: proof that code in a pickle ran. It pickles as a call
    to ``pathlib.Path.write_text``, so the pickle names nothing of ours and runs anywhere."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the payload ran"))


def pickle_trap(path: Path, marker: Path, *, torch_zip: bool = False, **tensors) -> Path:
    """Write a pickle at ``path`` that writes ``marker`` when unpickled: a raw pickle, or torch's
    zip format (``torch.save``). ``tensors`` go in beside the payload, like real weights."""
    import pickle

    state = {**tensors, "payload": Payload(marker)}
    if torch_zip:
        import torch

        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=4))
    return path


def tiny_controlnet(unet, seed: int = 0, scale: float = 0.3):
    """A tiny ControlNet copied from a tiny UNet (``ControlNetModel.from_unet``), as a trained
    one would start. Its zero convolutions are made random (seeded), or a control could not
    change anything: a trained ControlNet's are not zero."""
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    return _random_zero_convs(controlnet, seed, scale)


def _random_zero_convs(controlnet, seed: int, scale: float):
    """``controlnet`` with its zero convolutions drawn at random (seeded), evaluated."""
    import torch

    torch.manual_seed(seed)
    zero_convs = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.normal_(0.0, scale)
            conv.bias.normal_(0.0, scale)
    return controlnet.eval()


def save_controlnet(controlnet, folder: Path) -> Path:
    """A diffusers ControlNet folder: config.json + diffusion_pytorch_model.safetensors."""
    controlnet.save_pretrained(folder, safe_serialization=True)
    return folder


def saved_controlnet(folder: Path, *, xl: bool = False, seed: int = 0) -> Path:
    """A tiny ControlNet folder for the tiny SD1 (or SDXL) model, built from its UNet."""
    unet = (tiny_sdxl() if xl else tiny_sd1(inpainting=False)).unet
    return save_controlnet(tiny_controlnet(unet, seed=seed), folder)


def tiny_union_controlnet(seed: int = 0, scale: float = 0.3):
    """A tiny ControlNet-Union model for the tiny SDXL model (6 control modes, as the first
    union release). ``from_unet`` keeps the union's 320-wide mode transformer, which must match
    the UNet's first block; so the config is taken from it with the widths made tiny, and the
    zero convolutions made random (seeded), as in ``tiny_controlnet``."""
    import torch
    from diffusers import ControlNetUnionModel

    unet = tiny_sdxl().unet
    config = dict(
        ControlNetUnionModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32)).config
    )
    width = unet.config.block_out_channels[0]
    config.update(num_trans_channel=width, num_proj_channel=width, num_trans_head=2)
    torch.manual_seed(seed)
    union = ControlNetUnionModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    return _random_zero_convs(union, seed, scale)


def saved_union_controlnet(folder: Path, seed: int = 0) -> Path:
    """A tiny ControlNet-Union folder for the tiny SDXL model."""
    return save_controlnet(tiny_union_controlnet(seed), folder)
