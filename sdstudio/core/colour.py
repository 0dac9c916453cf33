"""Colour profiles: pictures are edited and generated in sRGB.

A picture that carries another ICC profile (Adobe RGB, Display P3, a camera's) is converted to
sRGB on opening, and an export converts back into that profile and embeds it, so colour-managed
viewers see the same colours before and after. Grey pictures keep their grey profile's tones.
"""

from __future__ import annotations

import io
import logging

from PIL import Image

log = logging.getLogger(__name__)


def profile_name(profile: bytes) -> str:
    """The profile's description ("" when it cannot be read)."""
    from PIL import ImageCms  # on first use: it is not needed to start the editor

    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))).strip()
    except Exception:  # noqa: BLE001 - an unreadable profile has no name
        return ""


def is_srgb(name: str) -> bool:
    """Whether a profile of this description is sRGB (nothing to convert)."""
    return "srgb" in name.lower().replace(" ", "")


def to_srgb(im: Image.Image, profile: bytes, notes: list[str]) -> tuple[Image.Image, bool]:
    """``im`` converted from its embedded colour profile to sRGB (8-bit RGB, RGBA, CMYK), and
    whether the profile was applied; what happened is added to ``notes``."""
    from PIL import ImageCms  # on first use: it is not needed to start the editor

    name = profile_name(profile)
    if is_srgb(name) or im.mode in ("L", "LA", "1"):
        return im, False  # grey scans carry grey profiles (gamma 2.2, dot gain): kept as grey
    if im.mode not in ("RGB", "RGBA", "CMYK"):
        notes.append(f"its colour profile '{name or 'unnamed'}' is not applied ({im.mode} pixels)")
        return im, False
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        srgb = ImageCms.createProfile("sRGB")
        mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(im, source, srgb, outputMode=mode)
    except Exception:  # noqa: BLE001 - a broken profile: the pixels as stored
        notes.append("its colour profile could not be read; its colours are shown as stored")
        return (im.convert("RGB") if im.mode == "CMYK" else im), False
    notes.append(f"converted from its colour profile '{name or 'unnamed'}' to sRGB")
    return converted, True


def from_srgb(picture: Image.Image, profile: bytes) -> Image.Image:
    """``picture`` (sRGB) converted into ``profile``, which it then carries in ``info``; as it
    was if the profile cannot be used (the file is then plain sRGB, which is still right)."""
    from PIL import ImageCms  # on first use: it is not needed to start the editor

    if picture.mode not in ("RGB", "RGBA", "L"):
        return picture
    try:
        target = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        converted = ImageCms.profileToProfile(
            picture, ImageCms.createProfile("sRGB"), target, outputMode=picture.mode
        )
    except Exception:  # noqa: BLE001 - sRGB pixels without a profile are read as sRGB
        log.warning("could not convert back into the picture's colour profile", exc_info=True)
        return picture
    converted.info["icc_profile"] = profile
    return converted
