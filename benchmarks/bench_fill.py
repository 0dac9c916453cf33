"""Model-free fill quality and speed, through the product's own path: ``ClassicalFillEngine.run``
with a removal request (default mask blur), as the editor's Remove and ``sdstudio remove`` run it.

Two sets, chosen with ``--sets``:

- photos: eight photographs that ship with scikit-image (``pip install -e .[bench]``), each
  resized to about 1 megapixel, with seeded synthetic masks of three shapes: blobs (three
  object-shaped blobs, about 5% of the picture), strokes (thin random polylines 5-11 px wide,
  about 2%), block (one square block of about 10%) and object (one standing-figure-shaped hole of
  about 4%, the shape a person paints round an object to remove);
- context: the large removals of issue 11, where the fills need picture far from the hole: a
  seeded grain texture of 1200 x 800 with a centred square hole of 80, 160 and 240 px, and
  ``resources/examples/beach.png`` with a 310 px square left of the ball (over sky, sea and sand)
  and a 310 x 160 px block of the sand beside it.
  Beside each product figure stands the ceiling: the fill's kernel over the whole picture with
  the exact mask (what this benchmark measured before it ran the product's path).

- lama: the LaMa removal model's time only (``--lama FILE``, default: the one installed in the
  models folder, else a random-weight LaMa built from spandrel's architecture, which says
  nothing of quality): a 1 MP picture whose hole's window is the whole picture (LaMa at its full
  1 MP: the s/MP figure), and an object-sized hole (4%) in a 1 MP and a 4 MP picture, through
  the product's path, after one run that loads the model (its time shown apart). ``--device``.

Scores: PSNR and SSIM (SSIM map from skimage, 7 px window, per channel) averaged over the hole,
and over a ring of +-16 px around the hole's edge (where seams show; outside the blend zone, 8 px
past the mask at the default blur, the picture is exact, so the ring numbers measure how well the
fill joins its surroundings). Detail: the fine-detail energy in the hole (what a Gaussian of
sigma 2 removes) over the original's, so 1.0 is as much texture as the picture had and a smeared
fill scores near 0; it says nothing about whether the texture is right, which PSNR and SSIM
judge. Ran: what the result's parameters name as the method that ran. Time: wall seconds per
megapixel of picture, this machine, one call each.

    python benchmarks/bench_fill.py [--methods telea,patchmatch] [--images 8] [--sets context]
    python benchmarks/bench_fill.py --sets lama [--lama FILE] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from sdstudio.core.mask import blend_alpha
from sdstudio.core.metadata import parse_parameters
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine.classical import ClassicalFillEngine
from sdstudio.engine.events import Finished
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
SHAPES = ["blobs", "strokes", "block", "object"]
RING = 16
BEACH = Path(__file__).resolve().parent.parent / "resources" / "examples" / "beach.png"


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


def object_mask(h: int, w: int, rng: np.random.Generator, area: float = 0.04) -> np.ndarray:
    """One object-shaped hole (a standing figure: an upright wobbly body under a head), grown by
    a few pixels as a person paints round an object, so it crosses whatever the object stood on
    or beside."""
    mask = np.zeros((h, w), np.uint8)
    radius = (area * h * w / np.pi) ** 0.5 * 0.9
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.8) * w
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    wobble = np.convolve(np.tile(rng.uniform(0.7, 1.3, 24), 3), np.ones(3) / 3, "same")[24:48]
    rx, ry = 0.7 * radius * wobble, 1.4 * radius * wobble
    points = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1)
    cv2.fillPoly(mask, [points.astype(np.int32)], 255)
    head = (int(cx + rng.uniform(-0.2, 0.2) * radius), int(cy - 1.6 * radius))
    cv2.circle(mask, head, int(0.45 * radius), 255, -1)
    return mask


def make_mask(shape: str, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    makers = {"blobs": blob_mask, "strokes": stroke_mask, "block": block_mask}
    return {**makers, "object": object_mask}[shape](h, w, rng)


def grain_texture(h: int = 800, w: int = 1200, seed: int = 0) -> np.ndarray:
    """Film-grain-like detail (blurred noise) over a slow colour gradient."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([90 + 60 * x / w, 110 + 40 * y / h, 140 - 50 * x / w], -1)
    return np.clip(base + 35 * (noise / noise.std())[..., None], 0, 255).astype(np.uint8)


def square(h: int, w: int, side: int, cy: int, cx: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[cy - side // 2 : cy - side // 2 + side, cx - side // 2 : cx - side // 2 + side] = 255
    return mask


def context_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    from PIL import Image

    texture = grain_texture()
    cases = [
        (f"grain {side} px", texture, square(800, 1200, side, 400, 600)) for side in (80, 160, 240)
    ]
    beach = np.asarray(Image.open(BEACH).convert("RGB"))
    h, w = beach.shape[:2]
    cases.append(("beach 310 px square", beach, square(h, w, 310, 290, 200)))
    sand = np.zeros((h, w), np.uint8)
    sand[320:480, 40:350] = 255
    cases.append(("beach 310 x 160 sand", beach, sand))
    return cases


def product_fill(
    image: np.ndarray, mask: np.ndarray, method: str, fill_model: Path | None = None
) -> tuple[np.ndarray, str]:
    """The removal as the editor runs it: the picture with the result in place, and what ran."""
    request = GenerationRequest(mode=Mode.REMOVE, image=image, mask=mask)
    engine = ClassicalFillEngine(method, fill_model=fill_model)
    events = list(engine.run(request, threading.Event()))
    done = events[-1]
    if not isinstance(done, Finished):
        raise RuntimeError(f"{method}: the removal ended in {done}")
    out = done.composite(image)
    outside = blend_alpha(mask, request.mask_blur) == 0
    assert np.array_equal(out[outside], image[outside]), method
    return out, parse_parameters(done.parameters)["Sampler"]


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


def run_photos(methods: list[str], images: int, megapixels: float) -> None:
    photos = load_photos(images, megapixels)
    rows: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for index, (name, image) in enumerate(photos):
        h, w = image.shape[:2]
        for shape in SHAPES:
            mask = make_mask(shape, h, w, seed=1000 * index + SHAPES.index(shape))
            for method in methods:
                start = time.perf_counter()
                filled, ran = product_fill(image, mask, method)
                seconds = time.perf_counter() - start
                row = scores(image, filled, mask)
                row["s_per_mp"] = seconds / (h * w / 1e6)
                row["area"] = float((mask > 0).mean())
                rows[(shape, method)].append(row)
                print(
                    f"{name:22s} {shape:8s} {method:18s} {row['area'] * 100:5.1f}% "
                    f"PSNR {row['psnr']:5.2f} SSIM {row['ssim']:.3f} detail {row['detail']:.2f} "
                    f"{row['s_per_mp']:.2f} s/MP  ran: {ran}",
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


def run_context(methods: list[str]) -> None:
    print(
        "| case | method | detail | PSNR hole | s | ran | ceiling: detail | ceiling: PSNR |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for name, image, mask in context_cases():
        for method in methods:
            start = time.perf_counter()
            filled, ran = product_fill(image, mask, method)
            seconds = time.perf_counter() - start
            row = scores(image, filled, mask)
            ceiling = scores(image, METHODS[method](image, mask), mask)
            print(
                f"| {name} | {method} | {row['detail']:.2f} | {row['psnr']:.2f} | {seconds:.1f} | "
                f"{ran} | {ceiling['detail']:.2f} | {ceiling['psnr']:.2f} |",
                flush=True,
            )


def lama_model(given: Path | None) -> Path:
    """``given``, else the installed LaMa, else a random-weight one written to a temp file."""
    import tempfile

    from sdstudio.core.paths import models_dir
    from sdstudio.engine.specialists.lama import find_lama

    found = given or find_lama(models_dir())
    if found is not None:
        print(f"LaMa: {found}")
        return found
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp(prefix="bench_lama_")) / "random-lama.safetensors"
    save_file({k: v.contiguous() for k, v in LaMa(in_nc=4, out_nc=3).state_dict().items()}, path)
    print("LaMa: random weights (spandrel's architecture): times only")
    return path


def run_lama(model: Path, device: str | None) -> None:
    import torch

    from sdstudio.engine.specialists import lama

    if device:
        real = lama.lama_fill
        lama.lama_fill = lambda *a, **k: real(*a, **{**k, "device": device})
    print(f"device: {device or lama.pick_device()}, torch threads: {torch.get_num_threads()}")
    start = time.perf_counter()
    product_fill(grain_texture(128, 128), square(128, 128, 40, 64, 64), "lama", model)
    print(f"first run (loads the model): {time.perf_counter() - start:.1f} s")
    texture = grain_texture(1000, 1000)
    cases = [("1 MP, the window the whole picture", texture, square(1000, 1000, 600, 500, 500))]
    for side in (1000, 2000):
        mask = object_mask(side, side, np.random.default_rng(side))
        cases.append((f"{side**2 / 1e6:.0f} MP, object hole 4%", grain_texture(side, side), mask))
    print("| case | LaMa works at | s | s/MP of picture |\n|---|---|---|---|")
    seen: list[tuple[int, ...]] = []
    real_run = lama._run
    lama._run = lambda d, rgb8, *a: seen.append(rgb8.shape[:2]) or real_run(d, rgb8, *a)
    for name, image, mask in cases:
        seen.clear()
        start = time.perf_counter()
        product_fill(image, mask, "lama", model)
        seconds = time.perf_counter() - start
        h, w = image.shape[:2]
        print(
            f"| {name} | {seen[0][1]} x {seen[0][0]} | {seconds:.2f} | "
            f"{seconds / (h * w / 1e6):.2f} |",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m != "lama"))
    parser.add_argument("--images", type=int, default=len(PHOTOS))
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--sets", default="photos,context", help="photos, context and/or lama")
    parser.add_argument("--lama", type=Path, help="LaMa model for --sets lama")
    parser.add_argument("--device", help="for --sets lama: cpu or cuda (default: CUDA if any)")
    args = parser.parse_args()
    methods = args.methods.split(",")
    sets = args.sets.split(",")
    if "lama" in sets:
        run_lama(lama_model(args.lama), args.device)
        sets.remove("lama")
        if not sets:
            return 0
    for method in methods:  # compile (or load) numba kernels before timing anything
        product_fill(grain_texture(128, 128), square(128, 128, 40, 64, 64), method)
    if "photos" in sets:
        run_photos(methods, args.images, args.megapixels)
    if "context" in sets:
        print()
        run_context(methods)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
