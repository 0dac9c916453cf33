"""Model-free fill quality and speed: every method of ``sdstudio.engine.fill`` on real photos.

Eight photographs that ship with scikit-image (``pip install -e .[bench]``), each resized to about
1 megapixel, with seeded synthetic masks of three shapes:

- blobs: three object-shaped blobs (irregular, smoothed outlines), about 5% of the picture;
- strokes: thin random polylines 5-11 px wide (scratches, wires), about 2%;
- block: one square block of about 10%.

Scores: PSNR and SSIM (SSIM map from skimage, 7 px window, per channel) averaged over the hole,
and over a ring of +-16 px around the hole's edge (where seams show; the outside half is exact
by construction, so the ring numbers measure how well the fill joins its surroundings). Detail:
the fine-detail energy in the hole (what a Gaussian of sigma 2 removes) over the original's, so
1.0 is as much texture as the photo had and a smeared fill scores near 0; it says nothing about
whether the texture is right, which PSNR and SSIM judge. Time:
wall seconds per megapixel of picture, this machine, one call each.

    python benchmarks/bench_fill.py [--methods telea,patchmatch] [--images 8] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import cv2
import numpy as np

from sdstudio.engine.fill import METHODS

PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "stereo_motorcycle",
    "retina",
]
SHAPES = ["blobs", "strokes", "block"]
RING = 16


def load_photos(count: int, megapixels: float) -> list[tuple[str, np.ndarray]]:
    from skimage import data

    photos = []
    for name in PHOTOS[:count]:
        image = getattr(data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
            image = image[0]
        image = np.ascontiguousarray(image[:, :, :3])
        h, w = image.shape[:2]
        factor = (megapixels * 1e6 / (h * w)) ** 0.5
        size = (round(w * factor), round(h * factor))
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
        photos.append((name, cv2.resize(image, size, interpolation=interpolation)))
    return photos


def blob_mask(h: int, w: int, rng: np.random.Generator, area: float = 0.05) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    count = 3
    radius = (area * h * w / count / np.pi) ** 0.5
    for _ in range(count):
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        wobble = np.convolve(np.tile(rng.uniform(0.6, 1.4, 24), 3), np.ones(5) / 5, "same")[24:48]
        ry, rx = radius * wobble * rng.uniform(0.8, 1.25), radius * wobble / rng.uniform(0.8, 1.25)
        points = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1)
        cv2.fillPoly(mask, [points.astype(np.int32)], 255)
    return mask


def stroke_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    for _ in range(6):
        points = np.cumsum(rng.normal(0, 0.08 * min(h, w), (6, 2)), 0)
        points += (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h)
        width = int(rng.integers(5, 12))
        cv2.polylines(mask, [points.astype(np.int32)], False, 255, width)
    return mask


def block_mask(h: int, w: int, rng: np.random.Generator, area: float = 0.10) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    side = int((area * h * w) ** 0.5)
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    mask[y : y + side, x : x + side] = 255
    return mask


def make_mask(shape: str, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return {"blobs": blob_mask, "strokes": stroke_mask, "block": block_mask}[shape](h, w, rng)


def scores(truth: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    from skimage.metrics import structural_similarity

    hole = mask > 0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING + 1, 2 * RING + 1))
    ring = (cv2.dilate(mask, kernel) > 0) & ~(cv2.erode(mask, kernel) > 0)
    _, ssim_map = structural_similarity(
        truth, filled, channel_axis=2, win_size=7, data_range=255, full=True
    )
    ssim_map = ssim_map.mean(axis=2)
    error = (truth.astype(np.float64) - filled) ** 2

    def psnr(where: np.ndarray) -> float:
        mse = error[where].mean()
        return float(10 * np.log10(255**2 / max(mse, 1e-10)))

    def detail(image: np.ndarray) -> float:
        image = image.astype(np.float32)
        return float(((image - cv2.GaussianBlur(image, (0, 0), 2.0))[hole] ** 2).mean())

    return {
        "detail": detail(filled) / max(detail(truth), 1e-6),
        "psnr": psnr(hole),
        "ssim": float(ssim_map[hole].mean()),
        "psnr_ring": psnr(ring),
        "ssim_ring": float(ssim_map[ring].mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--images", type=int, default=len(PHOTOS))
    parser.add_argument("--megapixels", type=float, default=1.0)
    args = parser.parse_args()
    methods = args.methods.split(",")
    photos = load_photos(args.images, args.megapixels)
    rows: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    warm = make_mask("blobs", 128, 128, seed=0)
    for method in methods:  # compile (or load) numba kernels before timing anything
        METHODS[method](photos[0][1][:128, :128].copy(), warm)
    for index, (name, image) in enumerate(photos):
        h, w = image.shape[:2]
        for shape in SHAPES:
            mask = make_mask(shape, h, w, seed=1000 * index + SHAPES.index(shape))
            for method in methods:
                start = time.perf_counter()
                filled = METHODS[method](image, mask)
                seconds = time.perf_counter() - start
                assert np.array_equal(filled[mask == 0], image[mask == 0]), method
                row = scores(image, filled, mask)
                row["s_per_mp"] = seconds / (h * w / 1e6)
                row["area"] = float((mask > 0).mean())
                rows[(shape, method)].append(row)
                print(
                    f"{name:22s} {shape:8s} {method:18s} {row['area'] * 100:5.1f}% "
                    f"PSNR {row['psnr']:5.2f} SSIM {row['ssim']:.3f} {row['s_per_mp']:.2f} s/MP",
                    flush=True,
                )
    print()
    print(
        "| shape | method | hole % | PSNR hole | SSIM hole | PSNR ring | SSIM ring | detail | s/MP |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    for shape in [*SHAPES, "all"]:
        for method in methods:
            if shape == "all":
                group = [r for s in SHAPES for r in rows[(s, method)]]
            else:
                group = rows[(shape, method)]

            def mean(key: str, group=group) -> float:
                return statistics.fmean(r[key] for r in group)

            print(
                f"| {shape} | {method} | {mean('area') * 100:.1f} | {mean('psnr'):.2f} | "
                f"{mean('ssim'):.3f} | {mean('psnr_ring'):.2f} | {mean('ssim_ring'):.3f} | "
                f"{mean('detail'):.2f} | {mean('s_per_mp'):.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
