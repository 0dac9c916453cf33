"""Saving projects (the OpenRaster layout is described in ``core.project``).

The archive is built in memory, written beside the target through the image writer's atomic
write, read back with the project loader and compared layer by layer, and only then swapped in,
the previous file kept as ``name.ora~``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sdstudio import __version__
from sdstudio.core import project, temporaries
from sdstudio.core.atomic import write_atomically
from sdstudio.core.errors import ProjectError
from sdstudio.core.imageio import _encode
from sdstudio.core.pixels import to_8bit
from sdstudio.core.project import (
    _BACKUP_HINT,
    BACKUP_SUFFIX,
    FORMAT,
    MASK_LAYER,
    MASK_SRC,
    MERGED,
    MIMETYPE,
    ORA_VERSION,
    PICTURE_LAYER,
    PICTURE_SRC,
    PNG_LEVEL,
    RESULT_LAYER,
    RESULT_SRC,
    SETTINGS,
    STACK,
    SUFFIX,
    THUMBNAIL,
    THUMBNAIL_SIZE,
    Project,
    Result,
)
from sdstudio.core.project_sketch import HIDDEN, SKETCH_LAYER, SKETCH_SRC, sketch_for_file
from sdstudio.core.sketch import SketchLayer, composite


def save_project(
    path: str | os.PathLike[str],
    image: np.ndarray,
    mask: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
    results: tuple[Result, ...] | list[Result] = (),
    sketch: SketchLayer | None = None,
) -> None:
    """Write ``image``, ``mask`` (None: nothing to regenerate) and the JSON-serialisable
    ``extra`` to ``path`` (.ora), with the waiting ``results`` as hidden layers and the
    ``sketch`` (None: never sketched) as its own layer, verified and atomically; the previous
    file becomes ``path~``.
    On failure the previous file is left as it was and no temporary file remains."""
    name = os.fspath(path)
    target = Path(os.path.realpath(name)) if os.path.islink(name) else Path(name)
    if target.suffix.lower() != SUFFIX:
        raise ProjectError(
            f"Cannot save '{name}' as a project: project files end in {SUFFIX}; "
            f"choose a name ending in {SUFFIX}, or export a picture instead."
        )
    mask = _checked_layers(name, image, mask)
    results = tuple(results)
    _check_results(name, image, results)
    _check_sketch(name, image, sketch)
    settings = _settings_json(name, extra, [result.info for result in results])
    try:
        payload = _archive(image, mask, settings, results, sketch)
    except MemoryError as exc:
        raise ProjectError(f"Not enough memory to save '{name}'; close other pictures.") from exc
    except Exception as exc:
        raise ProjectError(f"Cannot save '{name}': encoding the layers failed ({exc}).") from exc
    stored = json.loads(settings)
    kept = tuple(
        Result(r.patch, r.x, r.y, info) for r, info in zip(results, stored["results"], strict=True)
    )
    expected = Project(image, mask, stored["extra"], results=kept, sketch=sketch)
    _replace_verified(name, target, payload, expected)


def _checked_layers(name: str, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if (
        not isinstance(image, np.ndarray)
        or image.dtype not in (np.uint8, np.uint16)
        or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)))
        or image.size == 0
    ):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ProjectError(
            f"Cannot save '{name}': the picture must be 8- or 16-bit grey, RGB or RGBA (got {got})."
        )
    height, width = image.shape[:2]
    if width * height > Image.MAX_IMAGE_PIXELS:
        raise ProjectError(
            f"Cannot save '{name}': the picture is {width}x{height}, more than the "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels SD Studio opens; scale it down first."
        )
    if mask is None:
        return np.zeros((height, width), np.uint8)
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.shape != (height, width):
        got = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask)
        raise ProjectError(
            f"Cannot save '{name}': the mask must be 8-bit grey of the picture's size "
            f"({height}, {width}) (got {got})."
        )
    return mask


def _settings_json(name: str, extra: dict[str, Any] | None, results: list[Any]) -> bytes:
    if extra is not None and not isinstance(extra, dict):
        raise ProjectError(f"Cannot save '{name}': the settings must be a dict, not {type(extra)}.")
    document = {
        "format": FORMAT,
        "writer": f"SD Studio {__version__}",
        "extra": extra or {},
        "results": results,
    }
    try:
        return json.dumps(document, ensure_ascii=False, indent=1, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProjectError(
            f"Cannot save '{name}': the project settings cannot be stored as JSON ({exc}). "
            "This is a bug in SD Studio; please report it."
        ) from exc


def _check_results(name: str, image: np.ndarray, results: tuple[Result, ...]) -> None:
    height, width = image.shape[:2]
    for number, result in enumerate(results, 1):
        patch = result.patch
        fits = (
            isinstance(patch, np.ndarray)
            and patch.dtype in (np.uint8, np.uint16)
            and (patch.ndim == 2 or (patch.ndim == 3 and patch.shape[2] in (3, 4)))
            and patch.size > 0
            and result.x >= 0
            and result.y >= 0
            and result.x + patch.shape[1] <= width
            and result.y + patch.shape[0] <= height
        )
        if not fits or not isinstance(result.info, dict):
            raise ProjectError(
                f"Cannot save '{name}': result {number} is not a picture inside the picture."
            )


def _check_sketch(name: str, image: np.ndarray, sketch: SketchLayer | None) -> None:
    if sketch is not None and (
        not isinstance(sketch, SketchLayer) or sketch.pixels.shape[:2] != image.shape[:2]
    ):
        raise ProjectError(f"Cannot save '{name}': the sketch is not the picture's size.")


def _archive(
    image: np.ndarray,
    mask: np.ndarray,
    settings: bytes,
    results: tuple[Result, ...] = (),
    sketch: SketchLayer | None = None,
) -> bytes:
    merged = _rgba8(image)
    if sketch is not None and sketch.visible:
        merged = composite(merged, sketch.pixels)
    thumbnail = Image.fromarray(merged)
    thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        stored, deflated = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED  # PNGs are compressed
        _add(archive, "mimetype", MIMETYPE, stored)
        stack = _stack_xml(image.shape[1], image.shape[0], results, sketch)
        _add(archive, STACK, stack, deflated)
        _add(archive, MASK_SRC, _encode(mask, "PNG", None, PNG_LEVEL), stored)
        for number, result in enumerate(results, 1):
            patch = _encode(result.patch, "PNG", None, PNG_LEVEL)
            _add(archive, RESULT_SRC.format(number), patch, stored)
        if sketch is not None:
            strokes = _encode(sketch_for_file(sketch), "PNG", None, PNG_LEVEL)
            _add(archive, SKETCH_SRC, strokes, stored)
        _add(archive, PICTURE_SRC, _encode(image, "PNG", None, PNG_LEVEL), stored)
        _add(archive, MERGED, _encode(merged, "PNG", None, PNG_LEVEL), stored)
        _add(archive, THUMBNAIL, _encode(np.asarray(thumbnail), "PNG", None), stored)
        _add(archive, SETTINGS, settings, deflated)
    return buffer.getvalue()


def _add(archive: zipfile.ZipFile, member: str, data: bytes, compression: int) -> None:
    info = zipfile.ZipInfo(member, date_time=time.localtime()[:6])
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def _rgba8(image: np.ndarray) -> np.ndarray:
    """The picture as 8-bit RGBA (grey repeated, opaque where it has no alpha)."""
    pixels = to_8bit(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 3:
        pixels = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    return np.ascontiguousarray(pixels)


def _stack_xml(
    width: int, height: int, results: tuple[Result, ...] = (), sketch: SketchLayer | None = None
) -> bytes:
    root = ET.Element("image", version=ORA_VERSION, w=str(width), h=str(height))
    stack = ET.SubElement(root, "stack")
    layers = [(MASK_LAYER, MASK_SRC, 0, 0, "hidden")]
    for number, result in enumerate(results, 1):
        name = RESULT_LAYER.format(number)
        layers.append((name, RESULT_SRC.format(number), result.x, result.y, "hidden"))
    if sketch is not None:
        shown = "visible" if sketch.visible else HIDDEN
        layers.append((SKETCH_LAYER, SKETCH_SRC, 0, 0, shown))
    layers.append((PICTURE_LAYER, PICTURE_SRC, 0, 0, "visible"))
    for layer, src, x, y, visibility in layers:
        attributes = {"composite-op": "svg:src-over", "opacity": "1.000"}
        ET.SubElement(
            stack,
            "layer",
            name=layer,
            src=src,
            x=str(x),
            y=str(y),
            visibility=visibility,
            **attributes,
        )
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _replace_verified(name: str, target: Path, payload: bytes, expected: Project) -> None:
    """The image writer's atomic write, with the written file read back and compared, and the
    previous file kept as ``name.ora~``, before the swap."""
    if target.is_dir():
        raise ProjectError(f"Cannot save '{name}': a folder has that name. Choose another name.")

    def check_and_keep_backup(temporary: str) -> None:
        _verify(name, temporary, expected)
        if target.exists():
            _keep_backup(name, target)

    write_atomically(
        name, target, payload, error=ProjectError, before_replace=check_and_keep_backup
    )


def _verify(name: str, temporary: str, expected: Project) -> None:
    """Read the written file back and compare it with what was meant to be written."""
    try:
        written = project._load(temporary, name)  # the loader every open uses
    except ProjectError as exc:
        why = str(exc).replace(f" {_BACKUP_HINT.format(name)}", "")  # that hint is for opening
        raise ProjectError(
            f"Cannot save '{name}': the written file could not be read back ({why}). "
            "The previous file, if any, is unchanged."
        ) from exc
    differ = [
        what
        for what, same in (
            ("picture", _same(written.image, expected.image)),
            ("mask", _same(written.mask, expected.mask)),
            ("settings", written.extra == expected.extra),
            ("results", _same_results(written.results, expected.results)),
            ("sketch", _same_sketch(written.sketch, expected.sketch)),
        )
        if not same
    ]
    if differ:
        raise ProjectError(
            f"Cannot save '{name}': the written file does not read back the same "
            f"({' and '.join(differ)} differ); the disk or memory may be failing. "
            "The previous file, if any, is unchanged; save to another disk."
        )


def _same_results(a: tuple[Result, ...], b: tuple[Result, ...]) -> bool:
    return len(a) == len(b) and all(
        (x.x, x.y, x.info) == (y.x, y.y, y.info) and _same(x.patch, y.patch)
        for x, y in zip(a, b, strict=True)
    )


def _same_sketch(a: SketchLayer | None, b: SketchLayer | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.visible == b.visible and _same(a.pixels, b.pixels)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))


def _keep_backup(name: str, target: Path) -> None:
    """Make ``target~`` hold the target's current content; the target stays in place."""
    backup = f"{target}{BACKUP_SUFFIX}"
    copy = None
    try:
        copy = _backup_copy(target)
        os.replace(copy, backup)
    except OSError as exc:
        if copy is not None:
            with contextlib.suppress(OSError):
                os.unlink(copy)
        raise ProjectError(
            f"Cannot save '{name}': the previous version cannot be kept as '{backup}' "
            f"({exc.strerror or exc}). Move or delete '{backup}', or save under another name. "
            "The previous file is unchanged."
        ) from exc
    finally:
        if copy is not None:
            temporaries.done(copy)


def _backup_copy(target: Path) -> str:
    """A temporary name in the target's folder for the target's current content: a hard link
    (instant) or, where the file system has none, a copy."""
    with contextlib.suppress(OSError):
        return temporaries.link(target)
    handle, copy = temporaries.create(target, backup=True)
    try:
        with os.fdopen(handle, "wb") as file, open(target, "rb") as source:
            shutil.copyfileobj(source, file, 2**20)
            file.flush()
            os.fsync(file.fileno())
        shutil.copystat(target, copy)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(copy)
        temporaries.done(copy)
        raise
    return copy
