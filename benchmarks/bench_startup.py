"""Start-up: process start to the editor window shown and painted, and whether torch is loaded
by then (it must not be). Target: <= 1.5 s. Runs the real window offscreen, five times.

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
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication
from sdstudio.qt.main_window import MainWindow

app = QApplication(sys.argv[:1])
settings = QSettings(os.environ["SDSTUDIO_BENCH_INI"], QSettings.Format.IniFormat)
window = MainWindow(settings=settings)
window.show()

def shown():
    app.processEvents()
    print(json.dumps({"shown": time.time(), "torch": "torch" in sys.modules,
                      "exposed": window.isVisible()}))
    window.confirm_discard = lambda: True
    window.close()
    app.quit()

QTimer.singleShot(0, shown)
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
            result = json.loads(out.strip().splitlines()[-1])
            times.append(result["shown"] - start)
            torch_loaded |= result["torch"]
    print(
        f"process start -> window shown: median {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s over {args.runs} runs (target <= 1.5 s); "
        f"torch imported by then: {torch_loaded}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
