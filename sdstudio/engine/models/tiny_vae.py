"""Download presets for the tiny VAEs (TAESD for SD 1.x, TAESDXL for SDXL).

A tiny VAE (``diffusers.AutoencoderTiny``, a few MB) decodes latents in a fraction of the full
VAE's time: live frames and step previews use it when it is installed (found offline in the hub
cache or in the models folder's ``taesd`` folder: sdstudio.engine.diffusion.tiny_vae).
Both repos hold ``config.json`` and ``diffusion_pytorch_model.safetensors`` at their root (and
pickled ``.pth`` files, which are never downloaded: ``TINY_VAE_ALLOW_PATTERNS``). MIT licence.
"""

from __future__ import annotations

from sdstudio.core.request import ModelFamily
from sdstudio.engine.models.library import Preset

TINY_VAE_REPOS = {
    ModelFamily.SD1: "madebyollin/taesd",
    ModelFamily.SDXL: "madebyollin/taesdxl",
}
TINY_VAE_ALLOW_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]
"""What a tiny VAE download takes from its repo (the files sit at the root, not in subfolders
as a pipeline's do)."""
MIT = "MIT"

TINY_VAE_PRESETS = (
    Preset(
        "TAESD (tiny VAE, SD 1.x)",
        TINY_VAE_REPOS[ModelFamily.SD1],
        ModelFamily.SD1,
        False,
        0.01,
        "Fast live frames and sharper step previews for SD 1.x models.",
        MIT,
    ),
    Preset(
        "TAESDXL (tiny VAE, SDXL)",
        TINY_VAE_REPOS[ModelFamily.SDXL],
        ModelFamily.SDXL,
        False,
        0.01,
        "Fast live frames and sharper step previews for SDXL models.",
        MIT,
    ),
)
