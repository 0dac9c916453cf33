"""Crop scaling: inpaint a 4000x3000 photo with a small mask vs a 512x512 picture with the same
mask size, end to end (request, engine run, full-size result). Target: ratio <= 1.3.

Because the engine works on a crop around the mask, both generate at the model's native size;
the large photo only adds copying. SD 1.5 inpainting architecture at native 256 px, CPU.

    python benchmarks/bench_crop_scaling.py [--steps 4] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from harness import inpaint_request  # noqa: E402
from sd_architectures import cpu_sd15_engine  # noqa: E402


def picture(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    x, y = width * 2 // 3, height // 3  # a 120x90 object, off-centre
    mask[y : y + 90, x : x + 120] = 255
    return image, mask


def end_to_end(engine, folder: str, image, mask, steps: int) -> float:
    from sdstudio.engine.events import Finished

    start = time.perf_counter()
    request = inpaint_request(folder, image, mask, steps)
    events = list(engine.run(request, threading.Event()))
    if not isinstance(events[-1], Finished):  # a failed run is not a timing of the same work
        raise SystemExit(f"bench_crop_scaling: a run ended without a result: {events[-1]}")
    events[-1].composite(image)  # the full-size result, as the CLI writes it
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    engine, folder = cpu_sd15_engine()
    big, small = picture(4000, 3000), picture(512, 512)
    end_to_end(engine, folder, *big, args.steps)
    end_to_end(engine, folder, *small, args.steps)
    t_big, t_small = [], []
    for _ in range(args.reps):
        t_big.append(end_to_end(engine, folder, *big, args.steps))
        t_small.append(end_to_end(engine, folder, *small, args.steps))
    b, s = statistics.median(t_big), statistics.median(t_small)
    print(
        f"120x90 mask, {args.steps} steps, median of {args.reps}: 4000x3000 {b:.2f} s, "
        f"512x512 {s:.2f} s, ratio {b / s:.3f} (target <= 1.3), extra {1e3 * (b - s):.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
