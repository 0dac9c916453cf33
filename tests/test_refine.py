"""SD upscale (engine/refine.py): a light img2img per tile through the one tiler. A scripted engine
checks the tiling, the requests and the layouts; the tiny SD 1.5 pipeline checks the real path."""

import threading

import numpy as np
import pytest

from sdstudio.core.errors import SDStudioError
from sdstudio.core.region import Box
from sdstudio.engine.events import Failed, Finished, Step
from sdstudio.engine.refine import refine
from sdstudio.engine.streaming import RunCancelled


class TileEngine:
    """Returns each tile with ``function`` applied, as the diffusion engine's Finished does."""

    def __init__(self, function=lambda rgb: 255 - rgb, fail=False, cancel_after=None):
        self.function, self.fail, self.cancel_after = function, fail, cancel_after
        self.requests = []

    def run(self, request, cancel):
        self.requests.append(request)
        cancel.set()  # as the diffusion engine does when its run ends: never the caller's event
        if self.cancel_after is not None and len(self.requests) > self.cancel_after:
            self.outer.set()
        yield Step(1, 1)
        if self.fail:
            yield Failed("out of memory")
            return
        image = request.image
        box = Box(0, 0, image.shape[1], image.shape[0])
        yield Finished(self.function(image), box, "", request)


def picture(h=300, w=700, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x % 256, y % 256, (x + y) % 256], -1)
    return np.clip(base + rng.integers(-10, 11, (h, w, 3)), 0, 255).astype(np.uint8)


def test_each_tile_is_refined_and_the_tiles_join_without_seams():
    """A per-pixel change run tile by tile gives the change of the whole picture exactly: the
    tiles' weights sum to one everywhere."""
    image = picture()
    engine = TileEngine()
    out = refine(engine, image, prompt="p", strength=0.25, seed=7, tile=256)
    assert np.array_equal(out, 255 - image)
    assert len(engine.requests) > 1  # it was tiled
    for request in engine.requests:
        assert request.prompt == "p" and request.strength == 0.25 and request.seed == 7
        assert max(request.image.shape[:2]) <= 256 and not request.keep_tone


def test_layouts_come_back_as_they_went_in():
    rgb = picture(200, 300)
    grey16 = (rgb[:, :, 0].astype(np.uint16) * 257) + 3
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
    identity = TileEngine(lambda tile: tile)
    out = refine(identity, grey16, tile=128)
    assert out.shape == grey16.shape and out.dtype == np.uint16
    assert np.abs(out.astype(int) - grey16).max() <= 257  # the model's 8 bits, back in 16
    assert all(r.keep_tone for r in identity.requests)  # a grey photo stays grey
    out = refine(identity, rgba, tile=128)
    assert out.shape == rgba.shape and np.array_equal(out[:, :, 3], rgba[:, :, 3])
    assert np.array_equal(out[:, :, :3], rgb)


def test_cancel_and_failure_stop_the_refine():
    image = picture(300, 300)
    stopping = TileEngine(cancel_after=1)
    stopping.outer = threading.Event()
    with pytest.raises(RunCancelled):
        refine(stopping, image, tile=128, cancel=stopping.outer)
    assert len(stopping.requests) == 2  # the second tile's run was told, the third never began
    with pytest.raises(SDStudioError, match="out of memory"):
        refine(TileEngine(fail=True), image, tile=128)
    with pytest.raises(SDStudioError, match="strength"):
        refine(TileEngine(), image, strength=0)


def test_the_tiny_sd_pipeline_refines_through_the_real_engine(engine, sd1_model):
    image = picture(96, 160)
    out = refine(engine, image, model=sd1_model, strength=0.3, steps=4, tile=64, seed=1)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    again = refine(engine, image, model=sd1_model, strength=0.3, steps=4, tile=64, seed=1)
    assert np.array_equal(out, again)  # the same seed: the same picture
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RunCancelled):
        refine(engine, image, model=sd1_model, steps=2, tile=64, cancel=cancel)


def test_cli_upscale_then_refine(tmp_path, sd1_model, capsys):
    from sdstudio.cli import main
    from sdstudio.core.imageio import load_image, read_parameters, save_image

    source = tmp_path / "small.png"
    save_image(source, picture(40, 64))
    plain, refined = tmp_path / "plain.png", tmp_path / "refined.png"
    common = ["upscale", str(source), "--scale", "2", "--model", "lanczos"]
    assert main([*common, "-o", str(plain)]) == 0
    steps = ["--steps", "4", "--seed", "3"]
    args = [*common, "--refine", "--refine-model", sd1_model, *steps, "-o", str(refined)]
    assert main(args) == 0
    a, b = load_image(plain), load_image(refined)
    assert a.shape == b.shape == (80, 128, 3) and not np.array_equal(a, b)
    assert "refined by" in read_parameters(refined)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strength", "0.5"], "only apply with --refine"),
        (["--refine", "--strength", "0.1", "--steps", "4"], "no denoising step"),
        (["--refine", "--strength", "1.5"], "strength"),
    ],
)
def test_cli_refine_mistakes_are_one_line_before_anything_loads(
    tmp_path, monkeypatch, capsys, extra, message
):
    from sdstudio.cli import main
    from sdstudio.core.imageio import save_image

    monkeypatch.setattr(
        "sdstudio.cli.generate._load_engine", lambda *a: pytest.fail("a model loaded")
    )
    source = tmp_path / "small.png"
    save_image(source, picture(40, 64))
    args = ["upscale", str(source), "--scale", "2", *extra, "-o", str(tmp_path / "o.png")]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()
