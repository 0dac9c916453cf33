"""Single-file ``.safetensors`` checkpoints: what a file is, and loading it fully offline.

``inspect_checkpoint`` reads only the safetensors header (8-byte length + JSON), never tensor
data, and tells the family (SD 1.x / SDXL) and kind (9-channel inpainting or plain) from tensor
names and shapes, never from the file name. ``load_single_file`` builds the diffusers pipeline
with ``from_single_file`` and the configs shipped in ``sdstudio/resources/configs`` (no hub access).

The shipped configs hold one copy of the CLIP tokenizer vocabulary (``clip-tokenizer/``); it is
copied into a private temporary config folder at load time. ``SDSTUDIO_CHECKPOINT_CONFIG`` names a
local diffusers folder whose configs replace the shipped ones (for unusual checkpoints, and tests).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sdstudio.core.errors import ModelError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.models.folders import PICKLE_SUFFIXES, check_folder, pickle_refusal

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).parents[2] / "resources" / "configs"  # shipped inside the package
TOKENIZER_FILES = ("vocab.json", "merges.txt")
CONFIG_ENV = "SDSTUDIO_CHECKPOINT_CONFIG"
MAX_HEADER = 100_000_000  # the safetensors library's own limit
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16,
              "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64,
              "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}  # fmt: skip

UNET = "model.diffusion_model."
LDM_CONV_IN = UNET + "input_blocks.0.0.weight"
SD1_TEXT = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
XL_TEXT_L = "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"
XL_TEXT_G = "conditioner.embedders.1.model.positional_embedding"
SUPPORTED = "SD Studio runs Stable Diffusion 1.x and SDXL checkpoints"
# Other model families, told apart by a fragment of one of their tensor names.
OTHER_FAMILIES = [
    ("double_blocks.", "Flux"), ("single_transformer_blocks.", "Flux"),
    ("joint_blocks.", "Stable Diffusion 3"), ("context_embedder.", "Stable Diffusion 3 or Flux"),
    ("clip_txt_mapper.", "Stable Cascade"), ("channelwise.", "Stable Cascade"),
    ("control_model.", "ControlNet"), ("controlnet_", "ControlNet"),
    ("motion_modules.", "AnimateDiff motion module"), ("cap_embedder.", "Lumina"),
    ("patchify_proj.", "LTX-Video"), ("head.modulation", "Wan video"),
]  # fmt: skip
LORA_MARKS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up", "hada_w1",
              "lokr_w1", "oft_blocks")  # fmt: skip
VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "first_stage_model.")
PIPELINES = {
    (ModelFamily.SD1, False): ("StableDiffusionPipeline", "sd15"),
    (ModelFamily.SD1, True): ("StableDiffusionInpaintPipeline", "sd15-inpainting"),
    (ModelFamily.SDXL, False): ("StableDiffusionXLPipeline", "sdxl"),
    (ModelFamily.SDXL, True): ("StableDiffusionXLInpaintPipeline", "sdxl-inpainting"),
}

Layout = Literal["ldm", "diffusers-unet"]


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    family: ModelFamily
    inpainting: bool  # a 9-channel UNet
    layout: Layout  # "ldm": a full checkpoint; "diffusers-unet": a UNet on its own
    size_bytes: int

    @property
    def pipeline_class(self) -> str:
        return PIPELINES[self.family, self.inpainting][0]

    @property
    def config_name(self) -> str:
        """The folder under ``resources/configs`` with this checkpoint's configs."""
        return PIPELINES[self.family, self.inpainting][1]


def _damaged(path: Path, why: str) -> ModelError:
    return ModelError(f"'{path.name}' is damaged ({why}); download it again.")


def _not_safetensors(path: Path, head: bytes) -> ModelError:
    if head.startswith((b"PK\x03\x04", b"\x80")):  # a zip (torch.save) or a raw pickle
        return ModelError(
            f"'{path.name}' is not a safetensors file: it is a pickled PyTorch checkpoint with a "
            ".safetensors name. SD Studio never opens pickle files, because they can run code; "
            "get the real .safetensors version of the model."
        )
    return ModelError(
        f"'{path.name}' is not a valid .safetensors file (its header is unreadable): it is "
        "damaged or in another format; download it again."
    )


def _truncated(path: Path, size: int, expected: str) -> ModelError:
    return ModelError(
        f"'{path.name}' is truncated ({size} bytes, {expected}): the download probably stopped "
        "early; download it again."
    )


def _check_entry(path: Path, name: str, entry: Any) -> int:
    """The end offset of one tensor's data, once its header entry is checked."""
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        bad = not all(isinstance(v, int) and v >= 0 for v in (*shape, begin, end)) or end < begin
    except (TypeError, KeyError, ValueError):
        bad = True
    if bad:
        raise _damaged(path, f"the header entry for tensor '{name}' is malformed")
    numel = 1
    for dim in shape:
        numel *= dim
    if dtype in DTYPE_BITS and end - begin != (numel * DTYPE_BITS[dtype] + 7) // 8:
        raise _damaged(path, f"tensor '{name}' {shape} {dtype} does not match its stored size")
    return end


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor name -> {dtype, shape, data_offsets}, checked against the file; no tensor data read."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if len(head) < 8 or length < 2 or length > MAX_HEADER:
            short = "empty" if size == 0 else "too short for a header"
            raise _not_safetensors(path, head) if size >= 8 else _truncated(path, size, short)
        if length > size - 8:
            raise _truncated(path, size, "less than its own header")
        raw = file.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not raw.startswith(b"{") or not isinstance(header, dict):
        raise _not_safetensors(path, head)
    header.pop("__metadata__", None)
    needed = max((_check_entry(path, n, e) for n, e in header.items()), default=0)
    if needed > size - 8 - length:
        raise _truncated(path, size, f"its header describes {needed + 8 + length}")
    return header


def _width(tensors: dict[str, list[int]], name: str) -> int | None:
    shape = tensors.get(name)
    return shape[-1] if shape else None


def _not_a_model(path: Path, tensors: dict[str, list[int]]) -> ModelError:
    names = list(tensors)
    if not names:
        return ModelError(f"'{path.name}' holds no tensors: it is not a model.")
    if any(n.startswith("lora_") or any(m in n for m in LORA_MARKS) for n in names):
        return ModelError(
            f"'{path.name}' looks like a LoRA (lora_ keys), not a model: put it in the LoRA folder "
            "and use it as a LoRA on top of an SD 1.x or SDXL model."
        )
    for fragment, family in OTHER_FAMILIES:
        if any(fragment in n for n in names):
            return ModelError(f"'{path.name}' looks like a {family} model; {SUPPORTED}.")
    small = len(names) <= 8 and all(len(s) <= 2 for s in tensors.values())
    if {"emb_params", "clip_l", "clip_g"} & set(names) or (
        small and all("." not in n for n in names)
    ):
        return ModelError(
            f"'{path.name}' looks like a textual-inversion embedding, not a model: put it in the "
            "embeddings folder and use its name in the prompt."
        )
    if all(n.startswith(VAE_PREFIXES) for n in names):
        return ModelError(
            f"'{path.name}' is a VAE on its own (only encoder/decoder weights), not a full model: "
            "choose a full SD 1.x or SDXL checkpoint."
        )
    if all(n.startswith(("text_model.", "cond_stage_model.", "conditioner.")) for n in names):
        return ModelError(f"'{path.name}' holds only a text encoder, not a full model.")
    return ModelError(
        f"'{path.name}' is not a Stable Diffusion checkpoint (no UNet found); {SUPPORTED}."
    )


def _family(path: Path, context: int | None, xl: bool, sd2_text: bool) -> ModelFamily:
    if xl and context == 1280:
        raise ModelError(f"'{path.name}' looks like the SDXL refiner; {SUPPORTED} (base models).")
    if not xl and (sd2_text or context == 1024):
        raise ModelError(f"'{path.name}' looks like a Stable Diffusion 2.x model; {SUPPORTED}.")
    return ModelFamily.SDXL if xl else ModelFamily.SD1


def _check_complete(
    path: Path, tensors: dict[str, list[int]], xl: bool, context: int | None
) -> None:
    """A full LDM checkpoint has its VAE and text encoders, and they fit its UNet."""
    if not any(n.startswith("first_stage_model.") for n in tensors):
        raise ModelError(
            f"'{path.name}' holds no VAE (first_stage_model.*): it is not a full checkpoint; "
            "choose a checkpoint that includes its VAE."
        )
    widths = [_width(tensors, k) for k in ((XL_TEXT_L, XL_TEXT_G) if xl else (SD1_TEXT,))]
    if None in widths:
        raise ModelError(
            f"'{path.name}' lacks its text encoder(s): it is not a full checkpoint; choose a "
            "checkpoint that includes them."
        )
    text = sum(w for w in widths if w)
    if context != text:
        raise _damaged(path, f"its UNet takes text {context} wide, its text encoders give {text}")


def _classify(path: Path, tensors: dict[str, list[int]]) -> tuple[ModelFamily, bool, Layout]:
    names = tensors.keys()
    layout: Layout
    if "edm_mean" in tensors:  # an SDXL UNet with another noise schedule
        raise ModelError(f"'{path.name}' looks like a Playground v2.5 model; {SUPPORTED}.")
    if LDM_CONV_IN in tensors:
        prefix, conv_in, xl_key, layout = UNET, LDM_CONV_IN, "label_emb.", "ldm"
    elif "conv_in.weight" in tensors and any(n.startswith("down_blocks.") for n in names):
        prefix, conv_in, xl_key, layout = "", "conv_in.weight", "add_embedding.", "diffusers-unet"
    else:
        raise _not_a_model(path, tensors)
    attn = (
        s[-1]
        for n, s in tensors.items()
        if n.startswith(prefix) and n.endswith("attn2.to_k.weight")
    )
    context = next(attn, None)
    xl = any(n.startswith(prefix + xl_key) for n in names)
    sd2_text = any(
        n.startswith(("cond_stage_model.model.", "conditioner.embedders.0.model.")) for n in names
    )
    family = _family(path, context, xl, sd2_text)
    channels = tensors[conv_in][1] if len(tensors[conv_in]) == 4 else None
    if channels not in (4, 9):
        raise ModelError(
            f"'{path.name}' has a UNet with {channels} input channels (an instruct-pix2pix, depth or "
            f"upscaler model?); {SUPPORTED}, plain (4 channels) or inpainting (9 channels)."
        )
    if layout == "ldm":
        _check_complete(path, tensors, xl, context)
    return family, channels == 9, layout


def inspect_checkpoint(path: Path | str) -> CheckpointInfo:
    """What a ``.safetensors`` checkpoint is, from its header alone (milliseconds, any size)."""
    path = Path(path).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise pickle_refusal(path)
    if path.suffix.lower() != ".safetensors":
        raise ModelError(
            f"'{path.name}' is not a .safetensors checkpoint; {SUPPORTED} in that format."
        )
    if not path.is_file():
        raise ModelError(f"The checkpoint '{path}' does not exist (moved or deleted?).")
    tensors = {name: list(entry["shape"]) for name, entry in read_header(path).items()}
    family, inpainting, layout = _classify(path, tensors)
    return CheckpointInfo(path, family, inpainting, layout, path.stat().st_size)


def require_full(info: CheckpointInfo) -> CheckpointInfo:
    """Refuse a file that holds a UNet alone: a pipeline needs its VAE and text encoders too."""
    if info.layout != "ldm":
        raise ModelError(
            f"'{info.path.name}' holds only a UNet (diffusers layout), not a full model: use the "
            "model's full single-file checkpoint or its diffusers folder."
        )
    return info


_ASSEMBLED: dict[Path, Path] = {}


def with_tokenizer_files(folder: Path) -> Path:
    """``folder`` itself, or a private copy of it with the shared CLIP vocabulary in tokenizer*/."""
    subfolders = [d for d in (folder / "tokenizer", folder / "tokenizer_2") if d.is_dir()]
    if all((d / "vocab.json").is_file() or (d / "tokenizer.json").is_file() for d in subfolders):
        return folder
    target = _ASSEMBLED.get(folder.resolve())
    if target is None or not target.is_dir():
        root = Path(tempfile.mkdtemp(prefix="sdstudio-config-"))
        atexit.register(shutil.rmtree, root, True)
        target = Path(shutil.copytree(folder, root / folder.name))
        for sub in subfolders:
            for name in TOKENIZER_FILES:
                shutil.copyfile(CONFIGS / "clip-tokenizer" / name, target / sub.name / name)
        _ASSEMBLED[folder.resolve()] = target
    return target


def config_folder_for(info: CheckpointInfo, config_folder: Path | None = None) -> Path:
    """The configs to build ``info``'s pipeline from: given, ``$SDSTUDIO_CHECKPOINT_CONFIG``, or shipped."""
    folder = config_folder or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    folder = folder or CONFIGS / info.config_name
    if not folder.is_dir():
        raise ModelError(f"The config folder '{folder}' does not exist; check {CONFIG_ENV}.")
    config = check_folder(folder, str(folder))  # known pipeline classes and libraries only
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(
            f"The config folder '{folder}' has no readable unet/config.json."
        ) from error
    if config.family is not info.family or (unet.get("in_channels") == 9) != info.inpainting:
        raise ModelError(
            f"The config folder '{folder}' is for a different kind of model than "
            f"'{info.path.name}'; unset {CONFIG_ENV} or point it at a matching diffusers folder."
        )
    return with_tokenizer_files(folder)


def load_single_file(path: Path | str, *, dtype: Any = None, config_folder: Path | None = None):
    """A diffusers pipeline of the right class from a single-file checkpoint, with no network.

    ``config_folder`` (or the ``SDSTUDIO_CHECKPOINT_CONFIG`` environment variable) names a local
    diffusers folder whose configs describe the checkpoint; by default the shipped configs for its
    family and kind are used.
    """
    info = require_full(inspect_checkpoint(path))
    if info.path.suffix != ".safetensors":  # diffusers picks its loader by the exact suffix
        raise ModelError(f"Rename '{info.path.name}' to end in lower-case .safetensors to load it.")
    folder = config_folder_for(info, config_folder)
    import diffusers

    kwargs: dict[str, Any] = {"config": str(folder), "dtype": dtype, "local_files_only": True}
    if info.family is ModelFamily.SD1:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    cls = getattr(diffusers, info.pipeline_class)
    try:
        return cls.from_single_file(str(info.path), **kwargs)
    except Exception as error:  # noqa: BLE001 - conversion errors come in many types
        log.exception("loading %s failed", info.path)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"Could not load '{info.path.name}': {first}") from error
