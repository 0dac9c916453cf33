"""Model-free fills: every method is ``fill(rgb, mask, cancel=None) -> rgb``.

``rgb`` is H x W x 3 uint8, ``mask`` H x W uint8 (non-zero = fill). Pixels outside the mask come
back unchanged; a set ``cancel`` event raises ``sdstudio.engine.streaming.RunCancelled``.
``filled`` also says what ran, in words: the exemplar fills smooth a part of the hole that has no
intact patch around it, and the label then says so instead of naming the method asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import cv2
import numpy as np

from sdstudio.engine.fill._common import Report
from sdstudio.engine.fill.hybrid import structure_texture
from sdstudio.engine.fill.opencv import navier_stokes, telea
from sdstudio.engine.fill.patchmatch import margin, patchmatch
from sdstudio.engine.fill.smooth import harmonic

FillMethod = Callable[..., np.ndarray]

THIN = 6.0
"""Holes no more than this many pixels from their edge (scratches, strokes) count as thin."""


def split(mask: np.ndarray, grown: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The hole's (thin, thick) parts as bool masks: a connected part is thick when some pixel of
    it lies more than ``THIN`` pixels from its edge. ``grown``: how far ``mask`` was grown past
    what the person painted (a removal grows it by the blur and a halo); the test is on the
    painted stroke, so a 5 px stroke grown by 6 px on each side is still thin."""
    hole = (mask > 0).view(np.uint8)
    if not hole.any():
        return hole.astype(bool), hole.astype(bool)
    depth = cv2.distanceTransform(hole, cv2.DIST_L2, 3)
    deep = depth > THIN + grown
    if not deep.any():
        return hole.astype(bool), np.zeros(hole.shape, bool)
    _, labels = cv2.connectedComponents(hole, connectivity=8)
    thick = np.isin(labels, np.unique(labels[deep])) & (hole > 0)
    return (hole > 0) & ~thick, thick


def choose(mask: np.ndarray, grown: int = 0) -> str:
    """What "auto" runs: the membrane for thin holes (too narrow to hold texture; it scores best
    there), structure + texture for larger ones, and "auto" itself for a mask with both (each
    part gets its own)."""
    thin, thick = split(mask, grown)
    if thick.any():
        return "auto" if thin.any() else "structure-texture"
    return "harmonic"


def auto(
    rgb: np.ndarray,
    mask: np.ndarray,
    cancel: threading.Event | None = None,
    progress=None,
    report: Report | None = None,
    grown: int = 0,
):
    """The membrane over the hole's thin parts, then structure + texture over its thick ones."""
    thin, thick = split(mask, grown)
    out = harmonic(rgb, thin.view(np.uint8), cancel) if thin.any() else rgb
    if thick.any() or not thin.any():
        out = structure_texture(out, thick.view(np.uint8), cancel, progress, report=report)
    return out


def lama(
    rgb: np.ndarray,
    mask: np.ndarray,
    cancel: threading.Event | None = None,
    progress=None,
    model=None,
) -> np.ndarray:
    """The LaMa removal model (``sdstudio.engine.specialists.lama``): ``model`` (a file), else
    the one installed in the models folder; none installed raises a ModelError saying where to
    get one. Not model-free: "auto" uses it only when given a model (``engine.classical``)."""
    from sdstudio.core.errors import ModelError
    from sdstudio.core.paths import models_dir
    from sdstudio.engine.specialists.lama import MISSING, find_lama, lama_fill

    model = model or find_lama(models_dir())
    if model is None:
        raise ModelError(MISSING)
    return lama_fill(rgb, mask, model, cancel, progress)


METHODS: dict[str, FillMethod] = {
    "telea": telea,
    "navier-stokes": navier_stokes,
    "harmonic": harmonic,
    "patchmatch": patchmatch,
    "structure-texture": structure_texture,
    "auto": auto,
    "lama": lama,
}
LABELS = {
    "telea": "OpenCV Telea (no model)",
    "navier-stokes": "OpenCV Navier-Stokes (no model)",
    "harmonic": "Smooth membrane fill (no model)",
    "patchmatch": "PatchMatch exemplar fill (no model)",
    "structure-texture": "Smooth shading + PatchMatch texture (no model)",
    "auto": "Texture fill, or smooth for thin holes (no model)",
    "lama": "LaMa removal model",
}
SMOOTHED_LABEL = (
    "Smooth membrane fill (no model; too little picture around the hole to copy texture from)"
)
"""What ran when an exemplar fill found no intact patch around any part of the hole."""
PROGRESSIVE = {"patchmatch", "structure-texture", "auto"}
"""Methods that take a ``progress(i, n)`` callback (one call per pyramid level) and a ``report``
of what ran."""
DEFAULT_METHOD = "auto"
"""Chosen by bench_fill.py (8 photos at 1 megapixel, blobs, strokes and blocks, through the
product's own removal path) and by looking at the results at 100%. Over blobs and blocks
structure + texture beats Telea on PSNR (19.1 against 18.0 dB, 19.0 against 17.3) and keeps the
photo's texture where Telea smears (detail 0.50-0.56 against 0.06-0.11), at lower SSIM (-0.05);
the membrane alone scores higher still on PSNR and SSIM (19.7, 19.3 dB), which reward a blur
over plausible texture that is not the lost one, but reads as a smear at 100%. Over thin strokes
the membrane scores best (it beat Telea on every score). Plain PatchMatch copies the shading too:
better where a hole borders a different object or is huge, blotchier elsewhere (1.2 dB below
structure + texture). Measured 2026-12 (issue 11's closing note)."""


def resolve(name: str, mask: np.ndarray, grown: int = 0) -> str:
    """The concrete method ``name`` runs for this mask (only "auto" depends on the mask)."""
    get_method(name)
    return choose(mask, grown) if name == "auto" else name


def label(name: str, report: Report) -> str:
    """What ran, in words, for the method ``name`` as ``resolve`` gives it and its ``report``."""
    if not report.smoothed:
        return LABELS[name]
    if not report.textured:
        return SMOOTHED_LABEL
    return LABELS[name].replace("(no model)", "(no model; smooth where too little picture is near)")


NEAR = 8
"""Pixels past a hole's bounding box that the smooth fills read (the membrane 1, OpenCV's fills
their radius of 5)."""


def reads(method: str, mask: np.ndarray, grown: int = 0) -> tuple[int, int, int, int] | None:
    """The box (y0, y1, x0, x1) holding every pixel ``method`` reads to fill ``mask``, in the
    mask's coordinates and reaching past its edges where the fill would read there: given that
    much picture, the fill comes out as from the whole picture. The exemplar fills read as far
    again as the hole is large; "auto" only that around its thick parts. None for an empty mask."""
    get_method(method)
    if method == "auto":
        smooth, texture = split(mask, grown)
    elif method in ("patchmatch", "structure-texture"):
        smooth, texture = np.zeros(mask.shape, bool), mask > 0
    else:
        smooth, texture = mask > 0, np.zeros(mask.shape, bool)
    boxes = []
    for part, exemplar in ((smooth, False), (texture, True)):
        if not part.any():
            continue
        rows, cols = np.flatnonzero(part.any(1)), np.flatnonzero(part.any(0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        pad = margin(y1 - y0, x1 - x0) if exemplar else NEAR
        boxes.append((y0 - pad, y1 + pad, x0 - pad, x1 + pad))
    if not boxes:
        return None
    return tuple(int(f(b[i] for b in boxes)) for i, f in enumerate((min, max, min, max)))


def get_method(name: str) -> FillMethod:
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(METHODS)
        raise ValueError(f"unknown fill method {name!r}; choose one of {known}") from None


def fill(
    rgb: np.ndarray,
    mask: np.ndarray,
    method: str = DEFAULT_METHOD,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    return get_method(method)(rgb, mask, cancel)


def filled(
    rgb: np.ndarray,
    mask: np.ndarray,
    method: str = DEFAULT_METHOD,
    cancel: threading.Event | None = None,
    progress=None,
    grown: int = 0,
) -> tuple[np.ndarray, str]:
    """``fill``, and what ran, in words (a ``LABELS`` value, or ``SMOOTHED_LABEL`` and the like
    where the exemplar fill found nothing to copy). ``grown``: as for ``split``."""
    name = resolve(method, mask, grown)
    if method not in PROGRESSIVE:
        return METHODS[method](rgb, mask, cancel), LABELS[name]
    report = Report()
    if method == "auto":
        out = auto(rgb, mask, cancel, progress, report=report, grown=grown)
    else:
        out = METHODS[method](rgb, mask, cancel, progress, report=report)
    return out, label(name, report)


__all__ = [
    "DEFAULT_METHOD",
    "LABELS",
    "METHODS",
    "PROGRESSIVE",
    "SMOOTHED_LABEL",
    "fill",
    "filled",
    "get_method",
    "reads",
    "resolve",
]
