"""GUI responsiveness while the worker thread works: the gaps between ticks of a 5 ms timer on
the GUI thread, (1) while the engine starts (torch, diffusers and the model load on the worker
thread) and (2) while it generates 20 steps on a 256x256 picture with previews.
Target: longest gap <= 30 ms.

The GUI side is the editor itself: an offscreen ``MainWindow`` whose own generation worker
loads the model and runs the Generate action (``session.generate()``) on a masked picture; its
session hands each preview to the canvas, which draws the ``QImage`` in its paint event. Each
measurement runs in a fresh process (torch can be imported only once), on a tiny random SD1
inpainting model saved to a temporary folder.

    python benchmarks/bench_responsiveness.py [--runs 2] [--torch-threads 0]

Start-up variants, tried because importing torch holds the GIL:
  default       a plain import
  switch=0.5ms  ``sys.setswitchinterval(0.0005)`` during the import (default 5 ms)
  preload       ``dlopen`` torch's shared libraries first through a ctypes call to libc's
                ``dlopen`` (a foreign call lets go of the GIL; ``import`` and ``ctypes.CDLL``
                do not), then import
  quiet         what the editor does (sdstudio.engine.diffusion.warmup.import_quietly): preload, and
                the garbage collector off while torch, transformers and diffusers import, then
                ``gc.freeze()``: full collections over the millions of objects those imports
                make hold the GIL for 50-300 ms each
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 30.0


def build_model(folder: str) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import save_tiny, tiny_sd1

    save_tiny(tiny_sd1(inpainting=True), Path(folder))


class GapMeter:
    """A 5 ms precise timer on the GUI thread; ``gaps(a, b)``: the intervals starting in [a, b)."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(5)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def gaps(self, begin: float, end: float) -> list[float]:
        out = []
        for before, after in zip(self.ticks, self.ticks[1:], strict=False):
            if begin <= before < end:  # the intervals that start in the window
                out.append((after - before) * 1e3)
        return out


def summary(gaps: list[float]) -> dict:
    if not gaps:
        return {"max": 0.0, "p99": 0.0, "n": 0, "over": 0}
    ordered = sorted(gaps)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {
        "max": ordered[-1],
        "p99": p99,
        "n": len(gaps),
        "over": sum(g > TARGET_MS for g in gaps),
    }


def child(model: str, variant: str, torch_threads: int) -> dict:
    """One fresh process: start the engine, then generate; print what the GUI thread saw."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from PySide6.QtCore import QEvent, QEventLoop, QObject, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from sdstudio.core.document import Document
    from sdstudio.engine.diffusion.warmup import import_quietly, preload_torch_libraries
    from sdstudio.qt.main_window import MainWindow

    assert "torch" not in sys.modules
    app = QApplication(sys.argv[:1])
    marks: dict[str, float] = {}

    def factory():
        marks["import_begin"] = time.perf_counter()
        old = sys.getswitchinterval()
        if variant == "switch":
            sys.setswitchinterval(0.0005)
        try:
            if variant == "preload":
                preload_torch_libraries()
                marks["preloaded"] = time.perf_counter()
            if variant == "quiet":  # what the editor's engine factory does
                import_quietly()
            import torch

            marks["import_end"] = time.perf_counter()
        finally:
            sys.setswitchinterval(old)
        if torch_threads:
            torch.set_num_threads(torch_threads)
        from sdstudio.engine.diffusion.engine import DiffusersEngine
        from sdstudio.engine.diffusion.pipelines import PipelineCache

        return DiffusersEngine(PipelineCache(device="cpu", dtype=torch.float32))

    class PaintCounter(QObject):
        def __init__(self, widget) -> None:
            super().__init__()
            self.widget, self.paints = widget, 0
            widget.installEventFilter(self)

        def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt API
            if watched is self.widget and event.type() == QEvent.Type.Paint:
                self.paints += 1
            return False

    settings = QSettings(
        os.path.join(os.path.dirname(model), "settings.ini"), QSettings.Format.IniFormat
    )
    settings.setValue("autosave/minutes", 0)
    window = MainWindow(settings=settings, engine_factory=factory)
    window.confirm_discard = lambda: True
    window.resize(1200, 800)
    window.show()
    worker = window.generation  # the editor's own worker, wired to its session and canvas
    painted = PaintCounter(window.canvas)
    previews = steps = 0
    step_times: list[float] = []
    failures: list[str] = []

    def on_preview(image, box):
        nonlocal previews
        previews += 1

    def on_step(_i, _n):
        nonlocal steps
        steps += 1
        step_times.append(time.perf_counter())

    worker.preview.connect(on_preview)
    worker.step.connect(on_step)
    worker.failed.connect(failures.append)

    def wait_for(signal, timeout_ms: int) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)
        worker.failed.connect(loop.quit)
        QTimer.singleShot(timeout_ms, loop.quit)
        loop.exec()
        signal.disconnect(loop.quit)
        worker.failed.disconnect(loop.quit)

    def settle(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    settle(300)  # the window's first layout and paint, before the meter starts
    meter = GapMeter()  # the window started its worker: the idle gaps are with it running
    settle(300)
    idle = summary(meter.gaps(meter.ticks[0], time.perf_counter()))

    load_begin = time.perf_counter()
    worker.load_model(model)
    wait_for(worker.model_loaded, 120_000)
    load_end = time.perf_counter()
    settle(100)

    size = 256
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([x, y, (x + y) // 2], axis=2).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[80:180, 70:190] = 255
    document = Document(image)
    document.set_mask(mask)
    window.set_document(document)
    skipped = window.panel.apply(
        {"model": model, "prompt": "a stone wall", "steps": 20, "seed": 1, "strength": 1.0}
    )
    assert not skipped, skipped
    settle(100)
    paints_before = painted.paints
    run_begin = time.perf_counter()
    window.session.generate()  # what Generate (Ctrl+Enter) does
    wait_for(worker.batch_done, 300_000)
    run_end = time.perf_counter()
    settle(100)  # closing blocks the GUI thread by design: keep it out of the window
    canvas_paints = painted.paints - paints_before
    candidates = len(window.session.candidates)
    window.close()
    app.processEvents()
    return {
        "variant": variant,
        "failed": failures,
        "idle": idle,
        "import_s": marks["import_end"] - marks["import_begin"],
        "import": summary(meter.gaps(marks["import_begin"], marks["import_end"])),
        "load_s": load_end - load_begin,
        "load": summary(meter.gaps(load_begin, load_end)),
        "run_s": run_end - run_begin,
        "run": summary(meter.gaps(run_begin, run_end)),
        "steps": steps,
        "step_ms": [round((b - a) * 1e3) for a, b in zip(step_times, step_times[1:], strict=False)],
        "first_step_s": (step_times[0] - run_begin) if step_times else None,
        "previews": previews,
        "canvas_paints": canvas_paints,
        "candidates": candidates,
        "long_gaps": [
            (round((a - run_begin) * 1e3), round((b - a) * 1e3))
            for a, b in zip(meter.ticks, meter.ticks[1:], strict=False)
            if b - a > TARGET_MS / 1e3
        ],
        "marks": {k: round((v - run_begin) * 1e3) for k, v in marks.items()}
        | {
            "load_begin": round((load_begin - run_begin) * 1e3),
            "run_end": round((run_end - run_begin) * 1e3),
        },
    }


def row(label: str, s: dict) -> str:
    return (
        f"{label:<28} longest {s['max']:7.1f} ms   p99 {s['p99']:6.1f} ms   "
        f"gaps > {TARGET_MS:.0f} ms: {s['over']:3d} of {s['n']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2, help="fresh processes per variant")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--variants", default="default,switch,preload,quiet")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--build", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.build:
        build_model(args.build)
        return 0
    if args.child:
        print(json.dumps(child(*args.child, args.torch_threads)))
        return 0

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    me = [sys.executable, str(Path(__file__).resolve())]
    with tempfile.TemporaryDirectory() as tmp:
        model = str(Path(tmp) / "tiny-sd1-inpaint")
        subprocess.run([*me, "--build", model], env=env, check=True)
        print(
            f"cores: {os.cpu_count()}, torch threads: {args.torch_threads or 'default'}, "
            f"timer 5 ms, target longest gap <= {TARGET_MS:.0f} ms\n"
        )
        for variant in args.variants.split(","):
            for n in range(args.runs):
                out = subprocess.run(
                    [*me, "--child", model, variant, "--torch-threads", str(args.torch_threads)],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"[{variant} #{n + 1}]" + (f"  FAILED: {r['failed']}" if r["failed"] else ""))
                print(row("  idle (worker started)", r["idle"]))
                print(row(f"  import torch ({r['import_s']:.2f} s)", r["import"]))
                print(row(f"  engine start ({r['load_s']:.2f} s)", r["load"]))
                if os.environ.get("BENCH_DEBUG"):
                    print("  long gaps (start ms from submit, length):", r["long_gaps"], r["marks"])
                    print("  first step after", r["first_step_s"], "s; step ms", r["step_ms"])
                print(
                    row(f"  generate 20 steps ({r['run_s']:.2f} s)", r["run"])
                    + f"   steps {r['steps']}, previews delivered {r['previews']}, canvas "
                    f"paints {r['canvas_paints']}, results waiting {r['candidates']}"
                )
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
