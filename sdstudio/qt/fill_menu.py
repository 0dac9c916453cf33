"""Generate > Remove fills with: which model-free fill Remove (Delete) uses, remembered."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QSettings
from PySide6.QtGui import QActionGroup

FILL_CHOICES = (
    ("auto", "&Best for the hole (texture, or smooth for thin strokes)"),
    ("structure-texture", "&Smooth shading + copied texture"),
    ("patchmatch", "&Copied texture and shading (beside other objects)"),
    ("harmonic", "S&mooth"),
    ("telea", "OpenCV &Telea"),
    ("navier-stokes", "OpenCV &Navier-Stokes"),
)
"""The model-free fills of ``sdstudio.engine.fill`` (named here: the menu must not load OpenCV)."""
KEY = "fill/method"


def read_fill_method(settings: QSettings) -> str:
    chosen = settings.value(KEY, "auto")
    return chosen if chosen in dict(FILL_CHOICES) else "auto"


def fill_engine_factory(method: Callable[[], str]):
    """A factory for the fill worker: its engine reads ``method()`` at each run."""

    def make():
        from sdstudio.engine.classical import ClassicalFillEngine

        return ClassicalFillEngine(method)

    return make


def build_fill_menu(window, menu) -> None:
    """Radio items under ``menu`` that set ``window.fill_method`` and remember it."""
    fills = menu.addMenu("Remove &fills with")
    group = QActionGroup(window)
    labels = dict(FILL_CHOICES)

    def choose(name: str) -> None:
        window.fill_method = name  # read by the fill worker at its next run
        window.settings.setValue(KEY, name)
        shown = labels[name].replace("&", "")
        window.statusBar().showMessage(f"Remove now fills with: {shown}", 5000)

    for name, label in FILL_CHOICES:
        action = window._action(
            fills, label, lambda _checked=False, n=name: choose(n), checkable=True
        )
        action.setChecked(name == window.fill_method)
        group.addAction(action)
