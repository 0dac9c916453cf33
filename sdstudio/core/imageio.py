"""Reading and writing pictures in their own layout and bit depth, with their generation text.

16-bit colour PNG/TIFF, which Pillow reduces to 8 bits, are decoded and encoded with OpenCV. The
AUTOMATIC1111 "parameters" text lives in a PNG text chunk or a JPEG/WebP EXIF UserComment (TIFF
and BMP carry none). Failures become ImageLoadError/ImageSaveError (the cause is chained).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from sdstudio.core import colour
from sdstudio.core.atomic import write_atomically
from sdstudio.core.errors import ImageLoadError, ImageSaveError
from sdstudio.core.pixels import to_8bit

log = logging.getLogger(__name__)

FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
JPEG_QUALITY = 95
WEBP_QUALITY = 95
PARAMETERS_KEY = "parameters"
_READABLE = "PNG, JPEG, WebP, TIFF, BMP, GIF ..."
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_IFD, _USER_COMMENT, _ORIENTATION = 0x8769, 0x9286, 0x0112
_UNICODE, _ASCII, _JIS = b"UNICODE\0", b"ASCII\0\0\0", b"JIS\0\0\0\0\0"
_T = TypeVar("_T")

MAX_PIXELS = 150_000_000
"""The largest picture SD Studio opens (a 100 MP medium-format photo, a 1200 dpi scan of an
8 x 10 print); larger files are refused as possible decompression bombs before decoding. Set as
Pillow's limit, which the loaders enforce."""
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


# ----------------------------------------------------------------------------------- loading
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


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a picture: H x W, H x W x 3 or H x W x 4; uint8 or uint16; upright; C-contiguous;
    in sRGB when it carried another colour profile (8-bit pictures)."""
    return load_picture(path).array


def load_picture(path: str | os.PathLike[str]) -> Picture:
    """``load_image`` plus the notes on what was changed to open it and the text metadata, from
    one read of the file."""
    return _with_image(os.fspath(path), _decode_noting)


def read_parameters(path: str | os.PathLike[str]) -> str | None:
    """The AUTOMATIC1111 "parameters" text stored in a PNG, JPEG or WebP file, or None."""
    return _with_image(os.fspath(path), lambda im, data: _parameters_of(im))


def read_texts(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text metadata a picture carries: a PNG's text chunks by key; for JPEG and WebP the
    EXIF UserComment as "parameters" (where AUTOMATIC1111 puts it). For ``core.provenance``."""
    return _with_image(os.fspath(path), _texts_of)


_PROVENANCE_KEYS = ("parameters", "prompt", "workflow", "invokeai_metadata", "sd-metadata")
_TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt")


def _trailing_text(data: bytes) -> bool:
    """Whether a PNG has text chunks after its image data, which Pillow reads only by decoding
    the whole picture: walking the chunk headers tells without decoding anything."""
    offset, seen_data = len(_PNG_SIGNATURE), False
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IEND":
            return False
        seen_data = seen_data or kind == b"IDAT"
        if seen_data and kind in _TEXT_CHUNKS:
            return True
        offset += 12 + length
    return False


def _texts_of(im: Image.Image, data: bytes) -> dict[str, str]:
    if im.format != "PNG":
        parameters = _parameters_of(im)
        return {PARAMETERS_KEY: parameters} if parameters else {}
    sources = [im.info]
    if not any(key in im.info for key in _PROVENANCE_KEYS) and _trailing_text(data):
        sources.append(getattr(im, "text", {}))  # chunks after the image data (decodes it)
    texts: dict[str, str] = {}
    for source in sources:
        for key, value in source.items():
            if isinstance(key, str) and isinstance(value, str):
                texts.setdefault(key, value)
    return texts


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


def _png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) of a PNG, or None."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


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


def _parameters_of(im: Image.Image) -> str | None:
    if im.format == "PNG":
        text = im.info.get(PARAMETERS_KEY)
        if text is None:  # text chunks after the image data
            text = getattr(im, "text", {}).get(PARAMETERS_KEY)
        return None if text is None else str(text)
    comment = im.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(comment, str):
        return comment.rstrip("\0") or None
    if isinstance(comment, (bytes, tuple)):
        return _decode_user_comment(bytes(comment))
    return None


def _decode_user_comment(raw: bytes) -> str | None:
    prefix, body = raw[:8], raw[8:]
    if prefix == _UNICODE:
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16", "replace")  # the byte-order mark decides
        else:
            # Mostly-Latin text has a zero high byte in every other position: first if big-endian.
            little = body[1::2].count(0) > body[0::2].count(0)
            text = body.decode("utf-16-le" if little else "utf-16-be", "replace")
    elif prefix == _JIS:
        text = body.decode("shift_jis", "replace")
    elif prefix in (_ASCII, b"\0" * 8):
        text = body.decode("utf-8", "replace")  # ASCII is a subset; some writers put UTF-8
    else:
        text = raw.decode("utf-8", "replace")
    return text.rstrip("\0") or None


# ------------------------------------------------------------------------------------ saving
def save_image(
    path: str | os.PathLike[str],
    array: np.ndarray,
    parameters: str | None = None,
    icc_profile: bytes | None = None,
) -> None:
    """Write ``array`` atomically in the format its extension names, with ``parameters`` text.

    16-bit pictures keep 16 bits in PNG and TIFF; JPEG, WebP and BMP get 8 bits. JPEG drops
    alpha. ``icc_profile``: the colour profile the picture came with (``Picture.icc_profile``);
    the sRGB pixels are converted back into it and it is embedded (8-bit PNG, JPEG, WebP, TIFF).
    On failure the previous file, if any, is left as it was.
    """
    name = os.fspath(path)
    target = Path(name)
    fmt = FORMATS.get(target.suffix.lower())
    if fmt is None:
        what = f"the file type '{target.suffix}'" if target.suffix else "a file with no extension"
        choices = ", ".join(FORMATS)
        raise ImageSaveError(f"Cannot save '{name}': {what} is not supported; use {choices}.")
    if (
        not isinstance(array, np.ndarray)
        or array.dtype not in (np.uint8, np.uint16)
        or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)))
    ):
        got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array)
        raise ImageSaveError(
            f"Cannot save '{name}': pixels must be 8- or 16-bit grey, RGB or RGBA (got {got})."
        )
    try:
        payload = _encode(array, fmt, parameters or None, icc_profile=icc_profile)
    except ImageSaveError as exc:
        raise ImageSaveError(f"Cannot save '{name}': {exc}") from exc
    except Exception as exc:
        raise ImageSaveError(f"Cannot save '{name}': encoding {fmt} failed ({exc}).") from exc
    write_atomically(name, target, payload)


def _encode(
    array: np.ndarray,
    fmt: str,
    parameters: str | None,
    png_level: int | None = None,
    icc_profile: bytes | None = None,
) -> bytes:
    """``array`` as ``fmt`` bytes; ``png_level`` 0-9 trades PNG size for speed (None: default);
    ``icc_profile`` is the profile to convert the (sRGB) pixels into and embed."""
    if array.dtype == np.uint16 and fmt in ("PNG", "TIFF"):
        if array.ndim == 3:
            code = cv2.COLOR_RGB2BGR if array.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
            array = cv2.cvtColor(array, code)
        flags = (
            [] if png_level is None or fmt != "PNG" else [cv2.IMWRITE_PNG_COMPRESSION, png_level]
        )
        ok, encoded = cv2.imencode(".png" if fmt == "PNG" else ".tiff", array, flags)
        if not ok:
            raise ValueError("OpenCV refused the 16-bit picture")
        data = encoded.tobytes()
        if fmt == "PNG" and parameters is not None:
            data = _insert_png_text(data, PARAMETERS_KEY, parameters)
        return data
    array = to_8bit(array)
    if fmt == "JPEG" and array.ndim == 3:
        array = array[:, :, :3]  # JPEG has no alpha
    options: dict[str, object] = {}
    if fmt == "PNG" and png_level is not None:
        options["compress_level"] = png_level
    if fmt == "PNG" and parameters is not None:
        info = PngInfo()
        info.add_text(PARAMETERS_KEY, parameters)  # tEXt, or iTXt when not Latin-1
        options["pnginfo"] = info
    elif fmt in ("JPEG", "WEBP"):
        options["quality"] = JPEG_QUALITY if fmt == "JPEG" else WEBP_QUALITY
        if parameters is not None:
            exif = _exif_with_user_comment(parameters)
            if fmt == "JPEG" and len(exif) > 65533:
                raise ImageSaveError(
                    "the generation parameters are too long for a JPEG's EXIF block "
                    "(about 32,000 characters at most); save as PNG instead."
                )
            options["exif"] = exif
    elif fmt == "TIFF":
        options["compression"] = "tiff_lzw"
    picture = Image.fromarray(np.ascontiguousarray(array))
    if icc_profile and fmt != "BMP":
        picture = colour.from_srgb(picture, icc_profile)
        if picture.info.get("icc_profile"):
            options["icc_profile"] = picture.info["icc_profile"]
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


def _insert_png_text(png: bytes, key: str, text: str) -> bytes:
    """Insert a tEXt (or, beyond Latin-1, an uncompressed iTXt) chunk right after IHDR."""
    if _png_header(png) is None:
        raise ValueError("not a PNG stream")
    try:
        kind, body = b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        # keyword, NUL, compression flag 0, method 0, language "", NUL, translated "", NUL, UTF-8
        kind, body = b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + chunk + png[33:]


def _exif_with_user_comment(text: str) -> bytes:
    """EXIF holding only UserComment, laid out as piexif.dump writes it for AUTOMATIC1111.

    The comment is b"UNICODE\\0" + UTF-16-BE, as piexif.helper.UserComment.dump(text,
    encoding="unicode"), with type UNDEFINED (Pillow would write BYTE, which piexif misreads).
    """
    comment = _UNICODE + text.encode("utf-16-be", "replace")
    ifd0 = struct.pack(">HHHII", 1, _EXIF_IFD, 4, 1, 26) + b"\0\0\0\0"  # -> Exif IFD at 26
    exif_ifd = struct.pack(">HHHII", 1, _USER_COMMENT, 7, len(comment), 44) + b"\0\0\0\0"
    return b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">I", 8) + ifd0 + exif_ifd + comment
