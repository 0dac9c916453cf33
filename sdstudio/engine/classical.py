"""Model-free filling (``sdstudio.engine.fill``), for "remove" with no model and as a diffusion
pre-fill."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np

from sdstudio.core.errors import RequestError
from sdstudio.core.mask import grow
from sdstudio.core.metadata import format_fill_parameters
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine import inpaint
from sdstudio.engine.events import Cancelled, Event, Finished, Started, Step
from sdstudio.engine.fill import DEFAULT_METHOD, LABELS, get_method, resolve
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
        fill_mask = crop.fill_mask
        if request.mode is Mode.REMOVE:
            fill_mask = grow(fill_mask, HALO)
        try:
            method = resolve(self.method, fill_mask)  # the label names what really ran
            filled = classical_fill(crop.rgb, fill_mask, method, cancel)
            patch = inpaint.finish(request.with_(color_match=False), crop, filled)
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
        parameters = format_fill_parameters(
            request, width=width, height=height, method=LABELS[method]
        )
        yield Finished(patch, crop.box, parameters, request)
