"""A scriptable engine for UI tests: real event flow and paste-back, no model, no torch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np

from sdstudio.core.metadata import format_parameters
from sdstudio.core.region import Box
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine import inpaint
from sdstudio.engine.events import Cancelled, Event, Failed, Finished, Preview, Started, Step


class FakeEngine:
    """Yields ``Started``, ``steps`` x (``Step``, ``Preview``), then ``Finished``.

    The result fills the region with ``color`` through the same crop and paste-back as the real
    engine. ``delay`` (seconds per step) lets tests cancel mid-run; ``fail_at`` makes the run
    fail with ``Failed("...")`` after that step; ``script`` replaces everything with given events.
    """

    def __init__(
        self,
        steps: int = 4,
        color: tuple[int, int, int] = (255, 0, 255),
        delay: float = 0.0,
        fail_at: int | None = None,
        script: Sequence[Event] | None = None,
        native: int = 64,
    ) -> None:
        self.steps, self.color, self.delay = steps, color, delay
        self.fail_at, self.script, self.native = fail_at, script, native
        self.requests: list[GenerationRequest] = []

    def run(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Event]:
        self.requests.append(request)
        if self.script is not None:
            yield from self.script
            return
        crop = None
        if request.mode is Mode.TXT2IMG:
            box = Box(0, 0, request.width, request.height)
            size = (request.height, request.width)
        else:
            crop = inpaint.prepare(request, self.native) if request.mask is not None else None
            h, w = request.image.shape[:2]
            box = crop.box if crop else (request.region or Box(0, 0, w, h))
            size = (box.height, box.width)
        yield Started(request.mode, self.steps, box)
        for i in range(1, self.steps + 1):
            if self.delay:
                time.sleep(self.delay)
            if cancel.is_set():
                yield Cancelled()
                return
            yield Step(i, self.steps)
            shade = np.array(self.color, np.float32) * i / self.steps
            yield Preview(i, self.steps, np.full((8, 8, 3), shade, np.uint8), box)
            if self.fail_at == i:
                yield Failed(f"Fake failure at step {i}.")
                return
        generated = np.full((*size, 3), self.color, np.uint8)
        if crop is not None:
            patch = inpaint.finish(request.with_(color_match=False), crop, generated)
        elif request.mode is Mode.TXT2IMG:
            patch = generated
        else:
            from sdstudio.engine.compositing import blend_patch

            alpha = np.ones(size, np.float32)
            patch = blend_patch(request.image[box.slices], generated, alpha)
        parameters = format_parameters(request, width=size[1], height=size[0], model_name="fake")
        yield Finished(patch, box, parameters, request)
