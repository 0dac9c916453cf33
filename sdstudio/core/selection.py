"""Click-to-select, the pure part: prompts (points and a box), the mapping between the picture and
a Segment Anything model's square input, and growing a selection into a mask.

A SAM model sees the picture scaled so that its longest side is the model's input size (1024 for
SAM), padded at the right and bottom to a square. Its low-resolution mask covers that padded
square; ``ModelFrame`` maps prompts into the square and says which part of the mask is picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sdstudio.core.errors import SDStudioError
from sdstudio.core.mask import bounding_box
from sdstudio.core.mask import grow as dilate
from sdstudio.core.region import Box

DEFAULT_GROW = 8
"""Pixels a selection grows by before it becomes the mask: the object's edge and its shadow go
with it (a SAM mask ends just inside the object's outline)."""
MAX_GROW = 200


@dataclass(frozen=True)
class Point:
    """A click in picture coordinates (pixel centres at +0.5 are not assumed: x, y as given)."""

    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class Prompt:
    """What the person pointed at: points (positive: part of it; negative: not part of it) and
    at most one box (x0, y0, x1, y1), all in picture coordinates."""

    points: tuple[Point, ...] = ()
    box: tuple[float, float, float, float] | None = None

    @property
    def is_empty(self) -> bool:
        """No positive point and no box: nothing is selected."""
        return self.box is None and not any(p.positive for p in self.points)

    @property
    def multimask(self) -> bool:
        """One positive point alone is ambiguous (a shirt or the person?): the model proposes
        several masks and the one it rates best wins; more points or a box name one object."""
        return self.box is None and len(self.points) == 1

    def check(self, width: int, height: int) -> None:
        """Raise an error a person can act on when a point or the box lies outside the picture."""
        for p in self.points:
            if not (0 <= p.x <= width and 0 <= p.y <= height):
                raise SDStudioError(
                    f"The point {p.x:g},{p.y:g} is outside the picture ({width} x {height})."
                )
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise SDStudioError(
                    f"The box {x0:g},{y0:g},{x1:g},{y1:g} must have X0 < X1 and Y0 < Y1 and lie "
                    f"inside the picture ({width} x {height})."
                )


@dataclass(frozen=True)
class ModelFrame:
    """A ``width`` x ``height`` picture inside a model's ``side`` x ``side`` input: scaled to
    ``scaled_width`` x ``scaled_height`` (longest side = ``side``), padded right and bottom."""

    width: int
    height: int
    side: int
    scaled_width: int
    scaled_height: int

    @classmethod
    def fit(cls, width: int, height: int, side: int) -> ModelFrame:
        scale = side / max(width, height)
        # Rounded as transformers' SamProcessor does, so prompts land where it would put them.
        return cls(width, height, side, int(width * scale + 0.5), int(height * scale + 0.5))

    def to_model(self, x: float, y: float) -> tuple[float, float]:
        """A picture coordinate -> the model input's (the scale of each axis on its own)."""
        return x * self.scaled_width / self.width, y * self.scaled_height / self.height

    def prompt_arrays(self, prompt: Prompt) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(points N x 2 float32, labels N int64 (1 positive, 0 negative), box 4 float32 | None)
        in the model input's coordinates."""
        points = np.array([self.to_model(p.x, p.y) for p in prompt.points], np.float32).reshape(
            -1, 2
        )
        labels = np.array([1 if p.positive else 0 for p in prompt.points], np.int64)
        box = None
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            box = np.array([*self.to_model(x0, y0), *self.to_model(x1, y1)], np.float32)
        return points, labels, box

    def mask_to_picture(self, logits: np.ndarray) -> np.ndarray:
        """The model's low-resolution mask logits (M x M over the padded square) -> a 0/255 mask
        the picture's size: scaled up to the square, the padding cut, scaled to the picture."""
        logits = np.ascontiguousarray(logits, np.float32)
        square = cv2.resize(logits, (self.side, self.side), interpolation=cv2.INTER_LINEAR)
        inside = np.ascontiguousarray(square[: self.scaled_height, : self.scaled_width])
        full = cv2.resize(inside, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return cv2.compare(full, 0.0, cv2.CMP_GT)  # 255 where the logit is positive, else 0


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` (0/255) grown by ``pixels`` in every direction (a disc), so that an object's
    edge and shadow go too. Works on the box around the selection only (fast on a 24 MP mask)."""
    pixels = max(0, int(pixels))
    box = bounding_box(mask)
    if box is None or pixels == 0:
        return mask.copy()
    height, width = mask.shape
    around = box.expand(pixels + 1).clamp(width, height)
    out = np.zeros_like(mask)
    out[around.slices] = dilate(np.ascontiguousarray(mask[around.slices]), pixels)
    return out


def add_to_mask(mask: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """The document's mask with a selection added (what was already marked stays marked)."""
    return np.maximum(mask, selection)


def parse_pair(text: str, what: str = "--point") -> tuple[float, float]:
    """``"X,Y"`` -> (x, y); an error naming ``what`` otherwise."""
    values = _numbers(text, 2, what, "X,Y")
    return values[0], values[1]


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"X0,Y0,X1,Y1"`` -> the box (corners in either order are sorted)."""
    x0, y0, x1, y1 = _numbers(text, 4, "--box", "X0,Y0,X1,Y1")
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _numbers(text: str, count: int, what: str, form: str) -> list[float]:
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != count or not all(np.isfinite(values)):
        raise SDStudioError(
            f"{what} takes {form} in pixels (e.g. {_example(count)}), not '{text}'."
        )
    return values


def _example(count: int) -> str:
    return "120,80" if count == 2 else "40,30,300,240"


def box_of(points: tuple[float, float, float, float]) -> Box:
    """A prompt box as a pixel ``Box`` (for drawing)."""
    x0, y0, x1, y1 = points
    return Box(int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))
