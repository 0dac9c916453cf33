"""Reading and writing pictures in their own layout and bit depth, with their generation text.

16-bit colour PNG/TIFF, which Pillow reduces to 8 bits, are decoded and encoded with OpenCV. The
AUTOMATIC1111 "parameters" text lives in a PNG text chunk or a JPEG/WebP EXIF UserComment (TIFF
and BMP carry none). Failures become ImageLoadError/ImageSaveError (the cause is chained).
The decoding is in ``imageio_read``, the encoding in ``imageio_write``, the text in
``imageio_text``; this module holds what the rest of SD Studio calls.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sdstudio.core.atomic import write_atomically
from sdstudio.core.errors import ImageSaveError
from sdstudio.core.imageio_read import (
    MAX_PIXELS,
    Picture,
    _bomb_message,
    _decode,
    _decode_noting,
    _read_failure,
    _with_image,
)
from sdstudio.core.imageio_text import PARAMETERS_KEY, _parameters_of, _texts_of
from sdstudio.core.imageio_write import JPEG_QUALITY, WEBP_QUALITY, _encode

__all__ = [
    "FORMATS",
    "JPEG_QUALITY",
    "MAX_PIXELS",
    "PARAMETERS_KEY",
    "WEBP_QUALITY",
    "Picture",
    "load_image",
    "load_picture",
    "read_parameters",
    "read_texts",
    "save_image",
    # for core.project and core.project_save, which read and write the layers of a project
    "_bomb_message",
    "_decode",
    "_encode",
    "_read_failure",
]

FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}


# ----------------------------------------------------------------------------------- loading
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
