"""GPU benchmark: full-size SD 1.5 and SDXL inpainting through our engine vs the bare pipeline.

Builds both architectures from their configs with random weights (no download), saves them as
safetensors and loads them back through the engine's own model path, then times 20-step inpaint
at 512x512 (SD 1.5) and 1024x1024 (SDXL), engine and bare pipeline alternating in one run.
Then the cost of a ControlNet: a 512 px SD 1.5 inpaint step with a full-size SD 1.5 ControlNet
(random weights, loaded through the engine's ControlNet path) as a ratio to the plain step
(published A100 figures: 15.0 vs 21.7 it/s, a ratio of 1.45).

    python benchmarks/bench_gpu.py [--models sd15,sdxl] [--steps 20] [--reps 3]
                                   [--channels-last] [--compile] [--fuse-qkv] [--no-controlnet]

Needs CUDA; on a machine without it, it says so and exits.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import compare, counted, inpaint_request, test_picture  # noqa: E402
from sd_architectures import (  # noqa: E402
    build_and_save,
    sd15_controlnet,
    sd15_inpaint,
    sdxl_inpaint,
)

MODELS = {
    "sd15": ("SD 1.5 inpaint", sd15_inpaint, 512),
    "sdxl": ("SDXL inpaint", sdxl_inpaint, 1024),
}


def speedups(engine, reference, args) -> None:
    import torch

    from sdstudio.engine.diffusion.pipelines import Task

    _, pipe = engine.cache.pipeline(reference, Task.INPAINT)
    if args.fuse_qkv:
        pipe.fuse_qkv_projections()
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if args.compile:
        pipe.unet = torch.compile(pipe.unet, mode="max-autotune", fullgraph=True)


def _denoise_seconds(engine, request, reps: int) -> float:
    """Best wall time of ``reps`` runs (after one warm-up run), synchronised."""
    import threading

    import torch

    from sdstudio.engine.events import Finished

    best = float("inf")
    for rep in range(reps + 1):
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        t0 = time.perf_counter()
        events = list(engine.run(request, threading.Event()))
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        if not isinstance(events[-1], Finished):
            raise RuntimeError(f"the run failed: {events[-1]}")
        if rep:  # the first run loads and warms up
            best = min(best, time.perf_counter() - t0)
    return best


def controlnet_cost(device: str, dtype, steps: int, reps: int, sample_size: int = 64) -> dict:
    """Seconds per denoising step, plain and with one ControlNet, from runs of ``steps`` and
    of 2 steps (the difference leaves out text encoding, VAE and the paste-back)."""
    import numpy as np

    from sdstudio.core.request import Control
    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    size = sample_size * 8
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_and_save(
            lambda: sd15_inpaint(sample_size), Path(tmp) / "sd15", device, dtype
        )
        import torch

        torch.manual_seed(0)
        with torch.device(device):
            controlnet = sd15_controlnet().to(dtype=dtype)
        controlnet.save_pretrained(Path(tmp) / "cn", safe_serialization=True)
        del controlnet
        engine = DiffusersEngine(PipelineCache(device=device, dtype=dtype))
        image, mask = test_picture(size)
        sketch = np.zeros((size, size, 3), np.uint8)
        sketch[size // 3 : size // 3 + 8, size // 8 : -size // 8] = 255
        plain = inpaint_request(str(folder), image, mask, steps)
        controlled = plain.with_(controls=(Control(str(Path(tmp) / "cn"), sketch),))
        per_step = {}
        for name, request in (("plain", plain), ("controlnet", controlled)):
            long = _denoise_seconds(engine, request, reps)
            short = _denoise_seconds(engine, request.with_(steps=2), reps)
            per_step[name] = (long - short) / (steps - 2)
        engine.close()
    per_step["ratio"] = per_step["controlnet"] / per_step["plain"]
    return per_step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sd15,sdxl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--fuse-qkv", action="store_true")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--no-controlnet", action="store_true", help="skip the ControlNet cost")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; run it on a machine with an NVIDIA GPU.")
        return 0
    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    dtype = getattr(torch, args.dtype)
    print(
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.dtype}, "
        f"SDPA attention, flags: channels_last={args.channels_last} compile={args.compile} "
        f"fuse_qkv={args.fuse_qkv}"
    )
    rows = []
    for key in args.models.split(","):
        name, builder, size = MODELS[key]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            folder = build_and_save(builder, Path(tmp) / key, "cuda", dtype)
            engine = DiffusersEngine(PipelineCache(device="cuda", dtype=dtype))
            engine.load(str(folder))
            print(
                f"{name}: built, saved and loaded in {time.perf_counter() - t0:.1f} s", flush=True
            )
            speedups(engine, str(folder), args)
            image, mask = test_picture(size)
            result = compare(
                engine, inpaint_request(str(folder), image, mask, args.steps), args.reps
            )
            print(f"{name}: {counted(result)}", flush=True)
            rows.append((name, size, result))
            engine.cache.unload()
            del engine
            torch.cuda.empty_cache()
    print()
    print(
        "| model | size | steps | engine s | bare s | ratio | engine it/s | bare it/s | peak GiB engine | peak GiB bare |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, size, r in rows:
        engine_gib = "failed" if r["engine_gib"] is None else f"{r['engine_gib']:.2f}"
        print(
            f"| {name} | {size}x{size} | {args.steps} | {r['engine_s']:.2f} | {r['bare_s']:.2f} | "
            f"{r['ratio']:.3f} | {args.steps / r['engine_s']:.2f} | {args.steps / r['bare_s']:.2f} | "
            f"{engine_gib} | {r['bare_gib']:.2f} |"
        )
    print("(it/s = steps / end-to-end seconds, text encoding and VAE included)")
    if not args.no_controlnet:
        cost = controlnet_cost("cuda", dtype, args.steps, args.reps)
        print()
        print("| SD 1.5 inpaint 512x512 | s/step | it/s |")
        print("|---|---|---|")
        for name in ("plain", "controlnet"):
            print(f"| {name} | {cost[name]:.4f} | {1 / cost[name]:.1f} |")
        print(
            f"ControlNet step / plain step: {cost['ratio']:.2f} (published A100: 21.7/15.0 = 1.45)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
