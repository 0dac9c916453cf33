"""Model-free filling (``sdstudio.engine.fill``), for "remove" with no model and as a diffusion
pre-fill."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from sdstudio.core.errors import ModelError, RequestError
from sdstudio.core.mask import grow
from sdstudio.core.metadata import format_fill_parameters
from sdstudio.core.pixels import to_rgb8
from sdstudio.core.region import Box
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine import inpaint
from sdstudio.engine.events import Cancelled, Event, Finished, Started, Step
from sdstudio.engine.fill import DEFAULT_METHOD, LABELS, filled, get_method, reads, split
from sdstudio.engine.fill.smooth import harmonic
from sdstudio.engine.streaming import (
    Emit,
    GenerationThread,
    check_cancel,
    failure_event,
)

HALO = 2
"""Extra pixels the removal fill treats as unknown past ``crop.fill_mask`` (the mask grown by its
blur). Anti-aliased object edges, halos and contact shadows sit in the first pixel or two outside
a hand-painted mask; as *context* they would be copied or diffused back into the hole (a ghost
outline). Growing the fill mask only changes what the fill reads: the paste-back still uses the
request's soft mask, so no pixel beyond the blend zone changes."""


def classical_fill(
    rgb: np.ndarray,
    mask: np.ndarray,
    method: str = DEFAULT_METHOD,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """Fill the masked pixels of an 8-bit RGB image from their surroundings.

    ``method``: a name from ``sdstudio.engine.fill.METHODS`` ("auto", "structure-texture",
    "patchmatch", "harmonic", "telea", "navier-stokes"). Raises ``RunCancelled`` when ``cancel`` is set.
    """
    if not mask.any():
        return rgb.copy()
    return get_method(method)(np.ascontiguousarray(rgb), mask, cancel)


def source_window(
    method: str,
    mask: np.ndarray,
    box: Box,
    width: int,
    height: int,
    most: int | None = None,
    grown: int = 0,
) -> Box:
    """``box`` grown to hold every pixel a fill by ``method`` reads for ``mask`` (the hole, in
    ``box``'s coordinates; ``fill.reads``), but at most ``most`` pixels past ``box``, and clamped
    to the ``width`` x ``height`` picture. ``grown``: as for ``fill.split``."""
    need = reads(method, mask, grown)
    if need is None:
        return box
    y0, y1, x0, x1 = need
    window = Box(box.x0 + x0, box.y0 + y0, box.x0 + x1, box.y0 + y1).union(box)
    if most is not None:
        limit = box.expand(most)
        window = Box(
            max(window.x0, limit.x0),
            max(window.y0, limit.y0),
            min(window.x1, limit.x1),
            min(window.y1, limit.y1),
        )
    return window.clamp(width, height)


def fill_crop(
    request: GenerationRequest,
    crop: inpaint.InpaintCrop,
    method: str = DEFAULT_METHOD,
    cancel: threading.Event | None = None,
    halo: int = 0,
    lama: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, str]:
    """``crop.rgb`` with ``crop.fill_mask`` (grown by ``halo``) filled, and what ran, in words.

    The fill reads the picture around the crop as far as it needs (``source_window``: for a
    large hole and an exemplar fill, as far again as the hole is large), so it fills as from the
    whole picture; the crop alone leaves a large hole too little to copy texture from. Only that
    window is converted, never the whole of a large photo around a small hole.

    ``lama``: a LaMa model file. "lama" fills with it (None: a ModelError saying where to get
    one); "auto" fills the hole's object-sized parts with it and its thin strokes with the
    membrane (None: the model-free choice)."""
    assert request.image is not None
    height, width = request.image.shape[:2]
    box = crop.box
    hole = grow(crop.fill_mask, halo)  # the crop leaves room for the halo around the fill mask
    grown = request.mask_blur + halo  # past the painted mask: "auto" judges thinness on that
    parts = _lama_parts(method, hole, grown, lama)
    if parts is None:
        window = source_window(method, hole, box, width, height, grown=grown)
    else:
        window = _lama_window(parts, box, width, height)
    inner = (
        slice(box.y0 - window.y0, box.y1 - window.y0),
        slice(box.x0 - window.x0, box.x1 - window.x0),
    )
    mask = np.zeros((window.height, window.width), np.uint8)
    mask[inner] = hole
    rgb = crop.rgb if window == box else to_rgb8(request.image[window.slices])
    if parts is None:
        out, ran = filled(rgb, mask, method, cancel, progress, grown=grown)
    else:
        assert lama is not None
        out, ran = _fill_with_lama(rgb, mask, inner, parts, lama, cancel, progress)
    return out[inner], ran


def _lama_parts(method: str, hole: np.ndarray, grown: int, lama: Path | None):
    """(thin, thick) parts of ``hole`` when LaMa fills its thick part, else None."""
    if method == "lama":
        if lama is None:
            from sdstudio.engine.specialists.lama import MISSING

            raise ModelError(MISSING)
        return np.zeros(hole.shape, bool), hole > 0
    if method != "auto" or lama is None:
        return None
    thin, thick = split(hole, grown)
    return (thin, thick) if thick.any() else None  # strokes only: the membrane, as before


def _lama_window(parts, box: Box, width: int, height: int) -> Box:
    from sdstudio.engine.specialists.lama import context

    thin, thick = parts
    y0, y1, x0, x1 = context(thick)
    window = Box(box.x0 + x0, box.y0 + y0, box.x0 + x1, box.y0 + y1).union(box)
    if thin.any():
        window = window.union(source_window("harmonic", thin.view(np.uint8), box, width, height))
    return window.clamp(width, height)


def _fill_with_lama(
    rgb, mask, inner, parts, lama: Path, cancel, progress=None
) -> tuple[np.ndarray, str]:
    """The membrane over the thin parts (in the window's ``inner`` crop), then LaMa."""
    from sdstudio.engine.specialists.lama import lama_fill

    thin, thick = (np.zeros(mask.shape, np.uint8) for _ in range(2))
    thin[inner], thick[inner] = parts
    out = harmonic(rgb, thin, cancel) if thin.any() else rgb
    out = lama_fill(out, thick, lama, cancel, progress)
    ran = LABELS["lama"]
    return out, ran if not thin.any() else f"{ran} (smooth membrane for thin strokes)"


class ClassicalFillEngine:
    """Removes what the mask covers with no model: works offline, on any machine, in a moment."""

    def __init__(
        self,
        method: str | Callable[[], str] = DEFAULT_METHOD,
        models_folder: Callable[[], Path] | None = None,
        fill_model: Path | None = None,
    ):
        """``method``: a fill name, or a callable read at each run (the editor's menu choice).
        ``models_folder``: read at each run, where an installed LaMa is looked for ("lama", and
        "auto" for object-sized holes); default SD Studio's models folder. ``fill_model``: the
        LaMa file to use instead of looking."""
        self._method = method if callable(method) else (lambda: method)
        self._models_folder = models_folder
        self.fill_model = fill_model
        self._thread: GenerationThread | None = None
        get_method(self.method)  # an unknown name fails here, not mid-run

    def lama_model(self, method: str) -> Path | None:
        """The LaMa file a run of ``method`` uses: ``fill_model``, else one installed in the
        models folder, else None ("lama" then fails, "auto" fills without a model)."""
        if method not in ("lama", "auto"):
            return None
        if self.fill_model is not None:
            return self.fill_model
        from sdstudio.core.paths import models_dir
        from sdstudio.engine.specialists.lama import find_lama

        return find_lama(self._models_folder() if self._models_folder else models_dir())

    @property
    def method(self) -> str:
        return self._method()

    def run(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Event]:
        if request.mode not in (Mode.REMOVE, Mode.INPAINT):
            yield failure_event(
                RequestError(f"The model-free fill can only remove, not {request.mode.value}.")
            )
            return
        method = self.method
        try:
            lama = self.lama_model(method)
            if method == "lama" and lama is None:
                from sdstudio.engine.specialists.lama import MISSING

                raise ModelError(MISSING)
            crop = inpaint.prepare(request, native=None)
        except Exception as error:  # noqa: BLE001 - becomes a Failed event
            yield failure_event(error)
            return
        yield Started(request.mode, 1, crop.box)
        if cancel.is_set():
            yield Cancelled()
            return
        halo = HALO if request.mode is Mode.REMOVE else 0

        def work(emit: Emit) -> None:
            def progress(done: int, total: int) -> None:  # a LaMa run takes seconds on a CPU
                if 0 < done < total:
                    emit(Step(done, total))

            rgb, ran = fill_crop(request, crop, method, cancel, halo, lama, progress)
            patch = inpaint.finish(request.with_(color_match=False), crop, rgb)
            emit(Step(1, 1))
            check_cancel(cancel)
            assert request.image is not None
            height, width = request.image.shape[:2]
            parameters = format_fill_parameters(request, width=width, height=height, method=ran)
            emit(Finished(patch, crop.box, parameters, request))

        # on a thread of its own, so that its progress reaches the worker while it runs
        if self._thread is None:
            self._thread = GenerationThread()
        yield from self._thread.stream(work, cancel)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None
