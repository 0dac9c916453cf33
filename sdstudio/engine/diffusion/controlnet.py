"""ControlNets: what a reference is, whether it suits the base model, loading it, and its image.

A reference is a hub id, a local diffusers folder (``config.json`` +
``diffusion_pytorch_model.safetensors``) or a single ``.safetensors`` file (diffusers or the
original ``control_model.`` layout). ``resolve_controlnet`` reads only configs and safetensors
headers (no torch) and tells the family (SD 1.x / SDXL) from the weights, so ``check_family``
refuses an SDXL ControlNet on an SD 1.5 model before anything is loaded. Pickles are refused.

A single file carries no config. A ControlNet is a trained copy of its base UNet's encoder, so
``load_controlnet`` builds the config from the base UNet's and the few widths that differ
(input channels, the conditioning embedding) read from the file's header.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdstudio.core.errors import ModelError
from sdstudio.core.region import Box
from sdstudio.core.request import Control, ControlKind, ModelFamily
from sdstudio.engine.compositing import resize_rgb
from sdstudio.engine.models.checkpoints import read_header
from sdstudio.engine.models.folders import PICKLE_SUFFIXES, WEIGHT_SUFFIXES, pickle_refusal

log = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
ALLOW_PATTERNS = [CONFIG, WEIGHTS]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FAMILY_WORDS = {ModelFamily.SD1: "Stable Diffusion 1.x", ModelFamily.SDXL: "SDXL"}
ARTICLES = {ModelFamily.SD1: "a", ModelFamily.SDXL: "an"}
CANNY_THRESHOLDS = (100, 200)  # AUTOMATIC1111's defaults
# Single files: the diffusers layout, and the original one (with or without "control_model.").
DIFFUSERS_MARK = "controlnet_cond_embedding.conv_in.weight"
LDM_HINT = "input_hint_block."
XL_MARKS = ("add_embedding.linear_1.weight", "label_emb.0.0.weight")
UNION_MARK = "task_embedding"
UNION_DEFAULT_MODES = 6  # diffusers' default num_control_type (the first union release)
UNION_MODES = {  # our kinds -> the union model's control modes (xinsir's numbering)
    ControlKind.SCRIBBLE: 2,  # hed / pidi / scribble / ted
    ControlKind.LINEART: 3,  # canny / lineart / anime lineart / mlsd
    ControlKind.CANNY: 3,
    ControlKind.TILE: 6,  # ProMax only (8 modes)
}


@dataclass(frozen=True)
class ControlNetInfo:
    """A resolved ControlNet: a diffusers ``folder``, or a single ``file`` (folder None)."""

    reference: str
    family: ModelFamily
    cross_attention_dim: int | None
    folder: Path | None = None
    file: Path | None = None
    union_modes: int = 0
    """A ControlNet-Union model (SDXL): how many control modes it knows; 0: a plain ControlNet."""

    @property
    def name(self) -> str:
        return self.reference.rstrip("/\\").replace("\\", "/").split("/")[-1]

    @property
    def union(self) -> bool:
        return self.union_modes > 0


def _family(reference: str, xl: bool, cross_attention_dim: int | None) -> ModelFamily:
    if not xl and cross_attention_dim == 1024:
        raise ModelError(
            f"'{reference}' is a ControlNet for Stable Diffusion 2.x; SD Studio runs SD 1.x and "
            "SDXL models, so choose a ControlNet made for one of them."
        )
    return ModelFamily.SDXL if xl else ModelFamily.SD1


def _check_folder(folder: Path, reference: str) -> ControlNetInfo:
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"'{reference}' is not a ControlNet folder (it has no {CONFIG}). Point --controlnet "
            f"at the folder that holds {CONFIG} and {WEIGHTS}, or at a .safetensors file."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"'{path}' is unreadable or not valid JSON ({error}).") from error
    kind = config.get("_class_name") if isinstance(config, dict) else None
    if kind not in ("ControlNetModel", "ControlNetUnionModel"):
        raise ModelError(f"'{reference}' is a {kind or 'unknown'} model, not a ControlNet.")
    if not (folder / WEIGHTS).is_file():
        pickles = [p for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise pickle_refusal(pickles[0])
        raise ModelError(f"'{reference}' has no {WEIGHTS}: the ControlNet's weights are missing.")
    xl = config.get("addition_embed_type") == "text_time"
    width = config.get("cross_attention_dim")
    width = width if isinstance(width, int) else None
    modes = 0
    if kind == "ControlNetUnionModel":
        modes = config.get("num_control_type", UNION_DEFAULT_MODES)
        if not isinstance(modes, int) or modes < 1:
            raise ModelError(f"'{reference}' is a ControlNet-Union model without control modes.")
    family = _family(reference, xl, width)
    return ControlNetInfo(reference, family, width, folder=folder, union_modes=modes)


def _check_file(path: Path, reference: str) -> ControlNetInfo:
    header = read_header(path)
    if any(name.endswith(UNION_MARK) for name in header):
        raise ModelError(
            f"'{reference}' is a ControlNet-Union model in one file: use its diffusers folder "
            f"({CONFIG} + {WEIGHTS}, as the model library downloads it), which says its modes."
        )
    if not any(name.endswith(DIFFUSERS_MARK) or LDM_HINT in name for name in header):
        raise ModelError(
            f"'{reference}' is not a ControlNet (it has no conditioning-image input). Choose a "
            "ControlNet's .safetensors file or folder."
        )
    xl = any(name.endswith(mark) for name in header for mark in XL_MARKS)
    widths = [e["shape"][1] for n, e in header.items() if n.endswith("attn2.to_k.weight")]
    width = widths[0] if widths else None
    return ControlNetInfo(reference, _family(reference, xl, width), width, file=path)


def _download(repo_id: str) -> Path:
    from sdstudio.engine.models.resolve import hub_snapshot

    return hub_snapshot(
        repo_id,
        what="ControlNet",
        allow_patterns=ALLOW_PATTERNS,
        instead="pass a local folder or .safetensors file",
    )


def _named(reference: str, folders: Iterable[Path]) -> Path | None:
    """A bare name (no folder part) as a folder or ``.safetensors`` file in ``folders``."""
    if not reference or Path(reference).name != reference or reference in (".", ".."):
        return None
    for folder in folders:
        for candidate in (folder / reference, folder / f"{reference}.safetensors"):
            if candidate.exists():
                return candidate
    return None


def resolve_controlnet(reference: str, folders: Iterable[Path] = ()) -> ControlNetInfo:
    """A ControlNet reference -> a checked local folder or file (downloading a hub id if
    needed). A bare name is also looked up in ``folders`` (the models folder's ``controlnet``
    folder): ``sd15-scribble`` finds ``sd15-scribble/`` or ``sd15-scribble.safetensors``."""
    reference = reference.strip()
    path = Path(reference).expanduser()
    if not path.exists():
        path = _named(reference, folders) or path
    if path.is_dir():
        return _check_folder(path, reference)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            raise pickle_refusal(path)
        if suffix == ".safetensors":
            return _check_file(path, reference)
        raise ModelError(
            f"'{reference}' is not a ControlNet: choose a .safetensors file, a diffusers folder "
            "or a hub id."
        )
    if HUB_ID.match(reference) and not reference.startswith((".", "~")):
        folder = _download(reference)
        if not (folder / WEIGHTS).is_file() and any(
            p.suffix in WEIGHT_SUFFIXES for p in folder.glob("*")
        ):
            raise pickle_refusal(folder / "diffusion_pytorch_model.bin")
        return _check_folder(folder, reference)
    where = " nor a name in " + ", ".join(f"'{f}'" for f in folders) if folders else ""
    raise ModelError(
        f"No ControlNet '{reference}' exists: it is neither a file, a folder{where} nor a hub "
        "id (owner/name). Check the path."
    )


def check_family(info: ControlNetInfo, family: ModelFamily, model_name: str) -> None:
    """One clear line when the ControlNet was made for another family than the base model."""
    if info.family is not family:
        words = f"{ARTICLES[family]} {FAMILY_WORDS[family]}"
        raise ModelError(
            f"The ControlNet '{info.name}' is for {FAMILY_WORDS[info.family]} models, but "
            f"'{model_name}' is {words} model: choose {words} ControlNet."
        )


def union_mode(info: ControlNetInfo, kind: ControlKind) -> int:
    """The union model's control mode for ``kind``; one clear line when it has none."""
    mode = UNION_MODES.get(kind)
    if mode is None or mode >= info.union_modes:
        known = [k.value for k, m in UNION_MODES.items() if m < info.union_modes]
        raise ModelError(
            f"The ControlNet-Union model '{info.name}' has no {kind.value} mode: choose "
            f"{', '.join(known)} as the control's kind, or another ControlNet."
        )
    return mode


def check_union(controls: tuple[ControlNetInfo, ...], kinds: tuple[ControlKind, ...]) -> None:
    """A union model runs alone and only with a kind it knows (checked before any loading)."""
    for info, kind in zip(controls, kinds, strict=True):
        if info.union:
            if len(controls) > 1:
                raise ModelError(
                    f"The ControlNet-Union model '{info.name}' runs alone: switch the other "
                    "controls off, or use single-purpose ControlNets together."
                )
            union_mode(info, kind)


def check_fits(info: ControlNetInfo, unet_config: Any, model_name: str) -> None:
    """The loaded base UNet's text width must be the ControlNet's (SD 2.x look-alikes)."""
    width = unet_config.get("cross_attention_dim")
    if info.cross_attention_dim is not None and width != info.cross_attention_dim:
        raise ModelError(
            f"The ControlNet '{info.name}' does not fit '{model_name}' (its text width is "
            f"{info.cross_attention_dim}, the model's {width}): choose a ControlNet made for "
            "this model's family."
        )


def _single_file_config(path: Path, unet_config: Any) -> dict[str, Any]:
    """The ControlNet config for a single file: the base UNet's, with the widths of the file."""
    import inspect

    from diffusers import ControlNetModel

    header = read_header(path)
    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    config = {k: v for k, v in dict(unet_config).items() if k in accepted}
    shapes = {name.removeprefix("control_model."): e["shape"] for name, e in header.items()}
    if DIFFUSERS_MARK in shapes:
        conv_in, embed = shapes.get("conv_in.weight"), shapes[DIFFUSERS_MARK]
        blocks = sorted(
            (int(n.split(".")[2]), s)
            for n, s in shapes.items()
            if n.startswith("controlnet_cond_embedding.blocks.") and n.endswith(".weight")
        )
        widths = [embed[0]] + [s[0] for i, s in blocks if i % 2 == 1]
    else:
        conv_in, embed = shapes.get("input_blocks.0.0.weight"), shapes.get(LDM_HINT + "0.weight")
        hints = sorted(
            (int(n.split(".")[1]), s)
            for n, s in shapes.items()
            if n.startswith(LDM_HINT) and n.endswith(".weight")
        )
        widths = [s[0] for i, s in hints[:-1] if i % 4 == 0]  # the last conv is the zero conv
    if conv_in is None or embed is None or not widths:
        raise ModelError(
            f"'{path.name}' is not a complete ControlNet (its input layers are missing)."
        )
    config.update(
        in_channels=conv_in[1],
        conditioning_channels=embed[1],
        conditioning_embedding_out_channels=widths,
    )
    return config


def load_controlnet(info: ControlNetInfo, *, dtype: Any, unet_config: Any) -> Any:
    """The ControlNetModel for ``info`` (safetensors only, no network, no remote code)."""
    from diffusers import ControlNetModel, ControlNetUnionModel

    try:
        if info.folder is not None:
            cls = ControlNetUnionModel if info.union else ControlNetModel
            return cls.from_pretrained(
                info.folder, torch_dtype=dtype, use_safetensors=True, local_files_only=True
            ).eval()
        assert info.file is not None
        if info.file.suffix != ".safetensors":  # diffusers picks its loader by the exact suffix
            raise ModelError(f"Rename '{info.file.name}' to end in lower-case .safetensors.")
        folder = Path(tempfile.mkdtemp(prefix="sdstudio-controlnet-"))
        try:
            config = _single_file_config(info.file, unet_config)
            (folder / CONFIG).write_text(
                json.dumps({"_class_name": "ControlNetModel", **config}), encoding="utf-8"
            )
            model = ControlNetModel.from_single_file(
                str(info.file), config=str(folder), torch_dtype=dtype, local_files_only=True
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return model.eval()
    except ModelError:
        raise
    except Exception as error:  # noqa: BLE001 - conversion and shape errors come in many types
        log.exception("loading ControlNet %s failed", info.reference)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"Could not load the ControlNet '{info.name}': {first}") from error


def control_image(
    control: Control, size: tuple[int, int], picture: tuple[int, int] | None, box: Box | None
) -> np.ndarray:
    """The control image as the ControlNet sees it: laid over the picture (``picture``: its
    width and height) and cropped to ``box`` like the picture, then resized to ``size`` (the
    generation width and height); for canny, the edges of that."""
    image = control.image
    if picture is not None and box is not None:
        image = resize_rgb(image, *picture)[box.slices]
    image = resize_rgb(np.ascontiguousarray(image), *size)
    if control.kind is ControlKind.CANNY:
        import cv2

        edges = cv2.Canny(image, *CANNY_THRESHOLDS)
        image = np.repeat(edges[:, :, None], 3, axis=2)
    return image


def inpaint_condition(rgb: np.ndarray, mask: np.ndarray) -> Any:
    """An inpaint ControlNet's image: ``rgb`` (H x W x 3 uint8) in [0, 1] with the pixels
    ``mask`` marks (H x W, over half on) set to -1, as a 1 x 3 x H x W float tensor (the form
    the ControlNet inpaint model was trained on; the pipeline keeps tensors as they are)."""
    import torch

    image = rgb.astype(np.float32) / 255.0
    image[mask > 127] = -1.0
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
