"""Old-photo damage: detection precision/recall and repair quality on photos with known damage.

scikit-image's sample photos (``pip install scikit-image``), scaled to about 1 MP, as grey, as
sepia and (those in colour) as colour, get synthetic scratches (1-3 px, light and dark, straight
and gently curved) and dust (1-4 px radius) drawn in, twice: the benchmark's damage (scratch
contrast 40-120 levels, dust 50-150) and fainter damage (scratches 20-60, dust 20-80). These six
photos are held out: the learned detector (``benchmarks/train_damage.py``) never saw them, and
nothing was tuned on them. For each picture and for both detectors, the model-free one
(``sdstudio.core.damage``, "old") and the learned one (``sdstudio.engine.specialists.damage``,
"new"), in the same run on the same damage: precision and recall of the proposed mask against
the known damage with a 2 px tolerance; the repair's gain, PSNR over the damaged pixels
(restored vs the undamaged original) minus that of the damaged input, with the detected mask and
with the true mask; the harm done elsewhere: PSNR of the repair over the pixels more than 2 px
from any damage (the damaged input is exact there, so every false alarm the repair smooths over
lowers it); seconds per megapixel for detection.

    python benchmarks/bench_damage.py [--sensitivity 0.5] [--seed 0] [--only old|new]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from sdstudio.core import damage as old_detector
from sdstudio.engine.restore import restore
from sdstudio.engine.specialists import damage as new_detector

PHOTOS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
SEPIA = np.array([1.0, 0.85, 0.65])
TOLERANCE = 2
STRENGTHS = {"bench": ((40, 121), (50, 151)), "faint": ((20, 61), (20, 81))}
"""Damage sets: (scratch contrast range, dust contrast range), in 8-bit levels."""
DETECTORS = {"old": old_detector.detect_damage, "new": new_detector.detect_damage}


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
        if image.ndim == 3:
            yield f"{name} colour", cv2.resize(image[:, :, :3], size, interpolation=cv2.INTER_CUBIC)


# The drawing lambdas are called at once, inside the loop that binds their variables.
# ruff: noqa: B023


def add_damage(
    image: np.ndarray, rng: np.random.Generator, strength: str = "bench", tint: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(damaged copy, true mask). ``strength``: a key of ``STRENGTHS``; ``tint``: damage on an
    RGB picture takes the sepia tone (else it is neutral grey)."""
    scratch_range, dust_range = STRENGTHS[strength]
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
            ) * (SEPIA / SEPIA.mean() if tint else 1.0)
        mixed = base + (np.clip(target, 0, 255) - base) * weight
        out[...] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    for _ in range(6):  # scratches
        x0, x1 = rng.integers(0, width, 2)
        y0, y1 = rng.integers(0, height, 2)
        if np.hypot(x1 - x0, y1 - y0) < 150:
            continue
        light, contrast, w = (
            bool(rng.integers(2)),
            int(rng.integers(*scratch_range)),
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
        light, contrast = bool(rng.integers(2)), int(rng.integers(*dust_range))
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


def measure(clean, damaged, truth, mask) -> tuple[float, ...]:
    """precision, recall, repair gain on the damaged pixels, PSNR elsewhere."""
    repaired = restore(damaged, mask)
    hit = truth > 0
    size = 2 * TOLERANCE + 1
    clear = cv2.dilate(truth, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) == 0
    gain = psnr(repaired[hit], clean[hit]) - psnr(damaged[hit], clean[hit])
    return near(mask, truth), near(truth, mask), gain, psnr(repaired[clear], clean[clear])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensitivity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(DETECTORS), default=None)
    parser.add_argument("--no-oracle", action="store_true", help="skip the true-mask repair")
    args = parser.parse_args()
    detectors = [args.only] if args.only else list(DETECTORS)
    header = f"{'photo':<26}{'damage':<7}{'det':<5}{'prec':>6}{'recall':>8}{'gain dB':>9}{'else dB':>9}{'s/MP':>7}"
    print(header)
    print("-" * len(header))
    rows: dict[tuple[str, str, str], list[tuple[float, ...]]] = {}
    for index, (name, clean) in enumerate(photos()):
        look = name.split()[-1]
        for strength in STRENGTHS:
            rng = np.random.default_rng([args.seed, index, len(strength)])
            damaged, truth = add_damage(clean, rng, strength, tint=look == "sepia")
            mp = truth.size / 1e6
            results = []
            for which in detectors:
                start = time.perf_counter()
                report = DETECTORS[which](damaged, sensitivity=args.sensitivity)
                seconds = (time.perf_counter() - start) / mp
                results.append((which, (*measure(clean, damaged, truth, report.mask), seconds)))
            if not args.no_oracle:
                oracle = cv2.dilate(truth, np.ones((3, 3), np.uint8))
                results.append(("true", (1.0, 1.0, *measure(clean, damaged, truth, oracle)[2:], 0)))
            for which, row in results:
                rows.setdefault((which, strength, look), []).append(row)
                print(
                    f"{name:<26}{strength:<7}{which:<5}{row[0]:>6.2f}{row[1]:>8.2f}"
                    f"{row[2]:>9.1f}{row[3]:>9.1f}{row[4]:>7.2f}",
                    flush=True,
                )
    print("-" * len(header))
    print("means")
    for key in sorted(rows, key=lambda k: (k[1], k[2], k[0])):
        mean = np.mean(rows[key], axis=0)
        which, strength, look = key
        label = f"{look} ({len(rows[key])})"
        print(
            f"{label:<26}{strength:<7}{which:<5}{mean[0]:>6.2f}{mean[1]:>8.2f}"
            f"{mean[2]:>9.1f}{mean[3]:>9.1f}{mean[4]:>7.2f}"
        )
    for which in [*detectors, *([] if args.no_oracle else ["true"])]:
        mean = np.mean([r for k, v in rows.items() if k[0] == which for r in v], axis=0)
        print(
            f"{'all':<26}{'both':<7}{which:<5}{mean[0]:>6.2f}{mean[1]:>8.2f}"
            f"{mean[2]:>9.1f}{mean[3]:>9.1f}{mean[4]:>7.2f}"
        )
    print(
        "prec/recall: 2 px tolerance; gain: PSNR over the damaged pixels of the repair minus that "
        "of the damaged input; else: PSNR of the repair over the pixels at least 3 px from any "
        "damage; det old = model-free (core.damage), new = learned (engine.specialists.damage), "
        "true = the true mask grown 1 px."
    )


if __name__ == "__main__":
    main()
