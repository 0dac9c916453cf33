"""Finding faces: a box, five landmarks (eyes, nose tip, mouth corners) and a score for each.

Detectors, best first:

- **YuNet** (OpenCV's ``cv2.FaceDetectorYN``, MIT), when its model file
  ``face_detection_yunet_2023mar.onnx`` (about 230 KB, from opencv_zoo) is in the models folder's
  ``specialists`` folder (Models > Model library downloads it). The ONNX file is data for
  OpenCV's own runtime: no Python code comes with it. It gives real landmarks.
- **Haar cascades** shipped inside opencv-python 4 (``cv2.data.haarcascades``): frontal face, and
  eyes within it for the eye landmarks. OpenCV 5 has neither ``CascadeClassifier`` nor the files.
- **LBP cascade** shipped inside scikit-image (``skimage.feature.Cascade``), when it is installed:
  a detection must be found in the picture and in its mirror image, and be at least half as large
  as the largest face, which drops most of its false alarms. Landmarks come from the box's
  proportions (measured on a frontal face).

Every detector looks at an 8-bit grey (YuNet: RGB) copy scaled so its longer side is at most
``DETECT_SIZE``; boxes and landmarks are mapped back to the picture's own pixels. Grey, RGBA and
16-bit pictures work alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdstudio.core.errors import ModelError
from sdstudio.core.pixels import to_rgb8

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET = "YuNet"
HAAR = "Haar cascades (OpenCV)"
LBP = "LBP cascade (scikit-image)"
DETECT_SIZE = 1024
"""Longest side of the copy YuNet looks at (it finds faces down to about 10 px in it)."""
CASCADE_SIZE = 640
"""Longest side of the copy a cascade looks at (slower: about 1-2 s at this size on a CPU)."""
MIN_SCORE = 0.6
MISSING = (
    "No face detector is available: download YuNet (230 KB) in Models > Model library (it goes "
    "in the models folder's 'specialists' folder), or install scikit-image."
)

# Landmarks inside a cascade's face box, as fractions of its width and height: eyes, nose tip,
# mouth corners (image left first), read off a frontal face (skimage.data.astronaut()).
BOX_LANDMARKS = ((0.30, 0.36), (0.70, 0.36), (0.50, 0.58), (0.33, 0.76), (0.67, 0.76))


@dataclass(frozen=True)
class Face:
    """One face: ``box`` (x0, y0, x1, y1) and ``landmarks`` (five (x, y): the eye on the image's
    left, the other eye, the nose tip, the mouth corner on the image's left, the other) in the
    picture's pixels; ``score`` 0-1; ``detector``: which detector found it, in words."""

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    score: float
    detector: str

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def scaled(self, factor: float) -> Face:
        box = tuple(v * factor for v in self.box)
        points = tuple((x * factor, y * factor) for x, y in self.landmarks)
        return Face(box, points, self.score, self.detector)  # type: ignore[arg-type]


def find_yunet(models: Path | None) -> Path | None:
    """The YuNet model file in ``models``/specialists, or None."""
    if models is None:
        return None
    from sdstudio.engine.specialists.loading import specialists_dir

    path = specialists_dir(models) / YUNET_FILE
    return path if path.is_file() else None


def _haar_files() -> tuple[str, str] | None:
    import cv2

    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if folder is None or not hasattr(cv2, "CascadeClassifier"):
        return None
    face = Path(folder) / "haarcascade_frontalface_default.xml"
    eye = Path(folder) / "haarcascade_eye.xml"
    return (str(face), str(eye)) if face.is_file() and eye.is_file() else None


def _lbp_file() -> str | None:
    try:
        from skimage.data import lbp_frontal_face_cascade_filename
    except ImportError:
        return None
    return lbp_frontal_face_cascade_filename()


def face_detector(models: Path | None = None, model_path: Path | None = None) -> str | None:
    """The name of the detector ``detect_faces`` would use, or None when there is none."""
    if model_path is not None or find_yunet(models) is not None:
        return YUNET
    if _haar_files() is not None:
        return HAAR
    if _lbp_file() is not None:
        return LBP
    return None


def detect_faces(
    image: np.ndarray,
    *,
    models: Path | None = None,
    model_path: Path | None = None,
    min_score: float = MIN_SCORE,
) -> list[Face]:
    """The faces in ``image`` (grey, RGB or RGBA, 8 or 16 bits), largest first.

    YuNet is used when ``model_path`` is given or its file is in ``models``/specialists; else a
    cascade that needs no download (see the module's notes). Raises ``ModelError`` when there is
    no detector, or the YuNet file cannot be read."""
    import cv2

    if image.ndim not in (2, 3) or image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"unsupported picture {image.dtype} {image.shape}")
    if model_path is None:
        model_path = find_yunet(models)
    height, width = image.shape[:2]
    limit = DETECT_SIZE if model_path is not None else CASCADE_SIZE
    scale = min(1.0, limit / max(height, width))
    rgb8 = to_rgb8(image)
    if scale < 1.0:
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        rgb8 = cv2.resize(rgb8, size, interpolation=cv2.INTER_AREA)
    if model_path is not None:
        faces = _yunet(rgb8, Path(model_path), min_score)
    elif (haar := _haar_files()) is not None:
        faces = _haar(rgb8, *haar)
    elif (lbp := _lbp_file()) is not None:
        faces = _lbp(rgb8, lbp)
    else:
        raise ModelError(MISSING)
    back = 1.0 / (rgb8.shape[1] / width)
    faces = [f.scaled(back) for f in faces] if back != 1.0 else faces
    return sorted(faces, key=lambda f: -f.size)


def _ordered(points: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Five landmarks with each pair (eyes, mouth corners) put image-left first."""
    p = [tuple(map(float, q)) for q in points]
    eyes = sorted(p[0:2])
    mouth = sorted(p[3:5])
    return (eyes[0], eyes[1], p[2], mouth[0], mouth[1])


def _yunet(rgb8: np.ndarray, path: Path, min_score: float) -> list[Face]:
    import cv2

    try:
        detector = cv2.FaceDetectorYN.create(str(path), "", (rgb8.shape[1], rgb8.shape[0]))
    except cv2.error as error:
        raise ModelError(
            f"'{path.name}' cannot be read as OpenCV's YuNet face detector; download it again "
            "in Models > Model library."
        ) from error
    detector.setScoreThreshold(min_score)
    _, found = detector.detect(cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))
    faces = []
    for row in [] if found is None else found:
        x, y, w, h = (float(v) for v in row[:4])
        points = np.asarray(row[4:14], np.float64).reshape(5, 2)
        faces.append(Face((x, y, x + w, y + h), _ordered(points), float(row[14]), YUNET))
    return faces


def _box_face(x: float, y: float, w: float, h: float, score: float, detector: str) -> Face:
    points = np.array([(x + fx * w, y + fy * h) for fx, fy in BOX_LANDMARKS])
    return Face((x, y, x + w, y + h), _ordered(points), score, detector)


def _haar(rgb8: np.ndarray, face_file: str, eye_file: str) -> list[Face]:
    import cv2

    grey = cv2.equalizeHist(cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY))
    faces_cascade = cv2.CascadeClassifier(face_file)
    eyes_cascade = cv2.CascadeClassifier(eye_file)
    side = min(grey.shape)
    boxes, _, weights = faces_cascade.detectMultiScale3(
        grey, 1.1, 5, minSize=(max(20, side // 40),) * 2, outputRejectLevels=True
    )
    faces = []
    for (x, y, w, h), weight in zip(boxes, np.ravel(weights), strict=False):
        face = _box_face(float(x), float(y), float(w), float(h), _squash(weight), HAAR)
        upper = grey[y : y + h // 2 + h // 8, x : x + w]
        eyes = eyes_cascade.detectMultiScale(upper, 1.1, 3, minSize=(max(6, w // 10),) * 2)
        centres = sorted((x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in eyes)
        left = [c for c in centres if c[0] < x + w / 2]
        right = [c for c in centres if c[0] >= x + w / 2]
        if left and right:  # both eyes found: the eye landmarks are theirs
            points = np.array([left[0], right[-1], *face.landmarks[2:]])
            face = Face(face.box, _ordered(points), face.score, HAAR)
        faces.append(face)
    return faces


def _squash(weight: float) -> float:
    """A cascade's level weight as a 0-1 score."""
    return float(1.0 / (1.0 + np.exp(-float(weight) / 2.0)))


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _lbp(rgb8: np.ndarray, cascade_file: str) -> list[Face]:
    import cv2
    from skimage.feature import Cascade

    grey = np.ascontiguousarray(cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY))
    cascade = Cascade(cascade_file)
    width = grey.shape[1]
    side = min(grey.shape)

    def boxes(picture: np.ndarray, mirrored: bool) -> list[tuple[float, ...]]:
        found = cascade.detect_multi_scale(
            img=picture,
            scale_factor=1.15,
            step_ratio=1,
            min_size=(max(24, side // 40),) * 2,
            max_size=grey.shape,
            min_neighbor_number=6,
        )
        out = []
        for d in found:
            x = width - d["c"] - d["width"] if mirrored else d["c"]
            out.append(
                (float(x), float(d["r"]), float(x + d["width"]), float(d["r"] + d["height"]))
            )
        return out

    plain = boxes(grey, False)
    mirror = boxes(np.ascontiguousarray(grey[:, ::-1]), True)
    agreed = []
    for box in plain:
        best = max(mirror, key=lambda m: _iou(box, m), default=None)
        if best is None or _iou(box, best) < 0.3:
            continue
        merged = tuple((a + b) / 2 for a, b in zip(box, best, strict=True))
        agreed.append((merged, _iou(box, best)))
    if not agreed:
        return []
    largest = max(b[2] - b[0] for b, _ in agreed)
    kept: list[tuple[tuple[float, ...], float]] = []
    for box, agreement in sorted(agreed, key=lambda a: -a[1]):
        small = box[2] - box[0] < 0.5 * largest
        if not small and all(_overlap(box, other) < 0.5 for other, _ in kept):
            kept.append((box, agreement))
    return [
        _box_face(x0, y0, x1 - x0, y1 - y0, 0.5 + 0.5 * agreement, LBP)
        for (x0, y0, x1, y1), agreement in kept
    ]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box's area (one box inside another counts as 1)."""
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / smaller if smaller > 0 else 0.0
