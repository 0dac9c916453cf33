"""The one object that crosses from the document to the engine: a frozen ``GenerationRequest``.

Everything the engine needs is in it; the engine never reaches back into the document. The
pixel arrays are copied and made read-only on construction, so the document can go on being
edited while a generation runs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from sdstudio.core.errors import RequestError
from sdstudio.core.region import Box

MAX_SEED = 2**32 - 1


class Mode(Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    OUTPAINT = "outpaint"
    REMOVE = "remove"


class Scheduler(Enum):
    """Samplers, named as AUTOMATIC1111 names them (the name goes into the image metadata)."""

    EULER_A = "Euler a"
    EULER = "Euler"
    DPMPP_2M = "DPM++ 2M"
    DPMPP_2M_KARRAS = "DPM++ 2M Karras"
    DDIM = "DDIM"
    UNIPC = "UniPC"
    LCM = "LCM"
    TCD = "TCD"
    EULER_TRAILING = "Euler trailing"
    """Euler with trailing timestep spacing: what few-step distilled models (SDXL-Lightning,
    Hyper-SD, Turbo) are made for."""
    EULER_A_TRAILING = "Euler a trailing"

    @classmethod
    def parse(cls, name: str) -> Scheduler:
        """Accept ``"Euler a"``, ``"euler_a"``, ``"EULER-A"``, ``"dpmpp_2m_karras"`` ..."""

        def key(s: str) -> str:
            return "".join(ch for ch in s.lower().replace("++", "pp") if ch.isalnum())

        wanted = key(name)
        for member in cls:
            if wanted in (key(member.name), key(member.value)):
                return member
        choices = ", ".join(m.name.lower() for m in cls)
        raise RequestError(f"Unknown scheduler {name!r}: choose one of {choices}.")


class ModelFamily(Enum):
    SD1 = "sd1"
    SDXL = "sdxl"

    @property
    def native_size(self) -> int:
        return 1024 if self is ModelFamily.SDXL else 512


class ControlKind(Enum):
    """What a control image is, and so how the engine prepares it."""

    SCRIBBLE = "scribble"
    """The person's own strokes, used as they are (light lines on dark)."""
    LINEART = "lineart"
    """Line art, used as it is (light lines on dark)."""
    CANNY = "canny"
    """Any picture: its edges are found with OpenCV's Canny detector."""
    TILE = "tile"
    """The picture itself, used as it is (a tile/blur ControlNet keeps its layout)."""
    INPAINT = "inpaint"
    """The picture with the area to regenerate marked (an inpaint ControlNet fills it in keeping
    with the rest); the engine marks the request's mask on it, so only an inpaint takes it."""


MAX_CONTROL_STRENGTH = 2.0


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def _frozen_copy(array: np.ndarray | None, what: str) -> np.ndarray | None:
    if array is None:
        return None
    if not isinstance(array, np.ndarray):
        raise RequestError(f"The {what} must be a numpy array, not {type(array).__name__}.")
    if not array.flags.writeable and array.flags.owndata:
        return array  # already a snapshot (e.g. from another request): nobody can change it
    copy = np.array(array, copy=True)
    copy.flags.writeable = False
    return copy


@dataclass(frozen=True, eq=False)
class Control:
    """One ControlNet conditioning: which ControlNet (``model``: a hub id, a diffusers folder or
    a ``.safetensors`` file), the control ``image`` (H x W x 3 uint8; any size, the engine resizes
    it to the picture), how strongly it steers (``strength``, 0..2) and during which fraction of
    the steps (``start`` to ``end``)."""

    model: str
    image: np.ndarray
    kind: ControlKind = ControlKind.SCRIBBLE
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise RequestError(
                "A control needs a ControlNet: a hub id, folder or .safetensors file."
            )
        if not isinstance(self.kind, ControlKind):
            choices = ", ".join(k.value for k in ControlKind)
            raise RequestError(f"Unknown control kind {self.kind!r}: choose one of {choices}.")
        image = _frozen_copy(self.image, "control image")
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            shape = None if image is None else f"{image.shape} {image.dtype}"
            raise RequestError(
                f"The control image must be H x W x 3 8-bit RGB (got {shape}); convert it with "
                "sdstudio.core.pixels.to_rgb8."
            )
        if min(image.shape[:2]) < 8:
            raise RequestError(
                f"The control image is {image.shape[1]}x{image.shape[0]}: it needs at least 8 "
                "pixels on each side."
            )
        object.__setattr__(self, "image", image)
        for name, value in (("strength", self.strength), ("start", self.start), ("end", self.end)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestError(f"The control {name} must be a number (got {value!r}).")
        if not 0.0 <= self.strength <= MAX_CONTROL_STRENGTH:
            raise RequestError(
                f"Control strength must be between 0 and {MAX_CONTROL_STRENGTH:g} "
                f"(got {self.strength}); 1 is the usual."
            )
        if not 0.0 <= self.start < self.end <= 1.0:
            raise RequestError(
                f"A control acts from a start to an end fraction of the steps, with "
                f"0 <= start < end <= 1 (got start {self.start}, end {self.end})."
            )


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    """A complete, immutable description of one generation.

    ``image`` is the picture as loaded (H x W, H x W x 3 or H x W x 4; uint8 or uint16).
    ``mask`` is H x W uint8 where 255 means "repaint". ``region`` limits img2img to a part of
    the picture (None: the whole picture). ``width``/``height`` are the txt2img output size.
    ``keep_tone``: if the picture is black-and-white or sepia, the generated pixels are put on its
    tone curve, so no colour creeps in from the model (old-photo repair sets it).
    """

    mode: Mode
    prompt: str = ""
    negative_prompt: str = ""
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    region: Box | None = None
    model: str = ""
    seed: int = field(default_factory=random_seed)
    steps: int = 20
    guidance: float = 7.0
    strength: float = 0.75
    scheduler: Scheduler = Scheduler.EULER_A
    width: int = 512
    height: int = 512
    padding: int = 32
    mask_blur: int = 4
    color_match: bool = True
    keep_tone: bool = False
    loras: tuple[tuple[str, float], ...] = ()
    """LoRAs switched on besides the prompt's ``<lora:name:weight>`` tags (a sampler preset's
    few-step LoRA): (name or path, weight) pairs."""
    controls: tuple[Control, ...] = ()
    """ControlNet conditionings (txt2img, img2img, inpaint and outpaint)."""
    live: bool = False
    """A live frame: decoded with the tiny VAE when one is installed; never recorded
    differently otherwise."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", _frozen_copy(self.image, "image"))
        object.__setattr__(self, "mask", _frozen_copy(self.mask, "mask"))
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.mode, Mode):
            raise RequestError(f"Unknown mode {self.mode!r}.")
        if not 1 <= self.steps <= 1000:
            raise RequestError(f"Steps must be between 1 and 1000 (got {self.steps}).")
        if not 0.0 <= self.guidance <= 100.0:
            raise RequestError(f"Guidance must be between 0 and 100 (got {self.guidance}).")
        if not 0.0 < self.strength <= 1.0:
            raise RequestError(
                f"Strength must be above 0 and at most 1 (got {self.strength}); "
                "0.3 keeps most of the picture, 1.0 replaces it."
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise RequestError(f"Seed must be between 0 and {MAX_SEED} (got {self.seed}).")
        if self.padding < 0 or self.mask_blur < 0:
            raise RequestError("Padding and mask blur cannot be negative.")
        for lora in self.loras:
            if (
                not isinstance(lora, tuple)
                or len(lora) != 2
                or not isinstance(lora[0], str)
                or not lora[0].strip()
                or isinstance(lora[1], bool)
                or not isinstance(lora[1], int | float)
                or not -10.0 <= lora[1] <= 10.0
            ):
                raise RequestError(
                    f"A LoRA is a name and a weight between -10 and 10 (got {lora!r})."
                )
        self._validate_controls()
        if self.mode is Mode.TXT2IMG:
            for name, value in (("Width", self.width), ("Height", self.height)):
                if not 64 <= value <= 4096 or value % 8:
                    raise RequestError(
                        f"{name} must be a multiple of 8 between 64 and 4096 (got {value})."
                    )
            return
        if self.image is None:
            raise RequestError(f"{self.mode.value} needs an input image.")
        if self.image.ndim not in (2, 3) or self.image.dtype not in (np.uint8, np.uint16):
            raise RequestError("The image must be an 8- or 16-bit array of H x W (x C) pixels.")
        height, width = self.image.shape[:2]
        if self.mode in (Mode.INPAINT, Mode.REMOVE, Mode.OUTPAINT):
            if self.mask is None:
                raise RequestError(f"{self.mode.value} needs a mask (white = repaint).")
            if self.mask.shape != (height, width):
                raise RequestError(
                    f"The mask is {self.mask.shape[1]}x{self.mask.shape[0]} but the image is "
                    f"{width}x{height}; they must be the same size."
                )
        if self.region is not None and not self.region.inside(width, height):
            raise RequestError(f"The region {self.region} lies outside the {width}x{height} image.")

    def _validate_controls(self) -> None:
        if not isinstance(self.controls, tuple) or not all(
            isinstance(c, Control) for c in self.controls
        ):
            raise RequestError(
                f"Controls must be a tuple of Control values (got {type(self.controls).__name__})."
            )
        if self.controls and self.mode is Mode.REMOVE:
            raise RequestError(
                "Remove takes no control: it fills from the surroundings. Use inpaint with a "
                "prompt to steer the new content with a sketch."
            )
        if self.mode is not Mode.INPAINT and any(
            c.kind is ControlKind.INPAINT for c in self.controls
        ):
            raise RequestError(
                "The inpaint control marks the area to regenerate, and this "
                f"{self.mode.value} has none: erase that area with the eraser (E) first, or "
                "choose another control kind."
            )

    def with_(self, **changes) -> GenerationRequest:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)
