"""Encoding a picture into file bytes: 16-bit PNG/TIFF through OpenCV, the rest through Pillow,
with the generation text and the colour profile it came with."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.core import colour
from sdstudio.core.errors import ImageSaveError
from sdstudio.core.imageio_text import PARAMETERS_KEY, _exif_with_user_comment, _insert_png_text
from sdstudio.core.pixels import to_8bit

JPEG_QUALITY = 95
WEBP_QUALITY = 95


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
