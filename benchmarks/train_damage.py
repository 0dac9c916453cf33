"""Train the damage detector shipped as ``sdstudio/resources/damage_detector.safetensors``.

Synthetic damage is drawn over sample photographs that ship with Python packages, and the small
U-Net of ``sdstudio.engine.specialists.damage`` learns to mark it, pixel by pixel:

- photographs: scikit-image's ``skimage.data`` files (BSD-3-Clause) except the six that
  ``bench_damage.py`` keeps held out (camera, astronaut, coffee, chelsea, rocket,
  immunohistochemistry: never read here); matplotlib's ``grace_hopper.jpg`` and scikit-learn's
  ``china.jpg`` and ``flower.jpg`` where those packages are installed (their files are read
  directly, the packages are not imported). ``VALIDATION`` photos are kept out of training and
  only used to pick the threshold; each photo at several scales, flipped and turned, with its
  tone curve, contrast and grain varied; some get outlined shapes drawn in (rims, outlines:
  thin lines along region boundaries, which are NOT damage).
- damage (``draw_damage``): scratches 1-4 px wide, straight, arcs and wobbling strokes, light and
  dark, contrast 12-170 levels, fading along their length; hairs; dust and spots of radius 0.5-6
  px; creases (a light core with a dark side). The truth is the drawn shape without its
  anti-aliased fringe; the fringe (and parts faded below ``FAINTEST``) are left out of the loss.

Deterministic for a seed and thread count (numpy and torch seeded, deterministic algorithms).
One torch thread by default: on a 2-core machine shared with other work, two threads made each
step about ten times slower (3.6 s against 0.35 s: the threads wait on each other).

    python benchmarks/train_damage.py [--steps 3600] [--seed 0] [--threads 1] [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import cv2
import numpy as np

HELD_OUT = ("camera", "astronaut", "coffee", "chelsea", "rocket", "ihc")
SKIMAGE_FILES = (
    "brick.png",
    "cell.png",
    "clock_motion.png",
    "coins.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "text.png",
    "logo.png",
)
EXTRA_FILES = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)
VALIDATION = ("coins.png", "china.jpg")
PATCH = 96
FAINTEST = 9.0
"""Damage fainter than this many levels (after fading) is neither asked for nor punished."""


def package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def load_photos() -> dict[str, np.ndarray]:
    """name -> 8-bit luminance of every photo used (training and validation)."""
    out = {}
    paths = [package_file("skimage", f"data/{name}") for name in SKIMAGE_FILES]
    paths += [package_file(package, rel) for package, rel in EXTRA_FILES]
    for path in paths:
        if path is None:
            continue
        assert not any(h in path.name for h in HELD_OUT), path
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is not None and min(image.shape) >= 96:
            out[path.name] = image
    return out


def pyramid(grey: np.ndarray) -> list[np.ndarray]:
    """The photo at several scales (a scan's resolution varies; upscaled ones are soft)."""
    scaled = []
    for factor in (0.7, 1.0, 1.6, 2.4):
        size = (round(grey.shape[1] * factor), round(grey.shape[0] * factor))
        if min(size) >= PATCH + 8:
            method = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
            scaled.append(cv2.resize(grey, size, interpolation=method).astype(np.float32))
    return scaled


def outlines(image: np.ndarray, rng: np.random.Generator) -> None:
    """Shapes with thin outlines or rims (lines along region boundaries: not damage)."""
    for _ in range(rng.integers(1, 4)):
        centre = (int(rng.integers(0, PATCH)), int(rng.integers(0, PATCH)))
        axes = (int(rng.integers(8, 70)), int(rng.integers(8, 70)))
        angle = float(rng.uniform(0, 180))
        fill = float(rng.uniform(0, 255))
        if rng.random() < 0.7:
            cv2.ellipse(image, centre, axes, angle, 0, 360, fill, -1, cv2.LINE_AA)
        rim = float(np.clip(fill + rng.choice([-1, 1]) * rng.uniform(30, 150), 0, 255))
        cv2.ellipse(image, centre, axes, angle, 0, 360, rim, int(rng.integers(1, 4)), cv2.LINE_AA)


def _path(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Points (N x 2, float) of one stroke crossing or lying in the patch."""
    if kind == "hair":
        start = rng.uniform(0, PATCH, 2)
        steps = int(rng.integers(10, 40))
        heading = rng.uniform(0, 2 * np.pi)
        turn = np.cumsum(rng.normal(0, 0.15, steps)) + heading
        return start + np.cumsum(np.stack([np.cos(turn), np.sin(turn)], 1) * 2.0, 0)
    a, b = rng.uniform(-40, PATCH + 40, 2), rng.uniform(-40, PATCH + 40, 2)
    t = np.linspace(0, 1, 64)[:, None]
    points = a + (b - a) * t
    normal = np.array([-(b - a)[1], (b - a)[0]]) / max(1e-6, float(np.hypot(*(b - a))))
    if kind == "arc":
        points += normal * (rng.uniform(-0.25, 0.25) * np.hypot(*(b - a)) * 4 * t * (1 - t))
    elif kind == "wobble":
        wave = np.cumsum(rng.normal(0, 0.6, len(t)))
        points += normal * (wave - np.linspace(wave[0], wave[-1], len(t)))[:, None]
    return points


def draw_damage(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw random damage on ``image`` (float32 levels, PATCH x PATCH) in place:
    (target 0/1, weight 0/1) per pixel."""
    target = np.zeros(image.shape, np.uint8)
    ignore = np.zeros(image.shape, np.uint8)
    offset = np.zeros(image.shape, np.float32)

    def stroke(points: np.ndarray, width: int, contrast: float, fade: bool) -> None:
        layer = np.zeros(image.shape, np.uint8)
        truth = np.zeros(image.shape, np.uint8)
        pts = np.rint(points * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(layer, [pts], False, 255, width, cv2.LINE_AA, shift=4)
        cv2.polylines(truth, [pts], False, 1, width, cv2.LINE_8, shift=4)
        strength = np.full(image.shape, contrast, np.float32)
        if fade:
            field = cv2.resize(rng.uniform(0.2, 1.0, (4, 4)).astype(np.float32), image.shape[::-1])
            strength *= field
        weight = layer.astype(np.float32) / 255
        if rng.random() < 0.3:
            weight = cv2.GaussianBlur(weight, (0, 0), float(rng.uniform(0.4, 0.8)))
            weight /= max(1e-3, float(weight.max()))
        offset[...] = np.where(
            np.abs(strength * weight) > np.abs(offset), strength * weight, offset
        )
        target[(truth > 0) & (np.abs(strength) >= FAINTEST)] = 1
        ignore[(layer > 0) & ~((truth > 0) & (np.abs(strength) >= FAINTEST))] = 1

    def contrast(low: float = 12, high: float = 170) -> float:
        return float(np.exp(rng.uniform(np.log(low), np.log(high)))) * rng.choice([-1, 1])

    if rng.random() < 0.85:
        for _ in range(rng.poisson(1.3)):
            kind = rng.choice(["line", "arc", "wobble"], p=[0.4, 0.35, 0.25])
            width = int(rng.choice([1, 1, 1, 2, 2, 3, 4]))
            stroke(_path(rng, kind), width, contrast(), rng.random() < 0.5)
        for _ in range(rng.poisson(0.4)):
            stroke(_path(rng, "hair"), 1, contrast(25), False)
        for _ in range(rng.poisson(2.5)):
            centre = rng.uniform(0, PATCH, 2)
            radius = float(rng.uniform(0.6, 6))
            points = centre + rng.normal(0, radius * 0.3, (3, 2))
            stroke(points, max(1, round(radius)), contrast(20), False)
        if rng.random() < 0.1:
            points = _path(rng, "line")
            light = contrast(40)
            stroke(points, int(rng.integers(3, 7)), abs(light), False)
            stroke(points + 2.5, 2, -abs(light) * 0.6, False)
    image += offset
    np.clip(image, 0, 255, out=image)
    ignore = cv2.dilate(ignore, np.ones((3, 3), np.uint8)) & (1 - target)
    return target, 1 - ignore


def sample(photos: list[list[np.ndarray]], rng: np.random.Generator):
    """One (input, target, weight) training patch."""
    scales = photos[rng.integers(len(photos))]
    photo = scales[rng.integers(len(scales))]
    y = int(rng.integers(0, photo.shape[0] - PATCH + 1))
    x = int(rng.integers(0, photo.shape[1] - PATCH + 1))
    patch = photo[y : y + PATCH, x : x + PATCH].copy()
    patch = np.rot90(patch, int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = np.ascontiguousarray(patch)
    # tone: gamma, contrast, brightness (faded prints are flat)
    patch = 255 * (patch / 255) ** float(np.exp(rng.normal(0, 0.35)))
    low, span = rng.uniform(0, 60), rng.uniform(0.5, 1.0)
    patch = low + patch * span * (255 - low) / 255
    if rng.random() < 0.3:
        outlines(patch, rng)
    target, weight = draw_damage(patch, rng)
    if rng.random() < 0.25:
        patch = cv2.GaussianBlur(patch, (0, 0), float(rng.uniform(0.3, 0.7)))
    if rng.random() < 0.7:
        patch = patch + rng.normal(0, rng.uniform(0.5, 6), patch.shape).astype(np.float32)
    patch = np.clip(np.rint(patch), 0, 255)
    return patch / 127.5 - 1.0, target, weight


def batch(photos, rng, size: int):
    items = [sample(photos, rng) for _ in range(size)]
    return tuple(
        np.stack([item[k] for item in items])[:, None].astype(np.float32) for k in range(3)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    from sdstudio.engine.specialists.damage import build_network, weights_path

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)
    photos = load_photos()
    train = [pyramid(g) for n, g in sorted(photos.items()) if n not in VALIDATION]
    valid = [pyramid(g) for n, g in sorted(photos.items()) if n in VALIDATION]
    print(f"{len(train)} training photos, {len(valid)} validation: {sorted(photos)}", flush=True)
    network = build_network()
    print(f"{sum(p.numel() for p in network.parameters())} parameters", flush=True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=args.steps, pct_start=0.1
    )
    out = args.out or weights_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    check_rng = np.random.default_rng(args.seed + 1)
    checks = [batch(valid, check_rng, 16) for _ in range(4)]
    started, running = time.perf_counter(), 0.0
    for step in range(1, args.steps + 1):
        inputs, target, weight = (torch.from_numpy(a) for a in batch(train, rng, args.batch))
        logits = network(inputs)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, weight=weight * (1 + 2 * target), reduction="sum"
        ) / weight.sum().clamp(min=1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        value = float(loss.detach())
        running = 0.98 * running + 0.02 * value if step > 1 else value
        if step % 100 == 0 or step == args.steps:
            print(
                f"step {step:>5}  loss {running:.4f}  {validate(network, checks)}  "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
        if step % 300 == 0 or step == args.steps:
            state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
            meta = {"seed": str(args.seed), "steps": str(step), "of": str(args.steps)}
            save_file(state, str(out), metadata=meta)
    print(f"saved {out}")


def validate(network, checks) -> str:
    """Pixel precision / recall at 0.5 on the validation photos (exact, no tolerance)."""
    import torch

    hits = found = truth = 0.0
    with torch.inference_mode():
        for inputs, target, weight in checks:
            guess = torch.sigmoid(network(torch.from_numpy(inputs))).numpy() >= 0.5
            counted = weight > 0
            hits += float((guess & (target > 0) & counted).sum())
            found += float((guess & counted).sum())
            truth += float(((target > 0) & counted).sum())
    return f"val prec {hits / max(found, 1):.3f} recall {hits / max(truth, 1):.3f}"


if __name__ == "__main__":
    main()
