"""Side-by-side timing of our engine and the bare diffusers pipeline on the same inputs."""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np

from sdstudio.core.request import GenerationRequest, Mode, Scheduler
from sdstudio.engine import inpaint
from sdstudio.engine.diffusion.pipelines import Task
from sdstudio.engine.diffusion.schedulers import make_scheduler
from sdstudio.engine.events import Failed, Finished


def test_picture(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A size x size photo-like picture and a centred mask of about a fifth of its area."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, (x + y) / 2], axis=2) * 200 + rng.normal(0, 8, (size, size, 3))
    image = np.clip(base, 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    lo, hi = int(size * 0.28), int(size * 0.72)
    mask[lo:hi, lo:hi] = 255
    return image, mask


def inpaint_request(model: str, image, mask, steps: int) -> GenerationRequest:
    return GenerationRequest(
        mode=Mode.INPAINT,
        prompt="a stone wall with ivy",
        negative_prompt="blurry",
        model=model,
        image=image,
        mask=mask,
        seed=1,
        steps=steps,
        guidance=7.0,
        strength=1.0,
        scheduler=Scheduler.EULER_A,
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class RunFailed(RuntimeError):
    """An engine run ended without a result. Its time is not a timing of the same work: a failed
    run skips the colour match and paste-back, and a black fp16 decode adds an fp32 one."""


def engine_run(engine, request) -> float:
    """Seconds for one engine run to its result; RunFailed when it ended any other way."""
    start = time.perf_counter()
    events = list(engine.run(request, threading.Event()))
    sync(engine.cache.device)
    elapsed = time.perf_counter() - start
    last = events[-1] if events else None
    if not isinstance(last, Finished):
        why = last.message if isinstance(last, Failed) else type(last).__name__
        raise RunFailed(f"the engine run ended without a result: {why}")
    return elapsed


def bare_call(engine, request) -> float:
    """The same generation as one plain pipeline call: same crop, size, sampler, seed."""
    import torch

    loaded, pipe = engine.cache.pipeline(request.model, Task.INPAINT)
    crop = inpaint.prepare(request, loaded.native_size)
    image, mask = crop.at_model_size(crop.rgb)
    from PIL import Image

    start = time.perf_counter()
    pipe.scheduler = make_scheduler(request.scheduler, loaded.scheduler_config)
    pipe(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        image=Image.fromarray(image),
        mask_image=Image.fromarray(mask),
        width=crop.region.gen_width,
        height=crop.region.gen_height,
        strength=request.strength,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        generator=torch.Generator("cpu").manual_seed(request.seed),
        output_type="np",
    )
    sync(engine.cache.device)
    return time.perf_counter() - start


def peak_memory(device: str, run) -> float | None:
    """Peak GPU memory in GiB while ``run()`` runs (None off CUDA)."""
    if not device.startswith("cuda"):
        run()
        return None
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    run()
    return torch.cuda.max_memory_allocated() / 2**30


def compare(engine, request, reps: int) -> dict:
    """Warm both up, then alternate engine and bare runs; medians and their ratio.

    A failed engine run is not a timing: it is left out with the bare run of its round (so both
    medians cover the same rounds), said on the spot and counted in ``failed``. When no round
    succeeds the benchmark stops with the reason instead of printing a ratio.
    """
    failures: list[str] = []

    def attempt(run) -> bool:
        try:
            run()
        except RunFailed as error:
            failures.append(str(error))
            print(f"  not counted: {error}", flush=True)
            return False
        return True

    attempt(lambda: engine_run(engine, request))
    bare_call(engine, request)
    ours, bare = [], []
    for _ in range(reps):
        timing: list[float] = []
        if attempt(lambda timing=timing: timing.append(engine_run(engine, request))):
            ours.append(timing[0])
            bare.append(bare_call(engine, request))
    if not ours:
        raise SystemExit(
            f"All {reps} timed engine runs failed ({failures[-1]}), so there is nothing to "
            "compare. Random weights can decode to black or NaN: try another seed or dtype."
        )
    result = {"engine_s": statistics.median(ours), "bare_s": statistics.median(bare)}
    result["ratio"] = result["engine_s"] / result["bare_s"]
    device = engine.cache.device
    memory: list[float | None] = []
    ok = attempt(lambda: memory.append(peak_memory(device, lambda: engine_run(engine, request))))
    result["engine_gib"] = memory[0] if ok else None
    result["bare_gib"] = peak_memory(device, lambda: bare_call(engine, request))
    result["rounds"], result["failed"] = len(ours), len(failures)
    return result


def counted(result: dict) -> str:
    """How many rounds the medians cover, and how many failed runs were left out."""
    text = f"median of {result['rounds']} rounds"
    if result["failed"]:
        text += f", {result['failed']} failed engine run(s) left out"
    return text
