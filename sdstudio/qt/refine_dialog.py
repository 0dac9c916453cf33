"""Image > Upscale and refine…: the editor's "SD upscale".

A dialog asks for the scale, the refine strength and the prompt (prefilled from the Generate
panel); the model, steps, guidance, negative prompt and seed are the Generate panel's, so what
the refine draws matches what Generate would. The options are checked before anything loads.
The run is the Upscale action's (``qt/upscale_action.py``) with a ``RefinePass`` after the
upscale: one thread, one progress bar, Esc cancels either pass, one undo step.

The refine runs through a handle on the window's ``SharedEngine``: the model is loaded once and
shared with Generate and live mode (they take turns). The handle is made on the worker thread
at the first refine and kept, so the model stays loaded after the refine as it does after a
Generate; it is let go when the window is destroyed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import random_seed
from sdstudio.engine.refine import (  # numpy only: torch loads when a model runs
    DEFAULT_PROMPT,
    DEFAULT_STRENGTH,
    OVERLAP,
    TILE,
    check_strength,
)
from sdstudio.engine.tiling import tile_starts

log = logging.getLogger(__name__)

MIN_STRENGTH = 0.05


@dataclass(frozen=True)
class RefineOptions:
    scale: int
    strength: float
    prompt: str
    model: str
    steps: int
    guidance: float = 7.0
    negative: str = ""
    seed: int | None = None
    """None: a random seed, drawn when the run starts."""


def check_options(options: RefineOptions) -> None:
    """One line a person can act on (SDStudioError) for options that cannot run; nothing loads."""
    if options.scale not in (2, 4):
        raise SDStudioError(f"The scale must be 2 or 4, not {options.scale}.")
    check_strength(options.strength)
    if not options.model:
        raise SDStudioError("Choose a model in the Generate panel first: the refine uses it.")
    if int(options.steps * options.strength) < 1:
        raise SDStudioError(
            f"Strength {options.strength:g} with the Generate panel's {options.steps} steps runs "
            "no denoising step: raise the strength or the panel's steps."
        )


def tile_count(width: int, height: int, scale: int) -> int:
    """How many tiles the refine of a ``width`` x ``height`` picture upscaled ``scale`` runs."""
    return len(tile_starts(width * scale, TILE, OVERLAP)) * len(
        tile_starts(height * scale, TILE, OVERLAP)
    )


class RefineEngine:
    """The refine's handle on the shared engine (``handle_factory``: the ``SharedEngine``'s),
    made by ``get()`` on the worker thread the first time and kept until ``close()``."""

    def __init__(self, handle_factory: Callable[[], object]) -> None:
        self._factory = handle_factory
        self._handle = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._handle is None:
                self._handle = self._factory()  # makes the engine if no one has yet
            return self._handle

    def close(self, *_args) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()  # the last handle closes the engine (frees the model)
            except Exception:  # noqa: BLE001 - on the way out: log, never raise
                log.exception("closing the refine's engine handle failed")


class RefinePass:
    """The refine after an upscale, run on the Upscale action's worker thread."""

    def __init__(self, options: RefineOptions, engine: RefineEngine) -> None:
        check_options(options)
        seed = options.seed if options.seed is not None else random_seed()
        self.options = replace(options, seed=seed)
        self._engine = engine

    def load(self) -> None:
        """The model, loaded (or found loaded) through the shared engine; one line if it fails."""
        from sdstudio.qt.worker import error_line

        model = self.options.model
        try:
            self._engine.get().load(model)
        except Exception as error:  # noqa: BLE001 - becomes the line the person reads
            log.error("loading %r for the refine failed", model, exc_info=error)
            raise SDStudioError(error_line(error, f"Could not load the model '{model}'")) from None

    def run(
        self, image: np.ndarray, cancel: threading.Event, progress: Callable[[int, int], None]
    ) -> np.ndarray:
        from sdstudio.engine.refine import refine

        o = self.options
        return refine(
            self._engine.get(),
            image,
            prompt=o.prompt.strip() or DEFAULT_PROMPT,
            negative=o.negative,
            strength=o.strength,
            steps=o.steps,
            guidance=o.guidance,
            seed=o.seed,
            model=o.model,
            cancel=cancel,
            progress=progress,
        )

    def summary(self) -> str:
        o = self.options
        return f"refined with {o.model} at strength {o.strength:g} (seed {o.seed})"


class RefineDialog(QDialog):
    """Scale, strength and prompt; the rest shown as the Generate panel has it. ``chosen``
    carries checked ``RefineOptions``; a problem is shown in the dialog, which stays open."""

    chosen = Signal(object)

    def __init__(self, settings: dict, size: tuple[int, int], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Upscale and refine")
        self._settings, self._size = settings, size
        self.scale_combo = QComboBox(objectName="refine_scale")
        self.scale_combo.addItem("2x", 2)
        self.scale_combo.addItem("4x", 4)
        self.strength_spin = QDoubleSpinBox(objectName="refine_strength")
        self.strength_spin.setRange(MIN_STRENGTH, 1.0)
        self.strength_spin.setSingleStep(0.05)
        self.strength_spin.setDecimals(2)
        self.strength_spin.setValue(DEFAULT_STRENGTH)
        self.strength_spin.setToolTip(
            "How much the refine may change: about 0.2-0.35 sharpens what is there; higher "
            "invents detail, and the tiles may then disagree."
        )
        self.prompt_edit = QPlainTextEdit(objectName="refine_prompt")
        self.prompt_edit.setPlainText(settings.get("prompt", "").strip() or DEFAULT_PROMPT)
        self.prompt_edit.setMaximumHeight(90)
        self.info = QLabel(objectName="refine_info", wordWrap=True)
        self.error = QLabel(objectName="refine_error", wordWrap=True)
        self.error.setStyleSheet("color: #c0392b")
        self.error.setVisible(False)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Upscale and refine")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Scale", self.scale_combo)
        form.addRow("Refine strength", self.strength_spin)
        form.addRow("Prompt", self.prompt_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.info)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.scale_combo.currentIndexChanged.connect(self._show_info)
        self.strength_spin.valueChanged.connect(self._show_info)
        self._show_info()

    def options(self) -> RefineOptions:
        s = self._settings
        return RefineOptions(
            scale=self.scale_combo.currentData(),
            strength=round(self.strength_spin.value(), 2),
            prompt=self.prompt_edit.toPlainText().strip(),
            model=s.get("model", ""),
            steps=s.get("steps", 20),
            guidance=s.get("guidance", 7.0),
            negative=s.get("negative_prompt", ""),
            seed=s.get("seed"),
        )

    def _show_info(self, *_args) -> None:
        o = self.options()
        width, height = self._size
        tiles = tile_count(width, height, o.scale)
        seed = "random" if o.seed is None else str(o.seed)
        self.info.setText(
            f"Model {o.model or '(none chosen)'}, {int(o.steps * o.strength)} of the Generate "
            f"panel's {o.steps} steps, seed {seed}. Result {width * o.scale} x "
            f"{height * o.scale}: {tiles} tile{'s' if tiles != 1 else ''} of {TILE} px to "
            "refine (slow without a GPU)."
        )

    def accept(self) -> None:
        options = self.options()
        try:
            check_options(options)
        except SDStudioError as error:
            self.error.setText(str(error))
            self.error.setVisible(True)
            return
        super().accept()
        self.chosen.emit(options)


def open_refine_dialog(window) -> RefineDialog | None:
    """Image > Upscale and refine…: the dialog, for the window's picture (None: no picture, or
    an upscale is running; the status line says so). Its choice starts the upscale and refine
    once the model is on this computer (the window offers to download a missing hub model, as
    Generate does)."""
    document = window.session.document
    if document is None:
        window.statusBar().showMessage("Open a picture first.")
        return None
    if window.upscaler.busy:
        window.statusBar().showMessage("An upscale is already running (Esc cancels it).")
        return None
    dialog = RefineDialog(window.panel.settings(), (document.width, document.height), window)

    def start(options: RefineOptions) -> None:
        refine = RefinePass(options, window.refine_engine)
        window._with_model(lambda: window.upscaler.start(options.scale, refine))

    dialog.chosen.connect(start)
    dialog.finished.connect(dialog.deleteLater)
    dialog.open()
    window.refine_dialog = dialog
    return dialog


def attach_refine_engine(window: QObject) -> RefineEngine:
    """The window's ``RefineEngine`` on its shared engine, let go when the window is destroyed."""
    engine = RefineEngine(window.engine.handle_factory())
    window.destroyed.connect(engine.close)
    return engine
