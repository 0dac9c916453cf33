"""Image reading and writing: layouts, bit depth, orientation, metadata, bad input, atomic saves."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo
from unprivileged import reachable_folder, run_unprivileged

from sdstudio.core.errors import ImageLoadError, ImageSaveError
from sdstudio.core.imageio import load_image, read_parameters, save_image
from sdstudio.core.pixels import to_8bit

PARAMETERS = (
    "a lighthouse, at dusk\nNegative prompt: blurry, watermark\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1234, Size: 64x48"
)


def rng_pixels(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    high = 256 if dtype == np.uint8 else 65536
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def exif_user_comment(comment: bytes) -> bytes:
    """EXIF (little-endian TIFF, as some tools write it) holding only a UserComment."""
    ifd0 = struct.pack("<HHHII", 1, 0x8769, 4, 1, 26) + b"\0\0\0\0"
    sub = struct.pack("<HHHII", 1, 0x9286, 7, len(comment), 44) + b"\0\0\0\0"
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd0 + sub + comment


def tiff_entries(tiff: bytes, offset: int) -> dict[int, tuple[int, int, int]]:
    """tag -> (type, count, value/offset) of one IFD of a TIFF stream."""
    order = ">" if tiff[:2] == b"MM" else "<"
    (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
    entries = {}
    for i in range(count):
        start = offset + 2 + 12 * i
        tag, kind, n, value = struct.unpack(order + "HHII", tiff[start : start + 12])
        entries[tag] = (kind, n, value)
    return entries


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 3), (48, 64, 4)], ids=["grey", "rgb", "rgba"])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_8bit_lossless_round_trip_is_bit_exact(tmp_path, shape, suffix):
    pixels = rng_pixels(shape)
    save_image(tmp_path / f"x{suffix}", pixels)
    loaded = load_image(tmp_path / f"x{suffix}")
    assert loaded.dtype == np.uint8 and loaded.shape == shape
    assert loaded.flags.c_contiguous and loaded.flags.writeable
    np.testing.assert_array_equal(loaded, pixels)


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 3), (48, 64, 4)], ids=["grey", "rgb", "rgba"])
@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_16bit_round_trip_is_bit_exact(tmp_path, shape, suffix):
    pixels = rng_pixels(shape, np.uint16)
    target = tmp_path / f"deep{suffix}"
    save_image(target, pixels, PARAMETERS)
    loaded = load_image(target)
    assert loaded.dtype == np.uint16 and loaded.shape == shape
    assert loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, pixels)
    if suffix == ".png":
        assert read_parameters(target) == PARAMETERS
        # Channel order in the file is RGB, as other programs read it (not OpenCV's BGR).
        with Image.open(target) as im:
            assert im.mode == ("I;16" if len(shape) == 2 else "RGBA" if shape[-1] == 4 else "RGB")
            if len(shape) == 3:
                np.testing.assert_array_equal(np.array(im)[..., :3], (pixels >> 8)[..., :3])


def test_16bit_png_with_non_latin1_parameters_uses_itxt(tmp_path):
    text = "ein Leuchtturm 灯台 🌅\nSteps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1"
    save_image(tmp_path / "x.png", rng_pixels((8, 8, 3), np.uint16), text)
    assert b"iTXt" in (tmp_path / "x.png").read_bytes()
    assert read_parameters(tmp_path / "x.png") == text


def test_8bit_png_parameters_as_automatic1111_writes_them(tmp_path):
    save_image(tmp_path / "x.png", rng_pixels((8, 8, 3)), PARAMETERS)
    with Image.open(tmp_path / "x.png") as im:
        assert im.info["parameters"] == PARAMETERS
    # A PNG written the way AUTOMATIC1111 writes it reads back the same way.
    info = PngInfo()
    info.add_text("parameters", "from a1111")
    Image.new("RGB", (4, 4)).save(tmp_path / "a1111.png", pnginfo=info)
    assert read_parameters(tmp_path / "a1111.png") == "from a1111"
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert read_parameters(tmp_path / "plain.png") is None


def test_16bit_grey_png_written_by_pillow_loads_as_uint16(tmp_path):
    pixels = rng_pixels((10, 12), np.uint16)
    Image.fromarray(pixels).save(tmp_path / "grey16.png")
    loaded = load_image(tmp_path / "grey16.png")
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, pixels)


def test_32bit_integer_tiff_is_clipped_to_uint16(tmp_path):
    Image.fromarray(np.array([[-5, 70000, 1234]], dtype=np.int32)).save(tmp_path / "i.tif")
    loaded = load_image(tmp_path / "i.tif")
    assert loaded.dtype == np.uint16
    assert loaded.tolist() == [[0, 65535, 1234]]


def test_palette_with_transparency_loads_as_rgba(tmp_path):
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png", transparency=0)
    loaded = load_image(tmp_path / "p.png")
    assert loaded.shape == (2, 4, 4) and loaded.dtype == np.uint8
    assert loaded[0, 0].tolist() == [255, 0, 0, 0]
    assert loaded[0, 1].tolist() == [0, 0, 255, 255]


def test_palette_without_transparency_loads_as_rgb(tmp_path):
    Image.new("RGB", (3, 3), (10, 200, 30)).convert("P").save(tmp_path / "p.gif")
    loaded = load_image(tmp_path / "p.gif")
    assert loaded.shape == (3, 3, 3)


def test_grey_alpha_loads_as_rgba_with_grey_repeated(tmp_path):
    la = np.stack([rng_pixels((5, 6)), rng_pixels((5, 6), seed=1)], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    loaded = load_image(tmp_path / "la.png")
    assert loaded.shape == (5, 6, 4)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[..., channel], la[..., 0])
    np.testing.assert_array_equal(loaded[..., 3], la[..., 1])


def test_bilevel_loads_as_grey(tmp_path):
    Image.new("1", (4, 4), 1).save(tmp_path / "b.png")
    loaded = load_image(tmp_path / "b.png")
    assert loaded.shape == (4, 4) and loaded.dtype == np.uint8 and (loaded == 255).all()


def test_cmyk_jpeg_loads_as_rgb(tmp_path):
    Image.new("RGB", (16, 16), (200, 40, 90)).convert("CMYK").save(tmp_path / "c.jpg")
    loaded = load_image(tmp_path / "c.jpg")
    assert loaded.shape == (16, 16, 3)
    assert np.abs(loaded.astype(int) - [200, 40, 90]).max() <= 3


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 2
    assert load_image(tmp_path / "a.gif")[0, 0].tolist() == [255, 0, 0]


# -------------------------------------------------------------------------- orientation


def test_exif_rotated_jpeg_loads_upright(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "r.jpg")
    assert loaded.shape == (40, 20, 3)
    assert loaded[:15].min() > 200 and loaded[25:].max() < 50  # left became top


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_png_orientation_matches_pillow(tmp_path, orientation):
    pixels = rng_pixels((3, 5, 3), np.uint16, seed=orientation)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded.tobytes()
    data = data[:33] + png_chunk(b"eXIf", exif.tobytes()[6:]) + data[33:]
    (tmp_path / "o.png").write_bytes(data)
    loaded = load_image(tmp_path / "o.png")
    assert loaded.dtype == np.uint16 and loaded.flags.c_contiguous
    with Image.open(tmp_path / "o.png") as im:  # Pillow: 8 bits (high bytes), same orientation
        expected = np.array(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(loaded >> 8, expected)
    assert loaded.shape == (5, 3, 3) if orientation >= 5 else (3, 5, 3)


def test_16bit_grey_png_orientation(tmp_path):
    pixels = rng_pixels((2, 3), np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "g.png", exif=exif)
    loaded = load_image(tmp_path / "g.png")
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, np.rot90(pixels, -1))


# --------------------------------------------------------------- JPEG / WebP / BMP output


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp"])
def test_exif_parameters_round_trip(tmp_path, suffix):
    text = PARAMETERS + ", Model: 灯台"
    save_image(tmp_path / f"x{suffix}", rng_pixels((16, 16, 3)), text)
    assert read_parameters(tmp_path / f"x{suffix}") == text


def test_jpeg_user_comment_is_stored_as_piexif_does(tmp_path):
    save_image(tmp_path / "x.jpg", rng_pixels((8, 8, 3)), "a cat")
    with Image.open(tmp_path / "x.jpg") as im:
        tiff = im.info["exif"][6:]
    exif_ifd = tiff_entries(tiff, struct.unpack(">I", tiff[4:8])[0])[0x8769][2]
    kind, count, offset = tiff_entries(tiff, exif_ifd)[0x9286]
    assert kind == 7  # UNDEFINED; piexif (and so AUTOMATIC1111) cannot read a BYTE comment
    assert tiff[offset : offset + count] == b"UNICODE\0" + "a cat".encode("utf-16-be")


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        (b"UNICODE\0" + "a cat, 猫".encode("utf-16-be"), "a cat, 猫"),
        (b"UNICODE\0" + "a cat, 猫".encode("utf-16-le"), "a cat, 猫"),
        (b"ASCII\0\0\0a dog\0", "a dog"),
    ],
    ids=["unicode-be", "unicode-le", "ascii"],
)
def test_read_parameters_decodes_user_comment_variants(tmp_path, comment, expected):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg", exif=exif_user_comment(comment))
    assert read_parameters(tmp_path / "x.jpg") == expected


def test_read_parameters_without_metadata_is_none(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
    save_image(tmp_path / "x.bmp", rng_pixels((4, 4, 3)), "ignored")
    assert read_parameters(tmp_path / "x.jpg") is None
    assert read_parameters(tmp_path / "x.bmp") is None


def test_rgba_to_jpeg_drops_alpha_and_grey_stays_grey(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200
    save_image(tmp_path / "x.jpg", rgba)
    loaded = load_image(tmp_path / "x.jpg")
    assert loaded.shape == (16, 16, 3) and abs(int(loaded[..., 0].mean()) - 200) <= 2
    save_image(tmp_path / "g.jpg", np.full((16, 16), 77, np.uint8))
    grey = load_image(tmp_path / "g.jpg")
    assert grey.shape == (16, 16) and abs(int(grey.mean()) - 77) <= 1


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp"])
def test_16bit_to_8bit_formats_rounds_like_to_8bit(tmp_path, suffix):
    pixels = np.full((16, 16, 3), 257 * 100 + 200, np.uint16)  # 100.78 -> 101
    save_image(tmp_path / f"x{suffix}", pixels)
    loaded = load_image(tmp_path / f"x{suffix}")
    assert loaded.dtype == np.uint8
    tolerance = 0 if suffix == ".bmp" else 2
    assert np.abs(loaded.astype(int) - to_8bit(pixels).astype(int)).max() <= tolerance
    assert int(to_8bit(pixels)[0, 0, 0]) == 101


def test_bmp_rgb_round_trip_is_bit_exact(tmp_path):
    pixels = rng_pixels((7, 9, 3))
    save_image(tmp_path / "x.bmp", pixels)
    np.testing.assert_array_equal(load_image(tmp_path / "x.bmp"), pixels)


# ----------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.png' does not exist"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="is a folder"):
        read_parameters(tmp_path)


@pytest.mark.parametrize("content", [b"", b"this is not a picture" * 10], ids=["empty", "text"])
def test_garbage_is_not_an_image(tmp_path, content):
    (tmp_path / "junk.png").write_bytes(content)
    with pytest.raises(ImageLoadError) as caught:
        load_image(tmp_path / "junk.png")
    message = str(caught.value)
    assert "junk.png' is not an image SD Studio can read" in message
    assert "cannot identify image file" in message and "\n" not in message
    with pytest.raises(ImageLoadError):
        read_parameters(tmp_path / "junk.png")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_truncated_png(tmp_path, dtype):
    save_image(tmp_path / "full.png", rng_pixels((64, 64, 3), dtype))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageLoadError, match=r"cut\.png' could not be decoded.*damaged"):
        load_image(tmp_path / "cut.png")


@pytest.mark.parametrize("limit", [3000, 100], ids=["warning", "error"])
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, limit):
    save_image(tmp_path / "big.png", rng_pixels((64, 64, 3)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # 4096 px: warning below 2x limit
    with pytest.raises(ImageLoadError) as caught:
        load_image(tmp_path / "big.png")
    message = str(caught.value)
    assert "64x64 (4,096 pixels)" in message
    assert f"limit of {limit:,} pixels" in message and "exhaust memory" in message


def test_decompression_bomb_message_for_jpeg_gives_pixel_count(tmp_path, monkeypatch):
    save_image(tmp_path / "big.jpg", rng_pixels((64, 64, 3)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError, match=r"is 4,096 pixels, more than the limit of 100"):
        load_image(tmp_path / "big.jpg")


# ----------------------------------------------------------------------------- saving


def test_unknown_extension(tmp_path):
    with pytest.raises(ImageSaveError, match=r"'\.gif' is not supported; use \.png"):
        save_image(tmp_path / "x.gif", rng_pixels((4, 4, 3)))
    with pytest.raises(ImageSaveError, match="no extension"):
        save_image(tmp_path / "x", rng_pixels((4, 4, 3)))
    assert listing(tmp_path) == []


def test_unsupported_pixels(tmp_path):
    with pytest.raises(ImageSaveError, match="8- or 16-bit grey, RGB or RGBA"):
        save_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageSaveError, match="8- or 16-bit grey, RGB or RGBA"):
        save_image(tmp_path / "x.png", np.zeros((4, 4, 2), np.uint8))
    assert listing(tmp_path) == []


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(ImageSaveError, match="folder .* does not exist"):
        save_image(tmp_path / "missing" / "x.png", rng_pixels((4, 4, 3)))
    assert listing(tmp_path) == []


def test_failed_replace_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    save_image(target, rng_pixels((8, 8, 3), seed=1), "old")
    before = target.read_bytes()

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ImageSaveError, match=r"keep\.png': permission denied.*unchanged"):
        save_image(target, rng_pixels((8, 8, 3), seed=2), "new")
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["keep.png"]


def test_overwrite_replaces_content_and_keeps_mode(tmp_path):
    target = tmp_path / "x.png"
    save_image(target, rng_pixels((8, 8, 3), seed=1))
    if hasattr(os, "fchmod"):
        assert target.stat().st_mode & 0o777 != 0o600  # not mkstemp's private mode
        target.chmod(0o640)
    pixels = rng_pixels((8, 8, 3), seed=2)
    save_image(target, pixels)
    np.testing.assert_array_equal(load_image(target), pixels)
    if hasattr(os, "fchmod"):
        assert target.stat().st_mode & 0o777 == 0o640
    assert listing(tmp_path) == ["x.png"]


def test_save_into_read_only_folder():
    # Root ignores file modes: the save runs as an unprivileged user (see tests/unprivileged.py).
    with reachable_folder() as root:
        folder = root / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        output = run_unprivileged(
            """
            import sys
            import numpy as np
            from sdstudio.core.errors import ImageSaveError
            from sdstudio.core.imageio import save_image

            drop_privileges()
            try:
                save_image(sys.argv[1], np.ones((4, 4, 3), np.uint8), "a prompt")
            except ImageSaveError as exc:
                print(exc)
            """,
            str(folder / "x.png"),
        )
        assert output.strip() == (
            f"Cannot save '{folder / 'x.png'}': permission denied in '{folder}'. Choose a folder "
            "you can write to. The previous file, if any, is unchanged."
        )
        assert listing(folder) == []


def test_saved_16bit_png_is_a_valid_png_for_pillow(tmp_path):
    # The inserted text chunk must carry a correct CRC: Pillow checks it when reading.
    save_image(tmp_path / "x.png", rng_pixels((4, 4, 3), np.uint16), PARAMETERS)
    data = (tmp_path / "x.png").read_bytes()
    assert data[37:41] == b"tEXt"  # right after IHDR
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.info["parameters"] == PARAMETERS


def test_text_metadata_is_read_without_decoding_unless_it_follows_the_pixels(tmp_path, monkeypatch):
    import zlib as _zlib

    from PIL import ImageFile

    from sdstudio.core.imageio import load_picture, read_texts

    save_image(tmp_path / "plain.png", rng_pixels((48, 64, 3)))
    decodes = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(
        ImageFile.ImageFile, "load", lambda self: decodes.append(1) or real_load(self)
    )
    assert read_texts(tmp_path / "plain.png") == {} and decodes == []
    # A tEXt chunk after the image data (some tools write them there) is still found.
    data = (tmp_path / "plain.png").read_bytes()
    body = b"parameters\0a cat"
    chunk = len(body).to_bytes(4, "big") + b"tEXt" + body
    chunk += _zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
    (tmp_path / "late.png").write_bytes(data[:-12] + chunk + data[-12:])
    assert read_texts(tmp_path / "late.png") == {"parameters": "a cat"}
    assert load_picture(tmp_path / "late.png").texts == {"parameters": "a cat"}
