"""Click-to-select with Segment Anything (transformers' ``SamModel``).

``Selector.embed`` runs the image encoder once per picture (the slow part: about a second on a
CPU for the small model); each ``Selector.mask`` then runs only the prompt encoder and the mask
decoder on the cached embedding (milliseconds). The pure part (prompts, the picture <-> model
mapping, growing) is ``sdstudio.core.selection``.

Loading is offline and safe: ``local_files_only``, safetensors only, never remote code.
torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from sdstudio.core.errors import Cancelled, ModelError
from sdstudio.core.pixels import to_rgb8
from sdstudio.core.selection import ModelFrame, Point, Prompt, grow

log = logging.getLogger(__name__)

SAM_ENV = "SDSTUDIO_SAM_MODEL"
NO_SAM = (
    "No Segment Anything model is installed: get one in Models > Model library (SlimSAM is small "
    f"and fast, SAM ViT-Base more precise), or name a model folder with --model or {SAM_ENV}."
)

Progress = Callable[[int, int], None]
PointLike = Point | tuple[float, float, bool] | tuple[float, float]


def sam_reference(reference: str | Path | None, models: Path | None = None) -> str:
    """The SAM model to use: ``reference`` if given, else $SDSTUDIO_SAM_MODEL, else one the model
    library installed; an error saying where to get one otherwise."""
    if reference:
        return str(reference)
    if os.environ.get(SAM_ENV):
        return os.environ[SAM_ENV]
    found = _installed_sam(models)
    if found is None:
        raise ModelError(NO_SAM)
    return str(found)


def _installed_sam(models: Path | None) -> str | None:
    """The model library's SAM (a folder under the models folder, or a hub download)."""
    from sdstudio.engine.models.sam import find_sam

    if models is None:
        from sdstudio.core.paths import models_dir

        models = models_dir()
    return find_sam(models)


def _check_folder(path: Path) -> None:
    if not path.is_dir():
        raise ModelError(
            f"'{path}' is not a Segment Anything model folder: name the folder that holds its "
            "config.json and model.safetensors."
        )
    if not (path / "config.json").is_file():
        raise ModelError(f"'{path}' has no config.json: it is not a transformers SAM model.")
    if not any(path.glob("*.safetensors")):
        raise ModelError(
            f"'{path}' has no .safetensors weights: SD Studio loads Segment Anything from "
            "safetensors only (never pickled .bin files). Download the model again from the "
            "model library."
        )


def load_selector(reference: str | Path, device: str | None = None) -> Selector:
    """A ``Selector`` over the SAM model at ``reference`` (a local folder, or a hub id already in
    the cache): offline, safetensors only, never remote code."""
    text = str(reference)
    path = Path(text).expanduser()
    if path.exists():
        _check_folder(path)
        text = str(path)
    elif text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelError(f"There is no Segment Anything model folder '{text}'. {NO_SAM}")
    from transformers import SamModel, SamProcessor
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its bars would fill the terminal or the log
    try:
        model = SamModel.from_pretrained(text, local_files_only=True, use_safetensors=True)
        processor = SamProcessor.from_pretrained(text, local_files_only=True)
    except OSError as error:
        log.debug("SAM load failed", exc_info=True)
        raise ModelError(
            f"The Segment Anything model '{text}' is not on this computer (or has no "
            f"safetensors weights): {NO_SAM[NO_SAM.index('get one') :]}"
        ) from error
    images = processor.image_processor
    side = int(_get(images.size, "longest_edge"))
    pad = (int(_get(images.pad_size, "height")), int(_get(images.pad_size, "width")))
    if pad != (side, side) or model.config.vision_config.image_size != side:
        raise ModelError(
            f"'{text}' is not a Segment Anything model SD Studio can use: its processor works at "
            f"{side} px padded to {pad}, its model at {model.config.vision_config.image_size} px."
        )
    return Selector(
        model,
        side=side,
        mean=tuple(images.image_mean),
        std=tuple(images.image_std),
        device=device,
        name=text,
    )


def _get(size, key: str):
    return size[key] if isinstance(size, dict) else getattr(size, key)


class Selector:
    """Segment Anything on one picture at a time: ``embed`` once, then ``mask`` per click.

    Not thread-safe: use it from one thread at a time (the editor's select tool does).
    """

    def __init__(
        self,
        model,
        *,
        side: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | None = None,
        name: str = "SAM",
        dtype=None,
    ) -> None:
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype is None:  # half precision on a GPU: twice the speed, masks alike
            dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device = device
        self.dtype = dtype
        self.side = side
        self.name = name
        self._mean = np.asarray(mean, np.float32) * 255.0
        self._std = np.asarray(std, np.float32) * 255.0
        self._key: str | None = None
        self._frame: ModelFrame | None = None
        self._embedding = None

    @property
    def frame(self) -> ModelFrame | None:
        """Where the embedded picture sits in the model's input (None before ``embed``)."""
        return self._frame

    def embed(
        self,
        image: np.ndarray,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
        key: str | None = None,
    ) -> bool:
        """Compute ``image``'s embedding unless it is the one cached (same pixels, or the same
        ``key`` when the caller names the picture's version). True when it ran the encoder."""
        key = key or _digest(image)
        if key == self._key and self._embedding is not None:
            return False
        if cancel is not None and cancel.is_set():
            raise Cancelled("Cancelled.")
        import torch

        height, width = image.shape[:2]
        frame = ModelFrame.fit(width, height, self.side)
        pixels = self.model_input(image, frame)
        layers = list(getattr(self.model.vision_encoder, "layers", ()))
        total = len(layers) + 1
        done = [0]

        def step(_module, _args):  # before each encoder layer: cancel, and say how far it is
            if cancel is not None and cancel.is_set():
                raise Cancelled("Cancelled.")
            if progress is not None:
                progress(done[0], total)
            done[0] += 1

        hooks = [layer.register_forward_pre_hook(step) for layer in layers]
        try:
            with torch.inference_mode():
                tensor = torch.from_numpy(pixels).to(device=self.device, dtype=self.dtype)
                embedding = self.model.get_image_embeddings(tensor)
        finally:
            for hook in hooks:
                hook.remove()
        if cancel is not None and cancel.is_set():
            raise Cancelled("Cancelled.")
        self._key, self._frame, self._embedding = key, frame, embedding
        if progress is not None:
            progress(total, total)
        return True

    def model_input(self, image: np.ndarray, frame: ModelFrame) -> np.ndarray:
        """The picture as the model takes it: 1 x 3 x side x side float32, scaled (area
        averaging: a 24 MP photo never goes through the model at full size), normalised, padded
        with zeros at the right and bottom."""
        size = (frame.scaled_width, frame.scaled_height)
        small = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
        rgb = to_rgb8(small.reshape(*small.shape[:2], *image.shape[2:])).astype(np.float32)
        out = np.zeros((self.side, self.side, 3), np.float32)
        out[: frame.scaled_height, : frame.scaled_width] = (rgb - self._mean) / self._std
        return np.ascontiguousarray(out.transpose(2, 0, 1)[None])

    def mask(
        self, points: Iterable[PointLike] = (), box: Sequence[float] | None = None
    ) -> np.ndarray:
        """The selection (H x W uint8, 255 = selected, the embedded picture's size) for these
        points (x, y, positive) and box (x0, y0, x1, y1), in picture coordinates. Only the prompt
        encoder and mask decoder run. Not grown: see ``grow``."""
        if self._frame is None or self._embedding is None:
            raise RuntimeError("embed() the picture before asking for a mask")
        frame = self._frame
        prompt = Prompt(tuple(_point(p) for p in points), None if box is None else tuple(box))
        prompt.check(frame.width, frame.height)
        if prompt.is_empty:
            return np.zeros((frame.height, frame.width), np.uint8)
        import torch

        coords, labels, corners = frame.prompt_arrays(prompt)
        inputs = {}
        if len(coords):  # (the prompt encoder casts the coordinates to the model's dtype)
            inputs["input_points"] = torch.from_numpy(coords)[None, None].to(self.device)
            inputs["input_labels"] = torch.from_numpy(labels)[None, None].to(self.device)
        if corners is not None:
            inputs["input_boxes"] = torch.from_numpy(corners)[None, None].to(self.device)
        with torch.inference_mode():
            out = self.model(
                image_embeddings=self._embedding, multimask_output=prompt.multimask, **inputs
            )
        scores = out.iou_scores[0, 0].float().cpu().numpy()
        best = int(np.argmax(scores)) if prompt.multimask else 0
        logits = out.pred_masks[0, 0, best].float().cpu().numpy()
        return frame.mask_to_picture(logits)

    @staticmethod
    def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
        return grow(mask, pixels)

    def select(
        self, image: np.ndarray, prompt: Prompt, grow_px: int = 0, cancel=None, progress=None
    ) -> np.ndarray:
        """``embed`` (if needed), ``mask``, ``grow``: the whole selection in one call."""
        self.embed(image, cancel, progress)
        return grow(self.mask(prompt.points, prompt.box), grow_px)


def _point(p: PointLike) -> Point:
    if isinstance(p, Point):
        return p
    if len(p) == 2:
        return Point(float(p[0]), float(p[1]))
    return Point(float(p[0]), float(p[1]), bool(p[2]))


def _digest(image: np.ndarray) -> str:
    """The picture's identity for the embedding cache: its layout and a hash of its pixels."""
    data = np.ascontiguousarray(image)
    hashed = hashlib.blake2b(memoryview(data).cast("B"), digest_size=16).hexdigest()
    return f"{data.shape}:{data.dtype}:{hashed}"
