"""Builds and shows the editor window. Imports no torch: the window appears first, and the
generation worker loads torch on its own thread when the first generation needs it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from sdstudio.core.errors import SDStudioError


def main(image: str | None = None, argv: list[str] | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    from sdstudio.qt.main_window import MainWindow

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    app.setOrganizationName("sdstudio")
    app.setApplicationName("SD Studio")
    window = MainWindow()
    window.show()
    try:
        from sdstudio.core.recovery import RecoverySession

        window.start_autosave(RecoverySession())
    except (OSError, SDStudioError) as error:  # the editor still works, without a safety net
        window.show_error(f"Autosave is off: {error}")
    window.offer_recovery()
    if image:
        window.open_path(Path(image))
    return app.exec()
