"""LaMa removal (big-lama and its kin, built by spandrel): fills a hole from the picture around it.

``lama_fill`` fills the masked pixels of a crop (``ClassicalFillEngine`` makes the crop and
pastes it back softly, bit-exact outside the blend zone). A crop whose longer side is above the
working size (``WORK_SIZE``: 1024 px on the CPU, 2048 on CUDA) is filled from a copy scaled down
to it and the filled pixels scaled back up; every pixel outside the hole keeps its full-resolution
value. Sizes are padded to a multiple of 8 (reflected) by spandrel's descriptor. The model stays
loaded between runs (one at a time, keyed by file, modification time and device).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sdstudio.core.errors import ModelError
from sdstudio.core.pixels import color_channels, rgb8_to_float_like, to_rgb8
from sdstudio.engine.specialists.loading import ModelCache, pick_device, scan_specialists
from sdstudio.engine.streaming import RunCancelled

WORK_SIZE = {"cpu": 1024, "cuda": 2048}
"""The longest side LaMa works at; larger crops are filled from a scaled-down copy. LaMa's
Fourier convolutions see the whole picture, so it keeps working well far above its training
size (256-512 px); 1024 px keeps a CPU run to a few seconds."""
LABEL = "LaMa"
MISSING = (
    "No LaMa removal model is installed: download one in Models > Model library (it goes in "
    "the models folder's 'specialists' folder) or pass --fill-model FILE. Meanwhile use "
    "--fill auto (no model needed)."
)

CONTEXT = 64
"""Pixels of picture LaMa is given around a hole at least; a larger hole gets half its size."""

_lock = threading.Lock()


def find_lama(models: Path) -> Path | None:
    """The first usable LaMa model in ``models``/specialists (safetensors; a pickle is usable
    only once converted), or None."""
    for info in scan_specialists(models):
        if info.architecture == "LaMa" and info.usable:
            return info.path
    return None


def context(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The box (y0, y1, x0, x1) of picture LaMa reads to fill ``mask``, in the mask's
    coordinates and reaching past its edges: the hole's bounding box grown by ``CONTEXT`` or by
    half the hole's longer side, whichever is more (the crop is clamped to the picture after)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    pad = max(CONTEXT, max(y1 - y0, x1 - x0) // 2)
    return y0 - pad, y1 + pad, x0 - pad, x1 + pad


def _check(descriptor, path: Path) -> None:
    if type(descriptor.architecture).__name__ != "LaMaArch":
        raise ModelError(
            f"'{path.name}' is a {descriptor.architecture.name} model, not a LaMa removal "
            "model: choose a LaMa file for this fill."
        )


_cache = ModelCache("LaMa model", _check)


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _hooks(model, cancel: threading.Event | None, progress: Callable | None) -> list:
    """Forward pre-hooks on the network's main stages: cancel within a stage, progress per
    stage."""
    import torch

    stages = max(
        (m for m in model.modules() if isinstance(m, torch.nn.Sequential)), key=len, default=None
    )
    if stages is None:
        return []
    total = len(stages)
    handles = []
    reached = [0]  # a module used at several places (LaMa reuses its ReLUs) must not go back
    seen: set[int] = set()
    for index, stage in enumerate(stages):
        if id(stage) in seen:
            continue
        seen.add(id(stage))

        def hook(_module, _inputs, i=index):
            if cancel is not None and cancel.is_set():
                raise RunCancelled()
            if progress is not None and i > reached[0]:
                reached[0] = i
                progress(i, total)

        handles.append(stage.register_forward_pre_hook(hook))
    return handles


def _run(descriptor, rgb8: np.ndarray, hole: np.ndarray, device: str, cancel, progress):
    import torch

    image = torch.from_numpy(np.array(rgb8, np.uint8, order="C")).to(device)  # a writable copy
    image = image.permute(2, 0, 1)[None].float().div_(255.0)
    mask = torch.from_numpy(hole.astype(np.float32))[None, None].to(device)
    handles = _hooks(descriptor.model, cancel, progress)
    try:
        with torch.inference_mode():
            out = descriptor(image, mask)
    finally:
        for handle in handles:
            handle.remove()
    out = out[0].clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return out.permute(1, 2, 0).cpu().numpy()


def lama_fill(
    rgb: np.ndarray,
    mask: np.ndarray,
    model_path: Path,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    device: str | None = None,
) -> np.ndarray:
    """``rgb`` with the pixels where ``mask`` is non-zero filled by the LaMa model in
    ``model_path``; every other pixel is returned unchanged. ``rgb``: H x W grey, RGB or RGBA,
    8 or 16 bits (the model sees 8-bit RGB; the fill comes back in ``rgb``'s layout, alpha kept).
    Raises ``RunCancelled`` when ``cancel`` is set (checked between the network's stages)."""
    import cv2

    hole = np.asarray(mask) > 0
    if not hole.any():
        return rgb.copy()
    if cancel is not None and cancel.is_set():
        raise RunCancelled()
    device = pick_device(device)
    rgb8 = to_rgb8(rgb)
    height, width = hole.shape
    limit = WORK_SIZE.get(device.split(":")[0], WORK_SIZE["cpu"])
    scale = min(1.0, limit / max(height, width))
    with _lock:
        descriptor = _cache.get(model_path, device)
        if scale < 1.0:
            size = (max(16, round(width * scale)), max(16, round(height * scale)))
            small = cv2.resize(rgb8, size, interpolation=cv2.INTER_AREA)
            small_hole = cv2.resize(hole.view(np.uint8) * 255, size, interpolation=cv2.INTER_AREA)
            out = _run(descriptor, small, small_hole > 0, device, cancel, progress)
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_CUBIC)
        else:
            out = _run(descriptor, rgb8, hole, device, cancel, progress)
    result8 = rgb8.copy()
    result8[hole] = out[hole]
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3:
        return result8
    result = rgb.copy()
    values = rgb8_to_float_like(result8, rgb)
    top = np.iinfo(rgb.dtype).max
    color_channels(result)[hole] = np.clip(np.rint(values[hole]), 0, top).astype(rgb.dtype)
    return result
