"""Model-free filling: OpenCV inpainting, for "remove" with no model and as a diffusion pre-fill."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import cv2
import numpy as np

from sdstudio.core.errors import RequestError
from sdstudio.core.metadata import format_fill_parameters
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine import inpaint
from sdstudio.engine.events import Cancelled, Event, Finished, Started, Step
from sdstudio.engine.streaming import failure_event

FILL_RADIUS = 5


def classical_fill(rgb: np.ndarray, mask: np.ndarray, radius: int = FILL_RADIUS) -> np.ndarray:
    """Fill the masked pixels of an 8-bit RGB image from their surroundings (Telea's method)."""
    if not mask.any():
        return rgb.copy()
    return cv2.inpaint(np.ascontiguousarray(rgb), mask, radius, cv2.INPAINT_TELEA)


class ClassicalFillEngine:
    """Removes what the mask covers with no model: works offline, on any machine, in a moment."""

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
        try:
            filled = classical_fill(crop.rgb, crop.fill_mask)
            patch = inpaint.finish(request.with_(color_match=False), crop, filled)
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
            request, width=width, height=height, method="OpenCV Telea (no model)"
        )
        yield Finished(patch, crop.box, parameters, request)
