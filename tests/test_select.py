"""Click-to-select: a tiny random SamModel saved as safetensors and loaded back through the same
loader users take; the picture <-> model mapping on a non-square picture larger than the model's
input; growing; the CLI end to end."""

from __future__ import annotations

import numpy as np
import pytest

from sdstudio.cli import main
from sdstudio.core.errors import ModelError
from sdstudio.core.imageio import load_image, save_image
from sdstudio.core.selection import ModelFrame, Point, Prompt, grow

SIDE = 128  # the tiny model's input (SAM's is 1024)
LOW = SIDE // 4  # its low-resolution mask
WIDTH, HEIGHT = 300, 200  # larger than the input, not square: scaled to 128 x 85


def save_tiny_sam(folder, seed: int = 0):
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(seed)
    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": SIDE,
            "patch_size": 16,
            "output_channels": 32,
            "window_size": 4,
            "global_attn_indexes": [1],
            "mlp_dim": 64,
            "num_pos_feats": 16,
        },
        prompt_encoder_config={
            "hidden_size": 32,
            "image_size": SIDE,
            "patch_size": 16,
            "mask_input_channels": 4,
        },
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
    )
    SamModel(config).eval().save_pretrained(folder, safe_serialization=True)
    images = SamImageProcessor(
        size={"longest_edge": SIDE},
        pad_size={"height": SIDE, "width": SIDE},
        mask_size={"longest_edge": LOW},
        mask_pad_size={"height": LOW, "width": LOW},
    )
    SamProcessor(image_processor=images).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sam_folder(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny-sam")


@pytest.fixture
def picture():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[60:150, 90:220] = (200, 40, 30)  # an object
    return image


@pytest.fixture
def selector(sam_folder):
    from sdstudio.engine.specialists.select import load_selector

    return load_selector(sam_folder, device="cpu")


def spy(selector, replace=None):
    """Record what the model receives for each decode; ``replace(out)`` may rewrite its output."""
    calls = []

    def before(_module, args, kwargs):
        calls.append(kwargs)

    def after(_module, _args, _kwargs, out):
        return replace(out) if replace is not None else out

    selector.model.register_forward_pre_hook(before, with_kwargs=True)
    selector.model.register_forward_hook(after, with_kwargs=True)
    return calls


def test_select_returns_a_mask_the_size_of_the_picture_and_is_deterministic(
    sam_folder, selector, picture
):
    from sdstudio.engine.specialists.select import load_selector

    selector.embed(picture)
    first = selector.mask([(150, 100, True)])
    assert first.shape == (HEIGHT, WIDTH) and first.dtype == np.uint8
    assert set(np.unique(first)) <= {0, 255}
    again = load_selector(sam_folder, device="cpu")  # a fresh load: same weights, same answer
    again.embed(picture)
    assert np.array_equal(again.mask([(150, 100, True)]), first)
    assert np.array_equal(selector.mask([(150, 100, True)], box=None), first)


def test_points_and_boxes_reach_the_model_where_transformers_would_put_them(selector, picture):
    from transformers import SamProcessor

    calls = spy(selector)
    selector.embed(picture)
    assert selector.frame == ModelFrame(WIDTH, HEIGHT, SIDE, 128, 85)
    selector.mask([(150, 100, True), (40, 180, False)], box=(30, 20, 240, 180))
    got = calls[-1]
    processor = SamProcessor.from_pretrained(selector.name, local_files_only=True)
    expected = processor(
        images=picture,
        input_points=[[[[150, 100], [40, 180]]]],
        input_labels=[[[1, 0]]],
        input_boxes=[[[30, 20, 240, 180]]],
        return_tensors="pt",
    )
    np.testing.assert_allclose(got["input_points"].numpy(), expected["input_points"].numpy())
    np.testing.assert_allclose(got["input_boxes"].numpy(), expected["input_boxes"].numpy())
    assert got["input_labels"].tolist() == [[[1, 0]]]
    assert got["multimask_output"] is False  # several points and a box name one object
    np.testing.assert_allclose(got["input_points"][0, 0, 0].numpy(), [64.0, 42.5])


def test_the_model_input_is_the_picture_scaled_normalised_and_padded(selector, picture):
    from transformers import SamProcessor

    frame = ModelFrame.fit(WIDTH, HEIGHT, SIDE)
    ours = selector.model_input(picture, frame)
    processor = SamProcessor.from_pretrained(selector.name, local_files_only=True)
    theirs = processor(images=picture, return_tensors="pt")["pixel_values"].numpy()
    assert ours.shape == theirs.shape == (1, 3, SIDE, SIDE)
    assert np.all(ours[:, :, 85:] == 0) and np.all(theirs[:, :, 85:] == 0)  # padding, bottom
    # Area averaging (ours) and antialiased bilinear (theirs) agree closely on a smooth picture.
    smooth = np.broadcast_to(
        np.linspace(0, 255, WIDTH, dtype=np.uint8)[None, :, None], (200, 300, 3)
    )
    ours = selector.model_input(np.ascontiguousarray(smooth), frame)
    theirs = processor(images=np.ascontiguousarray(smooth), return_tensors="pt")["pixel_values"]
    assert np.abs(ours - theirs.numpy()).max() < 0.05


def logits_with_square(x0, y0, x1, y1):
    """Low-resolution logits (over the padded 128 x 128 square): positive inside the model-input
    box (x0, y0)-(x1, y1), negative elsewhere; positive in the padding too (it must be cut)."""
    logits = np.full((LOW, LOW), -10.0, np.float32)
    logits[y0 // 4 : y1 // 4, x0 // 4 : x1 // 4] = 10.0
    logits[88 // 4 :, :] = 10.0  # below the picture (85 rows): padding
    return logits


def test_the_low_resolution_mask_maps_back_onto_the_full_picture(selector, picture):
    import torch

    def replace(out):
        out.pred_masks = torch.from_numpy(logits_with_square(32, 16, 64, 32))[None, None, None]
        out.iou_scores = torch.ones(1, 1, 1)
        return out

    spy(selector, replace)
    selector.embed(picture)
    mask = selector.mask([(10, 10, True), (20, 20, True)])
    assert mask.shape == (HEIGHT, WIDTH)
    ys, xs = np.nonzero(mask)
    # model x 32..64 -> picture x 75..150; model y 16..32 -> picture y 37.6..75.3
    assert abs(xs.min() - 75) <= 3 and abs(xs.max() + 1 - 150) <= 3
    assert abs(ys.min() - 37.6) <= 3 and abs(ys.max() + 1 - 75.3) <= 3


def test_one_point_picks_the_mask_the_model_rates_best(selector, picture):
    import torch

    def replace(out):
        masks = np.stack(
            [logits_with_square(0, 0, 16, 16), logits_with_square(64, 0, 96, 16)]
            + [logits_with_square(0, 48, 16, 64)]
        )
        out.pred_masks = torch.from_numpy(masks)[None, None]
        out.iou_scores = torch.tensor([[[0.2, 0.9, 0.5]]])
        return out

    calls = spy(selector, replace)
    selector.embed(picture)
    mask = selector.mask([(150, 30, True)])
    assert calls[-1]["multimask_output"] is True
    xs = np.nonzero(mask[:80])[1]
    assert abs(xs.min() - 150) <= 3  # the second mask: model x 64..96 -> picture x 150..225


def test_nothing_is_selected_without_a_positive_point_or_a_box(selector, picture):
    selector.embed(picture)
    assert not selector.mask([(150, 100, False)]).any()


def test_the_embedding_is_computed_once_per_picture(selector, picture):
    calls = []
    selector.model.vision_encoder.register_forward_hook(lambda *_: calls.append(1))
    assert selector.embed(picture) is True
    assert selector.embed(picture.copy()) is False  # the same pixels: cached
    for x, y in ((10, 10), (200, 150), (290, 5)):
        selector.mask([(x, y, True)])
    assert len(calls) == 1
    changed = picture.copy()
    changed[0, 0] ^= 1
    assert selector.embed(changed) is True and len(calls) == 2


def test_reading_the_picture_reports_progress_per_encoder_layer(selector, picture):
    seen = []
    selector.embed(picture, progress=lambda done, total: seen.append((done, total)))
    layers = len(selector.model.vision_encoder.layers)
    assert seen == [(i, layers + 1) for i in range(layers)] + [(layers + 1, layers + 1)]


def test_reading_the_picture_stops_at_the_next_layer_when_cancelled(selector, picture):
    """Cancel is honoured inside the encoder (a 12 MP photo takes seconds on a CPU), and the
    half-read picture is not taken for the embedded one."""
    import threading

    from sdstudio.core.errors import Cancelled

    cancel = threading.Event()
    reached = []

    def cancel_at_first_layer(done, total):
        reached.append(done)
        if done == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        selector.embed(picture, cancel, cancel_at_first_layer)
    assert reached == [0, 1]  # the second layer never ran
    with pytest.raises(RuntimeError, match="embed"):
        selector.mask([(150, 100, True)])
    assert selector.embed(picture) is True  # read again, in full, next time


def test_a_half_precision_model_gives_the_same_selection(sam_folder, picture):
    """On a GPU the model runs in half precision; bfloat16 on the CPU stands in for it here
    (the same casts of the picture and prompts): the selection matches float32's, but for the
    pixels near the threshold (random weights leave many there; bfloat16 keeps 8 bits)."""
    import torch

    from sdstudio.engine.specialists.select import Selector, load_selector

    full = load_selector(sam_folder, device="cpu")
    assert full.dtype == torch.float32
    half = Selector(
        load_selector(sam_folder, device="cpu").model,
        side=SIDE,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        device="cpu",
        dtype=torch.bfloat16,
    )
    half._mean, half._std = full._mean, full._std
    assert next(half.model.parameters()).dtype == torch.bfloat16
    for model in (full, half):
        model.embed(picture)
    points, box = [(150, 100, True)], (90, 60, 220, 150)
    for prompt in ({"points": points}, {"box": box}):
        a, b = full.mask(**prompt) > 0, half.mask(**prompt) > 0
        assert a.shape == b.shape == (HEIGHT, WIDTH)
        assert a.any() and (a != b).mean() < 0.08


def test_grow_takes_the_edge_too():
    mask = np.zeros((50, 60), np.uint8)
    mask[20:30, 25:35] = 255
    grown = grow(mask, 4)
    ys, xs = np.nonzero(grown)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (16, 33, 21, 38)
    assert grown[20:30, 25:35].all() and not grown[16, 21]  # a disc: corners stay round
    assert np.array_equal(grow(mask, 0), mask)
    edge = np.zeros((20, 20), np.uint8)
    edge[0:3, 0:3] = 255  # at the picture's corner
    assert grow(edge, 5)[:8, :8].sum() > 0 and grow(edge, 5).shape == (20, 20)


def test_prompt_outside_the_picture_is_refused():
    with pytest.raises(Exception, match="outside the picture"):
        Prompt((Point(301, 5),)).check(WIDTH, HEIGHT)


def test_a_pickle_only_folder_is_refused_and_never_unpickled(tmp_path, monkeypatch):
    from tiny_models import pickle_trap

    from sdstudio.engine.specialists.select import load_selector

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    folder = tmp_path / "sam-pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "sam"}')
    marker = tmp_path / "ran"
    pickle_trap(folder / "pytorch_model.bin", marker, torch_zip=True)
    with pytest.raises(ModelError, match="safetensors"):
        load_selector(folder)
    assert not marker.exists()


def test_without_a_model_it_says_where_to_get_one(tmp_path, monkeypatch):
    from sdstudio.engine.specialists import select

    monkeypatch.delenv(select.SAM_ENV, raising=False)
    monkeypatch.setattr(select, "_installed_sam", lambda models: None)
    with pytest.raises(ModelError, match="Models > Model library"):
        select.sam_reference(None, tmp_path)
    monkeypatch.setenv(select.SAM_ENV, str(tmp_path / "mine"))
    assert select.sam_reference(None, tmp_path) == str(tmp_path / "mine")
    with pytest.raises(ModelError, match="no Segment Anything model folder"):
        select.load_selector(tmp_path / "missing")


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_select_writes_a_white_on_black_mask_the_size_of_the_image(
    tmp_path, sam_folder, picture, capsys
):
    image = tmp_path / "photo.png"
    save_image(image, picture)
    out = tmp_path / "mask.png"
    args = ["select", str(image), "--point", "150,100", "--model", str(sam_folder), "-o", str(out)]
    assert main([*args, "--grow", "0", "--exclude", "20,20"]) == 0
    assert "Saved" in capsys.readouterr().err
    mask = load_image(out)
    assert mask.shape == (HEIGHT, WIDTH) and set(np.unique(mask)) <= {0, 255}
    from sdstudio.engine.specialists.select import load_selector

    selector = load_selector(sam_folder, device="cpu")
    selector.embed(picture)
    expected = selector.mask([(150, 100, True), (20, 20, False)])
    assert np.array_equal(mask, expected)
    assert main([*args, "--box", "30,20,240,180", "--grow", "5"]) == 0
    boxed = load_image(out)
    assert np.array_equal(boxed, grow(selector.mask([(150, 100, True)], (30, 20, 240, 180)), 5))


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--point", "400,10"], "outside the picture"),
        (["--point", "12"], "--point takes X,Y"),
        (["--box", "50,50,10"], "--box takes X0,Y0,X1,Y1"),
        (["--exclude", "5,5"], "Say what to select"),
        (["--point", "5,5", "--grow", "-1"], "--grow must be"),
    ],
)
def test_cli_select_mistakes_are_one_line_before_any_model_loads(
    tmp_path, picture, capsys, extra, words
):
    image = tmp_path / "photo.png"
    save_image(image, picture)
    missing = str(tmp_path / "no-model")  # the request is checked before the model is looked at
    argv = ["select", str(image), *extra, "--model", missing, "-o", str(tmp_path / "m.png")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
