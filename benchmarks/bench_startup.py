"""Start-up: process start to the editor window shown and painted (the first paint event of its
canvas), and whether torch is loaded by then (it must not be). Target: <= 1.5 s. Runs the real
window offscreen, five times.

    python benchmarks/bench_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, os, sys, time
from PySide6.QtCore import QEvent, QObject, QSettings, QTimer
from PySide6.QtWidgets import QApplication
from sdstudio.qt.main_window import MainWindow

app = QApplication(sys.argv[:1])
settings = QSettings(os.environ["SDSTUDIO_BENCH_INI"], QSettings.Format.IniFormat)
window = MainWindow(settings=settings)


class FirstPaint(QObject):  # the canvas, the window's centre, has been drawn: time it
    def eventFilter(self, watched, event):
        if event.type() == QEvent.Type.Paint and "painted" not in marks:
            marks["painted"] = time.time()
            QTimer.singleShot(0, done)
        return False


def done():
    print(json.dumps({"shown": marks["painted"], "torch": "torch" in sys.modules}))
    window.confirm_discard = lambda: True
    window.close()
    app.quit()


marks = {}
first_paint = FirstPaint()
window.canvas.installEventFilter(first_paint)
window.show()
QTimer.singleShot(60_000, app.quit)  # never painted: no figure (the parent says so)
app.exec()
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    times, torch_loaded = [], False
    with tempfile.TemporaryDirectory() as tmp:
        env["SDSTUDIO_BENCH_INI"] = os.path.join(tmp, "settings.ini")
        for _ in range(args.runs):
            start = time.time()
            out = subprocess.run(
                [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
            ).stdout
            if not out.strip():
                raise SystemExit("bench_startup: the window was never painted within 60 s")
            result = json.loads(out.strip().splitlines()[-1])
            times.append(result["shown"] - start)
            torch_loaded |= result["torch"]
    print(
        f"process start -> window shown and painted: median {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s over {args.runs} runs (target <= 1.5 s); "
        f"torch imported by then: {torch_loaded}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
