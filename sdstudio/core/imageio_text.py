"""The generation text a picture file carries: PNG text chunks and the EXIF UserComment of JPEG
and WebP (where AUTOMATIC1111 puts its "parameters"), read and written, with the PNG header and
chunk walk they need."""

from __future__ import annotations

import struct
import zlib

from PIL import Image

PARAMETERS_KEY = "parameters"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_UNICODE, _ASCII, _JIS = b"UNICODE\0", b"ASCII\0\0\0", b"JIS\0\0\0\0\0"

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


def _png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) of a PNG, or None."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


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
