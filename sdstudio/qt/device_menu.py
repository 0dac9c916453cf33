"""Models > Device: where and how models run (device, precision, GPU memory, VAE tiling).

Each choice is saved in the settings and read by the engine at its next model load; a change
makes the next run reload the model with the new plan. "Automatic" lets SD Studio decide from
the hardware and free memory (sdstudio.engine.diffusion.devices); SDSTUDIO_* variables still win.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QSettings
from PySide6.QtGui import QActionGroup
from PySide6.QtWidgets import QMenu

CHOICES = {
    "device": [
        ("auto", "Automatic"),
        ("cpu", "CPU"),
        ("cuda", "NVIDIA GPU (CUDA)"),
        ("mps", "Apple GPU (MPS)"),
    ],
    "dtype": [
        ("auto", "Automatic"),
        ("float16", "Half precision (fp16)"),
        ("bfloat16", "bfloat16 (RTX 30xx and newer)"),
        ("float32", "Full precision (fp32)"),
    ],
    "offload": [
        ("auto", "Automatic"),
        ("none", "Keep the whole model on the GPU"),
        ("model", "Model offload (less GPU memory)"),
        ("sequential", "Sequential offload (least GPU memory, slow)"),
    ],
    "vae_tiling": [
        ("auto", "Automatic"),
        ("on", "On (less memory for large pictures)"),
        ("off", "Off"),
    ],
}
TITLES = {
    "device": "&Device",
    "dtype": "&Precision",
    "offload": "GPU &memory",
    "vae_tiling": "VAE &tiling",
}


def read_overrides(settings: QSettings) -> dict[str, str]:
    overrides = {}
    for key, choices in CHOICES.items():
        value = str(settings.value(f"device/{key}", "auto"))
        overrides[key] = value if value in dict(choices) else "auto"
    return overrides


def build_device_menu(
    menu: QMenu, settings: QSettings, overrides: dict[str, str], on_change: Callable[[], None]
) -> None:
    """Fill ``menu``; choices update ``overrides`` in place (the engine reads a copy of it)."""
    overrides.update(read_overrides(settings))
    for key, choices in CHOICES.items():
        submenu = menu.addMenu(TITLES[key])
        group = QActionGroup(submenu)
        group.setExclusive(True)
        for value, label in choices:
            action = submenu.addAction(label)
            action.setCheckable(True)
            action.setChecked(value == overrides[key])
            action.setData(value)
            group.addAction(action)

            def choose(_checked: bool = False, key: str = key, value: str = value) -> None:
                overrides[key] = value
                settings.setValue(f"device/{key}", value)
                on_change()

            action.triggered.connect(choose)
