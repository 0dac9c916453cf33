"""``sdstudio restore --faces``: end to end with an installed (random-weight) face model, and the
one-line errors for bad options, given before anything is loaded."""

import cv2
import numpy as np
import pytest

from sdstudio.cli import main
from sdstudio.engine.specialists.face_detect import face_detector
from sdstudio.engine.specialists.loading import specialists_dir
from tests.test_faces import models_with_restorer, picture, reach, the_face


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return models_with_restorer(tmp_path_factory.mktemp("models"))


@pytest.mark.skipif(face_detector() is None, reason="no face detector without a download")
def test_restore_faces_alone_end_to_end(tmp_path, models, capsys):
    source = tmp_path / "photo.png"
    image = picture()
    cv2.imwrite(str(source), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "restored.png"
    args = ["restore", str(source), "--faces", "--no-repair", "--face-strength", "1"]
    assert main([*args, "--models-dir", str(models), "-o", str(out)]) == 0
    result = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    err = capsys.readouterr().err
    assert "Found 1 face" in err and "Detecting damage" not in err  # --no-repair: no repair
    # the face changed, and everything outside the widest square it can reach did not
    x, y = 100, 60
    assert (
        np.abs(
            result[y + 60 : y + 110, x + 50 : x + 105].astype(int)
            - image[y + 60 : y + 110, x + 50 : x + 105]
        ).mean()
        > 10
    )
    grown = cv2.dilate(reach(the_face(), image.shape).astype(np.uint8), np.ones((41, 41)))
    away = grown == 0
    assert away.sum() > 20000
    np.testing.assert_array_equal(result[away], image[away])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--faces", "--face-strength", "1.5"], "--face-strength must be between 0 and 1"),
        (["--face-model", "x"], "--face-model needs --faces"),
        (["--face-strength", "0.5"], "--face-strength needs --faces"),
        (["--faces", "--face-model", "nothere"], "No face model 'nothere'"),
        (["--no-repair"], "--no-repair leaves nothing to do"),
        (["--no-repair", "--faces", "--mask", "m.png"], "--mask needs the repair"),
        (["--faces", "--face-model", "GFPGANv1.4.pth"], "pickle-format model"),
        (["--faces", "--face-model", "upscaler.safetensors"], "not a face restoration model"),
    ],
)
def test_bad_face_options_are_one_line_before_loading(tmp_path, models, capsys, extra, message):
    from safetensors.numpy import save_file

    folder = specialists_dir(models)
    (folder / "GFPGANv1.4.pth").write_bytes(b"not read")
    save_file({"conv_first.weight": np.zeros(1, np.float32)}, str(folder / "upscaler.safetensors"))
    args = ["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png")]
    assert main([*args, "--models-dir", str(models), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o.png").exists()


def test_no_face_model_installed_says_where_to_get_one(tmp_path, capsys):
    args = ["restore", str(tmp_path / "missing.png"), "--faces", "-o", str(tmp_path / "o.png")]
    assert main([*args, "--models-dir", str(tmp_path)]) == 1
    assert "Model library" in capsys.readouterr().err
