"""A hostile and odd set of files: none may crash the CLI or the editor, or run anything.

Each file either opens (odd but valid pictures: CMYK, palette, 16-bit, animated, ICC-tagged,
rotated) or gives a clear one-line error (garbage, truncated, wrong extension, decompression
bombs, zip bombs and ``../`` paths in projects). The loaders are also fuzzed with a fixed set of
seeded byte flips and truncations.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.core.errors import SDStudioError
from sdstudio.core.imageio import load_image, save_image
from sdstudio.core.project import load_project
from sdstudio.core.project_save import save_project

W, H = 64, 48


def pixels(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with a few bytes of data (a bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def ora_with(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), b"image/openraster")
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def build(folder):
    """name -> True when the file must open, False when it must be refused clearly."""
    good, bad = {}, {}
    image = pixels()
    Image.fromarray(image).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(image).convert("P").save(folder / "palette.png")
    frames = [Image.fromarray(image), Image.fromarray(255 - image)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "animated.webp", save_all=True, append_images=frames[1:])
    save_image(folder / "deep.png", (image.astype(np.uint16) * 257))
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(image).save(folder / "icc.png", icc_profile=srgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    Image.fromarray(image).save(folder / "rotated.jpg", exif=exif)
    save_project(folder / "project.ora", image)
    good.update(
        dict.fromkeys(
            [
                "cmyk.jpg",
                "palette.png",
                "animated.gif",
                "animated.webp",
                "deep.png",
                "icc.png",
                "rotated.jpg",
                "project.ora",
            ],
            True,
        )
    )

    (folder / "garbage.png").write_bytes(np.random.default_rng(1).bytes(5000))
    (folder / "empty.png").write_bytes(b"")
    valid = io.BytesIO()
    Image.fromarray(image).save(valid, "PNG")
    (folder / "truncated.png").write_bytes(valid.getvalue()[: len(valid.getvalue()) // 2])
    (folder / "png-named.jpg").write_bytes(valid.getvalue())  # wrong extension: still opens
    good["png-named.jpg"] = True
    (folder / "bomb.png").write_bytes(png_claiming(200_000, 200_000))
    (folder / "text.jpg").write_text("<html>not a picture</html>")
    (folder / "picture-named.ora").write_bytes(valid.getvalue())
    (folder / "garbage.ora").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    (folder / "escape.ora").write_bytes(
        ora_with({"stack.xml": b"<image w='1' h='1'><stack/></image>", "../evil.png": b"x"})
    )
    (folder / "zipbomb.ora").write_bytes(ora_with({"stack.xml": b" " * (300 * 2**20)}))
    (folder / "entities.ora").write_bytes(
        ora_with({"stack.xml": b'<!DOCTYPE x [<!ENTITY a "aaaa">]><image w="1" h="1"/>'})
    )
    (folder / "layer-bomb.ora").write_bytes(
        ora_with(
            {
                "stack.xml": b'<image w="200000" h="200000"><stack><layer name="Picture" '
                b'src="data/picture.png" x="0" y="0"/></stack></image>',
                "data/picture.png": png_claiming(200_000, 200_000),
            }
        )
    )
    (folder / "folder.png").mkdir()
    bad.update(
        dict.fromkeys(
            [
                "garbage.png",
                "empty.png",
                "truncated.png",
                "bomb.png",
                "text.jpg",
                "picture-named.ora",
                "garbage.ora",
                "escape.ora",
                "zipbomb.ora",
                "entities.ora",
                "layer-bomb.ora",
                "folder.png",
                "missing.png",
            ],
            False,
        )
    )
    return {**good, **bad}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, build(folder)


def open_any(path):
    return load_project(path).image if path.suffix == ".ora" else load_image(path)


def test_each_file_opens_or_gives_a_clear_error(hostile):
    folder, expected = hostile
    for name, opens in expected.items():
        path = folder / name
        if opens:
            array = open_any(path)
            assert array.ndim in (2, 3) and array.shape[0] > 0, name
        else:
            with pytest.raises(SDStudioError) as caught:
                open_any(path)
            message = str(caught.value)
            assert name in message and "\n" not in message.strip(), (name, message)


CLI_PICTURES = {
    "cmyk.jpg",
    "palette.png",
    "animated.gif",
    "animated.webp",
    "deep.png",
    "icc.png",
    "rotated.jpg",
    "png-named.jpg",
    "picture-named.ora",  # a PNG by its content: the CLI reads pictures by content
}
"""The files the CLI's commands must open. Its commands take pictures, not projects: a project
(``project.ora``) is refused like any file that is not a picture."""

INFO_READS_TEXT = CLI_PICTURES | {"truncated.png"}  # info reads the text, not the pixels


def cli(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def assert_refused(name: str, code: int, err: str) -> None:
    """Exit 1 with one line that names the file; not an unexpected error, not a traceback."""
    lines = err.strip().splitlines()
    assert code == 1, f"{name}: exit {code} (a refusal exits 1); stderr: {err!r}"
    assert lines and lines[-1].startswith("sdstudio: error: ") and name in lines[-1], (name, err)
    assert "--verbose for details" not in err, f"{name}: an unexpected error, not a refusal: {err}"
    assert "Traceback" not in err, (name, err)


def test_the_cli_opens_the_pictures_and_refuses_the_rest_clearly(hostile, tmp_path, capsys):
    folder, expected = hostile
    assert set(expected) >= CLI_PICTURES | INFO_READS_TEXT
    for name in expected:
        path = folder / name
        out = tmp_path / f"{name}.out.png"
        if name in CLI_PICTURES:
            height, width = load_image(path).shape[:2]  # rotated.jpg: as the EXIF turns it
            mask = tmp_path / f"{name}.mask.png"
            hole = np.zeros((height, width), np.uint8)
            hole[height // 4 : height // 2, width // 4 : width // 2] = 255
            save_image(mask, hole)
        else:
            mask = tmp_path / "any-mask.png"
            save_image(mask, np.zeros((H, W), np.uint8))
        code, err = cli(["remove", str(path), "--mask", str(mask), "-o", str(out)], capsys)
        if name in CLI_PICTURES:
            assert code == 0, f"{name} must open: exit {code}, stderr: {err!r}"
            assert load_image(out).shape[:2] == (height, width), name
        else:
            assert_refused(name, code, err)
            assert not out.exists(), name
            if name == "project.ora":  # says what the file is and what to do with it
                assert "is a layered OpenRaster project, not a picture: open it in the" in err

        code, err = cli(["info", str(path)], capsys)
        if name in INFO_READS_TEXT:  # none of them holds generation parameters
            assert code == 1, f"{name}: exit {code}, stderr: {err!r}"
            assert err.strip() == f"'{path}' holds no generation parameters.", (name, err)
        else:
            assert_refused(name, code, err)


def test_the_editor_never_crashes_on_them(hostile, qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from sdstudio.engine.fake import FakeEngine
    from sdstudio.qt.main_window import MainWindow

    folder, expected = hostile
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, engine_factory=lambda: FakeEngine(steps=2))
    window.confirm_discard = lambda: True
    qtbot.addWidget(window)
    try:
        for name, opens in expected.items():
            window.error_box = None
            before = window.session.document
            window.open_path(folder / name)
            if opens:
                qtbot.waitUntil(lambda b=before: window.session.document is not b, timeout=10000)
            else:
                qtbot.waitUntil(lambda: window.error_box is not None, timeout=10000)
                assert name in window.error_box.text()
    finally:
        window.generation.shutdown()
        window.fill.shutdown()


FUZZ_CASES = 200


@pytest.mark.parametrize("kind", ["png", "jpg", "webp", "ora"])
def test_fuzzed_files_open_or_fail_clearly(tmp_path, kind, capsys):
    """A fixed set of seeded flips and truncations of a valid file: each opens or is refused
    with SDStudioError, and the CLI's info exits 0 or 1 without an unexpected error."""
    path = tmp_path / f"fuzz.{kind}"
    if kind == "ora":
        save_project(path, pixels(), None, {"parameters": "x"})
    else:
        save_image(path, pixels(), "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    original = path.read_bytes()
    rng = np.random.default_rng(7)
    for case in range(FUZZ_CASES):
        data = bytearray(original)
        if rng.random() < 0.3:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        with contextlib.suppress(SDStudioError):
            open_any(path)
        code, err = cli(["info", str(path)], capsys)
        assert code in (0, 1), (case, code, err)
        assert "--verbose for details" not in err and "Traceback" not in err, (case, err)


def test_hostile_metadata_in_a_picture_is_only_text(tmp_path, qtbot, capsys):
    """Code in every metadata field each reader looks at: it stays text, and nothing runs
    (the code would create a marker file) when the picture is read, described by ``info`` or
    its settings are put in the panel."""
    from PIL.PngImagePlugin import PngInfo

    from sdstudio.core.imageio import load_picture, read_texts
    from sdstudio.core.provenance import read_provenance
    from sdstudio.qt.panel import GenerationPanel

    marker = tmp_path / "ran"
    code = f"__import__('os').system({'touch ' + shlex.quote(str(marker))!r})"
    eval(code)  # the trap is real: evaluating the text does create the marker
    assert marker.exists()
    marker.unlink()

    keys = ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Denoising strength")
    a1111 = f"{code}\nNegative prompt: {code}\n" + ", ".join(f"{k}: {code}" for k in keys)
    sampler = {"seed": code, "steps": code, "cfg": 1e308, "sampler_name": code}
    comfy = {
        "1": {"class_type": "KSampler", "inputs": {**sampler, "positive": ["2", 0]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": code}},
    }
    invoke = {"positive_prompt": code, "seed": code, "steps": code, "model": {"name": code}}
    invoke_2 = {"image": {"prompt": [{"prompt": code}], "seed": code}, "model_weights": code}
    files = {
        "parameters": {"parameters": a1111},
        "comfyui": {"prompt": json.dumps(comfy), "workflow": code},
        "invokeai": {"invokeai_metadata": json.dumps(invoke)},
        "invokeai-2": {"sd-metadata": json.dumps(invoke_2)},
    }
    panel = GenerationPanel()
    qtbot.addWidget(panel)
    for name, texts in files.items():
        info = PngInfo()
        for key, text in texts.items():
            info.add_text(key, text)
        path = tmp_path / f"{name}.png"
        Image.fromarray(pixels()).save(path, pnginfo=info)
        found = read_provenance(read_texts(path))
        assert found is not None, name
        found.summary()
        read_provenance(load_picture(path).texts)
        panel.apply(found.settings)  # Generate > Use the picture's settings
        assert main(["info", str(path)]) == 0, name
        assert code in capsys.readouterr().out, name  # shown as text
        assert not marker.exists(), f"the code in the {name} metadata ran"
    found = read_provenance(read_texts(tmp_path / "parameters.png"))
    assert found.settings["prompt"] == code and found.settings["negative_prompt"] == code
    assert "seed" not in found.settings and "steps" not in found.settings


def test_odd_pictures_say_what_was_changed_to_open_them(hostile, tmp_path, capsys):
    from sdstudio.core.imageio import load_picture

    folder, _ = hostile
    assert "only the first is opened" in load_picture(folder / "animated.gif").notes[0]
    assert "CMYK" in load_picture(folder / "cmyk.jpg").notes[0]
    assert load_picture(folder / "icc.png").notes == ()  # sRGB already: nothing to say
    mask = tmp_path / "mask.png"
    hole = np.zeros((H, W), np.uint8)
    hole[10:30, 20:40] = 255
    save_image(mask, hole)
    out = tmp_path / "out.png"
    assert main(["remove", str(folder / "animated.webp"), "--mask", str(mask), "-o", str(out)]) == 0
    assert "only the first is opened" in capsys.readouterr().err


def test_a_broken_colour_profile_is_said_and_the_pixels_kept(tmp_path):
    from sdstudio.core.imageio import load_picture

    Image.fromarray(pixels()).save(tmp_path / "odd.png", icc_profile=b"not a profile" * 20)
    picture = load_picture(tmp_path / "odd.png")
    np.testing.assert_array_equal(picture.array, pixels())
    assert "could not be read" in picture.notes[0]


ADOBE_RGB = "/usr/share/color/icc/ghostscript/a98.icc"


def test_a_wide_gamut_picture_is_converted_to_srgb(tmp_path):
    """Adobe RGB (from Ghostscript's profiles, where the machine has them): a saturated orange
    comes out more saturated in sRGB, as colour-managed viewers show it."""
    import os

    from sdstudio.core.imageio import load_picture

    if not os.path.exists(ADOBE_RGB):
        pytest.skip("no Adobe RGB profile on this machine")
    orange = np.full((8, 8, 3), (200, 120, 40), np.uint8)
    with open(ADOBE_RGB, "rb") as profile:
        Image.fromarray(orange).save(tmp_path / "a98.png", icc_profile=profile.read())
    picture = load_picture(tmp_path / "a98.png")
    red, _, blue = picture.array[0, 0].astype(int)
    assert red > 210 and blue < 35 and "to sRGB" in picture.notes[0]


def test_a_garbage_settings_file_still_opens_the_editor(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from sdstudio.engine.fake import FakeEngine
    from sdstudio.qt.main_window import MainWindow

    path = tmp_path / "settings.ini"
    path.write_text(
        "[window]\ngeometry=@ByteArray(\\0\\xff garbage)\nstate=12\n"
        "[tools]\nsize=huge\nhardness=-5\nopacity=1e999\n"
        "[generate]\nsteps=abc\nguidance=nan\nseed=-1\nscheduler=warp drive\nmodel=\n"
        "[files]\nrecent=/nowhere/a.png, 17\nlast_dir=\\0\n"
        "[fill]\nmethod=magic\n[autosave]\nminutes=soon\n"
        "[memory]\nundo_mib=lots\nresults_mib=-3\n"
    )
    settings = QSettings(str(path), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, engine_factory=lambda: FakeEngine(steps=2))
    qtbot.addWidget(window)
    try:
        window.show()
        qtbot.waitExposed(window)
        assert window.session.candidate_budget == 16 * 2**20  # at least the minimum
        assert window.panel.settings()["steps"] > 0
    finally:
        window.generation.shutdown()
        window.fill.shutdown()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_an_export_keeps_the_pictures_colour_profile(tmp_path, suffix):
    """Opened from Adobe RGB, shown and edited in sRGB, exported back into Adobe RGB with the
    profile embedded: a colour-managed viewer sees the same colours either way."""
    import os

    from sdstudio.core.imageio import load_picture

    if not os.path.exists(ADOBE_RGB):
        pytest.skip("no Adobe RGB profile on this machine")
    with open(ADOBE_RGB, "rb") as handle:
        profile = handle.read()
    smooth = np.zeros((H, W, 3), np.uint8)
    smooth[..., 0], smooth[..., 1], smooth[..., 2] = 200, np.arange(W)[None, :] * 3, 40
    Image.fromarray(smooth).save(tmp_path / "a98.png", icc_profile=profile)
    opened = load_picture(tmp_path / "a98.png")
    assert opened.icc_profile == profile
    out = tmp_path / f"out{suffix}"
    save_image(out, opened.array, icc_profile=opened.icc_profile)
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == profile
    again = load_picture(out)
    tolerance = 3 if suffix in (".png", ".tif") else 12  # lossy formats add their own error
    assert np.abs(again.array.astype(int) - opened.array).max() <= tolerance


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALID: dict[str, bytes] = {}


def _valid(kind: str) -> bytes:
    """A small valid file of ``kind``, made once, for the fuzzer to mutate."""
    if kind not in _VALID:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"seed.{kind}"
            if kind == "ora":
                save_project(path, pixels(), None, {"parameters": "x"})
            else:
                save_image(path, pixels(), "a cat\nSteps: 20, Sampler: Euler a, Seed: 1")
            _VALID[kind] = path.read_bytes()
    return _VALID[kind]


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["png", "jpg", "webp", "ora"]),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    junk=st.binary(max_size=64),
)
def test_hypothesis_fuzzes_the_loaders(tmp_path_factory, kind, edits, cut, junk):
    """Hypothesis mutates valid files (byte edits, a cut, junk appended): every loader either
    reads the result or raises SDStudioError, and the metadata readers never raise."""
    from sdstudio.core.imageio import read_texts
    from sdstudio.core.provenance import read_provenance

    data = bytearray(_valid(kind))
    for where, value in edits:
        data[min(len(data) - 1, int(where * len(data)))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    data += junk
    path = tmp_path_factory.mktemp("fuzz") / f"fuzzed.{kind}"
    path.write_bytes(bytes(data))
    with contextlib.suppress(SDStudioError):
        open_any(path)
    if kind != "ora":
        with contextlib.suppress(SDStudioError):
            read_provenance(read_texts(path))


def test_a_grey_scan_with_a_grey_profile_opens_as_stored(tmp_path):
    import os

    from sdstudio.core.imageio import load_picture

    grey_profile = "/usr/share/color/icc/ghostscript/sgray.icc"
    if not os.path.exists(grey_profile):
        pytest.skip("no grey profile on this machine")
    grey = pixels()[:, :, 0]
    with open(grey_profile, "rb") as handle:
        Image.fromarray(grey).save(tmp_path / "scan.png", icc_profile=handle.read())
    picture = load_picture(tmp_path / "scan.png")
    np.testing.assert_array_equal(picture.array, grey)
    assert picture.notes == () and picture.icc_profile is None
