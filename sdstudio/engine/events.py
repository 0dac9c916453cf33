"""What an engine yields while it works, and the boundary every engine implements.

``engine.run(request, cancel)`` yields ``Started``, then ``Step``/``Preview`` per denoising step,
and ends with exactly one of ``Finished``, ``Cancelled`` or ``Failed``. ``cancel`` is a
``threading.Event``; setting it from any thread stops the run within the current step, and a
cancelled run yields no result.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sdstudio.core.region import Box
from sdstudio.core.request import GenerationRequest, Mode


@dataclass(frozen=True)
class Started:
    mode: Mode
    total_steps: int
    box: Box
    """The part of the picture being generated (previews and the result land here)."""


@dataclass(frozen=True)
class Step:
    index: int
    """1-based: ``Step(1, n)`` arrives after the first of ``n`` steps."""
    total: int


@dataclass(frozen=True, eq=False)
class Preview:
    index: int
    total: int
    rgb: np.ndarray
    """H x W x 3 uint8, a cheap approximation at latent resolution: scale it into ``box``."""
    box: Box


@dataclass(frozen=True, eq=False)
class Finished:
    patch: np.ndarray
    """The new pixels of ``box``, in the picture's own layout and depth."""
    box: Box
    parameters: str
    """AUTOMATIC1111-style parameters text for the image metadata."""
    request: GenerationRequest
    notes: tuple[str, ...] = ()
    """Things the person should know about how it ran (e.g. a compile that failed)."""

    def composite(self, image: np.ndarray | None = None) -> np.ndarray:
        """The whole picture with the result in place (a new array; ``image`` is not changed).

        For txt2img there is no picture and the patch is the result.
        """
        if image is None:
            return self.patch.copy()
        out = image.copy()
        out[self.box.slices] = self.patch
        return out


@dataclass(frozen=True)
class Cancelled:
    pass


@dataclass(frozen=True, eq=False)
class Failed:
    message: str
    """One line a person can act on."""
    error: BaseException | None = None


Event = Started | Step | Preview | Finished | Cancelled | Failed


class Engine(Protocol):
    def run(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Event]: ...
