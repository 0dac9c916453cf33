"""Models > Device: where and how models run (device, precision, GPU memory, VAE tiling).

Each choice is saved in the settings and read by the engine at its next model load; a change
makes the next run reload the model with the new plan. "Automatic" lets SD Studio decide from
the hardware and free memory (sdstudio.engine.diffusion.devices); SDSTUDIO_* variables still win.
The "Fast path (CUDA)" submenu switches each fast-path step (on by default; "off" saved as
``device/<key>``; SDSTUDIO_CHANNELS_LAST, _FUSED_QKV, _COMPILE and _TINY_VAE still win).
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
FAST_PATH = [
    ("channels_last", "&channels_last memory layout"),
    ("fused_qkv", "&Fused attention projections (QKV)"),
    ("compile", "&Compile the model (torch.compile, CUDA graphs)"),
    ("tiny_vae", "&Tiny VAE for live frames and previews (TAESD)"),
]
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
    for key, _label in FAST_PATH:
        overrides[key] = "off" if str(settings.value(f"device/{key}", "on")) == "off" else "on"
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
    fast = menu.addMenu("Fast &path (CUDA)")
    for key, label in FAST_PATH:
        action = fast.addAction(label)
        action.setCheckable(True)
        action.setChecked(overrides[key] != "off")
        action.setData(key)

        def switch(checked: bool, key: str = key) -> None:
            overrides[key] = "on" if checked else "off"
            settings.setValue(f"device/{key}", overrides[key])
            on_change()

        action.toggled.connect(switch)
