"""Face detection: the cascade that needs no download finds the test face in any layout and size;
YuNet's rows (a stand-in detector: its model cannot be downloaded here) are mapped back to the
picture; no detector at all is one clear message."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from sdstudio.core.errors import ModelError
from sdstudio.engine.specialists import face_detect
from sdstudio.engine.specialists.face_detect import (
    YUNET,
    YUNET_FILE,
    detect_faces,
    face_detector,
)
from sdstudio.engine.specialists.loading import specialists_dir

FACE_PNG = Path(__file__).parent / "data" / "face.png"
TRUE_BOX = (30, 30, 122, 123)
"""The face in tests/data/face.png (cropped from skimage.data.astronaut(), NASA, public domain),
brow to chin and cheek to cheek, read off the picture."""


def face_rgb() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FACE_PNG)), cv2.COLOR_BGR2RGB)


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def check_face(face, scale: float = 1.0) -> None:
    box = tuple(v * scale for v in TRUE_BOX)
    assert iou(face.box, box) > 0.6, (face.box, box)
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lx < nx < rx and mlx < mrx  # image-left first
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above the nose, above the mouth
    x0, y0, x1, y1 = face.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks)


needs_a_cascade = pytest.mark.skipif(
    face_detector() is None, reason="no detector without a download (scikit-image missing)"
)


@needs_a_cascade
def test_the_test_face_is_found_with_its_landmarks():
    faces = detect_faces(face_rgb())
    assert len(faces) == 1
    check_face(faces[0])
    assert 0 < faces[0].score <= 1 and faces[0].detector == face_detector()


@needs_a_cascade
def test_grey_sixteen_bit_and_large_pictures_map_back():
    rgb = face_rgb()
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    check_face(detect_faces(grey)[0])
    rgba16 = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]).astype(np.uint16) * 257
    check_face(detect_faces(rgba16)[0])
    # 8x larger than the cascade's working size allows: found on a scaled copy, mapped back
    scale = 8
    big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(big, 0, 0, 0, 600, cv2.BORDER_REFLECT)  # not square either
    faces = detect_faces(big)
    assert len(faces) == 1
    check_face(faces[0], scale)


@needs_a_cascade
def test_no_face_in_a_picture_without_one():
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (200, 260), dtype=np.uint8), (9, 9), 0)
    assert detect_faces(smooth) == []


class FakeYuNet:
    """Stands in for cv2.FaceDetectorYN: one face at fixed coordinates of the picture it gets,
    its eyes and mouth corners in YuNet's order (the person's right first)."""

    sizes: list = []

    def __init__(self, size):
        self.size = size

    def setScoreThreshold(self, value):  # noqa: N802 - OpenCV's name
        self.threshold = value

    def detect(self, bgr):
        FakeYuNet.sizes.append((bgr.shape[1], bgr.shape[0]))
        x, y, w, h = 100.0, 50.0, 200.0, 220.0
        points = [260, 120, 140, 120, 200, 170, 250, 220, 150, 220]  # right eye first (x 260)
        return 1, np.array([[x, y, w, h, *points, 0.93]], np.float32)


def test_yunet_rows_are_mapped_back_to_the_picture(tmp_path, monkeypatch):
    models = tmp_path
    folder = specialists_dir(models)
    folder.mkdir(parents=True)
    (folder / YUNET_FILE).write_bytes(b"onnx")
    assert face_detector(models) == YUNET
    created = []

    def create(path, config, size):
        created.append((path, config, size))
        return FakeYuNet(size)

    monkeypatch.setattr(cv2.FaceDetectorYN, "create", staticmethod(create))
    FakeYuNet.sizes = []
    image = np.zeros((1536, 2048, 3), np.uint8)  # twice YuNet's working size
    (face,) = detect_faces(image, models=models)
    assert FakeYuNet.sizes == [(1024, 768)] and created[0][0] == str(folder / YUNET_FILE)
    assert face.box == (200.0, 100.0, 600.0, 540.0)
    assert face.landmarks[0] == (280.0, 240.0) and face.landmarks[1] == (520.0, 240.0)
    assert face.landmarks[3] == (300.0, 440.0) and face.landmarks[4] == (500.0, 440.0)
    assert face.score == pytest.approx(0.93) and face.detector == YUNET


def test_a_broken_yunet_file_is_one_clear_message(tmp_path):
    broken = tmp_path / YUNET_FILE
    broken.write_bytes(b"this is not an onnx model")
    with pytest.raises(ModelError, match="cannot be read as OpenCV's YuNet"):
        detect_faces(np.zeros((64, 64, 3), np.uint8), model_path=broken)


def test_no_detector_says_what_to_do(monkeypatch):
    monkeypatch.setattr(face_detect, "_haar_files", lambda: None)
    monkeypatch.setattr(face_detect, "_lbp_file", lambda: None)
    assert face_detector() is None
    with pytest.raises(ModelError, match="Model library"):
        detect_faces(np.zeros((64, 64, 3), np.uint8))


class FakeCascade:
    """Stands in for OpenCV 4's cv2.CascadeClassifier (OpenCV 5 has none): the face cascade
    finds one face, the eye cascade two eyes in the upper part of it."""

    def __init__(self, path):
        self.eyes = Path(path).name == "haarcascade_eye.xml"

    def detectMultiScale3(self, grey, *args, **kwargs):  # noqa: N802 - OpenCV's name
        return np.array([[100, 80, 200, 200]]), None, np.array([[3.0]])

    def detectMultiScale(self, upper, *args, **kwargs):  # noqa: N802
        assert self.eyes and upper.shape == (125, 200)  # the face's upper half and a bit
        return np.array([[130, 40, 30, 30], [20, 44, 30, 30]])  # right one first


def test_opencv4_haar_cascades_give_the_eyes_they_find(tmp_path, monkeypatch):
    for name in ("haarcascade_frontalface_default.xml", "haarcascade_eye.xml"):
        (tmp_path / name).write_text("<opencv_storage/>")
    monkeypatch.setattr(cv2, "CascadeClassifier", FakeCascade, raising=False)
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path) + "/")
    assert face_detector() == face_detect.HAAR
    (face,) = detect_faces(np.zeros((400, 500), np.uint8))
    assert face.box == (100.0, 80.0, 300.0, 280.0) and face.detector == face_detect.HAAR
    assert face.landmarks[0] == (135.0, 139.0) and face.landmarks[1] == (245.0, 135.0)
    nose = (100 + 0.5 * 200, 80 + 0.58 * 200)  # from the box's proportions
    assert face.landmarks[2] == pytest.approx(nose)
    assert 0.5 < face.score < 1


def test_a_yunet_download_lands_in_specialists_and_is_listed_and_found(tmp_path, monkeypatch):
    """YuNet (MIT, an ONNX file for OpenCV) is offered in the library, lands where the detector
    looks, and shows in the installed list with its licence."""
    import threading
    from dataclasses import replace
    from hashlib import sha256

    from test_specialists_library import fake_hf_hub_download

    from sdstudio.engine.models.downloads import download_specialist
    from sdstudio.engine.models.specialist_presets import SPECIALIST_PRESETS, YUNET_PRESET
    from sdstudio.engine.specialists.face_detect import find_yunet
    from sdstudio.qt.specialists_library import scan_rows

    assert YUNET_PRESET in SPECIALIST_PRESETS and "MIT" in YUNET_PRESET.licence
    source = tmp_path / YUNET_PRESET.filename
    source.write_bytes(b"onnx stand-in")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hf_hub_download(source, []))
    preset = replace(YUNET_PRESET, sha256=sha256(b"onnx stand-in").hexdigest(), size_bytes=None)
    models = tmp_path / "models"
    landed = download_specialist(preset, models, lambda *a: None, threading.Event())
    assert find_yunet(models) == landed
    rows = [r for r in scan_rows(models) if r.path == landed]
    assert len(rows) == 1 and rows[0].architecture == "YuNet" and "MIT" in rows[0].licence
