"""Face restoration: aligned, restored through spandrel (random weights, saved and loaded back as
users load them), pasted back softly; bit-exact away from the faces, grey and sepia kept."""

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from sdstudio.core.adjust import tone_table
from sdstudio.core.errors import ModelError
from sdstudio.engine.specialists import faces as faces_module
from sdstudio.engine.specialists.face_detect import Face
from sdstudio.engine.specialists.faces import (
    SIZE,
    FacesCancelled,
    alignment,
    face_models,
    paste_mask,
    restore_faces,
)
from sdstudio.engine.specialists.loading import PickleConsentNeeded, specialists_dir
from tests.tiny_models import pickle_trap

FACE_PNG = Path(__file__).parent / "data" / "face.png"
# The test face (tests/data/face.png, cropped from skimage.data.astronaut(), NASA, public domain):
# its landmarks read off the picture, and where it lies in the picture the tests build.
LANDMARKS = ((58.0, 66.0), (97.0, 66.0), (78.0, 86.0), (61.0, 104.0), (94.0, 104.0))
OFFSET = (100, 60)  # x, y of the face crop inside the 360 x 300 test picture


def tiny_restoreformer(path: Path, seed: int = 0) -> Path:
    """A small RestoreFormer (spandrel's class, random weights) saved as safetensors: spandrel
    finds its architecture from the tensor names and shapes, as it does a released one."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(seed)
    model = RestoreFormer(
        n_embed=32,
        embed_dim=32,
        ch=32,
        ch_mult=(1, 1, 1, 1, 1, 1),  # six levels: the mid attention works on 16 x 16
        num_res_blocks=1,
        attn_resolutions=(16,),
        z_channels=32,
        resolution=512,
    ).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def models_with_restorer(models: Path) -> Path:
    """``models`` made a models folder with the tiny RestoreFormer installed (for the CLI and
    panel tests); one torch thread, as the machine is shared."""
    import torch

    torch.set_num_threads(1)
    from sdstudio.engine.specialists.loading import specialists_dir

    specialists_dir(models).mkdir(parents=True)
    tiny_restoreformer(specialists_dir(models) / "tiny-restoreformer.safetensors")
    return models


@pytest.fixture(scope="module")
def restorer(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    folder = specialists_dir(tmp_path_factory.mktemp("models"))
    folder.mkdir(parents=True)
    return tiny_restoreformer(folder / "tiny-restoreformer.safetensors")


def picture() -> np.ndarray:
    """The test face inside a larger textured picture (RGB uint8, 300 x 360)."""
    rng = np.random.default_rng(5)
    out = cv2.GaussianBlur(rng.integers(0, 256, (300, 360, 3), dtype=np.uint8), (3, 3), 0)
    face = cv2.cvtColor(cv2.imread(str(FACE_PNG)), cv2.COLOR_BGR2RGB)
    x, y = OFFSET
    out[y : y + face.shape[0], x : x + face.shape[1]] = face
    return out


def the_face() -> Face:
    x, y = OFFSET
    points = tuple((px + x, py + y) for px, py in LANDMARKS)
    return Face((x + 30.0, y + 30.0, x + 122.0, y + 122.0), points, 1.0, "test")


def reach(face: Face, shape) -> np.ndarray:
    """Where the aligned 512 px square lands in the picture (True inside it)."""
    inverse = cv2.invertAffineTransform(alignment(face.landmarks))
    square = np.ones((SIZE, SIZE), np.uint8)
    return cv2.warpAffine(square, inverse, (shape[1], shape[0]), flags=cv2.INTER_NEAREST) > 0


def test_alignment_puts_the_landmarks_on_the_template():
    face = the_face()
    matrix = alignment(face.landmarks)
    points = np.hstack([np.array(face.landmarks), np.ones((5, 1))]) @ matrix.T
    eyes = points[:2]
    assert np.allclose(eyes, faces_module.TEMPLATE[:2], atol=12)  # a similarity fit, not exact
    assert abs(np.linalg.det(matrix[:, :2])) > 1  # a small face is scaled up to 512


def test_the_paste_mask_is_soft_and_zero_at_its_edge():
    mask = paste_mask()
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.float32
    assert mask[SIZE // 2, SIZE // 2] == 1.0
    assert (mask[:5] == 0).all() and (mask[:, -5:] == 0).all()
    row = mask[SIZE // 2, :100]
    assert np.all(np.diff(row) >= 0) and 0 < row[30] < 1  # a ramp, not a step


def test_pixels_away_from_the_face_are_bit_exact_and_the_face_changes(restorer):
    image = picture()
    face = the_face()
    out, found = restore_faces(image, restorer, 1.0, faces=[face])
    assert found == [face]
    assert out.shape == image.shape and out.dtype == image.dtype
    away = ~reach(face, image.shape)
    np.testing.assert_array_equal(out[away], image[away])
    x, y = OFFSET
    centre = (slice(y + 60, y + 110), slice(x + 50, x + 105))
    assert np.abs(out[centre].astype(int) - image[centre]).mean() > 10  # the face was replaced
    corner = (slice(0, 40), slice(0, 40))
    np.testing.assert_array_equal(out[corner], image[corner])


def test_strength_blends_and_zero_gives_the_input_back(restorer):
    image = picture()
    face = the_face()
    same, _ = restore_faces(image, restorer, 0.0, faces=[face])
    np.testing.assert_array_equal(same, image)
    full, _ = restore_faces(image, restorer, 1.0, faces=[face])
    half, _ = restore_faces(image, restorer, 0.5, faces=[face])
    x, y = OFFSET
    centre = (slice(y + 60, y + 110), slice(x + 50, x + 105))
    expected = image[centre].astype(float) + 0.5 * (full[centre].astype(float) - image[centre])
    assert np.abs(half[centre] - expected).max() <= 1.0


def test_grey_stays_grey_and_sixteen_bit_alpha_is_kept(restorer):
    rgb = picture()
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    face = the_face()
    out, _ = restore_faces(grey, restorer, 1.0, faces=[face])
    assert out.ndim == 2 and out.dtype == np.uint8
    away = ~reach(face, grey.shape)
    np.testing.assert_array_equal(out[away], grey[away])
    assert not np.array_equal(out, grey)

    grey_rgb = np.repeat(grey[:, :, None], 3, axis=2)  # an RGB file of a black-and-white photo
    out, _ = restore_faces(grey_rgb, restorer, 1.0, faces=[face])
    assert np.abs(out.max(axis=2).astype(int) - out.min(axis=2)).max() <= 1  # no colour crept in

    rgba16 = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]).astype(np.uint16) * 257
    rgba16[..., 3] = 1234
    out, _ = restore_faces(rgba16, restorer, 1.0, faces=[face])
    assert out.dtype == np.uint16 and out.shape == rgba16.shape
    assert (out[..., 3] == 1234).all()
    np.testing.assert_array_equal(out[away], rgba16[away])


def test_sepia_stays_sepia(restorer):
    grey = cv2.cvtColor(picture(), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    sepia = np.clip(np.dstack([grey * 255, grey * 220 + 10, grey * 170 + 15]), 0, 255)
    sepia = np.rint(sepia).astype(np.uint8)
    table = tone_table(sepia)
    assert table is not None  # the picture reads as a toned photo
    face = the_face()
    out, _ = restore_faces(sepia, restorer, 1.0, faces=[face])
    changed = np.any(out != sepia, axis=2)
    assert changed.sum() > 1000
    luma = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    off_curve = np.abs(out.astype(float) - table[luma]).max(axis=2)
    assert np.percentile(off_curve[changed], 99) <= 3  # the restorer's colours did not come in


def test_cancel_stops_inside_the_network_and_leaves_the_picture(restorer, monkeypatch):
    image = picture()
    original = image.copy()
    cancel = threading.Event()
    pasted = []
    real_blend = faces_module.blend_patch
    monkeypatch.setattr(faces_module, "blend_patch", lambda *a: pasted.append(1) or real_blend(*a))

    def progress(done, total):
        if done == 0:
            cancel.set()  # after the check before the face: the network must notice it

    with pytest.raises(FacesCancelled, match="unchanged"):
        restore_faces(image, restorer, 1.0, faces=[the_face()], cancel=cancel, progress=progress)
    assert not pasted  # stopped inside the network, before any paste-back
    np.testing.assert_array_equal(image, original)


def test_progress_per_face(restorer):
    steps = []
    face = the_face()
    restore_faces(picture(), restorer, 1.0, faces=[face, face], progress=lambda *s: steps.append(s))
    assert steps == [(0, 2), (1, 2), (2, 2)]


def test_installed_models_are_found_and_others_refused(restorer, tmp_path):
    assert face_models(restorer.parent.parent) == [restorer]
    assert face_models(tmp_path) == []
    with pytest.raises(ModelError, match="does not exist"):
        restore_faces(picture(), tmp_path / "none.safetensors", faces=[the_face()])
    with pytest.raises(ValueError, match="between 0 and 1"):
        restore_faces(picture(), restorer, 1.5, faces=[the_face()])


@pytest.mark.parametrize("force_no_weights_only", [False, True])
def test_a_pickled_face_model_payload_never_runs(tmp_path, monkeypatch, force_no_weights_only):
    if force_no_weights_only:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran.txt"
    evil = pickle_trap(
        tmp_path / "GFPGANv1.4.pth",
        marker,
        torch_zip=True,
        **{"toRGB.0.weight": np.zeros(3, np.float32)},
    )
    faces_module.clear_cache()
    with pytest.raises(PickleConsentNeeded):
        restore_faces(picture(), evil, faces=[the_face()])
    assert not marker.exists()


def test_gfpgan_v14_architecture_through_the_users_path(tmp_path):
    """The full-size GFPGAN v1.4 architecture (random weights): saved, found by spandrel, run in
    its -1..1 range, pasted back bit-exact away from the face."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GFPGAN(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    ).eval()
    path = tmp_path / "GFPGANv1.4.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    del model
    assert face_models(tmp_path.parent / "nowhere") == []
    image = picture()
    face = the_face()
    out, _ = restore_faces(image, path, 1.0, faces=[face])
    faces_module.clear_cache()
    path.unlink()
    away = ~reach(face, image.shape)
    np.testing.assert_array_equal(out[away], image[away])
    assert not np.array_equal(out, image)
