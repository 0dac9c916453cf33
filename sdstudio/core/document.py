"""The document: the picture, the mask of what to regenerate, the sketch, the region, and their
undo history.

Qt-free. The canvas turns pointer events into ``begin_stroke`` / ``Stroke.add`` / ``Stroke.end``
calls in image coordinates; every edit is one undo step and tells the listeners which area changed,
so the view repaints only that area. The picture and mask arrays are edited in place and keep
their identity for the document's life; so does the sketch (``core.sketch``: premultiplied RGBA
above the picture, which the brush paints on) once the first brush stroke has made it. The one
exception is a change of size (``replace_image``, an upscale, and its undo and redo): new arrays
take the old ones' place, and size listeners hear of it before the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from sdstudio.core.brush import BrushSettings, Stroke, Tool
from sdstudio.core.history import History, snapshot_box
from sdstudio.core.mask import REPAINT, bounding_box, invert
from sdstudio.core.region import Box
from sdstudio.core.sketch import LAYER as SKETCH
from sdstudio.core.sketch import SketchLayer, new_sketch, sketch_bounds

Listener = Callable[[Box], None]
_UNSAVED = -1  # a history state no document ever has: "modified" until saved


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16):
        kind = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"A picture must be a uint8 or uint16 numpy array, not {kind}.")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(
            f"A picture must be H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA), not {image.shape}."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"A picture must have at least one pixel, not {image.shape}.")


class Document:
    """The picture being edited (``image``), its ``mask`` (255 = regenerate), its ``sketch``
    (None until the brush first paints), and history."""

    def __init__(
        self, image: np.ndarray, path: Path | None = None, history_budget: int = 512 * 2**20
    ) -> None:
        _check_image(image)
        self.image = np.ascontiguousarray(image)
        self.mask = np.zeros(image.shape[:2], np.uint8)
        self.sketch: np.ndarray | None = None
        """Premultiplied RGBA uint8 the picture's size, made by the first brush stroke (a
        picture never sketched on costs nothing)."""
        self.sketch_visible = True
        """Whether the sketch is shown: a view setting, saved with projects, not an undo step."""
        self.region: Box | None = None
        self.path = path
        self.icc_profile: bytes | None = None
        """The colour profile the picture was converted from on opening (exports go back into
        it); None for sRGB."""
        self.history = History(history_budget)
        self._listeners: list[Listener] = []
        self._size_listeners: list[Callable[[], None]] = []
        self._stroke: Stroke | None = None
        self._stroke_pending = False  # the active stroke changed pixels not yet recorded
        self._saved_state = self.history.state

    @classmethod
    def blank(
        cls, width: int, height: int, color: tuple[int, int, int] = (255, 255, 255)
    ) -> Document:
        """A ``width`` x ``height`` RGB uint8 picture of one colour."""
        if width <= 0 or height <= 0:
            raise ValueError(f"A new picture needs a positive size, not {width} x {height}.")
        image = np.empty((height, width, 3), np.uint8)
        image[...] = np.asarray(color, np.uint8)
        return cls(image)

    # -- properties --------------------------------------------------------------------------

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def bounds(self) -> Box:
        return Box(0, 0, self.width, self.height)

    @property
    def layers(self) -> dict[str, np.ndarray]:
        layers = {"image": self.image, "mask": self.mask}
        if self.sketch is not None:
            layers[SKETCH] = self.sketch
        return layers

    @property
    def has_mask(self) -> bool:
        return bool(self.mask.any())

    @property
    def modified(self) -> bool:
        """True when the pixels differ from the last save (undoing back to it clears it)."""
        return self._stroke_pending or self.history.state != self._saved_state

    @modified.setter
    def modified(self, value: bool) -> None:
        self._saved_state = _UNSAVED if value else self.history.state

    @property
    def version(self) -> object:
        """Equal versions mean equal pixels (picture, mask, sketch): cheap to compare, for work done
        in the background on a snapshot. None while a stroke is being drawn."""
        return None if self._stroke_pending else self.history.state

    def mark_saved(self) -> None:
        self._finish_stroke()
        self.modified = False

    def mark_saved_as(self, version: object) -> None:
        """A save of a copy taken at ``version`` has finished (edits may have followed): the
        document is unmodified exactly when it is back at that version; never, for a copy
        taken during a stroke (None). A stroke under way goes on."""
        self._saved_state = _UNSAVED if version is None else version

    # -- listeners ---------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(box)`` with the changed area after every edit, undo and redo."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def add_size_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` when the picture changes size (before the ``add_listener`` ones
        hear of the whole new picture): a view must reallocate what it drew from."""
        self._size_listeners.append(listener)

    def _notify(self, box: Box | None) -> Box | None:
        if box is not None:
            for listener in list(self._listeners):
                listener(box)
        return box

    # -- strokes -----------------------------------------------------------------------------

    def begin_stroke(
        self, tool: Tool, settings: BrushSettings, color: tuple[int, int, int] | None = None
    ) -> Stroke:
        """Start a stroke: ERASE and RESTORE act on the mask, PAINT on the sketch."""
        self._finish_stroke()
        layer = SKETCH if tool is Tool.PAINT else "mask"
        if layer == SKETCH and self.sketch is None:
            self.sketch = new_sketch(self.height, self.width)
        self._stroke = Stroke(
            self.layers[layer],
            tool,
            settings,
            color,
            self.history,
            layer=layer,
            on_change=self._stroke_changed,
            on_end=self._stroke_ended,
            paint_alpha=layer == SKETCH,
        )
        return self._stroke

    def _stroke_changed(self, box: Box) -> None:
        self._stroke_pending = True
        self._notify(box)

    def _stroke_ended(self, _changed: Box | None) -> None:
        self._stroke = None
        self._stroke_pending = False

    def _finish_stroke(self) -> None:
        """End a stroke left open, so that it is one undo step before whatever comes next."""
        if self._stroke is not None:
            self._stroke.end()

    # -- edits -------------------------------------------------------------------------------

    def _edit(
        self, label: str, boxes: dict[str, Box], write: Callable[[], None], area: Box | None
    ) -> Box | None:
        """Snapshot the tiles of ``boxes`` ({layer: box}), ``write``, record one undo step, notify.

        Reports ``area``, or the union of the changed tiles when it is None; None if nothing
        changed (and then there is no undo step).
        """
        self._finish_stroke()
        layers = self.layers
        before = {layer: snapshot_box(layers[layer], box) for layer, box in boxes.items()}
        write()
        changed = self.history.record_layers(
            label, {layer: (tiles, layers[layer]) for layer, tiles in before.items()}
        )
        if changed is None:
            return None
        return self._notify(area or changed)

    def clear_mask(self) -> Box | None:
        box = bounding_box(self.mask)
        if box is None:
            return None

        def write() -> None:
            self.mask[box.slices] = 0

        return self._edit("Clear mask", {"mask": box}, write, box)

    def invert_mask(self) -> Box | None:
        def write() -> None:
            self.mask[...] = invert(self.mask)

        return self._edit("Invert mask", {"mask": self.bounds}, write, None)

    def set_mask(self, mask: np.ndarray, label: str = "Set mask") -> Box | None:
        """Replace the whole mask (a loaded mask, a damage proposal); bool masks become 0/255."""
        if not isinstance(mask, np.ndarray) or mask.shape != self.mask.shape:
            shape = getattr(mask, "shape", type(mask).__name__)
            raise ValueError(f"The mask must be {self.height} x {self.width} (H x W), not {shape}.")
        if mask.dtype == np.bool_:
            mask = np.where(mask, REPAINT, 0).astype(np.uint8)
        elif mask.dtype != np.uint8:
            raise ValueError(f"The mask must be uint8 (0-255) or bool, not {mask.dtype}.")

        def write() -> None:
            self.mask[...] = mask

        return self._edit(label, {"mask": self.bounds}, write, None)

    def apply_patch(
        self, box: Box, patch: np.ndarray, label: str = "Accept result", *, clear_mask: bool = False
    ) -> Box | None:
        """Write ``patch`` (the picture's own layout and dtype) into the picture at ``box``.

        With ``clear_mask`` the mask is cleared too, in the same undo step (an accepted inpaint).
        """
        if box.is_empty() or not box.inside(self.width, self.height):
            raise ValueError(f"The patch box {box} is empty or outside the picture.")
        expected = (box.height, box.width, *self.image.shape[2:])
        if not isinstance(patch, np.ndarray) or patch.shape != expected:
            shape = getattr(patch, "shape", type(patch).__name__)
            raise ValueError(f"The patch for {box} must have shape {expected}, not {shape}.")
        if patch.dtype != self.image.dtype:
            raise ValueError(
                f"The patch must be {self.image.dtype} like the picture, not {patch.dtype}."
            )
        boxes, area = {"image": box}, box
        masked = bounding_box(self.mask) if clear_mask else None
        if masked is not None:
            boxes["mask"], area = masked, box.union(masked)

        def write() -> None:
            self.image[box.slices] = patch
            if masked is not None:
                self.mask[masked.slices] = 0

        return self._edit(label, boxes, write, area)

    def replace_image(self, image: np.ndarray, label: str = "Upscale") -> Box:
        """Replace the picture with ``image``, of another size maybe (an upscale), as one undo
        step: the mask is scaled with it (nearest), the sketch (linear) and the region too; undo
        and redo restore both sizes exactly. Returns the new picture's bounds."""
        import cv2

        _check_image(image)
        self._finish_stroke()
        height, width = image.shape[:2]
        size = (width, height)
        after: dict[str, object] = {
            "image": np.ascontiguousarray(image),
            "mask": cv2.resize(self.mask, size, interpolation=cv2.INTER_NEAREST),
            "region": _scaled_region(self.region, self.width, self.height, width, height),
        }
        before: dict[str, object] = {"image": self.image, "mask": self.mask, "region": self.region}
        if self.sketch is not None:
            before[SKETCH] = self.sketch
            after[SKETCH] = cv2.resize(self.sketch, size, interpolation=cv2.INTER_LINEAR)
        self.history.record_replacement(label, before, after)
        return self._adopt(after)

    def _held(self) -> dict[str, object]:
        """The layers and the region, as undo and redo may replace them."""
        return {**self.layers, "region": self.region}

    def _adopt(self, held: dict[str, object]) -> Box:
        """Take the arrays (and region) of a replacement; tell size listeners, then the rest."""
        self.image, self.mask, self.region = held["image"], held["mask"], held["region"]
        sketch = held.get(SKETCH)
        if sketch is not None and sketch.shape[:2] != self.image.shape[:2]:
            sketch = new_sketch(self.height, self.width)  # made after the size changed: blank
        self.sketch = sketch
        for listener in list(self._size_listeners):
            listener()
        self._notify(self.bounds)
        return self.bounds

    # -- sketch ------------------------------------------------------------------------------

    def clear_sketch(self) -> Box | None:
        """Make the sketch transparent (one undo step); the area cleared, or None."""
        box = sketch_bounds(self.sketch)
        if box is None:
            return None

        def write() -> None:
            self.sketch[box.slices] = 0

        return self._edit("Clear sketch", {SKETCH: box}, write, box)

    def set_sketch_visible(self, visible: bool) -> Box | None:
        """Show or hide the sketch (not an undo step); listeners get the sketch's area."""
        if bool(visible) == self.sketch_visible:
            return None
        self.sketch_visible = bool(visible)
        return self._notify(sketch_bounds(self.sketch))

    def sketch_layer(self) -> SketchLayer | None:
        """A copy of the sketch and whether it is shown, for a save; None if never sketched."""
        if self.sketch is None:
            return None
        return SketchLayer(self.sketch.copy(), self.sketch_visible)

    def load_sketch(self, layer: SketchLayer | None) -> None:
        """Take the sketch of an opened project (not an undo step: call it before editing)."""
        self._finish_stroke()
        if layer is None:
            return
        if layer.pixels.shape[:2] != self.image.shape[:2]:
            raise ValueError(
                f"The sketch is {layer.pixels.shape[1]} x {layer.pixels.shape[0]}, the picture "
                f"{self.width} x {self.height}."
            )
        if self.sketch is None:
            self.sketch = new_sketch(self.height, self.width)
        self.sketch[...] = layer.pixels
        self.sketch_visible = layer.visible
        self._notify(self.bounds)

    def set_region(self, box: Box | None) -> None:
        """Store the generation region (not an undo step); listeners get the old and new area."""
        if box is not None and (box.is_empty() or not box.inside(self.width, self.height)):
            raise ValueError(f"The region {box} is empty or outside the picture.")
        old, self.region = self.region, box
        if old is not None and box is not None:
            self._notify(old.union(box))
        else:
            self._notify(old or box)

    # -- undo / redo -------------------------------------------------------------------------

    def undo(self) -> Box | None:
        self._finish_stroke()
        held = self._held()
        area = self.history.undo(held)
        return self._adopt(held) if held["image"] is not self.image else self._notify(area)

    def redo(self) -> Box | None:
        self._finish_stroke()
        held = self._held()
        area = self.history.redo(held)
        return self._adopt(held) if held["image"] is not self.image else self._notify(area)

    @property
    def can_undo(self) -> bool:
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    @property
    def undo_label(self) -> str | None:
        return self.history.undo_label

    @property
    def redo_label(self) -> str | None:
        return self.history.redo_label


def _scaled_region(box: Box | None, width: int, height: int, new_w: int, new_h: int) -> Box | None:
    """``box`` in a picture of ``width`` x ``height`` scaled to one of ``new_w`` x ``new_h``."""
    if box is None:
        return None
    sx, sy = new_w / width, new_h / height
    scaled = Box(round(box.x0 * sx), round(box.y0 * sy), round(box.x1 * sx), round(box.y1 * sy))
    scaled = scaled.clamp(new_w, new_h)
    return None if scaled.is_empty() else scaled
