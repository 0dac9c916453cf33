"""Live mode: stroke-to-frame latency and the GUI thread's longest gap during a drawing session.

A scripted session draws strokes with the brush in a real editor window: mouse events on its
canvas (one per 8 ms timer tick, as a tablet's would come), pauses between strokes, live mode
(F5) on, the fake or a tiny engine behind it. For each stroke: the time from its end (the mouse
release) to the canvas's first paint after the first live frame that includes it. Meanwhile a
5 ms timer on the GUI thread records its ticks: the longest gap between two ticks is how long
the GUI thread was held (target <= 16 ms, one frame at 60 Hz). The same session is drawn once
with live mode off first, so the two gaps compare side by side.

    python benchmarks/bench_live.py                      # the fake engine (4 steps x 20 ms)
    python benchmarks/bench_live.py --engine tiny        # a tiny random SD 1.5 model on the CPU
    python benchmarks/bench_live.py --strokes 40 --step-ms 5 --seed 2
    python benchmarks/bench_live.py --gpu [--frames 30]   # full-size SD 1.5 512 px, SDXL 1024 px
    python benchmarks/bench_live.py --gpu --tiny          # the GPU mode's code, tiny, on the CPU

--gpu: live frames through the engine alone (no window): img2img of a picture whose sketch
changes every frame, LCM 4 steps (8 at strength 0.5), guidance 1, a fixed seed, fast path on,
random full-size weights (plain 4-channel UNets built from the shipped architectures). The
first frame (eager) and the compile after it are reported apart; then the median and p95 frame
time (request to result) over the frames. Without CUDA (and without --tiny) it says so.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_GAP_MS = 16.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def engine_factory(kind: str, step_ms: float, folder: str):
    if kind == "fake":
        from sdstudio.engine.fake import FakeEngine

        return lambda: FakeEngine(steps=4, delay=step_ms / 1000.0)
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import save_tiny, tiny_sd1

    model = Path(folder) / "tiny-sd1"
    save_tiny(tiny_sd1(inpainting=False), model)

    def make():  # on the worker thread
        import torch

        from sdstudio.engine.diffusion.engine import DiffusersEngine
        from sdstudio.engine.diffusion.pipelines import PipelineCache

        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
        return DiffusersEngine(PipelineCache(device="cpu", dtype=torch.float32))

    make.model = str(model)
    return make


def _plain_model(builder, folder: Path, device: str, dtype) -> str:
    """A full-size architecture with its 9-channel inpainting UNet swapped for a plain one."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        pipe = builder()
        config = {**pipe.unet.config, "in_channels": 4}
        pipe.unet = UNet2DConditionModel.from_config(config)
    pipe.register_to_config(requires_aesthetics_score=False) if "XL" in type(
        pipe
    ).__name__ else None
    pipe.to(dtype=dtype)
    pipe.save_pretrained(folder, safe_serialization=True)
    return str(folder)


def gpu_frames(args) -> int:
    """Frame times of live frames on the GPU (or, with --tiny, on the CPU with tiny models)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sdstudio.core.request import GenerationRequest, Mode, Scheduler
    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

    if args.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import tiny_sd1, tiny_sdxl

        device, dtype = "cpu", torch.float32
        models = [("tiny SD 1.5", tiny_sd1, 64), ("tiny SDXL", tiny_sdxl, 64)]
        builders = [lambda: tiny_sd1(inpainting=True), lambda: tiny_sdxl(inpainting=True)]
    elif not torch.cuda.is_available():
        print("bench_live --gpu: CUDA not available here; run it on a machine with an NVIDIA GPU.")
        return 0
    else:
        from sd_architectures import sd15_inpaint, sdxl_inpaint

        device, dtype = "cuda", torch.float16
        models = [("SD 1.5", None, 512), ("SDXL", None, 1024)]
        builders = [sd15_inpaint, sdxl_inpaint]
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, fp16")
    rows = []
    for (name, _unused, size), builder in zip(models, builders, strict=True):
        with tempfile.TemporaryDirectory() as tmp:
            model = _plain_model(builder, Path(tmp) / "model", device, dtype)
            engine = DiffusersEngine(PipelineCache(device=device, dtype=dtype))
            if args.tiny:  # force the CUDA-only steps; compile through dynamo's eager backend
                from sdstudio.engine.diffusion.fastpath import FastPath

                engine.fast = FastPath(
                    lambda fn: torch.compile(fn, backend="eager", dynamic=False), allow_cpu=True
                )
            y, x = np.mgrid[0:size, 0:size]
            picture = np.stack([x % 256, y % 256, (x + y) % 256], axis=2).astype(np.uint8)

            def frame(
                i: int, engine=engine, picture=picture, size=size, model=model
            ) -> tuple[float, float]:
                image = picture.copy()
                image[size // 4 : size // 4 + 8, : (i * 37) % size + 8] = 255  # a new stroke
                request = GenerationRequest(
                    mode=Mode.IMG2IMG, image=image, prompt="a landscape", model=model, seed=1,
                    steps=8, strength=0.5, guidance=1.0, scheduler=Scheduler.LCM, live=True,
                )  # fmt: skip
                start, to_result = time.perf_counter(), None
                for event in engine.run(request, __import__("threading").Event()):
                    if type(event).__name__ == "Finished":
                        if device == "cuda":
                            torch.cuda.synchronize()
                        to_result = time.perf_counter() - start
                    elif type(event).__name__ == "Failed":
                        raise RuntimeError(event.message)
                return to_result, time.perf_counter() - start

            engine.load(model)
            first, first_total = frame(0)
            times = [frame(i)[0] for i in range(1, args.frames + 1)]
            engine.close()
            rows.append((name, size, first, first_total - first, times))
            print(f"{name}: first frame {first * 1e3:.0f} ms, compile {first_total - first:.1f} s")
    print()
    print("| model | size | first frame ms | compile s | median ms | p95 ms | frames |")
    print("|---|---|---|---|---|---|---|")
    for name, size, first, compile_s, times in rows:
        print(
            f"| {name} | {size}x{size} | {first * 1e3:.0f} | {compile_s:.1f} | "
            f"{statistics.median(times) * 1e3:.0f} | {percentile(times, 0.95) * 1e3:.0f} | "
            f"{len(times)} |"
        )
    print("(frame: request to result, LCM 4 steps, fast path on; targets on a data-centre GPU:")
    print(" SD 1.5 512 px <= 80 ms median, SDXL 1024 px <= 250 ms)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("fake", "tiny"), default="fake")
    parser.add_argument("--strokes", type=int, default=30)
    parser.add_argument("--size", type=int, default=128, help="picture side, pixels")
    parser.add_argument("--step-ms", type=float, default=20.0, help="the fake engine's step")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="frame times on CUDA, full size")
    parser.add_argument("--tiny", action="store_true", help="with --gpu: tiny models, CPU")
    parser.add_argument("--frames", type=int, default=30, help="with --gpu: frames timed")
    args = parser.parse_args()
    if args.gpu:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return gpu_frames(args)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    tmp = tempfile.TemporaryDirectory()
    factory = engine_factory(args.engine, args.step_ms, tmp.name)
    model = getattr(factory, "model", "fake")
    off = drawing_session(app, args, factory, model, tmp.name, live_on=False)
    on = drawing_session(app, args, factory, model, tmp.name, live_on=True)
    tmp.cleanup()
    if on is None:
        return 1
    print(
        f"engine: {args.engine} ({model}), picture {args.size}x{args.size}, {args.strokes} "
        f"strokes drawn through the window's canvas, first frame (warm-up) {on['warm']:.3f} s"
    )
    if on["failures"]:
        print(f"failures: {len(on['failures'])}; the first: {on['failures'][0]}")
    latencies = on["latencies"]
    if latencies:
        print(
            f"stroke-to-frame latency (stroke end to the frame painted on the canvas): median "
            f"{statistics.median(latencies):.0f} ms, p95 {percentile(latencies, 0.95):.0f} ms "
            f"({len(latencies)} strokes, {on['frames']} frames, median frame time "
            f"{1e3 * (on['frame_time'] or 0):.0f} ms)"
        )
    else:
        print("stroke-to-frame latency: no frame arrived")
    for name, result in (("live off", off), ("live on", on)):
        gaps = result["gaps"]
        print(
            f"GUI thread while drawing, {name}: longest gap {max(gaps, default=0):.1f} ms "
            f"(target <= {TARGET_GAP_MS:.0f} ms), p99 {percentile(gaps, 0.99) if gaps else 0:.1f}"
            f" ms, gaps over target: {sum(g > TARGET_GAP_MS for g in gaps)} of {len(gaps)}"
        )
    return 0


def drawing_session(app, args, factory, model: str, folder: str, live_on: bool):
    """The scripted drawing session in a real editor window: mouse strokes on its canvas with
    the brush, live mode on or off. Returns the latencies and the GUI thread's tick gaps."""
    import numpy as np
    from PySide6.QtCore import QEvent, QEventLoop, QPointF, QSettings, Qt, QTimer
    from PySide6.QtGui import QMouseEvent

    from sdstudio.core.document import Document
    from sdstudio.qt.canvas import CanvasTool
    from sdstudio.qt.main_window import MainWindow

    settings = QSettings(str(Path(folder) / f"bench{int(live_on)}.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, engine_factory=factory)
    window.confirm_discard = lambda: True
    window.resize(1000, 700)
    window.show()
    size = args.size
    y, x = np.mgrid[0:size, 0:size]
    window.set_document(Document(np.stack([x * 2, y * 2, (x + y)], axis=2).astype(np.uint8)))
    window.panel.apply(
        {"prompt": "a landscape", "model": model, "steps": 8, "seed": 1, "live_strength": 0.5}
    )
    window.set_tool(CanvasTool.PAINT)
    window.set_brush_size(max(4.0, size / 16))
    canvas, live = window.canvas, window.live.controller

    def run_until(done, timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while not done() and time.perf_counter() < deadline:
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)

    paints: list[float] = []  # when the canvas painted
    frames: list[tuple[float, int]] = []  # when a frame went to the canvas, its change number
    failures: list[str] = []
    paint = canvas.paintEvent

    def timed_paint(event) -> None:
        paint(event)
        paints.append(time.perf_counter())

    canvas.paintEvent = timed_paint
    live.frame_ready.connect(lambda _f: frames.append((time.perf_counter(), live.frame_version)))
    live.failed.connect(failures.append)
    warm = 0.0
    if live_on:
        window.live.set_enabled(True)  # warm up: the model loads, a first stroke, its frame
        send = _mouse_sender(canvas, QMouseEvent, QEvent, QPointF, Qt)
        send("press", 2, 2)
        send("release", 6, 6)
        run_until(lambda: bool(frames) or bool(failures), 600)
        if failures:
            print("the first live frame failed:", failures[0])
            return None
        run_until(lambda: not live.is_busy(), 60)
        warm = live.scheduler.last_frame_time or 0.0

    ticks: list[float] = []
    meter = QTimer()
    meter.setTimerType(Qt.TimerType.PreciseTimer)
    meter.setInterval(5)
    meter.timeout.connect(lambda: ticks.append(time.perf_counter()))
    meter.start()
    rng = random.Random(args.seed)
    send = _mouse_sender(canvas, QMouseEvent, QEvent, QPointF, Qt)
    ends: list[tuple[float, int]] = []  # stroke end, change number
    script = {"stroke": 0, "dabs": 0, "drawing": False, "resume": 0.0}
    dab_timer = QTimer()
    dab_timer.setTimerType(Qt.TimerType.PreciseTimer)
    dab_timer.setInterval(8)

    def dab() -> None:  # one pointer event per 8 ms tick, as a tablet's would come
        now = time.perf_counter()
        if now < script["resume"]:
            return  # pausing between strokes
        if not script["drawing"]:
            if script["stroke"] >= args.strokes:
                dab_timer.stop()
                return
            script["drawing"] = True
            script["dabs"] = rng.randint(10, 40)  # 80..320 ms of drawing
            script["pos"] = (rng.uniform(0, size), rng.uniform(0, size))
            script["dir"] = (rng.uniform(-3, 3), rng.uniform(-3, 3))
            send("press", *script["pos"])
            return
        px, py = script["pos"]
        script["pos"] = (
            min(size - 1, max(0, px + script["dir"][0])),
            min(size - 1, max(0, py + script["dir"][1])),
        )
        send("move", *script["pos"])
        script["dabs"] -= 1
        if script["dabs"] <= 0:
            send("release", *script["pos"])  # the canvas ends the stroke: live hears of it
            script["drawing"] = False
            script["stroke"] += 1
            ends.append((time.perf_counter(), live.version))
            script["resume"] = time.perf_counter() + rng.uniform(0.1, 0.6)

    dab_timer.timeout.connect(dab)
    first_frame = len(frames)
    dab_timer.start()
    run_until(lambda: len(ends) >= args.strokes and not live.is_busy(), 600)
    run_until(lambda: False, 0.1)  # the last frame's paint
    meter.stop()
    latencies = []
    session_frames = frames[first_frame:]
    for end, version in ends:
        arrivals = [t for t, v in session_frames if v >= version and t >= end]
        if arrivals:
            painted = [t for t in paints if t >= arrivals[0]]
            if painted:
                latencies.append((painted[0] - end) * 1e3)
    result = {
        "warm": warm,
        "latencies": latencies,
        "frames": len(session_frames),
        "frame_time": live.scheduler.frame_time(),
        "failures": failures,
        "gaps": [(b - a) * 1e3 for a, b in zip(ticks, ticks[1:], strict=False)],
    }
    window.live.shutdown()
    window.generation.shutdown()
    window.fill.shutdown()
    window.close()
    return result


def _mouse_sender(canvas, QMouseEvent, QEvent, QPointF, Qt):  # noqa: N803 - Qt classes passed in
    from PySide6.QtWidgets import QApplication

    kinds = {
        "press": QEvent.Type.MouseButtonPress,
        "move": QEvent.Type.MouseMove,
        "release": QEvent.Type.MouseButtonRelease,
    }

    def send(kind: str, x: float, y: float) -> None:
        point = canvas.to_widget(QPointF(x, y))
        button = Qt.MouseButton.NoButton if kind == "move" else Qt.MouseButton.LeftButton
        buttons = Qt.MouseButton.NoButton if kind == "release" else Qt.MouseButton.LeftButton
        event = QMouseEvent(
            kinds[kind],
            point,
            canvas.mapToGlobal(point),
            button,
            buttons,
            Qt.KeyboardModifier.NoModifier,
        )
        QApplication.sendEvent(canvas, event)

    return send


if __name__ == "__main__":
    sys.exit(main())
