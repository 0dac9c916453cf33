"""Preview cost: milliseconds per step for the linear latent-to-RGB preview, and its share of
a denoising step, on the CPU. Target: under 1% of a step.

Steps are timed from the engine's own Step events (SD 1.5 inpainting architecture, 256x256);
the previewer is timed alone on latents of the same shape, and at 512 and 1024 px shapes.

    python benchmarks/bench_preview.py [--steps 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import inpaint_request, test_picture  # noqa: E402
from sd_architectures import cpu_sd15_engine  # noqa: E402


def preview_ms(previewer, shape, reps: int = 200) -> float:
    import torch

    latents = torch.randn(shape)
    previewer(latents)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        previewer(latents)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    from sdstudio.core.request import ModelFamily
    from sdstudio.engine.events import Preview, Step
    from sdstudio.engine.preview import LatentPreviewer

    engine, folder = cpu_sd15_engine()
    image, mask = test_picture(256)
    stamps, shapes = [], []
    for event in engine.run(inpaint_request(folder, image, mask, args.steps), threading.Event()):
        if isinstance(event, Step):
            stamps.append(time.perf_counter())
        elif isinstance(event, Preview):
            shapes.append(event.rgb.shape)
    step_ms = statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False)) * 1e3
    previewer = LatentPreviewer(ModelFamily.SD1)
    print(
        f"{len(shapes)} previews for {args.steps} steps; preview size {shapes[0][1]}x{shapes[0][0]}"
    )
    ms = preview_ms(previewer, (1, 4, 32, 32))
    print(
        f"256 px: step {step_ms:.0f} ms, preview {ms:.3f} ms = {100 * ms / step_ms:.3f}% of a step "
        "(target < 1%)"
    )
    for px in (512, 1024):
        print(f"{px} px latents: preview {preview_ms(previewer, (1, 4, px // 8, px // 8)):.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
