"""Project files (.ora): bit-exact layers, OpenRaster layout, safe saves, hostile input."""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import tempfile
import warnings
import xml.etree.ElementTree as ET
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from unprivileged import UNUSED_PID, reachable_folder, run_unprivileged

from sdstudio.core import project, project_save, temporaries
from sdstudio.core.errors import ProjectError, SDStudioError
from sdstudio.core.imageio import save_image
from sdstudio.core.pixels import to_8bit
from sdstudio.core.project import Project, Result, load_project
from sdstudio.core.project_save import save_project

EXTRA = {
    "prompt": "a lighthouse at dusk, 灯台 🌅",
    "negative_prompt": "blurry",
    "seed": 1234,
    "guidance": 7.5,
    "model": {"ref": "stabilityai/stable-diffusion-2-inpainting", "loras": [["detail", 0.6]]},
    "history": [None, True, "x"],
}
LAYOUTS = {"grey": (48, 64), "rgb": (48, 64, 3), "rgba": (48, 64, 4)}


def rng_pixels(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    high = 256 if dtype == np.uint8 else 65536
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` 8-bit RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def stack_xml(width: int, height: int, *layers: dict[str, str]) -> bytes:
    body = "".join(
        "<layer " + " ".join(f'{k}="{v}"' for k, v in layer.items()) + " />" for layer in layers
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><image version="0.0.3" w="{width}" h="{height}">'
        f"<stack>{body}</stack></image>"
    ).encode()


def write_zip(path: Path, entries: list[tuple[str, bytes]], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for member, data in entries:
            archive.writestr(member, data)
    return path


def foreign_ora(path: Path, layers: list[tuple[dict[str, str], bytes]], merged=None, extra=()):
    """An .ora as another program writes it: ``layers`` topmost first, (attributes, PNG)."""
    entries = [("mimetype", b"image/openraster")]
    entries.append(("stack.xml", stack_xml(64, 48, *(attributes for attributes, _ in layers))))
    entries += [(attributes["src"], data) for attributes, data in layers]
    if merged is not None:
        entries.append(("mergedimage.png", png_bytes(merged)))
    entries += list(extra)
    return write_zip(path, entries)


@pytest.fixture
def saved(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    image, mask = rng_pixels((48, 64, 3), seed=1), rng_pixels((48, 64), seed=2)
    save_project(tmp_path / "work.ora", image, mask, EXTRA)
    return tmp_path / "work.ora", image, mask


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8bit", "16bit"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_is_bit_exact(tmp_path, dtype, layout):
    image = rng_pixels(LAYOUTS[layout], dtype, seed=3)
    mask = rng_pixels((48, 64), seed=4)
    save_project(tmp_path / "x.ora", image, mask, EXTRA)
    loaded = load_project(tmp_path / "x.ora")
    assert isinstance(loaded, Project)
    assert loaded.image.dtype == dtype and loaded.image.shape == image.shape
    np.testing.assert_array_equal(loaded.image, image)
    assert loaded.mask.dtype == np.uint8
    np.testing.assert_array_equal(loaded.mask, mask)
    assert loaded.extra == EXTRA and loaded.notes == ()
    assert listing(tmp_path) == ["x.ora"]


def test_no_mask_and_no_extra_load_as_empty(tmp_path):
    save_project(tmp_path / "x.ora", rng_pixels((5, 7, 4)))
    loaded = load_project(str(tmp_path / "x.ora"))
    assert loaded.mask.shape == (5, 7) and not loaded.mask.any()
    assert loaded.extra == {}


def test_one_pixel_picture(tmp_path):
    save_project(tmp_path / "x.ora", np.array([[7]], np.uint16), np.array([[255]], np.uint8))
    loaded = load_project(tmp_path / "x.ora")
    assert loaded.image.tolist() == [[7]] and loaded.mask.tolist() == [[255]]


# ----------------------------------------------------------------------------- layout


def test_zip_layout_follows_openraster(tmp_path):
    image = rng_pixels((150, 600, 3), np.uint16, seed=5)
    mask = rng_pixels((150, 600), seed=6)
    save_project(tmp_path / "x.ora", image, mask, {"seed": 1})
    data = (tmp_path / "x.ora").read_bytes()
    # mimetype first, stored, no extra field: its text sits at a fixed offset for file sniffers
    assert data[:4] == b"PK\x03\x04" and data[30:38] == b"mimetype"
    assert data[38:54] == b"image/openraster"
    with zipfile.ZipFile(tmp_path / "x.ora") as archive:
        first = archive.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert first.extra == b"" and archive.read("mimetype") == b"image/openraster"
        assert archive.testzip() is None
        names = archive.namelist()
        assert {"stack.xml", "mergedimage.png", "Thumbnails/thumbnail.png"} <= set(names)
        root = ET.fromstring(archive.read("stack.xml"))
        layers = root.find("stack").findall("layer")
        merged = Image.open(io.BytesIO(archive.read("mergedimage.png")))
        thumbnail = Image.open(io.BytesIO(archive.read("Thumbnails/thumbnail.png")))
        settings = json.loads(archive.read("sdstudio/project.json"))
        picture_png = archive.read("data/picture.png")
        mask_png = archive.read("data/mask.png")
    assert root.tag == "image" and root.get("version") == "0.0.3"
    assert (root.get("w"), root.get("h")) == ("600", "150")
    # topmost first: the hidden mask above the picture
    assert [layer.get("name") for layer in layers] == ["Mask", "Picture"]
    assert [layer.get("src") for layer in layers] == ["data/mask.png", "data/picture.png"]
    assert layers[0].get("visibility") == "hidden" and layers[1].get("visibility") == "visible"
    assert all(layer.get("src") in names for layer in layers)
    # the composite is the picture at 8 bits, opaque
    assert merged.size == (600, 150) and merged.mode == "RGBA"
    np.testing.assert_array_equal(np.array(merged)[..., :3], to_8bit(image))
    assert (np.array(merged)[..., 3] == 255).all()
    thumbnail.load()
    assert thumbnail.size == (256, 64)  # at most 256 x 256, aspect kept
    assert settings["format"] == project.FORMAT and settings["extra"] == {"seed": 1}
    assert "SD Studio" in settings["writer"]
    # layers are PNGs any reader decodes: 16 bits per channel, the mask 8-bit grey
    assert picture_png[24] == 16 and picture_png[25] == 2  # IHDR bit depth, colour type RGB
    with Image.open(io.BytesIO(mask_png)) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.array(im), mask)


def test_thumbnail_of_a_tall_small_picture(tmp_path):
    save_project(tmp_path / "x.ora", rng_pixels((1000, 3)))
    with zipfile.ZipFile(tmp_path / "x.ora") as archive:
        thumbnail = Image.open(io.BytesIO(archive.read("Thumbnails/thumbnail.png")))
        assert thumbnail.size == (1, 256)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layers_read_with_zipfile_and_pillow_alone(tmp_path, layout):
    image, mask = rng_pixels(LAYOUTS[layout], seed=7), rng_pixels((48, 64), seed=8)
    save_project(tmp_path / "x.ora", image, mask)
    with zipfile.ZipFile(tmp_path / "x.ora") as archive:
        root = ET.fromstring(archive.read("stack.xml"))
        src = {layer.get("name"): layer.get("src") for layer in root.iter("layer")}
        picture = np.array(Image.open(io.BytesIO(archive.read(src["Picture"]))))
        read_mask = np.array(Image.open(io.BytesIO(archive.read(src["Mask"]))))
    np.testing.assert_array_equal(picture, image)
    np.testing.assert_array_equal(read_mask, mask)


def test_pyora_reads_our_file(tmp_path):
    pyora = pytest.importorskip("pyora")
    image, mask = rng_pixels((48, 64, 3), seed=9), rng_pixels((48, 64), seed=10)
    save_project(tmp_path / "x.ora", image, mask, EXTRA)
    opened = pyora.Project.load(str(tmp_path / "x.ora"))
    layers = {layer.name: layer for layer in opened.iter_layers}
    assert set(layers) == {"Picture", "Mask"}
    assert opened.dimensions == (64, 48)
    assert layers["Picture"].visible and not layers["Mask"].visible
    picture = np.array(layers["Picture"].get_image_data())  # pyora gives RGBA
    np.testing.assert_array_equal(picture[..., :3], image)
    assert (picture[..., 3] == 255).all()
    np.testing.assert_array_equal(np.array(layers["Mask"].get_image_data())[..., 0], mask)


# ----------------------------------------------------------------------------- safe saving


def test_saving_over_a_file_keeps_the_previous_one_as_backup(tmp_path):
    target = tmp_path / "x.ora"
    first, second, third = (rng_pixels((8, 8, 3), seed=s) for s in (1, 2, 3))
    save_project(target, first, extra={"n": 1})
    save_project(target, second, extra={"n": 2})
    assert listing(tmp_path) == ["x.ora", "x.ora~"]
    np.testing.assert_array_equal(load_project(target).image, second)
    np.testing.assert_array_equal(load_project(tmp_path / "x.ora~").image, first)
    old = target.read_bytes()
    save_project(target, third, extra={"n": 3})
    assert (tmp_path / "x.ora~").read_bytes() == old
    assert load_project(target).extra == {"n": 3}
    assert listing(tmp_path) == ["x.ora", "x.ora~"]


def test_backup_is_copied_where_hard_links_fail(tmp_path, monkeypatch):
    target = tmp_path / "x.ora"
    save_project(target, rng_pixels((8, 8, 3), seed=1))
    old = target.read_bytes()

    def no_links(src, dst, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    save_project(target, rng_pixels((8, 8, 3), seed=2))
    assert (tmp_path / "x.ora~").read_bytes() == old
    assert listing(tmp_path) == ["x.ora", "x.ora~"]


def test_failed_final_replace_keeps_the_old_file_and_no_temporaries(tmp_path, monkeypatch):
    target = tmp_path / "keep.ora"
    save_project(target, rng_pixels((8, 8, 3), seed=1), extra={"n": 1})
    save_project(target, rng_pixels((8, 8, 3), seed=2), extra={"n": 2})
    before = target.read_bytes()
    real_replace = os.replace

    def refuse_final(src, dst):
        if Path(dst) == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_final)
    with pytest.raises(ProjectError, match=r"keep\.ora': permission denied.*unchanged"):
        save_project(target, rng_pixels((8, 8, 3), seed=3), extra={"n": 3})
    assert target.read_bytes() == before
    assert load_project(target).extra == {"n": 2}
    assert listing(tmp_path) == ["keep.ora", "keep.ora~"]


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ProjectError, match="Input/output error"):
        save_project(tmp_path / "new.ora", rng_pixels((8, 8)))
    assert listing(tmp_path) == []


def test_disk_full_keeps_the_old_file(saved, monkeypatch):
    target, image, _ = saved
    before = target.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ProjectError, match=r"work\.ora': the disk is full.*unchanged"):
        save_project(target, rng_pixels((48, 64, 3), seed=9))
    assert target.read_bytes() == before
    assert listing(target.parent) == ["work.ora"]


def test_verify_mismatch_keeps_the_old_file(saved, monkeypatch):
    target, _, _ = saved
    before = target.read_bytes()
    real_load = project._load

    def flip_a_bit(path, name):
        loaded = real_load(path, name)
        loaded.image[0, 0, 0] ^= 1
        return loaded

    monkeypatch.setattr(project, "_load", flip_a_bit)
    with pytest.raises(ProjectError, match=r"does not read back the same \(picture differ"):
        save_project(target, rng_pixels((48, 64, 3), seed=9))
    assert target.read_bytes() == before
    assert listing(target.parent) == ["work.ora"]


def write_instead(monkeypatch, change, change_sketch=lambda sketch: sketch) -> None:
    """Make the writer put what ``change(settings, results)`` (and ``change_sketch(sketch)``)
    return on disk, while the check still expects what was asked for (what a failing disk or
    memory does)."""
    real_archive = project_save._archive

    def archive(image, mask, settings, results=(), sketch=None):
        document, results = change(json.loads(settings), list(results))
        encoded = json.dumps(document).encode()
        return real_archive(image, mask, encoded, tuple(results), change_sketch(sketch))

    monkeypatch.setattr(project_save, "_archive", archive)


def test_read_back_settings_that_differ_keep_the_old_file(saved, monkeypatch):
    target, image, mask = saved
    before = target.read_bytes()

    def other_seed(document, results):
        document["extra"]["seed"] += 1
        return document, results

    write_instead(monkeypatch, other_seed)
    with pytest.raises(ProjectError, match=r"does not read back the same \(settings differ\)"):
        save_project(target, image, mask, EXTRA)
    assert target.read_bytes() == before
    assert listing(target.parent) == ["work.ora"]


def moved(result: Result) -> Result:
    return Result(result.patch, result.x + 1, result.y, result.info)


def repainted(result: Result) -> Result:
    patch = result.patch.copy()
    patch[0, 0, 0] ^= 1
    return Result(patch, result.x, result.y, result.info)


def other_info(document: dict, results: list[Result]) -> tuple[dict, list[Result]]:
    document["results"][1]["seed"] = 2
    return document, results


@pytest.mark.parametrize(
    "change",
    [
        lambda document, results: (document, [results[0], moved(results[1])]),
        lambda document, results: (document, [results[0], repainted(results[1])]),
        other_info,
        lambda document, results: (
            {**document, "results": document["results"][:1]},
            results[:1],
        ),
    ],
    ids=["moved", "repainted", "other-info", "one-missing"],
)
def test_read_back_waiting_results_that_differ_keep_the_old_file(saved, monkeypatch, change):
    target, image, mask = saved
    before = target.read_bytes()
    rng = np.random.default_rng(5)
    results = [
        Result(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), 2, 3, {"seed": 1}),
        Result(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8), 4, 5, {"seed": 7}),
    ]
    write_instead(monkeypatch, change)
    with pytest.raises(ProjectError, match=r"does not read back the same \(results differ\)"):
        save_project(target, image, mask, EXTRA, results)
    assert target.read_bytes() == before
    assert listing(target.parent) == ["work.ora"]


def test_unreadable_written_file_is_not_put_in_place(saved, monkeypatch):
    target, _, _ = saved
    before = target.read_bytes()
    monkeypatch.setattr(project, "MAX_MEMBER_BYTES", 1000)
    with pytest.raises(ProjectError, match=r"could not be read back.*unchanged") as caught:
        save_project(target, rng_pixels((48, 64, 3), seed=9))
    assert "backup" not in str(caught.value) and ".tmp" not in str(caught.value)
    assert target.read_bytes() == before
    assert listing(target.parent) == ["work.ora"]


def test_save_into_read_only_folder():
    # Root ignores file modes: the save runs as an unprivileged user (see tests/unprivileged.py).
    with reachable_folder() as root:
        folder = root / "locked"
        folder.mkdir()
        target = folder / "x.ora"
        save_project(target, rng_pixels((4, 4, 3)))
        leftover = folder / f".x.ora.{UNUSED_PID}-{temporaries._HOST}-abcdefgh.tmp"
        leftover.write_bytes(b"left by a killed save; cannot be removed here")
        before = target.read_bytes()
        folder.chmod(0o555)
        output = run_unprivileged(
            """
            import sys
            import numpy as np
            from sdstudio.core.errors import ProjectError
            from sdstudio.core.project_save import save_project

            drop_privileges()
            try:
                save_project(sys.argv[1], np.ones((4, 4, 3), np.uint8))
            except ProjectError as exc:
                print(exc)
            """,
            str(target),
        )
        assert output.strip() == (
            f"Cannot save '{target}': permission denied in '{folder}'. Choose a folder you can "
            "write to. The previous file, if any, is unchanged."
        )
        assert listing(folder) == sorted(["x.ora", leftover.name])
        assert target.read_bytes() == before


def test_save_where_temporary_files_are_refused(tmp_path, monkeypatch):
    # What a read-only folder does, also when the tests run as root.
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    save_project(tmp_path / "x.ora", rng_pixels((4, 4, 3)))
    before = (tmp_path / "x.ora").read_bytes()
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ProjectError, match=r"x\.ora': permission denied in .*unchanged"):
        save_project(tmp_path / "x.ora", rng_pixels((4, 4, 3), seed=1))
    assert (tmp_path / "x.ora").read_bytes() == before
    assert listing(tmp_path) == ["x.ora"]


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(ProjectError, match="folder .* does not exist"):
        save_project(tmp_path / "gone" / "x.ora", rng_pixels((4, 4, 3)))


def test_backup_name_taken_by_a_folder(saved):
    target, image, _ = saved
    before = target.read_bytes()
    (target.parent / "work.ora~").mkdir()
    with pytest.raises(ProjectError, match=r"cannot be kept as '.*work\.ora~'.*unchanged"):
        save_project(target, rng_pixels((48, 64, 3), seed=9))
    assert target.read_bytes() == before
    assert listing(target.parent) == ["work.ora", "work.ora~"]


def test_saved_file_gets_the_usual_mode(saved):
    target, image, _ = saved
    if not hasattr(os, "fchmod"):
        pytest.skip("no file modes")
    assert target.stat().st_mode & 0o777 != 0o600  # not mkstemp's private mode
    target.chmod(0o640)
    save_project(target, image)
    assert target.stat().st_mode & 0o777 == 0o640


def test_saving_through_a_link_writes_the_linked_file(saved):
    target, image, _ = saved
    link = target.parent / "link.ora"
    link.symlink_to(target)
    save_project(link, image[::-1].copy())
    assert link.is_symlink()
    np.testing.assert_array_equal(load_project(target).image, image[::-1])
    assert (target.parent / "work.ora~").exists()


@pytest.mark.parametrize(
    ("name", "image", "mask", "extra", "message"),
    [
        ("x.png", np.zeros((4, 4), np.uint8), None, None, r"end in \.ora"),
        ("x.ora", np.zeros((4, 4), np.float32), None, None, "8- or 16-bit grey, RGB or RGBA"),
        ("x.ora", np.zeros((4, 4, 2), np.uint8), None, None, "8- or 16-bit grey"),
        ("x.ora", np.zeros((0, 4), np.uint8), None, None, "8- or 16-bit grey"),
        ("x.ora", np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), None, "mask must"),
        ("x.ora", np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool), None, "mask must"),
        ("x.ora", np.zeros((4, 4), np.uint8), None, {"x": object()}, "cannot be stored as JSON"),
        ("x.ora", np.zeros((4, 4), np.uint8), None, {"x": float("nan")}, "as JSON"),
        ("x.ora", np.zeros((4, 4), np.uint8), None, ["not", "a", "dict"], "must be a dict"),
    ],
)
def test_unsavable_input(tmp_path, name, image, mask, extra, message):
    with pytest.raises(ProjectError, match=message):
        save_project(tmp_path / name, image, mask, extra)
    assert listing(tmp_path) == []


def test_picture_too_large_to_reopen_is_not_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ProjectError, match="scale it down"):
        save_project(tmp_path / "x.ora", rng_pixels((16, 16)))
    assert listing(tmp_path) == []


# ----------------------------------------------------------------------------- other programs


def test_foreign_file_with_offset_layers_loads_the_flattened_picture(tmp_path):
    merged = rng_pixels((48, 64, 4), seed=11)
    merged[..., 3] = 255
    layers = [
        ({"name": "Ink", "src": "data/ink.png", "x": "5", "y": "7"}, png_bytes(merged[:10, :10])),
        ({"name": "Background", "src": "data/bg.png"}, png_bytes(merged)),
    ]
    loaded = load_project(foreign_ora(tmp_path / "krita.ora", layers, merged))
    np.testing.assert_array_equal(loaded.image, merged[..., :3])  # opaque alpha dropped
    assert loaded.mask.shape == (48, 64) and not loaded.mask.any()
    assert loaded.extra == {}
    assert len(loaded.notes) == 1 and "not saved by SD Studio" in loaded.notes[0]


def test_foreign_file_with_a_picture_layer_and_more_layers(tmp_path):
    image, mask = rng_pixels((48, 64, 3), seed=12), rng_pixels((48, 64), seed=13)
    layers = [
        ({"name": "Ink", "src": "data/a.png", "x": "3"}, png_bytes(image[:5, :5])),
        ({"name": "Mask", "src": "data/m.png", "visibility": "hidden"}, png_bytes(mask)),
        ({"name": "Picture", "src": "data/p.png"}, png_bytes(image)),
    ]
    loaded = load_project(foreign_ora(tmp_path / "x.ora", layers, image))
    np.testing.assert_array_equal(loaded.image, image)
    np.testing.assert_array_equal(loaded.mask, mask)
    assert len(loaded.notes) == 1 and "'Ink'" in loaded.notes[0]


def test_moved_picture_layer_falls_back_to_the_flattened_picture(tmp_path):
    image = rng_pixels((48, 64, 3), seed=14)
    layers = [({"name": "Picture", "src": "data/p.png", "x": "4"}, png_bytes(image))]
    loaded = load_project(foreign_ora(tmp_path / "x.ora", layers, image))
    np.testing.assert_array_equal(loaded.image, image)
    assert "moved or resized" in loaded.notes[0]


def test_colour_mask_from_another_program_becomes_grey(tmp_path):
    image = rng_pixels((48, 64, 3), seed=15)
    mask = np.zeros((48, 64, 4), np.uint8)
    mask[10:20, 10:30] = 255  # white, opaque
    mask[30:40, 10:30, :3] = 255  # white but transparent
    layers = [
        ({"name": "Mask", "src": "data/m.png"}, png_bytes(mask)),
        ({"name": "Picture", "src": "data/p.png"}, png_bytes(image)),
    ]
    loaded = load_project(foreign_ora(tmp_path / "x.ora", layers, image))
    assert loaded.mask.dtype == np.uint8 and loaded.mask.shape == (48, 64)
    assert (loaded.mask[10:20, 10:30] == 255).all() and loaded.mask.sum() == 255 * 200
    assert any("converted to grey" in note for note in loaded.notes)


def test_unreadable_settings_load_the_layers_with_a_note(saved):
    target, image, mask = saved
    with zipfile.ZipFile(target) as archive:
        entries = [(i.filename, archive.read(i)) for i in archive.infolist()]
    entries = [(n, b"{not json" if n == "sdstudio/project.json" else d) for n, d in entries]
    loaded = load_project(write_zip(target.parent / "bad.ora", entries))
    np.testing.assert_array_equal(loaded.image, image)
    np.testing.assert_array_equal(loaded.mask, mask)
    assert loaded.extra == {} and "settings" in loaded.notes[0]


# ----------------------------------------------------------------------------- hostile input


def rewritten(saved_path: Path, out: Path, change) -> Path:
    """A copy of a saved project with its entries passed through ``change(name, data)``."""
    with zipfile.ZipFile(saved_path) as archive:
        entries = [(i.filename, archive.read(i)) for i in archive.infolist()]
    return write_zip(out, [e for e in (change(n, d) for n, d in entries) if e is not None])


def refused(path: Path, match: str = "") -> str:
    with pytest.raises(ProjectError, match=match) as caught:
        load_project(path)
    message = str(caught.value)
    assert path.name in message and "\n" not in message
    assert isinstance(caught.value, SDStudioError)
    return message


def test_missing_file_and_folder(tmp_path):
    refused(tmp_path / "nope.ora", "does not exist")
    (tmp_path / "dir.ora").mkdir()
    refused(tmp_path / "dir.ora", "is a folder")


@pytest.mark.parametrize(
    "content", [b"", b"garbage " * 100, os.urandom(4096)], ids=["empty", "text", "random"]
)
def test_garbage_is_not_openraster(tmp_path, content):
    (tmp_path / "junk.ora").write_bytes(content)
    refused(tmp_path / "junk.ora", "is not an OpenRaster file")


def test_truncated_file(saved):
    target, _, _ = saved
    data = target.read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        (target.parent / "cut.ora").write_bytes(data[:cut])
        refused(target.parent / "cut.ora", "OpenRaster|damaged")


def test_png_renamed_ora(tmp_path):
    save_image(tmp_path / "photo.png", rng_pixels((8, 8, 3)))
    (tmp_path / "photo.png").rename(tmp_path / "photo.ora")
    refused(tmp_path / "photo.ora", "not an OpenRaster file: it is a PNG picture")


def test_missing_and_wrong_mimetype(saved, tmp_path):
    target, _, _ = saved
    drop = rewritten(target, tmp_path / "a.ora", lambda n, d: None if n == "mimetype" else (n, d))
    refused(drop, "without the 'mimetype' entry")

    def change(n, d):
        return (n, b"application/zip" if n == "mimetype" else d)

    refused(rewritten(target, tmp_path / "b.ora", change), "its mimetype is 'application/zip'")
    refused(write_zip(tmp_path / "c.zip.ora", [("readme.txt", b"hi")]), "not an OpenRaster")


@pytest.mark.parametrize(
    "member", ["../evil.png", "data/../../evil.png", "/etc/evil.png", "C:/evil.png", "..\\x.png"]
)
def test_unsafe_member_names_are_refused(saved, tmp_path, member):
    target, _, _ = saved
    evil = rewritten(
        target, tmp_path / "evil.ora", lambda n, d: (member if n == "data/mask.png" else n, d)
    )
    refused(evil, "refused as unsafe.*entry named")
    assert listing(tmp_path) == ["evil.ora", "work.ora"]  # nothing was extracted


def test_duplicate_member_is_refused(saved, tmp_path):
    target, _, _ = saved
    with zipfile.ZipFile(target) as archive:
        entries = [(i.filename, archive.read(i)) for i in archive.infolist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name
        bad = write_zip(tmp_path / "dup.ora", [*entries, ("data/picture.png", b"x")])
    refused(bad, "appears twice")


def test_zip_bomb_is_refused_from_its_declared_size(saved, tmp_path, monkeypatch):
    target, _, _ = saved
    monkeypatch.setattr(project, "MAX_MEMBER_BYTES", 64 * 2**20)
    with zipfile.ZipFile(target) as archive:
        entries = [(i.filename, archive.read(i)) for i in archive.infolist()]
    bomb = tmp_path / "bomb.ora"
    with zipfile.ZipFile(bomb, "w") as archive:
        for member, data in entries:
            if member == "data/picture.png":  # 200 MB of zeros deflate to about 200 KB
                info = zipfile.ZipInfo(member)
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, "w", force_zip64=True) as stream:
                    chunk = bytes(2**20)
                    for _ in range(200):
                        stream.write(chunk)
            else:
                archive.writestr(member, data)
    assert bomb.stat().st_size < 2 * 2**20
    refused(bomb, r"unpack to 209,715,200 bytes, more than 67,108,864")


def test_total_size_and_entry_count_are_capped(saved, tmp_path, monkeypatch):
    target, _, _ = saved
    monkeypatch.setattr(project, "MAX_TOTAL_BYTES", 10_000)
    refused(target, "would unpack to .* bytes, more than 10,000")
    monkeypatch.undo()
    many = [("mimetype", b"image/openraster")] + [(f"f{i}", b"") for i in range(1000)]
    refused(write_zip(tmp_path / "many.ora", many), "1,001 entries, more than the limit of 1,000")


def test_member_with_a_lying_size_header(saved, tmp_path):
    target, _, _ = saved
    data = bytearray(target.read_bytes())
    with zipfile.ZipFile(target) as archive:
        info = archive.getinfo("data/picture.png")
    # Shrink the declared uncompressed size in the local and the central header.
    local = info.header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, local + 22, 100)
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(b"data/picture.png")] != b"data/picture.png":
        central = data.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, 100)
    (tmp_path / "liar.ora").write_bytes(bytes(data))
    refused(tmp_path / "liar.ora", "damaged")


def test_size_is_checked_while_reading(saved, monkeypatch):
    target, _, _ = saved
    monkeypatch.setattr(project, "MAX_SETTINGS_BYTES", 20)
    refused(target, r"'sdstudio/project\.json' unpacks to too much")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE image [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<image version="0.0.3" w="64" h="48"><stack><layer name="&lol3;" src="data/picture.png"/></stack></image>
"""


@pytest.mark.parametrize(
    "xml",
    [
        BILLION_LAUGHS,
        b'<!DOCTYPE image SYSTEM "file:///etc/passwd"><image w="64" h="48"><stack/></image>',
        BILLION_LAUGHS.decode().replace('"1.0"', '"1.0" encoding="UTF-16"').encode("utf-16"),
    ],
    ids=["entities", "external", "utf16"],
)
def test_stack_xml_with_entities_is_refused(saved, tmp_path, xml):
    target, _, _ = saved
    bad = rewritten(target, tmp_path / "x.ora", lambda n, d: (n, xml if n == "stack.xml" else d))
    refused(bad, "refused as unsafe.*DOCTYPE or entities")


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<image w='64' h='48'><stack>", "not well-formed XML"),
        (b"<stack w='64' h='48'/>", "no <image> with a <stack>"),
        (b"<image w='x' h='48'><stack/></image>", "w='x'"),
        (b"<image h='48'><stack/></image>", "w=None"),
        (b"<image w='0' h='48'><stack/></image>", "size 0x48"),
        (b"<image>\xc3\x28</image>", "not UTF-8 text"),
    ],
)
def test_damaged_stack_xml(saved, tmp_path, xml, message):
    target, _, _ = saved
    bad = rewritten(target, tmp_path / "x.ora", lambda n, d: (n, xml if n == "stack.xml" else d))
    refused(bad, message)


def test_layer_with_huge_declared_dimensions_is_refused(saved, tmp_path):
    target, _, _ = saved

    def bomb(n, d):
        return (n, bomb_png() if n == "data/picture.png" else d)

    message = refused(rewritten(target, tmp_path / "x.ora", bomb), "100000x100000")
    assert "'data/picture.png' in '" in message and "exhaust memory" in message


@pytest.mark.parametrize(
    ("member", "replacement", "message"),
    [
        ("data/picture.png", None, r"layer 'Picture' has no pixels \('data/picture\.png' is"),
        ("data/mask.png", None, "layer 'Mask' has no pixels"),
        ("data/picture.png", b"not a png", "'data/picture.png' is not a PNG picture"),
        ("data/mask.png", png_bytes(np.zeros((48, 63), np.uint8)), "mask is 63x48"),
        ("stack.xml", None, "has no stack.xml"),
        ("stack.xml", stack_xml(64, 48), "has no layer named 'Picture'"),
        ("sdstudio/project.json", b'{"format": 99, "extra": {}}', "newer SD Studio"),
    ],
)
def test_damaged_members(saved, tmp_path, member, replacement, message):
    target, _, _ = saved

    def change(n, d):
        if n != member:
            return (n, d)
        return None if replacement is None else (n, replacement)

    refused(rewritten(target, tmp_path / "x.ora", change), message)


def test_truncated_layer_png(saved, tmp_path):
    target, _, _ = saved
    bad = rewritten(target, tmp_path / "x.ora", lambda n, d: (n, d[:-100] if "/" in n else d))
    refused(bad, "'data/picture.png' cannot be decoded: image file is truncated")


def test_foreign_file_without_any_picture(tmp_path):
    layers = [({"name": "Ink", "src": "data/a.png"}, png_bytes(rng_pixels((48, 64, 4))))]
    refused(foreign_ora(tmp_path / "x.ora", layers), "no layer named 'Picture' and no merged")


def test_random_damage_gives_a_project_or_a_project_error(tmp_path):
    save_project(
        tmp_path / "x.ora", rng_pixels((24, 32, 3), np.uint16), rng_pixels((24, 32)), EXTRA
    )
    good = (tmp_path / "x.ora").read_bytes()
    rng = np.random.default_rng(2024)
    outcomes = {"loaded": 0, "refused": 0}
    for attempt in range(50):
        data = bytearray(good)
        if attempt % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for position in rng.integers(0, len(data), int(rng.integers(1, 4))):
                data[position] ^= 1 << int(rng.integers(0, 8))
        damaged = tmp_path / "damaged.ora"
        damaged.write_bytes(bytes(data))
        try:
            result = load_project(damaged)
        except ProjectError as exc:
            assert "damaged.ora" in str(exc)
            outcomes["refused"] += 1
        else:
            assert isinstance(result, Project)
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 0, outcomes
    print(outcomes)


def test_waiting_results_round_trip_as_hidden_layers(tmp_path):
    from sdstudio.core.project import Result

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    results = [
        Result(
            rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), 5, 7, {"seed": 1, "mode": "inpaint"}
        ),
        Result(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), 0, 0, {"parameters": "a cat"}),
    ]
    path = tmp_path / "results.ora"
    save_project(path, image, None, {"k": "v"}, results)
    project = load_project(path)
    assert len(project.results) == 2 and project.notes == ()
    for got, want in zip(project.results, results, strict=True):
        np.testing.assert_array_equal(got.patch, want.patch)
        assert (got.x, got.y, got.info) == (want.x, want.y, want.info)
    with zipfile.ZipFile(path) as archive:
        stack = archive.read("stack.xml").decode()
    assert 'name="Result 1"' in stack and 'x="5" y="7"' in stack and 'visibility="hidden"' in stack
    with pytest.raises(ProjectError, match="result 1 is not a picture inside"):
        save_project(tmp_path / "bad.ora", image, None, None, [Result(image, 3, 0, {})])
