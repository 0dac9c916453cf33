"""Where SD Studio keeps the user's things: models, LoRAs and embeddings.

``SDSTUDIO_HOME`` overrides the whole data folder (tests and portable installs use it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def data_dir() -> Path:
    override = os.environ.get("SDSTUDIO_HOME")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "SD Studio"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "SD Studio"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "sdstudio"


def models_dir() -> Path:
    return data_dir() / "models"


def loras_dir(models: Path | None = None) -> Path:
    return (models or models_dir()) / "loras"


def embeddings_dir(models: Path | None = None) -> Path:
    return (models or models_dir()) / "embeddings"
