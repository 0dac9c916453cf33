"""Undo and redo that store only the tiles an edit changed.

A layer array (the picture, the mask) is cut into ``TILE`` x ``TILE`` tiles, clipped at the
array's edge. An entry holds, for each named layer it changed (usually one), the ``before`` and
``after`` copies of each tile that changed, so a brush stroke on a 24 MP photo costs a few tiles,
not a copy of the photo.
Undo writes the ``before`` tiles back into the live array, redo the ``after`` tiles.
A change of the picture's size (an upscale) is a ``Replacement``: it holds the whole layers
before and after, and undo and redo put them in the owner's table of layers in place of the live
ones (``Document`` adopts them).

When the entries take more than ``budget_bytes``, the oldest are dropped (the newest is kept).
``state`` names the layers' pixels: an entry's id is the state after it, so once the oldest are
dropped, undoing everything ends at the state after the last one dropped, never at a state saved
before it (ids are never reused, and a discarded redo branch takes its ids with it).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np

from sdstudio.core.region import Box

TILE = 128

TileIndex = tuple[int, int]


def tiles_of(box: Box) -> list[TileIndex]:
    """The (ty, tx) indices of every tile ``box`` touches (none for an empty box)."""
    if box.is_empty():
        return []
    return [
        (ty, tx)
        for ty in range(box.y0 // TILE, (box.y1 - 1) // TILE + 1)
        for tx in range(box.x0 // TILE, (box.x1 - 1) // TILE + 1)
    ]


def tile_box(index: TileIndex, array: np.ndarray) -> Box:
    """The pixels of tile ``index`` in ``array``, clipped at the array's edge."""
    ty, tx = index
    height, width = array.shape[:2]
    return Box(tx * TILE, ty * TILE, min(width, (tx + 1) * TILE), min(height, (ty + 1) * TILE))


def snapshot_box(array: np.ndarray, box: Box) -> dict[TileIndex, np.ndarray]:
    """Copies of every whole tile (clipped at the array's edge) that ``box`` touches."""
    box = box.clamp(array.shape[1], array.shape[0])
    return {index: array[tile_box(index, array).slices].copy() for index in tiles_of(box)}


def _union(a: Box | None, b: Box | None) -> Box | None:
    return b if a is None else a if b is None else a.union(b)


def _area(tiles: Mapping[TileIndex, np.ndarray]) -> Box | None:
    """The union of the tiles' boxes, from their indices and (clipped) shapes."""
    area = None
    for (ty, tx), tile in tiles.items():
        box = Box(tx * TILE, ty * TILE, tx * TILE + tile.shape[1], ty * TILE + tile.shape[0])
        area = box if area is None else area.union(box)
    return area


@dataclass(frozen=True)
class Entry:
    """One undo step: for each layer it changed, the ``before`` and ``after`` changed tiles."""

    id: int
    label: str
    before: dict[str, dict[TileIndex, np.ndarray]]
    after: dict[str, dict[TileIndex, np.ndarray]]

    @property
    def nbytes(self) -> int:
        return sum(
            tile.nbytes
            for side in (self.before, self.after)
            for tiles in side.values()
            for tile in tiles.values()
        )


@dataclass(frozen=True)
class Replacement:
    """One undo step that replaces whole layers (a change of size): ``before`` and ``after``
    map names to the values held (arrays; the owner may add others, such as the region). The
    arrays are not copied: the ``after`` ones are the live layers while the step is done, the
    ``before`` ones while it is undone, and later steps are always undone first."""

    id: int
    label: str
    before: dict[str, object]
    after: dict[str, object]

    @property
    def nbytes(self) -> int:
        """What the step holds beyond the live layers: the side that is not live (the larger,
        to count it the same on either stack)."""

        def size(side: dict[str, object]) -> int:
            return sum(v.nbytes for v in side.values() if isinstance(v, np.ndarray))

        return max(size(self.before), size(self.after))


class History:
    """Undo and redo stacks of tile entries, within a memory budget."""

    def __init__(self, budget_bytes: int = 512 * 2**20) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"The undo budget must be positive, not {budget_bytes} bytes.")
        self.budget_bytes = budget_bytes
        self._undo: deque[Entry | Replacement] = deque()
        self._redo: list[Entry | Replacement] = []
        self._ids = itertools.count(1)
        self._bytes = 0
        self._base_state = 0  # the state at the bottom of the undo stack
        self.dropped = 0

    # -- recording ---------------------------------------------------------------------------

    def record(
        self,
        label: str,
        layer: str,
        before_tiles: Mapping[TileIndex, np.ndarray],
        array: np.ndarray,
    ) -> Box | None:
        """Push an entry for the tiles of ``array`` that differ from ``before_tiles``.

        Returns the area of the changed tiles, or None (and pushes nothing) when none changed.
        """
        return self.record_layers(label, {layer: (before_tiles, array)})

    def record_layers(
        self,
        label: str,
        changes: Mapping[str, tuple[Mapping[TileIndex, np.ndarray], np.ndarray]],
    ) -> Box | None:
        """Like ``record``, for edits of several layers at once (one undo step), e.g. accepting
        a result into the picture and clearing the mask: ``{layer: (before_tiles, array)}``."""
        before: dict[str, dict[TileIndex, np.ndarray]] = {}
        after: dict[str, dict[TileIndex, np.ndarray]] = {}
        area = None
        for layer, (before_tiles, array) in changes.items():
            for index, old in before_tiles.items():
                live = array[tile_box(index, array).slices]
                if live.shape != old.shape or live.dtype != old.dtype:
                    raise ValueError(
                        f"Undo tile {index} of layer {layer!r} is {old.shape} {old.dtype}, but "
                        f"the layer's tile is {live.shape} {live.dtype}: snapshot whole tiles "
                        "with snapshot_box()."
                    )
                if not np.array_equal(old, live):
                    before.setdefault(layer, {})[index] = old
                    after.setdefault(layer, {})[index] = live.copy()
            if layer in before:
                area = _union(area, _area(before[layer]))
        if area is not None:
            self._push(Entry(next(self._ids), label, before, after))
        return area

    def record_replacement(
        self, label: str, before: Mapping[str, object], after: Mapping[str, object]
    ) -> None:
        """Push a step that replaces whole layers (``before`` by ``after``; see
        ``Replacement``), e.g. the picture with one of another size."""
        self._push(Replacement(next(self._ids), label, dict(before), dict(after)))

    def _push(self, entry: Entry | Replacement) -> None:
        for old in self._redo:
            self._bytes -= old.nbytes
        self._redo.clear()
        self._undo.append(entry)
        self._bytes += entry.nbytes
        while self._bytes > self.budget_bytes and len(self._undo) > 1:
            oldest = self._undo.popleft()
            self._bytes -= oldest.nbytes
            self._base_state = oldest.id
            self.dropped += 1

    def clear(self) -> None:
        """Forget every entry (e.g. when another picture is loaded): the layers' state gets a
        new id, so a document saved before is not taken for unmodified after."""
        self._base_state = next(self._ids)
        self._undo.clear()
        self._redo.clear()
        self._bytes = 0

    # -- undo / redo -------------------------------------------------------------------------

    @staticmethod
    def _apply(arrays: Mapping[str, np.ndarray], entry, side: str) -> Box | None:
        if not isinstance(entry, Replacement):
            return History._write(arrays, getattr(entry, side))
        if not isinstance(arrays, MutableMapping):
            raise TypeError("Undoing a replacement needs a mutable table of layers.")
        values = getattr(entry, side)
        arrays.update(values)
        image = values.get("image")
        return Box(0, 0, image.shape[1], image.shape[0]) if image is not None else None

    @staticmethod
    def _write(
        arrays: Mapping[str, np.ndarray], layers: Mapping[str, Mapping[TileIndex, np.ndarray]]
    ) -> Box | None:
        missing = set(layers) - set(arrays)
        if missing:
            raise KeyError(
                f"The undo entry is for layers {sorted(missing)}, not in {list(arrays)}."
            )
        area = None
        for layer, tiles in layers.items():
            array = arrays[layer]
            for index, tile in tiles.items():
                array[tile_box(index, array).slices] = tile
            area = _union(area, _area(tiles))
        return area

    def undo(self, arrays: Mapping[str, np.ndarray]) -> Box | None:
        """Put the newest entry's ``before`` tiles back; the changed area, or None."""
        if not self._undo:
            return None
        area = self._apply(arrays, self._undo[-1], "before")
        self._redo.append(self._undo.pop())
        return area

    def redo(self, arrays: Mapping[str, np.ndarray]) -> Box | None:
        """Re-apply the most recently undone entry's ``after`` tiles; the changed area, or None."""
        if not self._redo:
            return None
        area = self._apply(arrays, self._redo[-1], "after")
        self._undo.append(self._redo.pop())
        return area

    # -- state -------------------------------------------------------------------------------

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_label(self) -> str | None:
        return self._undo[-1].label if self._undo else None

    @property
    def redo_label(self) -> str | None:
        return self._redo[-1].label if self._redo else None

    @property
    def bytes_used(self) -> int:
        return self._bytes

    @property
    def entries(self) -> int:
        """How many entries are held (undoable and redoable)."""
        return len(self._undo) + len(self._redo)

    @property
    def state(self) -> int:
        """An id of the layers' current state: equal ids mean equal pixels (for "modified")."""
        return self._undo[-1].id if self._undo else self._base_state
