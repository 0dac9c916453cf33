"""Project files and autosave: save and open times of a large project, the GUI-thread pause an
autosave causes, and the peak memory of opening a very large picture.

- Save / open: a 4-layer project: a 24-megapixel RGB photo-like picture (smooth shading plus
  grain, so PNG has real work to do), its mask, and two waiting results of 4 MP each, as ``.ora``
  through ``sdstudio.core.project`` (save = encode, write, read back and verify, replace; open =
  read and decode). Beside it, for scale, a plain PNG export and load of the picture alone.
- Autosave pause: what the editor's GUI thread does for an autosave (``autosave_now``: the
  snapshot ``project_snapshot`` takes, then the write starts on a worker), on the same document
  with its two waiting results open in an offscreen editor window; the editor's own figure for
  the snapshot (``autosave_pause``) beside it, and ``project_snapshot`` alone.
- Peak memory: a child process opens an N-megapixel PNG with ``load_image``; its peak resident
  memory minus what it held before, over the decoded array's size (Linux: /proc/self/status).

    python benchmarks/bench_project.py [--megapixels 24] [--huge 80,100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np

from sdstudio.core.imageio import load_image, save_image
from sdstudio.core.project import Result, load_project
from sdstudio.core.project_save import save_project


def photo_like(megapixels: float, seed: int = 0) -> np.ndarray:
    width = int((megapixels * 1e6 * 1.5) ** 0.5)
    height = int(megapixels * 1e6 / width)
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
    return np.clip(image.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def timed(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


PEAK = textwrap.dedent(
    """
    import sys
    from sdstudio.core.imageio import load_image

    def kib(key):  # this process's own figures (ru_maxrss would include the parent's, on Linux)
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])

    before = kib("VmRSS:")
    try:
        array = load_image(sys.argv[1])
        print("opened", array.nbytes, kib("VmHWM:") - before)
    except Exception as error:
        print("refused", 0, kib("VmHWM:") - before, error)
    """
)


def peak_memory(megapixels: float, folder: Path) -> str:
    path = folder / f"huge-{megapixels:g}.png"
    cv2.imwrite(str(path), photo_like(megapixels, seed=1), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    out = (
        subprocess.run(
            [sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
        .split(maxsplit=3)
    )
    status, nbytes, peak_kib = out[0], int(out[1]), int(out[2])
    path.unlink()
    if status == "refused":
        return (
            f"{megapixels:g} MP: refused ({out[3].strip()[:90]}...), "
            f"peak +{peak_kib / 1024:.0f} MiB"
        )
    return (
        f"{megapixels:g} MP: opened, array {nbytes / 2**20:.0f} MiB, peak +{peak_kib / 1024:.0f} "
        f"MiB = {peak_kib * 1024 / nbytes:.2f}x the array"
    )


def autosave_pauses(image, mask, results, folder: Path, repeats: int = 3) -> str:
    """The GUI-thread side of the editor's autosave, through the editor's own functions."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from sdstudio.core.document import Document
    from sdstudio.core.recovery import RecoverySession
    from sdstudio.engine.fake import FakeEngine
    from sdstudio.qt.main_window import MainWindow
    from sdstudio.qt.tasks import wait_for_background

    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, engine_factory=FakeEngine)
    window.confirm_discard = lambda: True
    document = Document(image)
    document.set_mask(mask)
    window.set_document(document)
    assert window.session.restore_results(results) == len(results)
    snapshot_s = timed(lambda: window.project_snapshot(document), repeats=7)
    window.start_autosave(RecoverySession(folder / "recovery"))
    calls, own = [], []
    for k in range(repeats):
        document.set_mask(np.roll(mask, k + 1, axis=1))  # a change to save
        start = time.perf_counter()
        started = window.autosave_now()
        calls.append(time.perf_counter() - start)
        own.append(window.autosave_pause)
        if not started:
            raise SystemExit("bench_project: the editor did not start an autosave")
        wait_for_background(600_000)  # the write, on its worker: not part of the pause
        app.processEvents()
    window.close()
    return (
        f"autosave GUI-thread pause (autosave_now, {len(results)} results waiting): median "
        f"{statistics.median(calls) * 1000:.1f} ms, of which the snapshot (its own figure) "
        f"{statistics.median(own) * 1000:.1f} ms; project_snapshot alone "
        f"{snapshot_s * 1000:.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--huge", default="80,100")
    args = parser.parse_args()
    image = photo_like(args.megapixels)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[: image.shape[0] // 3, : image.shape[1] // 4] = 255
    results = [
        Result(photo_like(4.0, seed=2 + k)[: image.shape[0], : image.shape[1]], 0, 0, {"seed": k})
        for k in range(2)
    ]
    print(
        f"picture {image.shape[1]}x{image.shape[0]} ({image.size / 3e6:.1f} MP) RGB + mask "
        f"+ 2 results of {results[0].patch.size / 3e6:.1f} MP"
    )
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        project, png = folder / "work.ora", folder / "work.png"
        extra = {"parameters": "a test", "seed": 1}
        save_s = timed(lambda: save_project(project, image, mask, extra, results))
        open_s = timed(lambda: load_project(project))
        export_s = timed(lambda: save_image(png, image))
        load_s = timed(lambda: load_image(png))
        size = project.stat().st_size / 2**20
        print(
            f"save .ora  {save_s:6.2f} s  ({size:.0f} MiB; {save_s / export_s:.2f}x a PNG export)"
        )
        print(f"open .ora  {open_s:6.2f} s  ({open_s / load_s:.2f}x a PNG load)")
        print(f"PNG export {export_s:6.2f} s, PNG load {load_s:6.2f} s")

        print(autosave_pauses(image, mask, results, folder))
        for megapixels in (float(m) for m in args.huge.split(",") if m):
            print("peak memory:", peak_memory(megapixels, folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
