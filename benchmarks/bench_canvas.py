"""Brush on the canvas: per-dab cost on a 6000x4000 picture including the canvas's own work
(display copy and mask overlay of the dirty box), the widget area asked to repaint per dab, and
the time to paint that area. Targets: dab <= 1 ms; repaint only around the dab.

    python benchmarks/bench_canvas.py [--dabs 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))


def percentile(values, q):
    return float(np.percentile(np.array(values), q))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dabs", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QPointF, QRect
    from PySide6.QtWidgets import QApplication

    from sdstudio.core.brush import BrushSettings, Tool
    from sdstudio.core.document import Document
    from sdstudio.qt.canvas import Canvas

    app = QApplication(sys.argv[:1])
    rng = np.random.default_rng(0)
    document = Document(rng.integers(0, 256, (4000, 6000, 3), dtype=np.uint8))
    canvas = Canvas()
    canvas.resize(1600, 1000)
    canvas.show()
    canvas.set_document(document)
    app.processEvents()
    for zoom_name, zoom in (("fit", None), ("100%", 1.0)):
        if zoom is None:
            canvas.fit()
        else:
            canvas.set_zoom(zoom)
        app.processEvents()
        for tool in (Tool.ERASE, Tool.PAINT):
            stroke = document.begin_stroke(tool, BrushSettings(size=40), (200, 30, 30))
            centre = canvas.to_image(QPointF(canvas.rect().center()))
            x, y = centre.x(), centre.y()
            dab_times, areas, paint_times = [], [], []
            for i in range(args.dabs):
                before = canvas.repainted_pixels
                x += rng.normal(0, 6)
                y += rng.normal(0, 6)
                start = time.perf_counter()
                stroke.add(x, y)
                dab_times.append((time.perf_counter() - start) * 1e3)
                areas.append(canvas.repainted_pixels - before)
                if i % 10 == 0:
                    widget = canvas.to_widget(canvas.to_image(QPointF(canvas.rect().center())))
                    rect = QRect(int(widget.x()) - 40, int(widget.y()) - 40, 80, 80)
                    start = time.perf_counter()
                    canvas.repaint(rect)
                    paint_times.append((time.perf_counter() - start) * 1e3)
            stroke.end()
            app.processEvents()
            print(
                f"zoom {zoom_name:4s} {tool.value:5s} size 40: dab+canvas median "
                f"{statistics.median(dab_times):.3f} ms, p99 {percentile(dab_times, 99):.3f} ms; "
                f"repaint {statistics.mean(areas):.0f} widget px per dab "
                f"({100 * statistics.mean(areas) / (canvas.width() * canvas.height()):.2f}% of "
                f"the view); painting an 80x80 area {statistics.median(paint_times):.2f} ms"
            )
    canvas.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
