"""GPU benchmark: full-size SD 1.5 and SDXL inpainting through our engine vs the bare pipeline.

Builds both architectures from their configs with random weights (no download), saves them as
safetensors and loads them back through the engine's own model path, then times 20-step inpaint
at 512x512 (SD 1.5) and 1024x1024 (SDXL), engine and bare pipeline alternating in one run.
Then the cost of a ControlNet: a 512 px SD 1.5 inpaint step with a full-size SD 1.5 ControlNet
(random weights, loaded through the engine's ControlNet path) as a ratio to the plain step
(published A100 figures: 15.0 vs 21.7 it/s, a ratio of 1.45).

Plain vs fast path in one run: the engine with the fast path switched off (and the bare
pipeline beside it: engine/bare), then the engine with it on (channels_last, fused QKV,
torch.compile with CUDA graphs, sdstudio.engine.diffusion.fastpath): its first run (eager, to
the result), the compile after it, and the it/s of the compiled runs.

    python benchmarks/bench_gpu.py [--models sd15,sdxl] [--steps 20] [--reps 3]
                                   [--no-fast] [--no-controlnet]
    python benchmarks/bench_gpu.py --tiny     # the same code path with tiny models on the CPU

Needs CUDA (except --tiny); on a machine without it, it says so and exits.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import (  # noqa: E402
    compare,
    counted,
    engine_run,
    inpaint_request,
    sync,
    test_picture,
)
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


PLAIN = {"channels_last": "off", "fused_qkv": "off", "compile": "off", "tiny_vae": "off"}


def _tiny_models():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import tiny_sd1, tiny_sdxl

    return {
        "sd15": ("tiny SD 1.5 inpaint", lambda: tiny_sd1(inpainting=True), 64),
        "sdxl": ("tiny SDXL inpaint", lambda: tiny_sdxl(inpainting=True), 64),
    }


def timed_first_run(engine, request) -> tuple[float, float]:
    """(seconds to the result, seconds to the end of the run: the compile after it included)."""
    import threading

    from sdstudio.engine.events import Finished

    start, to_result = time.perf_counter(), None
    for event in engine.run(request, threading.Event()):
        if isinstance(event, Finished):
            sync(engine.cache.device)
            to_result = time.perf_counter() - start
    if to_result is None:
        raise RuntimeError(f"the first fast-path run failed: {event}")
    return to_result, time.perf_counter() - start


def fast_path(folder: str, request, device: str, dtype, reps: int, tiny: bool) -> dict:
    """The engine with the fast path on: first run, compile seconds, best compiled run."""
    import torch

    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.fastpath import FastPath
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    engine = DiffusersEngine(PipelineCache(device=device, dtype=dtype))
    if tiny:  # the CUDA-only steps forced on the CPU; compile through dynamo's eager backend
        engine.fast = FastPath(
            lambda fn: torch.compile(fn, backend="eager", dynamic=False), allow_cpu=True
        )
    engine.load(folder)
    first, first_total = timed_first_run(engine, request)
    compiled = [w for done in engine.fast._done.values() for w in done.compiled]
    compile_s = sum(sum(w.seconds.values()) for w in compiled)
    failed = [w.name for w in compiled if w.failed]
    best = min(engine_run(engine, request) for _ in range(reps))
    steps = [w.compiled_calls for w in compiled]
    engine.close()
    return {
        "first_s": first,
        "first_total_s": first_total,
        "compile_s": compile_s,
        "failed": failed,
        "best_s": best,
        "compiled_calls": steps,
        "applied": engine.fast.skipped,
    }


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
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--no-fast", action="store_true", help="skip the fast-path runs")
    parser.add_argument("--no-controlnet", action="store_true", help="skip the ControlNet cost")
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU (a check)")
    args = parser.parse_args()

    import torch

    if args.tiny:
        device, dtype, models = "cpu", torch.float32, _tiny_models()
        args.steps, args.reps, args.no_controlnet = min(args.steps, 4), 1, True
        print("bench_gpu --tiny: tiny models on the CPU (proves the script runs; no figures)")
    elif not torch.cuda.is_available():
        print("bench_gpu: CUDA not available here; run it on a machine with an NVIDIA GPU.")
        return 0
    else:
        device, dtype, models = "cuda", getattr(torch, args.dtype), MODELS
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.dtype}")
    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    rows = []
    for key in args.models.split(","):
        name, builder, size = models[key]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            folder = str(build_and_save(builder, Path(tmp) / key, device, dtype))
            engine = DiffusersEngine(PipelineCache(device=device, dtype=dtype, overrides=PLAIN))
            engine.load(folder)
            print(
                f"{name}: built, saved and loaded in {time.perf_counter() - t0:.1f} s", flush=True
            )
            image, mask = test_picture(size)
            request = inpaint_request(folder, image, mask, args.steps)
            result = compare(engine, request, args.reps)
            print(f"{name} (plain): {counted(result)}", flush=True)
            engine.close()
            del engine
            fast = None
            if not args.no_fast:
                fast = fast_path(folder, request, device, dtype, args.reps, args.tiny)
                print(f"{name} (fast path): {fast}", flush=True)
            rows.append((name, size, result, fast))
            if device == "cuda":
                torch.cuda.empty_cache()
    print()
    print(
        "| model | size | steps | plain it/s | bare it/s | engine/bare | fast it/s | fast/plain "
        "| first run s | compile s | peak GiB engine | peak GiB bare |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, size, r, f in rows:
        engine_gib = "-" if r["engine_gib"] is None else f"{r['engine_gib']:.2f}"
        bare_gib = "-" if r["bare_gib"] is None else f"{r['bare_gib']:.2f}"
        fast_cells = "- | - | - | -"
        if f is not None:
            fast_cells = (
                f"{args.steps / f['best_s']:.2f} | {r['engine_s'] / f['best_s']:.2f} | "
                f"{f['first_s']:.2f} | {f['compile_s']:.1f}"
                + (f" (failed: {', '.join(f['failed'])})" if f["failed"] else "")
            )
        print(
            f"| {name} | {size}x{size} | {args.steps} | {args.steps / r['engine_s']:.2f} | "
            f"{args.steps / r['bare_s']:.2f} | {r['ratio']:.3f} | {fast_cells} | "
            f"{engine_gib} | {bare_gib} |"
        )
    print("(it/s = steps / end-to-end seconds, text encoding and VAE included; first run: the")
    print(" fast path's first run to its result, eager; compile s: compiling its shapes after it)")
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
