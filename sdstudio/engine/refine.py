"""SD upscale: a light Stable Diffusion img2img of each tile of a picture (one just upscaled), so
that the detail an upscaler cannot know is drawn in, as the web UIs' "SD upscale" does.

The picture is cut by the one tiler (``engine/tiling.py``, scale 1) into tiles of the model's
working size with a wide overlap; each tile is an ordinary img2img request (same prompt, seed
and strength for all) run by the engine given, and the tiler blends the tiles with weights that
sum to one, so the cuts do not show. A low strength (``DEFAULT_STRENGTH``) keeps the picture and
only sharpens what is there; higher strengths invent more, and tiles may then disagree in their
overlaps. The model works on 8-bit RGB: a 16-bit picture comes back 16-bit with the refined
values, a grey or sepia one keeps its tone (``keep_tone``), and an alpha channel is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from sdstudio.core.errors import SDStudioError
from sdstudio.core.pixels import color_channels, rgb8_to_float_like, to_rgb8
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine.streaming import RunCancelled
from sdstudio.engine.tiling import run_tiled

DEFAULT_STRENGTH = 0.3
TILE = 512
"""Tile side (SD 1.5's working size; SDXL works at 1024)."""
OVERLAP = 128
DEFAULT_PROMPT = "high quality photograph, sharp focus, fine natural detail"


def check_strength(strength: float) -> None:
    if not 0.0 < strength <= 1.0:
        raise SDStudioError(f"The refine strength must be above 0 and at most 1, not {strength}.")


def refine(
    engine,
    image: np.ndarray,
    *,
    prompt: str = DEFAULT_PROMPT,
    negative: str = "",
    strength: float = DEFAULT_STRENGTH,
    steps: int = 20,
    guidance: float = 7.0,
    seed: int = 0,
    model: str = "",
    tile: int = TILE,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``image`` (grey, RGB or RGBA, 8 or 16 bits) refined tile by tile by ``engine`` (a loaded
    engine with ``run(request, cancel)``: the diffusion engine, or a fake in tests); the result
    has ``image``'s size, layout and depth. Raises ``RunCancelled`` when ``cancel`` is set (between
    tiles, and within a tile as the engine honours it); an engine failure as ``SDStudioError``."""
    check_strength(strength)
    cancel = cancel or threading.Event()
    rgb8 = to_rgb8(image)
    grey = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)

    def one_tile(piece: np.ndarray) -> np.ndarray:
        pixels = np.clip(np.rint(piece * 255.0), 0, 255).astype(np.uint8)
        request = GenerationRequest(
            mode=Mode.IMG2IMG,
            prompt=prompt,
            negative_prompt=negative,
            image=pixels,
            model=model,
            seed=seed,
            steps=steps,
            guidance=guidance,
            strength=strength,
            keep_tone=grey,
        )
        return _run(engine, request, cancel, pixels).astype(np.float32) / 255.0

    overlap = min(OVERLAP, tile // 2)
    refined = run_tiled(
        rgb8, one_tile, tile=tile, overlap=overlap, cancel=cancel, progress=progress
    )
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return refined
    result = image.copy()
    values = rgb8_to_float_like(refined, image)
    top = np.iinfo(image.dtype).max
    color_channels(result)[...] = np.clip(np.rint(values), 0, top).astype(image.dtype)
    return result


def _run(engine, request: GenerationRequest, cancel: threading.Event, pixels: np.ndarray):
    """One tile's run. It gets its own cancel event (an engine sets it when its run ends, to
    stop its thread), set from ``cancel`` at each event the engine sends (every step)."""
    from sdstudio.engine.events import Cancelled, Failed, Finished

    own = threading.Event()
    events = engine.run(request, own)
    try:
        for event in events:
            if cancel.is_set():
                own.set()
            if isinstance(event, Finished):
                return event.composite(pixels)
            if isinstance(event, Failed):
                raise SDStudioError(event.message)
            if isinstance(event, Cancelled):
                raise RunCancelled()
    finally:
        close = getattr(events, "close", None)
        if close:
            close()
    if cancel.is_set():
        raise RunCancelled()
    raise SDStudioError("The engine stopped without a result.")
