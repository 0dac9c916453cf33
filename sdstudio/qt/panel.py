"""The generation panel: prompt, model and sampling settings, and the Generate/Cancel/Remove buttons.

It only gathers settings (``settings()``), shows them (``apply()``), remembers them across runs
(``save_state``/``restore_state``) and emits what the person asked for. Which mode a run uses,
and building the request, belong to the controller.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.presets import SamplerPreset, apply_preset, is_model_for, steps_for_strength
from sdstudio.core.request import MAX_SEED, Scheduler
from sdstudio.core.tokens import CLIP_WINDOW, chunks, estimate_clip_tokens
from sdstudio.qt.control_panel import ControlSection
from sdstudio.qt.panel_settings import (
    ADVANCED,
    BASIC,
    DEFAULT_MODELS,
    EXACT_TOKENS_TIP,
    MAX_RECENT,
    NUMBERS,
    REMOVE_TIP,
    STRENGTH_HINT,
    TOKENS_TIP,
    WARNING_STYLE,
    PanelState,
    SeedValidator,
)
from sdstudio.qt.preset_chooser import PresetChooser
from sdstudio.qt.tasks import run_in_background

LIVE_TIP = "Regenerate while you draw (F5)"
CHANGES_WITH = ("steps", "guidance", "strength", "live_strength")
"""The numbers whose change matters for a generation (not the batch size, nor the new-picture
size and the inpaint padding and blur, which a live frame does not use)."""


def _exact_counter() -> Callable[[str], int]:
    from sdstudio.engine.diffusion.clip_tokens import clip_tokenizer, count_clip_tokens

    clip_tokenizer()  # the slow part: reading the vocabulary
    return count_clip_tokens


class GenerationPanel(PanelState, QWidget):
    generate_requested = Signal()
    cancel_requested = Signal()
    remove_requested = Signal()
    live_toggled = Signal(bool)
    changed = Signal()
    """Something that matters for a generation changed (prompts, model, sampling, seed, preset,
    live strength, control); layout, batch size and the like do not count."""

    def __init__(
        self,
        parent: QWidget | None = None,
        models_folder: Callable[[], Path] | None = None,
    ) -> None:
        """``models_folder``: where installed ControlNets are listed from (None: none are)."""
        super().__init__(parent)
        self.setMinimumWidth(280)
        self._recent: list[str] = list(DEFAULT_MODELS)
        self._last_seed: int | None = None

        self.mode_label = QLabel(objectName="mode_label")
        self.prompt_edit, self.prompt_tokens = self._prompt_box("prompt", "What should be there")
        self.negative_edit, self.negative_tokens = self._prompt_box("negative", "What to avoid")
        self.model_combo = QComboBox(objectName="model_combo", editable=True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model_combo.setMinimumContentsLength(16)  # long hub ids must not widen the panel
        self.model_combo.setToolTip("A hub id (owner/name) or a local diffusers model folder")
        self.browse_button = self._button(
            "Browse folder…", "browse_button", "Choose a local diffusers model folder", self._browse
        )

        self.spins: dict[str, QSpinBox | QDoubleSpinBox] = {}
        for key, (lo, hi, step, default, suffix, tip) in NUMBERS.items():
            box = QDoubleSpinBox(decimals=2) if isinstance(lo, float) else QSpinBox()
            box.setRange(lo, hi)
            box.setSingleStep(step)
            box.setValue(default)
            box.setSuffix(suffix)
            box.setToolTip(tip)
            box.setObjectName(f"{key}_spin")
            self.spins[key] = box
        for key in ("width", "height"):
            box = self.spins[key]
            box.editingFinished.connect(lambda box=box: box.setValue(self._snap(box.value())))

        self.seed_edit = QLineEdit(objectName="seed_edit", placeholderText="random")
        self.seed_edit.setValidator(SeedValidator(self.seed_edit))
        self.seed_edit.setToolTip(f"0 to {MAX_SEED}; typing a seed turns Random off")
        self.seed_edit.textEdited.connect(lambda text: self.random_check.setChecked(not text))
        self.random_check = QCheckBox("Random", objectName="random_seed_check", checked=True)
        self.reuse_button = self._button(
            "♻ Reuse last", "reuse_seed_button", "No run yet", self.reuse_last_seed
        )
        self.reuse_button.setEnabled(False)
        self.scheduler_combo = QComboBox(objectName="scheduler_combo")
        for member in Scheduler:
            self.scheduler_combo.addItem(member.value, member.value)
        self.preset_combo = PresetChooser()
        self._applying_preset = False
        self.preset_combo.currentIndexChanged.connect(lambda _index: self._use_preset())
        self.model_combo.currentTextChanged.connect(self.preset_combo.set_model)
        for changed in (
            self.scheduler_combo.currentIndexChanged,
            self.spins["steps"].valueChanged,
            self.spins["guidance"].valueChanged,
        ):
            changed.connect(lambda _value: self._set_by_hand())
        self.spins["strength"].valueChanged.connect(lambda _value: self._follow_strength())
        self.control = ControlSection(models_folder)
        self.model_combo.currentTextChanged.connect(
            lambda _text: self.control.set_model_family(self.preset_combo.family)
        )
        self.live_strength = self.spins["live_strength"]
        self.live_button = QPushButton("Live", objectName="live_button", toolTip=LIVE_TIP)
        self.live_button.setCheckable(True)
        self.live_button.toggled.connect(self.live_toggled.emit)

        self.generate_button, self.cancel_button, self.remove_button = (
            self._button(text, f"{text.lower()}_button", tip, signal.emit)
            for text, tip, signal in (
                ("Generate", "Generate (Ctrl+Enter)", self.generate_requested),
                ("Cancel", "Stop the running generation (Esc)", self.cancel_requested),
                ("Remove", REMOVE_TIP, self.remove_requested),
            )
        )
        self.generate_button.setDefault(True)
        self.cancel_button.setEnabled(False)

        self._count_tokens: Callable[[str], int] = estimate_clip_tokens
        self._layout()
        self._set_recent(self._recent)
        self._setters = self._make_setters()
        self.reset()
        for edit, label in (
            (self.prompt_edit, self.prompt_tokens),
            (self.negative_edit, self.negative_tokens),
        ):
            self._update_counter(edit, label)  # reset() leaves an unchanged empty prompt alone
        self._connect_changed()
        run_in_background(_exact_counter, self._use_exact_counter, lambda _message: None)

    def _use_exact_counter(self, counter: Callable[[str], int]) -> None:
        """CLIP's own tokenizer is ready (loaded off the GUI thread): count exactly from now on."""
        self._count_tokens = counter
        for edit, label in (
            (self.prompt_edit, self.prompt_tokens),
            (self.negative_edit, self.negative_tokens),
        ):
            label.setToolTip(EXACT_TOKENS_TIP)
            self._update_counter(edit, label)

    # layout ------------------------------------------------------------------------------------
    def _button(self, text: str, name: str, tip: str, slot: Callable[[], object]) -> QPushButton:
        button = QPushButton(text, objectName=name, toolTip=tip)
        button.clicked.connect(lambda: slot())
        return button

    def _prompt_box(self, name: str, placeholder: str) -> tuple[QPlainTextEdit, QLabel]:
        edit = QPlainTextEdit(objectName=f"{name}_edit", placeholderText=placeholder)
        edit.setTabChangesFocus(True)
        edit.setMinimumHeight(48)
        edit.setMaximumHeight(110)  # the panel scrolls; the prompt need not take its height
        label = QLabel(objectName=f"{name}_tokens", wordWrap=True, toolTip=TOKENS_TIP)
        edit.textChanged.connect(lambda: self._update_counter(edit, label))
        return edit, label

    def _layout(self) -> None:
        def row(*widgets: QWidget) -> QHBoxLayout:
            box = QHBoxLayout()
            box.setContentsMargins(0, 0, 0, 0)
            for widget in widgets:
                box.addWidget(widget)
            return box

        main = QVBoxLayout(self)
        main.addWidget(self.mode_label)
        main.addWidget(QLabel("Prompt"))
        main.addWidget(self.prompt_edit, 2)
        main.addWidget(self.prompt_tokens)
        main.addWidget(QLabel("Negative prompt"))
        main.addWidget(self.negative_edit, 1)
        main.addWidget(self.negative_tokens)

        form = QFormLayout()
        form.addRow("Model", self.model_combo)
        form.addRow("", self.browse_button)
        form.addRow("Preset", self.preset_combo)
        for key, title in BASIC.items():
            form.addRow(title, self.spins[key])
        form.addRow(
            "", QLabel(STRENGTH_HINT, objectName="strength_hint", enabled=False, wordWrap=True)
        )
        form.addRow("Seed", self.seed_edit)
        form.addRow("", row(self.random_check, self.reuse_button))
        form.addRow("Sampler", self.scheduler_combo)
        form.addRow("Batch count", self.spins["batch_count"])
        main.addLayout(form)

        self.advanced_button = QToolButton(objectName="advanced_button", text="Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_button.toggled.connect(self.set_advanced_open)
        self.advanced_frame = QWidget(objectName="advanced_frame")
        advanced = QFormLayout(self.advanced_frame)
        advanced.setContentsMargins(12, 0, 0, 0)
        for key, title in ADVANCED.items():
            advanced.addRow(title, self.spins[key])
        self.advanced_frame.setVisible(False)
        main.addWidget(self.advanced_button)
        main.addWidget(self.advanced_frame)
        main.addWidget(self.control)
        main.addLayout(row(self.generate_button, self.cancel_button, self.remove_button))
        main.addLayout(row(self.live_button, QLabel("Live strength"), self.live_strength))

    def _connect_changed(self) -> None:
        emit = self.changed.emit
        for text_changed in (self.prompt_edit.textChanged, self.negative_edit.textChanged):
            text_changed.connect(emit)
        for signal in (
            self.model_combo.currentTextChanged,
            self.scheduler_combo.currentIndexChanged,
            self.preset_combo.currentIndexChanged,
            self.seed_edit.textChanged,
            self.random_check.toggled,
            *(self.spins[key].valueChanged for key in CHANGES_WITH),
        ):
            signal.connect(lambda _value: emit())
        self.control.changed.connect(emit)

    # behaviour ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """List the installed ControlNets again (the models folder or its contents changed)."""
        self.control.refresh()

    def set_live(self, on: bool) -> None:
        """Show live mode on or off without emitting ``live_toggled``."""
        self.live_button.blockSignals(True)
        self.live_button.setChecked(on)
        self.live_button.blockSignals(False)

    def preset(self) -> SamplerPreset | None:
        """The sampler preset chosen; None for Custom."""
        return self.preset_combo.preset()

    def _use_preset(self) -> None:
        """A preset was chosen: show its sampler, steps (enough for the strength) and guidance."""
        preset = self.preset()
        if preset is None:
            return
        changes = apply_preset(self.settings(), preset)
        changes.pop("loras", None)  # not a field: settings() passes the chosen preset's
        if preset.model is not None and not is_model_for(preset, self.model_combo.currentText()):
            changes["model"] = preset.model  # a Turbo preset is its model
        self._applying_preset = True
        try:
            self.apply(changes)
        finally:
            self._applying_preset = False

    def _set_by_hand(self) -> None:
        if not self._applying_preset:
            self.preset_combo.set_custom()

    def _follow_strength(self) -> None:
        """A lower strength runs fewer of the steps: keep at least one with a preset."""
        preset = self.preset()
        if preset is not None:
            steps = steps_for_strength(preset.steps, self.spins["strength"].value())
            self._applying_preset = True
            try:
                self.spins["steps"].setValue(steps)
            finally:
                self._applying_preset = False

    def _update_counter(self, edit: QPlainTextEdit, label: QLabel) -> None:
        count = self._count_tokens(edit.toPlainText())
        text = f"{count} / {CLIP_WINDOW} tokens"
        over = count > CLIP_WINDOW
        if over:
            text += f" — {chunks(count)} chunks of {CLIP_WINDOW}, each encoded on its own"
        label.setText(text)
        label.setProperty("warning", over)
        label.setStyleSheet(WARNING_STYLE if over else "")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder")
        if folder:
            self.add_recent_model(folder)
            self.model_combo.setCurrentText(folder)

    def _set_recent(self, models: list[str]) -> None:
        text = self.model_combo.currentText()
        self._recent = list(dict.fromkeys(m.strip() for m in models if m.strip()))[:MAX_RECENT]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(
            self._recent + [m for m in DEFAULT_MODELS if m not in self._recent]
        )
        self.model_combo.setCurrentText(text)
        self.model_combo.blockSignals(False)

    def add_recent_model(self, reference: str) -> None:
        """Put ``reference`` first in the model list (at most 10 are kept)."""
        self._set_recent([reference, *self._recent])

    def recent_models(self) -> list[str]:
        return list(self._recent)

    def set_advanced_open(self, open_: bool) -> None:
        self.advanced_button.setChecked(open_)
        arrow = Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow
        self.advanced_button.setArrowType(arrow)
        self.advanced_frame.setVisible(open_)

    def set_last_seed(self, seed: int | None) -> None:
        """The controller reports the seed a run used; "Reuse last" puts it back."""
        self._last_seed = seed
        self.reuse_button.setEnabled(seed is not None)
        self.reuse_button.setToolTip("No run yet" if seed is None else f"Use seed {seed} again")

    def reuse_last_seed(self) -> None:
        if self._last_seed is not None:
            self.apply({"seed": self._last_seed})

    def set_running(self, running: bool) -> None:
        self.generate_button.setEnabled(not running)
        self.remove_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def set_mode_text(self, text: str) -> None:
        self.mode_label.setText(text)

    @staticmethod
    def _snap(value: int) -> int:
        return min(2048, max(64, round(value / 8) * 8))

    def seed(self) -> int | None:
        """The chosen seed; None when Random is on or the field is empty."""
        text = self.seed_edit.text().strip()
        if self.random_check.isChecked() or not (text.isascii() and text.isdigit()):
            return None
        return min(int(text), MAX_SEED)
