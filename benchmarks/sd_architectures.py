"""Full-size Stable Diffusion 1.5 and SDXL architectures with random weights (no download).

The configs are those of the published models; the tokenizer is the tiny offline one the tests
use (token ids only need to be valid for the embedding table). Random weights give meaningless
pictures but the exact compute and memory of the real models.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).parents[1]))

from tiny_models import tiny_tokenizer  # noqa: E402


def _text_config(hidden, layers, heads, inner, act, projection):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=inner,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def _vae(scaling_factor: float, force_upcast: bool):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        norm_num_groups=32,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=1024 if force_upcast else 512,
        scaling_factor=scaling_factor,
        force_upcast=force_upcast,
    )


def sd15_inpaint(sample_size: int = 64):
    """SD 1.5 inpainting (9-channel UNet). ``sample_size`` 64 -> native 512 px."""
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=9,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    text = CLIPTextModel(_text_config(768, 12, 12, 3072, "quick_gelu", 768))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionInpaintPipeline(
        unet=unet.eval(),
        vae=_vae(0.18215, False).eval(),
        text_encoder=text.eval(),
        tokenizer=tiny_tokenizer(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sdxl_inpaint(sample_size: int = 128):
    """SDXL 1.0 inpainting (9-channel UNet). ``sample_size`` 128 -> native 1024 px."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=9,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    )
    text = CLIPTextModel(_text_config(768, 12, 12, 3072, "quick_gelu", 768))
    text_2 = CLIPTextModelWithProjection(_text_config(1280, 32, 20, 5120, "gelu", 1280))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLInpaintPipeline(
        unet=unet.eval(),
        vae=_vae(0.13025, True).eval(),
        text_encoder=text.eval(),
        text_encoder_2=text_2.eval(),
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        scheduler=scheduler,
        requires_aesthetics_score=False,
    )


def build_and_save(builder, folder: Path, device: str, dtype) -> Path:
    """Build on ``device`` (fast random init on a GPU), cast, save as safetensors."""
    import torch

    torch.manual_seed(0)
    with torch.device(device):
        pipe = builder()
    pipe.to(dtype=dtype)
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe
    return folder


CACHE = Path(__file__).parent / ".cache"


def cached_model(name: str, builder, device: str, dtype) -> Path:
    """Build and save a random model once; later benchmark runs load the saved folder."""
    folder = CACHE / name
    if not (folder / "model_index.json").exists():
        build_and_save(builder, folder, device, dtype)
    return folder


def cpu_sd15_256() -> Path:
    """The SD 1.5 inpainting architecture at a native 256 px (sample size 32), fp32, for CPU runs."""
    import torch

    return cached_model("sd15-inpaint-256", lambda: sd15_inpaint(32), "cpu", torch.float32)


def cpu_sd15_engine():
    """(engine, model folder): our engine with the native-256 SD 1.5 architecture loaded, on the CPU."""
    import torch

    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    folder = str(cpu_sd15_256())
    engine = DiffusersEngine(PipelineCache(device="cpu", dtype=torch.float32))
    engine.load(folder)
    return engine, folder


def sd15_controlnet(sample_size: int = 64):
    """An SD 1.5 ControlNet (the published lllyasviel/control_v11p_sd15_* config, 4 input
    channels whatever the base UNet has), random weights."""
    from diffusers import ControlNetModel

    return ControlNetModel(
        in_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    ).eval()
