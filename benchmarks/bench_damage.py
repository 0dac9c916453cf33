"""Old-photo damage: detection precision/recall and repair quality on photos with known damage.

scikit-image's sample photos (``pip install scikit-image``), scaled to about 1 MP, as grey and as
sepia, get synthetic scratches (1-3 px, light and dark, straight and gently curved, contrast
40-120 levels) and dust (1-4 px radius) drawn in. For each: precision and recall of the proposed
mask against the known damage with a 2 px tolerance; repair PSNR over the damaged pixels
(restored vs the undamaged original) with the detected mask and with the true mask; the harm
done elsewhere: PSNR of the repair over the pixels more than 2 px from any damage (the damaged
input is exact there, so every false alarm the repair smooths over lowers it); seconds per
megapixel for detection and repair.

    python benchmarks/bench_damage.py [--sensitivity 0.5] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from sdstudio.core.damage import detect_damage
from sdstudio.engine.restore import restore

PHOTOS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
SEPIA = np.array([1.0, 0.85, 0.65])
TOLERANCE = 2


def photos(megapixels: float = 1.0):
    from skimage import data

    for name in PHOTOS:
        image = getattr(data, name)()
        grey = image if image.ndim == 2 else cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2GRAY)
        scale = np.sqrt(megapixels * 1e6 / grey.size)
        size = (round(grey.shape[1] * scale), round(grey.shape[0] * scale))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_CUBIC)
        yield f"{name} grey", grey
        yield f"{name} sepia", np.clip(np.rint(grey[:, :, None] * SEPIA), 0, 255).astype(np.uint8)


# The drawing lambdas are called at once, inside the loop that binds their variables.
# ruff: noqa: B023


def add_damage(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    grey = image if image.ndim == 2 else image[:, :, 0]
    height, width = grey.shape
    out, truth = image.copy(), np.zeros((height, width), np.uint8)

    def paint(draw_out, draw_truth, light: bool, contrast: int, width_px: int):
        layer = np.zeros((height, width), np.uint8)
        draw_out(layer, 255, width_px)
        draw_truth(truth, 255, width_px)
        weight = layer.astype(np.float32)[:, :, None] / 255 if out.ndim == 3 else layer / 255
        base = out.astype(np.float32)
        target = base + contrast if light else base - contrast
        if out.ndim == 3:
            target = np.clip(
                base.mean(axis=2, keepdims=True) + (contrast if light else -contrast), 0, 255
            ) * (SEPIA / SEPIA.mean())
        mixed = base + (np.clip(target, 0, 255) - base) * weight
        out[...] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    for _ in range(6):  # scratches
        x0, x1 = rng.integers(0, width, 2)
        y0, y1 = rng.integers(0, height, 2)
        if np.hypot(x1 - x0, y1 - y0) < 150:
            continue
        light, contrast, w = (
            bool(rng.integers(2)),
            int(rng.integers(40, 121)),
            int(rng.integers(1, 4)),
        )
        if rng.random() < 0.5:
            p0, p1 = (int(x0), int(y0)), (int(x1), int(y1))
            paint(
                lambda a, v, t: cv2.line(a, p0, p1, v, t, cv2.LINE_AA),
                lambda a, v, t: cv2.line(a, p0, p1, v, t),
                light,
                contrast,
                w,
            )
        else:
            centre = (int(x0), int(y0))
            axes = (int(rng.integers(300, 900)), int(rng.integers(300, 900)))
            angle, start = float(rng.uniform(0, 180)), float(rng.uniform(0, 360))
            span = float(rng.uniform(15, 40))
            paint(
                lambda a, v, t: cv2.ellipse(
                    a, centre, axes, angle, start, start + span, v, t, cv2.LINE_AA
                ),
                lambda a, v, t: cv2.ellipse(a, centre, axes, angle, start, start + span, v, t),
                light,
                contrast,
                w,
            )
    for _ in range(40):  # dust and spots
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(1, 5))
        light, contrast = bool(rng.integers(2)), int(rng.integers(50, 151))
        paint(
            lambda a, v, t: cv2.circle(a, centre, radius, v, -1, cv2.LINE_AA),
            lambda a, v, t: cv2.circle(a, centre, radius, v, -1),
            light,
            contrast,
            1,
        )
    return out, truth


def near(mask: np.ndarray, other: np.ndarray) -> float:
    size = 2 * TOLERANCE + 1
    grown = cv2.dilate(other, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    return np.count_nonzero((mask > 0) & (grown > 0)) / max(1, np.count_nonzero(mask))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(error, 1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensitivity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    header = f"{'photo':<28}{'MP':>5}{'prec':>7}{'recall':>8}{'dmg%':>7}{'PSNR in':>9}{'det':>7}{'true':>7}{'else det':>10}{'true':>7}{'det s/MP':>10}{'rep s/MP':>10}"
    print(header)
    print("-" * len(header))
    rows = []
    for name, clean in photos():
        damaged, truth = add_damage(clean, rng)
        mp = truth.size / 1e6
        start = time.perf_counter()
        report = detect_damage(damaged, sensitivity=args.sensitivity)
        detect_s = time.perf_counter() - start
        start = time.perf_counter()
        repaired = restore(damaged, report.mask)
        repair_s = time.perf_counter() - start
        oracle = restore(damaged, cv2.dilate(truth, np.ones((3, 3), np.uint8)))
        hit = truth > 0
        size = 2 * TOLERANCE + 1
        clear = cv2.dilate(truth, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) == 0
        row = (
            near(report.mask, truth),
            near(truth, report.mask),
            100 * hit.mean(),
            psnr(damaged[hit], clean[hit]),
            psnr(repaired[hit], clean[hit]),
            psnr(oracle[hit], clean[hit]),
            psnr(repaired[clear], clean[clear]),
            psnr(oracle[clear], clean[clear]),
            detect_s / mp,
            repair_s / mp,
        )
        rows.append(row)
        print(
            f"{name:<28}{mp:>5.2f}{row[0]:>7.2f}{row[1]:>8.2f}{row[2]:>7.2f}{row[3]:>9.1f}"
            f"{row[4]:>7.1f}{row[5]:>7.1f}{row[6]:>10.1f}{row[7]:>7.1f}{row[8]:>10.3f}{row[9]:>10.3f}"
        )
    mean = np.mean(rows, axis=0)
    print("-" * len(header))
    print(
        f"{'mean':<28}{'':>5}{mean[0]:>7.2f}{mean[1]:>8.2f}{mean[2]:>7.2f}{mean[3]:>9.1f}"
        f"{mean[4]:>7.1f}{mean[5]:>7.1f}{mean[6]:>10.1f}{mean[7]:>7.1f}{mean[8]:>10.3f}{mean[9]:>10.3f}"
    )
    print(
        "prec/recall: 2 px tolerance; PSNR over damaged pixels: damaged input, repaired with the "
        "detected mask (det), with the true mask grown 1 px (true); else: PSNR over the pixels "
        "at least 3 px from any damage, of the repair with the detected mask and with the true one."
    )


if __name__ == "__main__":
    main()
