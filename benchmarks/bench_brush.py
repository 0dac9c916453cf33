"""Brush cost on a 6000 x 4000 RGB document: time per dab, dirty area per dab, undo memory.

Targets: a dab costs <= 1 ms (median and 99th percentile); the dirty area of a dab is its own
footprint, not the picture (what the canvas then repaints is measured by bench_canvas); undo
memory holds changed tiles only, far below one full copy.

Each timed ``Stroke.add`` moves the pointer by exactly one dab spacing, so it stamps one dab;
the times include the lazy per-tile "before" copies a stroke makes the first time it touches a tile.

    python benchmarks/bench_brush.py [--strokes 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sdstudio.core.brush import BrushSettings, Tool, clear_footprint_cache, dab_alpha
from sdstudio.core.document import Document

WIDTH, HEIGHT = 6000, 4000
DABS_PER_STROKE = 20


def make_document(seed: int) -> Document:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32) / np.float32(WIDTH)
    image = np.stack([x * 255, y * 255, (x + y) * 127], axis=2)
    image += rng.normal(0, 6, (1, WIDTH, 3)).astype(np.float32)  # cheap texture
    return Document(np.clip(image, 0, 255).astype(np.uint8))


def time_dabs(doc: Document, tool: Tool, size: float, strokes: int, rng) -> tuple[list, list]:
    """Per-dab seconds and dirty-box areas over ``strokes`` horizontal strokes."""
    settings = BrushSettings(size=size)
    step = settings.spacing_px()
    times, areas = [], []
    for _ in range(strokes):
        x = float(rng.uniform(-size, WIDTH - DABS_PER_STROKE * step))
        y = float(rng.uniform(-size / 2, HEIGHT + size / 2))
        stroke = doc.begin_stroke(tool, settings, color=(200, 30, 90))
        for i in range(DABS_PER_STROKE):
            start = time.perf_counter()
            box = stroke.add(x + i * step, y)
            times.append(time.perf_counter() - start)
            if box is not None:
                areas.append(box.width * box.height)
        stroke.end()
    return times, areas


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_dabs(doc: Document, strokes: int, rng) -> None:
    image_px = WIDTH * HEIGHT
    print(f"Per dab on a {WIDTH} x {HEIGHT} x 3 uint8 picture ({DABS_PER_STROKE} dabs a stroke)")
    print(
        f"{'tool':8} {'size':>5} {'dabs':>6} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}"
        f" {'mean dirty px':>14} {'of image':>10}"
    )
    for tool in (Tool.ERASE, Tool.PAINT):
        for size in (40.0, 200.0):
            time_dabs(doc, tool, size, 5, rng)  # warm the footprint cache
            times, areas = time_dabs(doc, tool, size, strokes, rng)
            mean_area = statistics.fmean(areas)
            print(
                f"{tool.value:8} {size:5.0f} {len(times):6d} {statistics.median(times) * 1e3:10.3f}"
                f" {percentile(times, 99) * 1e3:8.3f} {max(times) * 1e3:8.3f}"
                f" {mean_area:14.0f} {mean_area / image_px:10.2e}"
            )
            while doc.can_undo:  # keep the picture and the undo memory as they were
                doc.undo()


def bench_footprints() -> None:
    for size in (40.0, 200.0, 2000.0):
        clear_footprint_cache()
        start = time.perf_counter()
        dab_alpha(size, 0.8, (0.25, 0.75))
        cold = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(1000):
            dab_alpha(size, 0.8, (0.25, 0.75))
        warm = (time.perf_counter() - start) / 1000
        print(
            f"footprint size {size:6.0f}: build {cold * 1e3:7.3f} ms, cached {warm * 1e6:6.2f} us"
        )


def bench_undo_memory(doc: Document, strokes: int, rng) -> None:
    doc.history.clear()
    start = time.perf_counter()
    record_times = []
    for n in range(strokes):
        tool = (Tool.ERASE, Tool.PAINT)[n % 2]
        settings = BrushSettings(size=float(rng.uniform(20, 200)))
        x, y = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
        angle = rng.uniform(0, 2 * np.pi)
        step = settings.spacing_px()
        stroke = doc.begin_stroke(tool, settings, color=(10, 200, 10))
        for i in range(DABS_PER_STROKE):
            stroke.add(x + i * step * np.cos(angle), y + i * step * np.sin(angle))
        t = time.perf_counter()
        stroke.end()
        record_times.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    full = doc.image.nbytes + doc.mask.nbytes
    used = doc.history.bytes_used
    print(
        f"Undo memory after {strokes} random strokes of {DABS_PER_STROKE} dabs (size 20-200, "
        f"erase and paint alternately): {used / 2**20:.1f} MiB in {doc.history.entries} entries "
        f"({used / max(1, doc.history.entries) / 2**10:.0f} KiB a stroke) vs one copy of picture + "
        f"mask {full / 2**20:.1f} MiB: ratio {used / full:.3f}; dropped {doc.history.dropped}"
    )
    print(
        f"  stroke end (history record): median {statistics.median(record_times) * 1e3:.2f} ms, "
        f"max {max(record_times) * 1e3:.2f} ms; whole run {elapsed:.2f} s"
    )
    start = time.perf_counter()
    doc.undo()
    print(f"  one undo: {(time.perf_counter() - start) * 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strokes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    doc = make_document(args.seed)
    bench_footprints()
    bench_dabs(doc, args.strokes, rng)
    bench_undo_memory(doc, args.strokes, rng)


if __name__ == "__main__":
    main()
