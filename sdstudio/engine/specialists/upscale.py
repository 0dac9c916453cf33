"""Upscaling 2x or 4x: a learned upscaler built by spandrel (ESRGAN / Real-ESRGAN, the compact
SRVGGNet, SwinIR, ...), run tile by tile through the one tiler, or a plain Lanczos resize when no
model is installed.

``upscale(image, scale, model_path)`` keeps the picture's layout: 16-bit stays 16-bit (the model
is fed float in [0, 1] of the full 16-bit values), grey stays grey (the model runs on RGB, the
luminance comes back), alpha is resized apart (cubic), 8-bit RGB as it is. A 4x model asked for
2x runs at 4x and each tile is brought down to 2x by area averaging; a 2x model asked for 4x runs
twice. Models live in the models folder's ``upscalers`` folder (any SR model spandrel loads; an
upscaler dropped into ``specialists`` is found too). The loaded model is kept between runs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdstudio.core.errors import ModelError, SDStudioError
from sdstudio.engine.specialists.loading import SUFFIXES, ModelCache, describe, pick_device
from sdstudio.engine.specialists.loading import specialists_dir as _specialists_dir
from sdstudio.engine.streaming import RunCancelled
from sdstudio.engine.tiling import MIN_TILE, run_tiled

UPSCALERS_FOLDER = "upscalers"
SCALES = (2, 4)
DEFAULT_TILE = {"cpu": 256, "cuda": 512}
"""Input pixels per tile side: 256 keeps a 4x RRDB's activations to a few hundred MB on the
CPU; a GPU takes 512."""
OVERLAP = 32
LANCZOS = "lanczos"
LANCZOS_NOTE = (
    "No upscaling model is installed, so a plain Lanczos resize was used (no detail is added). "
    "Get Real-ESRGAN in Models > Model library, or drop an ESRGAN-family .safetensors file "
    "into the models folder's 'upscalers' folder."
)

_lock = threading.Lock()


def upscalers_dir(models: Path) -> Path:
    """Where upscaling models live: ``<models folder>/upscalers``."""
    return Path(models) / UPSCALERS_FOLDER


@dataclass(frozen=True)
class Upscaler:
    """An upscaling model file and the scale its name says (None when it says none)."""

    path: Path
    scale: int | None

    @property
    def name(self) -> str:
        return self.path.stem


def scale_from_name(name: str) -> int | None:
    """2 for 'RealESRGAN_x2plus', 4 for '4x_foolhardy_Remacri' or 'realesr-general-x4v3'."""
    found = re.search(
        r"(?:^|[^a-z0-9])x([1-8])(?![0-9])|(?:^|[^0-9])([1-8])x(?:[^a-z]|$)", name.lower()
    )
    if found is None:
        return None
    return int(found.group(1) or found.group(2))


def scan_upscalers(models: Path) -> list[Upscaler]:
    """The usable upscalers: every model file in the ``upscalers`` folder (spandrel says at
    load what it is) and the ``specialists`` folder's files recognised as upscalers; a pickle
    counts once it has been converted. Sorted by name."""
    found: dict[Path, Upscaler] = {}
    for folder, only_known in ((upscalers_dir(models), False), (_specialists_dir(models), True)):
        try:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
        except OSError:
            continue
        for path in files:
            info = describe(path)
            if not info.usable or (only_known and info.purpose != "upscale"):
                continue
            if info.purpose not in (None, "upscale"):
                continue
            found.setdefault(info.path, Upscaler(info.path, scale_from_name(info.path.stem)))
    return sorted(found.values(), key=lambda u: u.name.lower())


def find_upscaler(models: Path, scale: int) -> Path | None:
    """The model to upscale by ``scale`` with: one whose name says that scale, else a 4x one
    (its result brought down by area averaging), else one whose name says no scale; None when
    there is none (then ``upscale`` resizes with Lanczos)."""
    upscalers = scan_upscalers(models)
    for wanted in (scale, 4, None):
        for upscaler in upscalers:
            if upscaler.scale == wanted:
                return upscaler.path
    return None


def check_scale(scale: int) -> None:
    if scale not in SCALES:
        raise SDStudioError(f"The scale must be 2 or 4, not {scale}.")


def check_tile(tile: int | None) -> None:
    if tile is not None and tile < MIN_TILE:
        raise SDStudioError(f"A tile must be at least {MIN_TILE} pixels, not {tile}.")


def _check(descriptor, path: Path) -> None:
    if getattr(descriptor, "purpose", None) != "SR" or descriptor.scale < 2:
        raise ModelError(
            f"'{path.name}' is a {descriptor.architecture.name} model for "
            f"'{getattr(descriptor, 'purpose', '?')}', not an upscaler: choose an "
            "upscaling (super-resolution) model."
        )


_cache = ModelCache("upscaler", _check)


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _plan(model_scale: int, scale: int, name: str) -> tuple[int, int]:
    """(passes, area factor): how to get ``scale`` from a model of ``model_scale``."""
    if model_scale == scale:
        return 1, 1
    if model_scale > scale and model_scale % scale == 0:
        return 1, model_scale // scale
    if model_scale == 2 and scale == 4:
        return 2, 1
    raise ModelError(f"'{name}' upscales {model_scale}x, which cannot give {scale}x.")


def _model_function(descriptor, device: str, shrink: int) -> Callable[[np.ndarray], np.ndarray]:
    """float32 H x W x 3 in [0, 1] -> the model's output (brought down ``shrink`` times)."""
    import cv2
    import torch

    dtype = next(descriptor.model.parameters()).dtype

    def run(piece: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(piece)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            out = descriptor(tensor.to(device=device, dtype=dtype))[0].float().clamp_(0.0, 1.0)
        result = out.permute(1, 2, 0).cpu().numpy()
        if shrink > 1:
            size = (result.shape[1] // shrink, result.shape[0] // shrink)
            result = cv2.resize(result, size, interpolation=cv2.INTER_AREA)
        return result

    return run


def lanczos(image: np.ndarray, scale: int) -> np.ndarray:
    """``image`` resized ``scale`` times with Lanczos (any layout, 8 or 16 bits)."""
    import cv2

    height, width = image.shape[:2]
    return cv2.resize(image, (width * scale, height * scale), interpolation=cv2.INTER_LANCZOS4)


def upscale(
    image: np.ndarray,
    scale: int,
    model_path: Path | None = None,
    *,
    tile: int | None = None,
    device: str | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``image`` (H x W grey, RGB or RGBA; uint8 or uint16) made ``scale`` (2 or 4) times
    larger in its own layout and dtype: by the upscaler in ``model_path``, tiled (``tile``
    input pixels a side; default by device), or with Lanczos when ``model_path`` is None.
    Raises ``RunCancelled`` when ``cancel`` is set (checked before each tile);
    ``progress(done, total)`` counts tiles over all passes."""
    import cv2

    check_scale(scale)
    check_tile(tile)
    if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3):
        raise SDStudioError(f"Cannot upscale a {image.dtype} picture of shape {image.shape}.")
    if cancel is not None and cancel.is_set():
        raise RunCancelled()
    if model_path is None:
        result = lanczos(image, scale)
        if progress is not None:
            progress(1, 1)
        return result
    device = pick_device(device)
    tile = tile or DEFAULT_TILE.get(device.split(":")[0], DEFAULT_TILE["cpu"])
    grey = image.ndim == 2
    pixels = image[:, :, None] if grey else image[:, :, :3]
    with _lock:
        descriptor = _cache.get(model_path, device)
        passes, shrink = _plan(descriptor.scale, scale, Path(model_path).name)
        model = _model_function(descriptor, device, shrink)
        factor = descriptor.scale // shrink
        sizes = [pixels.shape[:2]]
        for _ in range(passes - 1):
            sizes.append((sizes[-1][0] * factor, sizes[-1][1] * factor))
        counts = [_tile_count(h, w, tile) for h, w in sizes]
        for index in range(passes):
            before, total = sum(counts[:index]), sum(counts)
            pixels = run_tiled(
                pixels,
                _layout_function(model, grey, first=index == 0, last=index == passes - 1),
                scale=factor,
                tile=tile,
                overlap=min(OVERLAP, tile // 2),
                channels=1 if grey and index == passes - 1 else 3,
                cancel=cancel,
                progress=_offset(progress, before, total),
            )
    if grey:
        return pixels[:, :, 0]
    if image.shape[2] == 4:
        height, width = pixels.shape[:2]
        alpha = cv2.resize(image[:, :, 3], (width, height), interpolation=cv2.INTER_CUBIC)
        return np.dstack([pixels, alpha])
    return pixels


def _offset(progress, before: int, total: int):
    """``progress`` for one pass: its tiles counted after ``before`` of ``total``."""
    if progress is None:
        return None
    return lambda done, _count: progress(before + done, total)


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
"""ITU-R 601, as Pillow's "L" and ``core.pixels`` turn RGB into grey."""


def _layout_function(model, grey: bool, *, first: bool, last: bool):
    """The model for one pass over a grey picture: grey tiles in (first pass) become RGB, and
    the RGB result becomes luminance (last pass); an RGB picture passes as it is."""
    if not grey:
        return model

    def run(piece: np.ndarray) -> np.ndarray:
        if first:
            piece = np.repeat(piece, 3, axis=2)
        result = model(piece)
        return (result @ _LUMA)[:, :, None] if last else result

    return run


def _tile_count(height: int, width: int, tile: int) -> int:
    from sdstudio.engine.tiling import tile_starts

    overlap = min(OVERLAP, tile // 2)
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def describe_choice(model_path: Path | None) -> str:
    """How the picture will be upscaled, in words (the status line and the CLI)."""
    return "Lanczos (no model)" if model_path is None else Path(model_path).stem
