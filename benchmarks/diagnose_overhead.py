"""Where does the engine's time over the bare pipeline go? Times variants of one inpaint call.

python benchmarks/diagnose_overhead.py [--device cuda] [--size 512] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import RunFailed, engine_run, inpaint_request, sync, test_picture  # noqa: E402
from sd_architectures import build_and_save, sd15_inpaint  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    import torch
    from PIL import Image

    from sdstudio.engine import inpaint
    from sdstudio.engine.diffusion.engine import DiffusersEngine, _cancel_hooks
    from sdstudio.engine.diffusion.pipelines import PipelineCache, Task
    from sdstudio.engine.diffusion.preview import LatentPreviewer
    from sdstudio.engine.diffusion.schedulers import make_scheduler

    dtype = torch.float16 if args.device == "cuda" else torch.float32
    tmp = tempfile.mkdtemp()
    folder = build_and_save(
        lambda: sd15_inpaint(args.size // 8), Path(tmp) / "m", args.device, dtype
    )
    engine = DiffusersEngine(PipelineCache(device=args.device, dtype=dtype))
    engine.load(str(folder))
    image, mask = test_picture(args.size)
    request = inpaint_request(str(folder), image, mask, args.steps)
    loaded, pipe = engine.cache.pipeline(request.model, Task.INPAINT)
    crop = inpaint.prepare(request, loaded.native_size)
    img, msk = crop.at_model_size(crop.rgb)
    previewer = LatentPreviewer(loaded.family)
    cancel = threading.Event()

    def call(**extra):
        pipe.scheduler = make_scheduler(request.scheduler, loaded.scheduler_config)
        return pipe(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            image=Image.fromarray(img),
            mask_image=Image.fromarray(msk),
            width=crop.region.gen_width,
            height=crop.region.gen_height,
            strength=1.0,
            num_inference_steps=args.steps,
            guidance_scale=7.0,
            generator=torch.Generator("cpu").manual_seed(1),
            output_type="np",
            **extra,
        )

    def with_preview():
        def cb(p, i, t, kw):
            previewer(kw["latents"])
            return kw

        call(callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents"])

    def with_hooks():
        hooks = _cancel_hooks(pipe, cancel)
        try:
            call()
        finally:
            for h in hooks:
                h.remove()

    def in_thread():
        t = threading.Thread(target=call)
        t.start()
        t.join()

    def post():
        inpaint.prepare(request, loaded.native_size)
        inpaint.finish(request, crop, crop.rgb)

    variants = {
        "bare": call,
        "bare+preview": with_preview,
        "bare+hooks": with_hooks,
        "bare in thread": in_thread,
        "prepare+finish only": post,
        "engine": lambda: engine_run(engine, request),
    }
    times = {k: [] for k in variants}
    try:
        for fn in variants.values():
            fn()
        for _ in range(args.reps):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                sync(args.device)
                times[name].append(time.perf_counter() - start)
    except RunFailed as error:  # its time would not be the engine's work: nothing to diagnose
        raise SystemExit(f"diagnose_overhead: {error}; try another seed or dtype.") from error
    base = statistics.median(times["bare"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:22s} {m * 1e3:8.1f} ms  x{m / base:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
