"""Download presets for the specialist models (DESIGN.md section 9), each with its licence and
where it came from.

- LaMa (big-lama, removal): the authors' weights (advimman/lama, Apache-2.0) as one
  ``big-lama.safetensors`` repacked by michaelgold on the Hugging Face Hub, pinned to a revision
  and checked against its sha256 after download. Its keys start ``generator.model.``, which
  spandrel recognises as LaMa. The other places big-lama is published were no use:
  Sanster's ``big-lama.pt`` (IOPaint, lama-cleaner) is TorchScript, which spandrel cannot read
  and SD Studio never loads; the authors' ``big-lama.zip`` holds a Lightning ``best.ckpt``
  pickle with training objects beside the tensors. It lands in the models folder's
  ``specialists`` folder, where ``find_lama`` looks.
- Segment Anything (selection) in the transformers format: SlimSAM (Zigeng/SlimSAM-uniform-77,
  a pruned SAM-ViT-B, about 40 MB, the default) and SAM ViT-B (facebook/sam-vit-base), both
  Apache-2.0, as hub snapshots (config, preprocessor config and safetensors only), where
  ``sdstudio.engine.models.sam.find_sam`` looks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

APACHE = "Apache-2.0"


REMOVAL = "removal"
SELECTION = "selection"
"""Purposes, in the words 13A's ``describe`` uses for a model it recognises."""


@dataclass(frozen=True)
class SpecialistPreset:
    """A specialist model to download. With ``filename``: one file of a hub repo, landing in
    the specialists folder as ``target`` (spandrel models); without: a transformers model, a
    hub snapshot of ``SAM_ALLOW_PATTERNS`` in the hub cache."""

    title: str
    repo_id: str
    architecture: str
    purpose: str
    approx_gb: float
    note: str
    licence: str
    source: str
    """Where the weights came from, in words: who made them, who published this file."""
    filename: str | None = None
    target: str | None = None
    revision: str | None = None
    """A pinned commit: the file the sha256 was taken from."""
    sha256: str | None = None
    size_bytes: int | None = None
    commercial: bool = True

    family: ClassVar[None] = None
    """Specialists belong to no Stable Diffusion family (the library's Family column)."""

    @property
    def kind(self) -> str:
        return f"{self.purpose} ({self.architecture})"

    @property
    def key(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id


LAMA_PRESET = SpecialistPreset(
    "LaMa (big-lama)",
    "michaelgold/big-lama",
    "LaMa",
    REMOVAL,
    0.2,
    "Learned object removal: Generate > Remove fills with > LaMa, and 'auto' for object-sized "
    "holes. Small enough for the CPU.",
    f"{APACHE} (LaMa by Samsung AI / advimman)",
    "LaMa by R. Suvorov et al. (github.com/advimman/lama), repacked as safetensors in "
    "huggingface.co/michaelgold/big-lama",
    filename="big-lama.safetensors",
    target="big-lama.safetensors",
    revision="98ab7cface89a594b381f32fc7a9f2cae3f91ccc",
    sha256="326ae1889b92d07c8819c35eaf561f8b290d057536eeb12524b72997f31005ec",
)

SAM_ALLOW_PATTERNS = [
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "model.safetensors",
]
"""What a Segment Anything download takes from its repo: never the pickled or TF weights."""
SAM_WEIGHTS = "model.safetensors"

SAM_PRESETS = (
    SpecialistPreset(
        "SlimSAM (small Segment Anything)",
        "Zigeng/SlimSAM-uniform-77",
        "Segment Anything",
        SELECTION,
        0.04,
        "Click-to-select (the Select tool, S): fast on the CPU. The default.",
        f"{APACHE} (SlimSAM, from Meta's SAM, Apache-2.0)",
        "SlimSAM by Z. Chen et al. (github.com/czg1225/SlimSAM), huggingface.co/Zigeng",
    ),
    SpecialistPreset(
        "SAM ViT-B (Segment Anything)",
        "facebook/sam-vit-base",
        "Segment Anything",
        SELECTION,
        0.36,
        "Click-to-select with Meta's base model: finer edges, slower on the CPU.",
        f"{APACHE} (Meta AI)",
        "Segment Anything by Meta AI (github.com/facebookresearch/segment-anything), "
        "huggingface.co/facebook",
    ),
)

UPSCALING = "upscaling"
"""Upscalers land in the models folder's 'upscalers' folder (engine/specialists/upscale.py)."""
BSD3 = "BSD-3-Clause"
_ESRGAN_SOURCE = (
    "Real-ESRGAN by X. Wang et al., Tencent ARC (github.com/xinntao/Real-ESRGAN, its v0.1.0 and "
    "v0.2.1 releases), as uploaded to huggingface.co/2kpr/Real-ESRGAN"
)
UPSCALE_PRESETS = (
    SpecialistPreset(
        "Real-ESRGAN x2plus",
        "2kpr/Real-ESRGAN",
        "ESRGAN",
        UPSCALING,
        0.07,
        "Image > Upscale 2x and 'sdstudio upscale --scale 2': photos, print-size. A .pth: "
        "converted once to .safetensors after you agree.",
        f"{BSD3} (Real-ESRGAN, Xintao Wang)",
        _ESRGAN_SOURCE,
        filename="RealESRGAN_x2plus.pth",
        target="RealESRGAN_x2plus.pth",
        revision="d43aff1f1c922c1d974ae3d9ee9be86580428231",
        sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        size_bytes=67061725,
    ),
    SpecialistPreset(
        "Real-ESRGAN x4plus",
        "2kpr/Real-ESRGAN",
        "ESRGAN",
        UPSCALING,
        0.07,
        "Image > Upscale 4x (and 2x when no 2x model is installed). A .pth: converted once to "
        ".safetensors after you agree.",
        f"{BSD3} (Real-ESRGAN, Xintao Wang)",
        _ESRGAN_SOURCE,
        filename="RealESRGAN_x4plus.pth",
        target="RealESRGAN_x4plus.pth",
        revision="d43aff1f1c922c1d974ae3d9ee9be86580428231",
    ),
)

SPECIALIST_PRESETS = (LAMA_PRESET, *SAM_PRESETS, *UPSCALE_PRESETS)


def preset_for_file(name: str) -> SpecialistPreset | None:
    """The download a file in the specialists folder came from, by its name (its stem with a
    converted ``.safetensors`` sibling counts too)."""
    stem = name.rsplit(".", 1)[0].lower()
    for preset in SPECIALIST_PRESETS:
        if preset.target and preset.target.rsplit(".", 1)[0].lower() == stem:
            return preset
    return None


# -- Faces (issue 14): restorers through spandrel, and the YuNet face detector ---------------------
# GFPGAN v1.4 is published by its authors (TencentARC) as a GitHub release asset, which the
# library's hub download cannot fetch; the file below is a copy on the Hugging Face Hub checked
# against the sha256 and size of the authors' release. It is a pickle (.pth): the library converts
# it once to .safetensors (tensors only) before it is used. RestoreFormer (v1, the GFPGAN
# release's RestoreFormer.pth) likewise; spandrel 0.4 builds RestoreFormer but not
# RestoreFormer++ (spandrel issue 13). CodeFormer (non-commercial, spandrel_extra_arches) is not
# offered. YuNet's ONNX file is data for OpenCV's own runtime (no Python code comes with it).
FACES = "faces"
MIT = "MIT"

FACE_RESTORER_PRESETS = (
    SpecialistPreset(
        "GFPGAN v1.4 (face restoration)",
        "fofr/comfyui",
        "GFPGAN",
        FACES,
        0.35,
        "Restore tab > Faces: brings blurred or damaged faces back. About 15 s per face on a CPU, "
        "well under a second on a GPU. A pickle: converted once to .safetensors after download.",
        f"{APACHE} (GFPGAN by TencentARC)",
        "GFPGAN by X. Wang et al. (github.com/TencentARC/GFPGAN, release v1.3.0 "
        "'GFPGANv1.4.pth'); this copy from huggingface.co/fofr/comfyui",
        filename="facerestore_models/GFPGANv1.4.pth",
        target="GFPGANv1.4.pth",
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        size_bytes=348632874,
    ),
    SpecialistPreset(
        "RestoreFormer (face restoration)",
        "fofr/comfyui",
        "RestoreFormer",
        FACES,
        0.29,
        "Restore tab > Faces: a transformer restorer, often more faithful to the person than "
        "GFPGAN. A pickle: converted once to .safetensors after download.",
        f"{APACHE} (RestoreFormer by Z. Wang et al., as released in TencentARC/GFPGAN)",
        "RestoreFormer by Z. Wang et al. (github.com/wzhouxiff/RestoreFormer), released as "
        "'RestoreFormer.pth' in github.com/TencentARC/GFPGAN v1.3.4; this copy from "
        "huggingface.co/fofr/comfyui",
        filename="facerestore_models/RestoreFormer.pth",
        target="RestoreFormer.pth",
    ),
)
YUNET_PRESET = SpecialistPreset(
    "YuNet (face detector)",
    "opencv/face_detection_yunet",
    "YuNet",
    FACES,
    0.0002,
    "Finds faces and their eyes, nose and mouth for Restore faces (230 KB). Without it a "
    "cascade that ships with OpenCV 4 or scikit-image is used, which misses more faces.",
    f"{MIT} (OpenCV Zoo)",
    "YuNet by S. Yu et al. and OpenCV (github.com/opencv/opencv_zoo, "
    "models/face_detection_yunet), huggingface.co/opencv/face_detection_yunet",
    filename="face_detection_yunet_2023mar.onnx",
    target="face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    size_bytes=232589,
)
FACE_PRESETS = (*FACE_RESTORER_PRESETS, YUNET_PRESET)
SPECIALIST_PRESETS = (*SPECIALIST_PRESETS, *FACE_PRESETS)
