"""Generate > Remove fills with: which fill Remove (Delete) uses, remembered. LaMa (a learned
removal model, downloaded in Models > Model library) is offered beside the model-free fills;
"auto" uses it for object-sized holes when it is installed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QActionGroup

FILL_CHOICES = (
    ("auto", "&Best for the hole (LaMa when installed, else copied texture; smooth for strokes)"),
    ("lama", "&LaMa (learned; download it in Models > Model library)"),
    ("structure-texture", "&Smooth shading + copied texture"),
    ("patchmatch", "&Copied texture and shading (beside other objects)"),
    ("harmonic", "S&mooth"),
    ("telea", "OpenCV &Telea"),
    ("navier-stokes", "OpenCV &Navier-Stokes"),
)
"""The fills of ``sdstudio.engine.fill`` and LaMa (named here: the menu must not load OpenCV)."""
KEY = "fill/method"
NO_LAMA = (
    "No LaMa model is installed: download 'LaMa (big-lama)' in Models > Model library "
    "(Remove keeps filling with: {current})."
)


def read_fill_method(settings: QSettings) -> str:
    chosen = settings.value(KEY, "auto")
    return chosen if chosen in dict(FILL_CHOICES) else "auto"


def fill_engine_factory(method: Callable[[], str], models_folder: Callable[[], Path] | None = None):
    """A factory for the fill worker: its engine reads ``method()`` at each run, and finds LaMa
    in ``models_folder()`` (the window's, which the library may change) when given."""

    def make():
        from sdstudio.engine.classical import ClassicalFillEngine

        return ClassicalFillEngine(method, models_folder=models_folder)

    return make


def lama_installed(window) -> bool:
    """Whether a usable LaMa is in the window's models folder (reads file headers only)."""
    from sdstudio.engine.specialists.lama import find_lama
    from sdstudio.qt.model_library import models_folder

    return find_lama(models_folder(window.settings)) is not None


def build_fill_menu(window, menu) -> None:
    """Radio items under ``menu`` that set ``window.fill_method`` and remember it. LaMa with no
    model installed is not chosen: one line says where to get it."""
    fills = menu.addMenu("Remove &fills with")
    group = QActionGroup(window)
    labels = dict(FILL_CHOICES)
    actions = {}

    def choose(name: str) -> None:
        if name == "lama" and not lama_installed(window):
            current = window.fill_method
            actions[current].setChecked(True)
            shown = labels[current].replace("&", "")
            window.statusBar().showMessage(NO_LAMA.format(current=shown), 10000)
            return
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
        actions[name] = action
