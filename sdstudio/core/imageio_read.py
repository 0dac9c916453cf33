"""Decoding a picture file: its own layout and bit depth (16-bit colour PNG/TIFF through OpenCV),
upright, in sRGB, with notes on what was changed on the way in; the size limit against
decompression bombs and the messages for files that cannot be read."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sdstudio.core import colour
from sdstudio.core.errors import ImageLoadError
from sdstudio.core.imageio_text import _png_header, _texts_of

log = logging.getLogger(__name__)

_READABLE = "PNG, JPEG, WebP, TIFF, BMP, GIF ..."
_ORIENTATION = 0x0112
_T = TypeVar("_T")

MAX_PIXELS = 150_000_000
"""The largest picture SD Studio opens (a 100 MP medium-format photo, a 1200 dpi scan of an
8 x 10 print); larger files are refused as possible decompression bombs before decoding. Set as
Pillow's limit, which the loaders enforce."""
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True, eq=False)
class Picture:
    array: np.ndarray
    notes: tuple[str, ...] = ()
    """What was changed on the way in, to tell the person: "only the first of 12 frames",
    "converted from its colour profile 'Adobe RGB (1998)' to sRGB" ..."""
    icc_profile: bytes | None = None
    """The colour profile the pixels were converted from (to hand to ``save_image`` so an
    export keeps it); None when they are as stored."""
    texts: dict[str, str] = field(default_factory=dict)
    """Its text metadata, as ``read_texts`` gives it (for ``core.provenance``)."""


def _with_image(name: str, use: Callable[[Image.Image, bytes], _T]) -> _T:
    data = _read_bytes(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return use(im, data)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(_bomb_message(name, data, exc)) from exc
    except UnidentifiedImageError as exc:
        if data[:4] == b"PK\x03\x04" and b"image/openraster" in data[:128]:
            raise ImageLoadError(
                f"'{name}' is a layered OpenRaster project, not a picture: open it in the editor "
                f"(sdstudio '{name}') and export a picture from it (Ctrl+E)."
            ) from exc
        raise ImageLoadError(
            f"'{name}' is not an image SD Studio can read ({_READABLE}): cannot identify image file."
        ) from exc
    except MemoryError as exc:
        raise ImageLoadError(f"Not enough memory to open '{name}'; close other pictures.") from exc
    except Exception as exc:
        raise ImageLoadError(
            f"'{name}' could not be decoded ({exc}); the file may be damaged or incomplete. "
            "Export or download it again."
        ) from exc


def _read_bytes(name: str) -> bytes:
    if os.path.isdir(name):
        raise ImageLoadError(f"'{name}' is a folder, not an image; choose an image file.")
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise ImageLoadError(_read_failure(name, exc)) from exc


def _read_failure(name: str, exc: OSError) -> str:
    """What to tell the person when a file cannot be read (pictures and projects alike)."""
    if isinstance(exc, FileNotFoundError):
        return f"'{name}' does not exist; check the path."
    if isinstance(exc, PermissionError):
        return f"'{name}' cannot be read: permission denied."
    return f"'{name}' cannot be read: {exc.strerror or exc}."


def _bomb_message(name: str, data: bytes, exc: Exception) -> str:
    header = _png_header(data)
    if header is not None:
        size = f"{header[0]}x{header[1]} ({header[0] * header[1]:,} pixels)"
    elif match := re.search(r"\((\d+) pixels\)", str(exc)):
        size = f"{int(match.group(1)):,} pixels"
    else:
        size = "too large"
    return (
        f"'{name}' is {size}, more than the limit of {Image.MAX_IMAGE_PIXELS:,} pixels; "
        "SD Studio refuses to open it so as not to exhaust memory. Scale it down first."
    )


def _decode(im: Image.Image, data: bytes) -> np.ndarray:
    return _decode_noting(im, data).array


def _decode_noting(im: Image.Image, data: bytes) -> Picture:
    texts = _texts_of(im, data)  # first: Pillow may need the decode it would then reuse
    notes = []
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"it has {frames} frames; only the first is opened")
    profile = im.info.get("icc_profile")
    converted = None
    array = _decode_deep_colour(im, data) if _is_deep_colour(im, data) else None
    if array is None and _is_plain_png(im, data, profile):
        array = _decode_plain_png(im, data)
    if array is None:
        im.load()  # decoding errors surface here, not inside exif_transpose
        upright = im
        try:
            if im.getexif().get(_ORIENTATION, 1) != 1:  # else no copy: large pictures
                upright = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block: keep the pixels as stored
            log.warning("Ignoring unreadable EXIF orientation", exc_info=True)
        if profile:
            upright, applied = colour.to_srgb(upright, profile, notes)
            converted = profile if applied else None
        elif im.mode == "CMYK":
            notes.append("its CMYK (print) colours were converted to RGB without a profile")
        array = _to_array(upright)
    elif profile and (name := colour.profile_name(profile)) and not colour.is_srgb(name):
        notes.append(f"its colour profile '{name}' is not applied (16-bit)")
    array = np.ascontiguousarray(array)
    array = array if array.flags.writeable else array.copy()
    return Picture(array, tuple(notes), converted, texts)


def _to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("1", "L"):
        return np.array(im.convert("L"))
    if mode in ("RGB", "RGBA"):
        return np.array(im)
    if mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)  # native byte order
    if mode == "I":
        return np.clip(np.array(im), 0, 65535).astype(np.uint16)
    if mode == "P":
        return np.array(im.convert("RGBA" if im.has_transparency_data else "RGB"))
    has_alpha = any(band in ("A", "a") for band in im.getbands())  # LA, PA, La, RGBa ...
    return np.array(im.convert("RGBA" if has_alpha else "RGB"))


def _is_deep_colour(im: Image.Image, data: bytes) -> bool:
    """16-bit colour (or grey + alpha) that Pillow would reduce to 8 bits."""
    if im.format == "PNG":
        header = _png_header(data)
        return header is not None and header[2] == 16 and header[3] in (2, 4, 6)
    if im.format == "TIFF" and im.mode in ("RGB", "RGBA"):
        bits = im.tag_v2.get(258, 8)
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def _decode_deep_colour(im: Image.Image, data: bytes) -> np.ndarray | None:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.shape[:2] != (im.height, im.width):
        log.warning("OpenCV could not decode 16-bit %s; using 8 bits", im.format)
        return None
    channels = array.shape[2] if array.ndim == 3 else 0
    code = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}.get(channels)
    if code is None:
        return None
    orientation = 1
    if im.format != "PNG" or b"eXIf" in data:  # else getexif() would decode the PNG again
        with contextlib.suppress(Exception):
            orientation = int(im.getexif().get(_ORIENTATION, 1))
    return _orient(cv2.cvtColor(array, code), orientation)


def _is_plain_png(im: Image.Image, data: bytes, profile: bytes | None) -> bool:
    """An 8-bit grey, RGB or RGBA PNG with nothing to convert: OpenCV decodes it straight into
    one array, where Pillow's decode, copy and conversion hold the picture four times over."""
    header = _png_header(data)
    return (
        header is not None
        and header[2] == 8
        and header[3] in (0, 2, 6)
        and "transparency" not in im.info
        and getattr(im, "n_frames", 1) == 1
        and (not profile or colour.is_srgb(colour.profile_name(profile)))
    )


def _decode_plain_png(im: Image.Image, data: bytes) -> np.ndarray | None:
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if array is None or array.dtype != np.uint8 or array.shape[:2] != (im.height, im.width):
        return None  # Pillow then decodes it, or says why it cannot
    if array.ndim == 3:
        code = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}[array.shape[2]]
        cv2.cvtColor(array, code, dst=array)  # in place: no second copy
    orientation = 1
    if b"eXIf" in data:
        with contextlib.suppress(Exception):
            orientation = int(im.getexif().get(_ORIENTATION, 1))
    return _orient(array, orientation)


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) as ImageOps.exif_transpose does."""
    if orientation in (5, 7):
        array = np.swapaxes(array, 0, 1)  # transpose; 7 is the transpose turned by 180
    turns = {3: 2, 7: 2, 6: -1, 8: 1}.get(orientation, 0)
    flip = {2: np.fliplr, 4: np.flipud}.get(orientation)
    return flip(array) if flip else np.rot90(array, turns)
