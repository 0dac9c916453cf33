"""Brush on the canvas, through the editor's own path: mouse events sent to the canvas on a
6000x4000 picture (the cursor ring, the dabs, the display copy and mask overlay of the dirty box),
then the repaint Qt delivers. Per pointer move: the time to handle the event, the time to paint
what it asked to repaint, and the widget area repainted, summed from the paint events Qt delivers
(the picture, the cursor ring and any full repaint alike). Targets: a move costs <= 1 ms to
handle; the repaint stays around the brush, a small fraction of the view.

    python benchmarks/bench_canvas.py [--moves 1000]
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
    parser.add_argument("--moves", type=int, default=1000, help="pointer moves per case")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEvent, QObject, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    from sdstudio.core.brush import BrushSettings
    from sdstudio.core.document import Document
    from sdstudio.qt.canvas import Canvas, CanvasTool

    class PaintCounter(QObject):
        """Sums the area of the paint events' regions and counts full-view repaints."""

        def __init__(self, widget) -> None:
            super().__init__()
            self.widget, self.area, self.full = widget, 0, 0
            widget.installEventFilter(self)

        def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt API
            if watched is self.widget and event.type() == QEvent.Type.Paint:
                region = event.region()
                self.area += sum(rect.width() * rect.height() for rect in region)
                self.full += region.boundingRect().contains(self.widget.rect())
            return False

    app = QApplication(sys.argv[:1])
    rng = np.random.default_rng(0)
    document = Document(rng.integers(0, 256, (4000, 6000, 3), dtype=np.uint8))
    canvas = Canvas()
    canvas.resize(1600, 1000)
    canvas.show()
    canvas.set_document(document)
    canvas.brush = BrushSettings(size=40)
    counter = PaintCounter(canvas)
    dabs = [0]
    document.add_listener(lambda box: dabs.__setitem__(0, dabs[0] + 1))
    app.processEvents()
    view = canvas.width() * canvas.height()
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton

    def send(kind, point: QPointF, button, buttons) -> None:
        event = QMouseEvent(
            kind, point, canvas.mapToGlobal(point), button, buttons, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(canvas, event)

    def deliver() -> float:
        start = time.perf_counter()
        app.processEvents()
        return (time.perf_counter() - start) * 1e3

    print(
        f"canvas {canvas.width()}x{canvas.height()}, picture 6000x4000, brush size 40, "
        f"{args.moves} pointer moves per case (a random walk of ~6 picture px a move)"
    )
    for zoom_name, zoom in (("fit", None), ("100%", 1.0)):
        if zoom is None:
            canvas.fit()
        else:
            canvas.set_zoom(zoom)
        for case, tool in (
            ("hover", CanvasTool.ERASE),
            ("erase", CanvasTool.ERASE),
            ("paint", CanvasTool.PAINT),
        ):
            canvas.tool = tool
            centre = canvas.to_image(QPointF(canvas.rect().center()))
            x, y = centre.x(), centre.y()
            buttons = none if case == "hover" else left
            send(QEvent.Type.MouseMove, canvas.to_widget(QPointF(x, y)), none, none)
            if case != "hover":
                send(QEvent.Type.MouseButtonPress, canvas.to_widget(QPointF(x, y)), left, left)
            deliver()
            handle_ms, paint_ms, areas, full_before, dabs_before = [], [], [], counter.full, dabs[0]
            for _ in range(args.moves):
                x += rng.normal(0, 6)
                y += rng.normal(0, 6)
                point = canvas.to_widget(QPointF(x, y))
                before = counter.area
                start = time.perf_counter()
                send(QEvent.Type.MouseMove, point, none, buttons)
                handle_ms.append((time.perf_counter() - start) * 1e3)
                paint_ms.append(deliver())
                areas.append(counter.area - before)
            if case != "hover":
                send(QEvent.Type.MouseButtonRelease, point, left, none)
            deliver()
            print(
                f"zoom {zoom_name:4s} {case:5s}: handle a move median "
                f"{statistics.median(handle_ms):.3f} ms, p99 {percentile(handle_ms, 99):.3f} ms "
                f"({(dabs[0] - dabs_before) / args.moves:.2f} dabs a move); repaint "
                f"{statistics.mean(areas):.0f} widget px a move "
                f"({100 * statistics.mean(areas) / view:.2f}% of the view, "
                f"{counter.full - full_before} full-view repaints), painting it median "
                f"{statistics.median(paint_ms):.2f} ms, p99 {percentile(paint_ms, 99):.2f} ms"
            )
        while document.can_undo:  # the next zoom starts from the same picture
            document.undo()
        app.processEvents()
    canvas.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
