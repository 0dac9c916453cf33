"""Preview cost: milliseconds per step of the engine's own per-step work (its step callback:
the cancel check, the Step event, the linear latent-to-RGB preview of the denoised latents and
the Preview event), and its share of a denoising step, on the CPU. Target: under 1% of a step.

Both are measured in the same engine runs (SD 1.5 inpainting architecture, 256x256): the steps
from the engine's Step events, the callback by timing the very callback the engine hands to the
pipeline. Beside them, the previewer alone on random latents of 512 and 1024 px shapes.

    python benchmarks/bench_preview.py [--steps 4] [--runs 2]
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


def timed_callbacks(module, durations: list[float]):
    """Wrap ``module.run_and_decode`` so the step callback the engine passes is timed."""
    original = module.run_and_decode

    def run_and_decode(pipe, kwargs, *args, **options):
        callback = kwargs["callback_on_step_end"]

        def timed(*call_args):
            start = time.perf_counter()
            try:
                return callback(*call_args)
            finally:
                durations.append(time.perf_counter() - start)

        return original(pipe, {**kwargs, "callback_on_step_end": timed}, *args, **options)

    module.run_and_decode = run_and_decode


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    from sdstudio.core.request import ModelFamily
    from sdstudio.engine.diffusion import engine as diffusers_engine
    from sdstudio.engine.diffusion.preview import LatentPreviewer
    from sdstudio.engine.events import Finished, Preview, Step

    engine, folder = cpu_sd15_engine()
    callback_s: list[float] = []
    timed_callbacks(diffusers_engine, callback_s)
    image, mask = test_picture(256)
    request = inpaint_request(folder, image, mask, args.steps)
    step_s, steps_callback_s, shapes = [], [], []
    for run in range(args.runs + 1):  # the first run warms up
        stamps, last = [], None
        callback_s.clear()
        for event in engine.run(request, threading.Event()):
            last = event
            if isinstance(event, Step):
                stamps.append(time.perf_counter())
            elif isinstance(event, Preview):
                shapes.append(event.rgb.shape)
        if not isinstance(last, Finished):
            raise SystemExit(f"bench_preview: a run ended without a result: {last}")
        if run:
            step_s += [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
            steps_callback_s += callback_s
    step_ms = statistics.median(step_s) * 1e3
    callback_ms = statistics.median(steps_callback_s) * 1e3
    print(
        f"{args.runs} runs of {args.steps} steps; preview size {shapes[0][1]}x{shapes[0][0]}, "
        f"one per step"
    )
    print(
        f"256 px: step {step_ms:.0f} ms, the engine's step callback with its preview "
        f"{callback_ms:.3f} ms = {100 * callback_ms / step_ms:.3f}% of a step (target < 1%)"
    )
    previewer = LatentPreviewer(ModelFamily.SD1)
    for px in (512, 1024):
        ms = preview_ms(previewer, (1, 4, px // 8, px // 8))
        print(f"{px} px latents: the previewer alone {ms:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
