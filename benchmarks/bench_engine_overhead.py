"""Engine vs the bare diffusers pipeline call on the same request, on the CPU.

The SD 1.5 inpainting architecture (full width, random weights) at 256x256, where the UNet
dominates. Both are timed alternately in one run; the engine's extra work is the crop, the
per-step previews, the cancel checks, colour matching and the paste-back. Target: ratio <= 1.05.

    python benchmarks/bench_engine_overhead.py [--steps 4] [--reps 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import compare, counted, inpaint_request, test_picture  # noqa: E402
from sd_architectures import cpu_sd15_engine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    import torch

    engine, folder = cpu_sd15_engine()
    image, mask = test_picture(256)
    r = compare(engine, inpaint_request(folder, image, mask, args.steps), args.reps)
    print(
        f"SD 1.5 inpaint architecture, 256x256, {args.steps} steps, "
        f"CPU x{torch.get_num_threads()} threads, {counted(r)}"
    )
    print(
        f"engine {r['engine_s']:.2f} s   bare pipeline {r['bare_s']:.2f} s   "
        f"ratio {r['ratio']:.3f} (target <= 1.05)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
