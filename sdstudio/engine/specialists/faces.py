"""Face restoration: each face aligned to the restorer's 512 x 512 input, restored by a face model
built through spandrel (GFPGAN v1.4, RestoreFormer), and pasted back with a soft edge.

Alignment is a similarity transform (rotation, uniform scale, shift) taking the face's five
landmarks onto the FFHQ template the GFPGAN family was trained on (``TEMPLATE``: where the eyes,
nose tip and mouth corners sit in a 512 px aligned face). Only a window of the picture around
each face is converted and warped, so a large scan costs what its faces cost.

Paste-back: a mask that is 1 over the aligned square and falls smoothly to exactly 0 over its
outer ``FEATHER`` pixels (and ``MARGIN`` px of zeros at its edge) is warped back with the face,
times ``strength``; ``blend_patch`` keeps every pixel where it is 0 bit-for-bit. Grey pictures
take the restored luminance; RGB photos that look grey or sepia get the restored pixels put back
on their own tone curve (``on_tone_curve``), so the restorer's colours never creep in; 16-bit
and alpha are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sdstudio.core.adjust import on_tone_curve, tone_table
from sdstudio.core.errors import Cancelled, ModelError
from sdstudio.core.pixels import to_rgb8
from sdstudio.engine.compositing import blend_patch
from sdstudio.engine.specialists.face_detect import Face, detect_faces
from sdstudio.engine.specialists.loading import ModelCache, pick_device, scan_specialists
from sdstudio.engine.streaming import RunCancelled

SIZE = 512
TEMPLATE = np.array(
    [
        [192.98138, 239.94708],  # eye on the image's left
        [318.90277, 240.19360],  # the other eye
        [256.63416, 314.01935],  # nose tip
        [201.26117, 371.41043],  # mouth corner on the image's left
        [313.08905, 371.15118],  # the other mouth corner
    ],
    np.float32,
)
"""The five FFHQ landmarks of an aligned 512 px face, as GFPGAN's and facexlib's helpers use."""
MARGIN = 4
FEATHER = 56
"""Paste-back mask: zeros over ``MARGIN`` px at the aligned square's edge, then a smooth rise to 1
over ``FEATHER`` px (the aligned square shows hair and background around the face)."""
DEFAULT_STRENGTH = 0.8
ARCHITECTURES = ("GFPGAN", "RestoreFormer")
STOP = "Face restoration cancelled"
MISSING = (
    "No face restoration model is installed: download GFPGAN v1.4 or RestoreFormer in Models > "
    "Model library (it goes in the models folder's 'specialists' folder), or pass --face-model "
    "FILE."
)
RESTOREFORMER_KEYS = ("quantize.embedding.weight", "encoder.conv_in.weight", "quant_conv.weight")

_lock = threading.Lock()


class FacesCancelled(Cancelled):
    """Face restoration was cancelled; the input is untouched."""


def face_models(models: Path) -> list[Path]:
    """The usable face restoration models in ``models``/specialists, GFPGAN first."""
    found = []
    for info in scan_specialists(models):
        if not info.usable:
            continue
        if info.architecture == "GFPGAN":
            found.append((0, info.path))
        elif info.architecture is None and _is_restoreformer(info.path):
            found.append((1, info.path))
    return [path for _, path in sorted(found, key=lambda f: f[0])]


def is_face_model(path: Path) -> str | None:
    """Why the safetensors file ``path`` is not a face restoration model SD Studio can use, in
    words, or None when it is one (its header is read; nothing is loaded)."""
    from sdstudio.engine.specialists.loading import describe

    info = describe(path)
    if info.problem is not None:
        return info.problem
    if info.architecture == "GFPGAN" or (info.architecture is None and _is_restoreformer(path)):
        return None
    what = f"a {info.architecture} model" if info.architecture else "no model SD Studio knows"
    return (
        f"'{Path(path).name}' is {what}, not a face restoration model: use GFPGAN v1.4 or "
        "RestoreFormer (Models > Model library)."
    )


def _is_restoreformer(path: Path) -> bool:
    """A RestoreFormer safetensors file, by its tensor names (the library's ``describe`` does not
    name this architecture)."""
    from sdstudio.engine.specialists.loading import _safetensors_keys

    try:
        return set(RESTOREFORMER_KEYS) <= _safetensors_keys(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def alignment(landmarks) -> np.ndarray:
    """The 2 x 3 similarity transform taking the five ``landmarks`` (picture pixels) onto
    ``TEMPLATE`` (least squares over all five points)."""
    import cv2

    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(points, TEMPLATE, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():
        raise ValueError("the landmarks do not make a face")
    return matrix


def paste_mask() -> np.ndarray:
    """The 512 x 512 float32 paste-back weight (see the module's notes)."""
    index = np.arange(SIZE, dtype=np.float32)
    edge = np.minimum(index, SIZE - 1 - index) - MARGIN
    ramp = np.clip(edge / FEATHER, 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: no visible step where it starts
    return np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)


def _check(descriptor, path: Path) -> None:
    if descriptor.architecture.id not in ARCHITECTURES:
        raise ModelError(
            f"'{path.name}' is a {descriptor.architecture.name} model, not a face "
            "restoration model: choose a GFPGAN or RestoreFormer file."
        )


_cache = ModelCache("face model", _check)


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _cancel_hooks(model, cancel: threading.Event | None) -> list:
    """Forward pre-hooks on the network's leaf modules: cancel stops within a layer or two."""
    if cancel is None:
        return []

    def hook(_module, _inputs):
        if cancel.is_set():
            raise RunCancelled()

    return [m.register_forward_pre_hook(hook) for m in model.modules() if not any(m.children())]


def _restore_aligned(descriptor, face: np.ndarray, device: str) -> np.ndarray:
    """The restorer's 512 x 512 RGB output (float32, 0-255) for an aligned uint8 face."""
    import torch

    x = torch.from_numpy(np.array(face, np.float32, order="C")).to(device)
    x = x.permute(2, 0, 1)[None].div_(255.0)
    gfpgan = descriptor.architecture.id == "GFPGAN"
    if gfpgan:  # GFPGAN works in -1..1; spandrel's RestoreFormer call converts by itself
        x = x * 2.0 - 1.0
    dtype = next(descriptor.model.parameters()).dtype
    with torch.inference_mode():
        y = descriptor(x.to(dtype)).float()
    if gfpgan:
        y = (y + 1.0) / 2.0
    y = y[0].clamp(0.0, 1.0).mul(255.0).permute(1, 2, 0)
    return y.cpu().numpy()


def restore_faces(
    image: np.ndarray,
    model_path: Path,
    strength: float = DEFAULT_STRENGTH,
    faces: list[Face] | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    models: Path | None = None,
    device: str | None = None,
) -> tuple[np.ndarray, list[Face]]:
    """``image`` with its faces restored by the model in ``model_path``, and the faces.

    ``image``: grey, RGB or RGBA, 8 or 16 bits; the result has its dtype and layout, and every
    pixel away from the faces unchanged. ``strength`` 0-1 blends the restored faces over the
    original ones (0: the input back, exactly). ``faces``: the faces to restore (default:
    ``detect_faces(image, models=models)``). ``progress(done, total)`` per face; ``cancel`` is
    checked between faces and inside the network, and raises ``FacesCancelled``."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, not {strength}")
    if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3):
        raise ValueError(f"unsupported picture {image.dtype} {image.shape}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"The face model '{model_path}' does not exist.")
    if faces is None:
        faces = detect_faces(image, models=models)
    out = image.copy()
    if not faces or strength == 0.0:
        return out, list(faces)
    device = pick_device(device)
    tone = tone_table(image)
    try:
        with _lock:
            descriptor = _cache.get(model_path, device)
            handles = _cancel_hooks(descriptor.model, cancel)
            try:
                for index, face in enumerate(faces):
                    _step(index, len(faces), progress, cancel)
                    _restore_one(out, face, descriptor, device, strength, tone)
                _step(len(faces), len(faces), progress, cancel)
            finally:
                for handle in handles:
                    handle.remove()
    except (Cancelled, RunCancelled):
        raise FacesCancelled(f"{STOP}; the picture is unchanged.") from None
    return out, list(faces)


def _step(done: int, total: int, progress, cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise RunCancelled()
    if progress is not None:
        progress(done, total)


def _restore_one(out, face: Face, descriptor, device, strength, tone) -> None:
    """Restore ``face`` in ``out`` in place."""
    import cv2

    matrix = alignment(face.landmarks)
    inverse = cv2.invertAffineTransform(matrix)
    height, width = out.shape[:2]
    corners = np.array([[0, 0, 1], [SIZE, 0, 1], [0, SIZE, 1], [SIZE, SIZE, 1]], np.float64)
    reach = corners @ inverse.T
    x0, y0 = np.floor(reach.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(reach.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    window = out[y0:y1, x0:x1]
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)
    local = matrix.astype(np.float64) @ shift  # window pixels -> aligned pixels
    local_inverse = cv2.invertAffineTransform(local)
    aligned = cv2.warpAffine(
        to_rgb8(window),
        local,
        (SIZE, SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    restored = _restore_aligned(descriptor, aligned, device)
    size = (x1 - x0, y1 - y0)
    back = cv2.warpAffine(restored, local_inverse, size, flags=cv2.INTER_LINEAR)
    back8 = np.clip(np.rint(back), 0, 255).astype(np.uint8)
    alpha = cv2.warpAffine(
        paste_mask(),
        local_inverse,
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    alpha = np.clip(alpha, 0.0, 1.0) * np.float32(strength)
    alpha[alpha < 1e-4] = 0.0
    if tone is not None:
        back8 = on_tone_curve(back8, tone)
    out[y0:y1, x0:x1] = blend_patch(window, back8, alpha)
