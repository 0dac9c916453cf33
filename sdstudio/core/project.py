"""Project files: the picture, its mask and the generation settings in one OpenRaster file.

OpenRaster (.ora) is a zip archive that Krita, GIMP, MyPaint and others open. SD Studio writes::

    mimetype                  "image/openraster": the first entry, stored, with no extra field
    stack.xml                 <image version="0.0.3" w=.. h=..><stack> Mask, Result 1 ..,
                              Sketch, Picture
    data/mask.png             the mask, 8-bit grey, 255 = regenerate: a hidden layer on top
    data/sketch.png           the brush's sketch, 8-bit RGBA (straight alpha), shown or hidden as
                              in the editor; only once something was sketched (project_sketch)
    data/result-N.png         waiting results, not yet accepted: hidden layers at their place
    data/picture.png          the picture in its own layout and bit depth (16-bit PNG for uint16)
    mergedimage.png           what the picture looks like (with a shown sketch), 8-bit RGBA
    Thumbnails/thumbnail.png  the same, at most 256 x 256
    sdstudio/project.json     {"format": 1, "writer": ..., "extra": {prompts, seeds, models ...},
                               "results": [how each waiting result was made]}

Layers are listed topmost first, as the specification says; other programs ignore ``sdstudio/``.
Saving (``project_save``) writes a temporary file next to the target, reads it back with this
module's loader and compares every layer bit for bit, keeps the previous file as ``name.ora~``
and only then replaces the target, so that there is never a moment without ``name.ora``.

Loading treats the file as hostile: nothing is extracted to disk, entry names, counts and sizes
are checked (sizes again while reading, in case the headers lie), stack.xml may not declare a
DOCTYPE or entities, and layer PNGs go through the image loader's decompression-bomb checks.
Files from other programs load their "Picture" layer if they have one, else their flattened
mergedimage.png; ``Project.notes`` says what was not loaded as stored.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from sdstudio.core import temporaries
from sdstudio.core.errors import ProjectError
from sdstudio.core.imageio import _bomb_message, _decode, _read_failure
from sdstudio.core.pixels import to_8bit
from sdstudio.core.project_sketch import SKETCH_LAYER, sketch_from_file
from sdstudio.core.sketch import SketchLayer

SUFFIX = ".ora"
BACKUP_SUFFIX = "~"
"""The previous version of ``name.ora`` is kept as ``name.ora~``."""
MIMETYPE = b"image/openraster"
ORA_VERSION = "0.0.3"
FORMAT = 1
"""Layout of sdstudio/project.json. Raise it when the layout changes and migrate older ones on
load; a file with a newer format is refused rather than half understood and saved over."""
PICTURE_LAYER, MASK_LAYER = "Picture", "Mask"
PICTURE_SRC, MASK_SRC = "data/picture.png", "data/mask.png"
RESULT_LAYER, RESULT_SRC = "Result {}", "data/result-{}.png"
"""Waiting results: hidden layers at their place, their settings in sdstudio/project.json."""
_RESULT = re.compile(r"Result (\d+)")
STACK, MERGED, THUMBNAIL = "stack.xml", "mergedimage.png", "Thumbnails/thumbnail.png"
SETTINGS = "sdstudio/project.json"
THUMBNAIL_SIZE = 256
PNG_LEVEL = 1
"""zlib level of the layers: a 24 MP save (and so every autosave) takes 7 s instead of 24 s at
the default level 6, for a file 5% larger (bench_project.py)."""

MAX_ENTRIES = 1000
"""Most entries an archive may list (ours has 7; Krita writes one per layer)."""
MAX_MEMBER_BYTES = 2**31
"""Most bytes one entry may hold uncompressed: above the PNG of the largest picture the image
loader accepts (``imageio.MAX_PIXELS`` of 16-bit RGBA is 1.2 GB before compression)."""
MAX_TOTAL_BYTES = 2**32
"""Most bytes all entries together may declare, and all entries read may hold."""
MAX_XML_BYTES = 2**20
"""Most bytes of stack.xml (a thousand layers take about 200 KB)."""
MAX_SETTINGS_BYTES = 16 * 2**20
"""Most bytes of sdstudio/project.json."""

_MIMETYPE_BYTES = 256
_PICTURES = (
    (b"\x89PNG", "a PNG picture"),
    (b"\xff\xd8\xff", "a JPEG picture"),
    (b"GIF8", "a GIF picture"),
    (b"II*\0", "a TIFF picture"),
    (b"MM\0*", "a TIFF picture"),
    (b"BM", "a BMP picture"),
)


@dataclass(frozen=True, eq=False)
class Result:
    """A generated result kept with the project, not yet accepted: its pixels (the picture's
    own layout and depth) at ``x``, ``y``, and how it was made (JSON-serialisable ``info``)."""

    patch: np.ndarray
    x: int
    y: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Project:
    """A loaded project: ``image``, ``mask`` and ``sketch`` (None: never sketched) as a
    Document holds them, our ``extra`` settings, the waiting ``results``, and ``notes`` on
    anything not loaded as stored (files from other programs)."""

    image: np.ndarray
    mask: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    results: tuple[Result, ...] = ()
    sketch: SketchLayer | None = None


# ----------------------------------------------------------------------------------- loading
def load_project(path: str | os.PathLike[str]) -> Project:
    """Read an OpenRaster file. Anything unreadable, unsafe or not OpenRaster -> ProjectError."""
    name = os.fspath(path)
    temporaries.remove_stale(name)  # those of saves of it that were killed
    return _load(name, name)


def _load(path: str, name: str) -> Project:
    """Read ``path``; messages call it ``name`` (a save verifies its temporary file)."""
    if os.path.isdir(path):
        raise ProjectError(f"'{name}' is a folder, not a project file; choose an {SUFFIX} file.")
    try:
        archive = zipfile.ZipFile(path)
    except OSError as exc:
        raise ProjectError(_read_failure(name, exc)) from exc
    except Exception as exc:  # BadZipFile, or whatever a damaged directory makes zipfile raise
        raise ProjectError(_not_a_zip(path, name)) from exc
    with archive:
        try:
            return _Reader(archive, name).project()
        except ProjectError:
            raise
        except MemoryError as exc:
            raise ProjectError(
                f"Not enough memory to open '{name}'; close other pictures."
            ) from exc
        except Exception as exc:  # CRC errors, truncated or encrypted entries ...
            raise ProjectError(_damaged(name, f"{exc}")) from exc


def _not_a_zip(path: str, name: str) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as file:
        head = file.read(16)
        kind = next((what for magic, what in _PICTURES if head.startswith(magic)), None)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            kind = "a WebP picture"
        if kind is not None:
            return (
                f"'{name}' is not an OpenRaster file: it is {kind}. Open it as a picture instead."
            )
        if not head:
            return f"'{name}' is not an OpenRaster file: it is empty. {_BACKUP_HINT.format(name)}"
    return (
        f"'{name}' is not an OpenRaster file: it is not a zip archive, or it is damaged or "
        f"incomplete. {_BACKUP_HINT.format(name)}"
    )


_BACKUP_HINT = "Open its backup '{}" + BACKUP_SUFFIX + "' if there is one."


def _damaged(name: str, why: str) -> str:
    return (
        f"'{name}' could not be read ({why}); the file may be damaged or incomplete. "
        f"{_BACKUP_HINT.format(name)}"
    )


def _unsafe(name: str, why: str) -> str:
    return (
        f"'{name}' is refused as unsafe: {why}. It may be damaged or made to harm; "
        "open only project files from sources you trust."
    )


def _unsafe_name(member: str) -> bool:
    parts = member.replace("\\", "/").split("/")
    return member.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", member)) or ".." in parts


class _Reader:
    """The members of an untrusted OpenRaster archive, read in memory within the limits."""

    def __init__(self, archive: zipfile.ZipFile, name: str) -> None:
        self.archive, self.name = archive, name
        self.budget = MAX_TOTAL_BYTES  # bytes that reading may still produce
        self.notes: list[str] = []
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            why = f"it lists {len(infos):,} entries, more than the limit of {MAX_ENTRIES:,}"
            raise ProjectError(_unsafe(name, why))
        self.members: dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in infos:
            member = info.filename
            if _unsafe_name(member):
                raise ProjectError(_unsafe(name, f"it holds an entry named {member!r}"))
            if member in self.members:
                raise ProjectError(_damaged(name, f"the entry '{member}' appears twice"))
            if info.file_size > MAX_MEMBER_BYTES:
                why = f"its entry '{member}' would unpack to {info.file_size:,} bytes"
                raise ProjectError(_unsafe(name, f"{why}, more than {MAX_MEMBER_BYTES:,}"))
            declared += info.file_size
            self.members[member] = info
        if declared > MAX_TOTAL_BYTES:
            why = f"it would unpack to {declared:,} bytes, more than {MAX_TOTAL_BYTES:,}"
            raise ProjectError(_unsafe(name, why))
        self.result_infos: list[dict[str, Any]] = []  # from the settings, per result

    def read(self, member: str, limit: int) -> bytes:
        """The bytes of ``member``, refused beyond ``limit`` whatever its header says."""
        limit = min(limit, self.budget)
        with self.archive.open(self.members[member]) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise ProjectError(_unsafe(self.name, f"its entry '{member}' unpacks to too much"))
        self.budget -= len(data)
        return data

    def project(self) -> Project:
        if "mimetype" not in self.members:
            raise ProjectError(
                f"'{self.name}' is not an OpenRaster file: it is a zip archive without the "
                "'mimetype' entry every .ora file has."
            )
        kind = self.read("mimetype", _MIMETYPE_BYTES).strip()
        if kind != MIMETYPE:
            shown = kind[:64].decode("utf-8", "replace")
            raise ProjectError(
                f"'{self.name}' is not an OpenRaster file: its mimetype is '{shown}', "
                f"not '{MIMETYPE.decode()}'."
            )
        width, height, layers = self._stack()
        extra = self._settings()
        image = self._picture(layers, width, height)
        mask = self._mask(layers, image.shape[:2])
        results = self._results(layers, image.shape[:2])
        sketch = self._sketch(layers, image.shape[:2])
        return Project(image, mask, extra, tuple(self.notes), results, sketch)

    def _stack(self) -> tuple[int, int, list[ET.Element]]:
        if STACK not in self.members:
            raise ProjectError(_damaged(self.name, f"it has no {STACK}"))
        data = self.read(STACK, MAX_XML_BYTES)
        try:
            utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
            text = data.decode("utf-16" if utf16 else "utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ProjectError(_damaged(self.name, f"its {STACK} is not UTF-8 text")) from exc
        upper = text.upper()
        if "<!DOCTYPE" in upper or "<!ENTITY" in upper:  # entity expansion bombs
            why = f"its {STACK} declares a DOCTYPE or entities, which OpenRaster never uses"
            raise ProjectError(_unsafe(self.name, why))
        try:
            root = ET.fromstring(text)  # a str: any encoding declaration is ignored
        except ET.ParseError as exc:
            why = f"its {STACK} is not well-formed XML: {exc}"
            raise ProjectError(_damaged(self.name, why)) from exc
        stack = root.find("stack")
        if root.tag != "image" or stack is None:
            why = f"its {STACK} has no <image> with a <stack>"
            raise ProjectError(_damaged(self.name, why))
        width, height = self._number(root, "w", None), self._number(root, "h", None)
        if width <= 0 or height <= 0:
            why = f"its {STACK} gives the size {width}x{height}"
            raise ProjectError(_damaged(self.name, why))
        return width, height, list(stack.iter("layer"))

    def _number(self, element: ET.Element, key: str, default: int | None) -> int:
        value = element.get(key)
        if value is None and default is not None:
            return default
        try:
            return int(str(value).strip())
        except ValueError:
            why = f"its {STACK} has {key}={value!r} on <{element.tag}>, not a whole number"
            raise ProjectError(_damaged(self.name, why)) from None

    def _settings(self) -> dict[str, Any]:
        if SETTINGS not in self.members:
            return {}
        data = self.read(SETTINGS, MAX_SETTINGS_BYTES)
        try:
            document = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            document = {"error": str(exc)}
        version = document.get("format") if isinstance(document, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT:
            raise ProjectError(
                f"'{self.name}' was saved by a newer SD Studio (project format {version}; this "
                f"version reads up to {FORMAT}). Update SD Studio to open it."
            )
        extra = document.get("extra") if isinstance(document, dict) else None
        infos = document.get("results") if isinstance(document, dict) else None
        self.result_infos = [i if isinstance(i, dict) else {} for i in infos or []]
        if version != FORMAT or not isinstance(extra, dict):
            self.notes.append(
                "The saved settings (prompts, seeds, models) could not be read; "
                "the picture and mask were loaded without them."
            )
            return {}
        return extra  # format 1 is the first: older formats would be migrated here

    def _picture(self, layers: list[ET.Element], width: int, height: int) -> np.ndarray:
        named = [layer for layer in layers if layer.get("name") == PICTURE_LAYER]
        ours = (PICTURE_LAYER, MASK_LAYER, SKETCH_LAYER)
        others = [
            layer.get("name", "")
            for layer in layers
            if layer.get("name") not in ours and self._result_number(layer) is None
        ]
        if named:
            layer = named[0]
            image = self._layer(layer)
            if self._offsets(layer) == (0, 0) and image.shape[:2] == (height, width):
                if others:
                    listed = ", ".join(f"'{other}'" for other in others[:5])
                    self.notes.append(
                        f"Only the layer '{PICTURE_LAYER}' was loaded; the other layers "
                        f"({listed}{', ...' if len(others) > 5 else ''}) were left out."
                    )
                return image
            self.notes.append(
                f"The layer '{PICTURE_LAYER}' was moved or resized in another program; the "
                f"flattened picture ({MERGED}) was loaded instead."
            )
        elif SETTINGS in self.members:
            why = f"it has no layer named '{PICTURE_LAYER}'"
            raise ProjectError(_damaged(self.name, why))
        else:
            self.notes.append(
                f"This file was not saved by SD Studio: its {len(layers)} layer(s) were loaded "
                f"as one flattened picture ({MERGED})."
            )
        if MERGED not in self.members:
            raise ProjectError(
                f"'{self.name}' has no picture SD Studio can read: no layer named "
                f"'{PICTURE_LAYER}' and no {MERGED}. Flatten it in the program that made it "
                "and save it again."
            )
        image = self._png(MERGED)
        opaque = np.iinfo(image.dtype).max
        if image.ndim == 3 and image.shape[2] == 4 and np.all(image[:, :, 3] == opaque):
            image = np.ascontiguousarray(image[:, :, :3])  # opaque: alpha says nothing
        return image

    def _mask(self, layers: list[ET.Element], shape: tuple[int, ...]) -> np.ndarray:
        named = [layer for layer in layers if layer.get("name") == MASK_LAYER]
        if not named:
            return np.zeros(shape, np.uint8)
        mask = self._layer(named[0])
        x, y = self._offsets(named[0])
        if (x, y) != (0, 0) or mask.shape[:2] != shape:
            raise ProjectError(
                f"'{self.name}' cannot be opened: its mask is {mask.shape[1]}x{mask.shape[0]} "
                f"at ({x}, {y}) but the picture is {shape[1]}x{shape[0]} at (0, 0). In the "
                f"program that changed it, make the layer '{MASK_LAYER}' cover the picture "
                "or delete it, and save again."
            )
        if mask.dtype == np.uint8 and mask.ndim == 2:
            return mask
        self.notes.append("The mask was stored in colour or 16 bits; it was converted to grey.")
        grey = to_8bit(mask)
        if grey.ndim == 3:
            colour = Image.fromarray(np.ascontiguousarray(grey[:, :, :3]))
            luma = np.asarray(colour.convert("L"), np.uint32)
            alpha = grey[:, :, 3].astype(np.uint32) if grey.shape[2] == 4 else 255
            grey = ((luma * alpha + 127) // 255).astype(np.uint8)
        return np.ascontiguousarray(grey)

    def _sketch(self, layers: list[ET.Element], shape: tuple[int, ...]) -> SketchLayer | None:
        named = [layer for layer in layers if layer.get("name") == SKETCH_LAYER]
        if not named:
            return None
        x, y = self._offsets(named[0])
        sketch, notes = sketch_from_file(
            self._layer(named[0]), x, y, shape, named[0].get("visibility")
        )
        self.notes.extend(notes)
        return sketch

    def _result_number(self, layer: ET.Element) -> int | None:
        """N for our own "Result N" layers (named and stored as we write them), else None."""
        match = _RESULT.fullmatch(layer.get("name", ""))
        if match is None or layer.get("src") != RESULT_SRC.format(match.group(1)):
            return None
        return int(match.group(1))

    def _results(self, layers: list[ET.Element], shape: tuple[int, ...]) -> tuple[Result, ...]:
        infos = self.result_infos
        results, misplaced = [], 0
        for layer in layers:
            number = self._result_number(layer)
            if number is None:
                continue
            patch = self._layer(layer)
            x, y = self._offsets(layer)
            h, w = patch.shape[:2]
            if x < 0 or y < 0 or x + w > shape[1] or y + h > shape[0]:
                misplaced += 1
                continue
            info = infos[number - 1] if 0 < number <= len(infos) else {}
            results.append((number, Result(patch, x, y, info)))
        if misplaced:
            self.notes.append(f"{misplaced} waiting result(s) lay outside the picture; left out.")
        return tuple(result for _, result in sorted(results, key=lambda pair: pair[0]))

    def _offsets(self, layer: ET.Element) -> tuple[int, int]:
        return self._number(layer, "x", 0), self._number(layer, "y", 0)

    def _layer(self, layer: ET.Element) -> np.ndarray:
        src = layer.get("src", "")
        if src not in self.members:
            why = f"its layer '{layer.get('name')}' has no pixels ('{src}' is missing)"
            raise ProjectError(_damaged(self.name, why))
        return self._png(src)

    def _png(self, member: str) -> np.ndarray:
        """Decode a PNG entry with the image loader's bomb checks and bit-depth handling."""
        data = self.read(member, MAX_MEMBER_BYTES)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
                    return _decode(im, data)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # reads "'data/picture.png' in 'x.ora' is 100000x100000 (...) pixels, more than ..."
            raise ProjectError(_bomb_message(f"{member}' in '{self.name}", data, exc)) from exc
        except UnidentifiedImageError as exc:
            why = f"its entry '{member}' is not a PNG picture"
            raise ProjectError(_damaged(self.name, why)) from exc
        except MemoryError:
            raise
        except Exception as exc:
            why = f"its entry '{member}' cannot be decoded: {exc}"
            raise ProjectError(_damaged(self.name, why)) from exc
