"""Model-free filling (``sdstudio.engine.fill``), for "remove" with no model and as a diffusion
pre-fill."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np

from sdstudio.core.errors import RequestError
from sdstudio.core.mask import grow
from sdstudio.core.metadata import format_fill_parameters
from sdstudio.core.pixels import to_rgb8
from sdstudio.core.region import Box
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine import inpaint
from sdstudio.engine.events import Cancelled, Event, Finished, Started, Step
from sdstudio.engine.fill import DEFAULT_METHOD, filled, get_method, reads
from sdstudio.engine.streaming import RunCancelled, failure_event

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
) -> tuple[np.ndarray, str]:
    """``crop.rgb`` with ``crop.fill_mask`` (grown by ``halo``) filled, and what ran, in words.

    The fill reads the picture around the crop as far as it needs (``source_window``: for a
    large hole and an exemplar fill, as far again as the hole is large), so it fills as from the
    whole picture; the crop alone leaves a large hole too little to copy texture from. Only that
    window is converted, never the whole of a large photo around a small hole."""
    assert request.image is not None
    height, width = request.image.shape[:2]
    box = crop.box
    hole = grow(crop.fill_mask, halo)  # the crop leaves room for the halo around the fill mask
    grown = request.mask_blur + halo  # past the painted mask: "auto" judges thinness on that
    window = source_window(method, hole, box, width, height, grown=grown)
    inner = (
        slice(box.y0 - window.y0, box.y1 - window.y0),
        slice(box.x0 - window.x0, box.x1 - window.x0),
    )
    mask = np.zeros((window.height, window.width), np.uint8)
    mask[inner] = hole
    rgb = crop.rgb if window == box else to_rgb8(request.image[window.slices])
    out, ran = filled(rgb, mask, method, cancel, grown=grown)
    return out[inner], ran


class ClassicalFillEngine:
    """Removes what the mask covers with no model: works offline, on any machine, in a moment."""

    def __init__(self, method: str | Callable[[], str] = DEFAULT_METHOD):
        """``method``: a fill name, or a callable read at each run (the editor's menu choice)."""
        self._method = method if callable(method) else (lambda: method)
        get_method(self.method)  # an unknown name fails here, not mid-run

    @property
    def method(self) -> str:
        return self._method()

    def run(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Event]:
        if request.mode not in (Mode.REMOVE, Mode.INPAINT):
            yield failure_event(
                RequestError(f"The model-free fill can only remove, not {request.mode.value}.")
            )
            return
        try:
            crop = inpaint.prepare(request, native=None)
        except Exception as error:  # noqa: BLE001 - becomes a Failed event
            yield failure_event(error)
            return
        yield Started(request.mode, 1, crop.box)
        if cancel.is_set():
            yield Cancelled()
            return
        halo = HALO if request.mode is Mode.REMOVE else 0
        try:
            rgb, ran = fill_crop(request, crop, self.method, cancel, halo)
            patch = inpaint.finish(request.with_(color_match=False), crop, rgb)
        except RunCancelled:
            yield Cancelled()
            return
        except Exception as error:  # noqa: BLE001
            yield failure_event(error)
            return
        yield Step(1, 1)
        if cancel.is_set():
            yield Cancelled()
            return
        assert request.image is not None
        height, width = request.image.shape[:2]
        parameters = format_fill_parameters(request, width=width, height=height, method=ran)
        yield Finished(patch, crop.box, parameters, request)
