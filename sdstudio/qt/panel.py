"""The generation panel: prompt, model and sampling settings, and the Generate/Cancel/Remove buttons.

It only gathers settings (``settings()``), shows them (``apply()``), remembers them across runs
(``save_state``/``restore_state``) and emits what the person asked for. Which mode a run uses,
and building the request, belong to the controller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QValidator
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

from sdstudio.core.errors import RequestError
from sdstudio.core.presets import (
    CUSTOM,
    SamplerPreset,
    apply_preset,
    is_model_for,
    steps_for_strength,
)
from sdstudio.core.request import MAX_SEED, Scheduler
from sdstudio.core.tokens import CLIP_WINDOW, chunks, estimate_clip_tokens
from sdstudio.engine.models.resolve import DEFAULT_INPAINT_MODEL, DEFAULT_MODEL
from sdstudio.qt.preset_chooser import PresetChooser
from sdstudio.qt.tasks import run_in_background

PREFIX = "generation/"
MAX_RECENT = 10
DEFAULT_MODELS = (DEFAULT_INPAINT_MODEL, DEFAULT_MODEL)
STRENGTH_HINT = "for inpainting models 1.0 is usual"
# key: (minimum, maximum, step, default, suffix, tooltip); float bounds make a QDoubleSpinBox
NUMBERS: dict[str, tuple] = {
    "steps": (1, 150, 1, 20, "", "Denoising steps: more is slower and usually finer"),
    "guidance": (0.0, 30.0, 0.5, 7.0, "", "How closely to follow the prompt (CFG scale)"),
    "strength": (0.01, 1.0, 0.05, 0.75, "", f"0.3 keeps most, 1.0 replaces ({STRENGTH_HINT})"),
    "batch_count": (1, 16, 1, 1, "", "How many candidates to make, one after another"),
    "padding": (0, 512, 1, 32, " px", "Context around the mask that the model sees"),
    "mask_blur": (0, 64, 1, 4, " px", "Feathering of the mask edge when the result is blended"),
    "width": (64, 2048, 8, 512, " px", "Width of a new picture (text to image), a multiple of 8"),
    "height": (64, 2048, 8, 512, " px", "Height of a new picture (text to image), a multiple of 8"),
}
BASIC = {"steps": "Steps", "guidance": "Guidance", "strength": "Strength"}
ADVANCED = {"padding": "Padding", "mask_blur": "Mask blur", "width": "Width", "height": "Height"}
DEFAULTS: dict[str, object] = {
    "prompt": "",
    "negative_prompt": "",
    "model": DEFAULT_INPAINT_MODEL,
    "seed": None,
    "scheduler": Scheduler.EULER_A,
    **{key: spec[3] for key, spec in NUMBERS.items()},
}
TOKENS_TIP = (
    "Approximate: counted without CLIP's tokenizer; the real count can differ by a few tokens. "
    f"The text encoder reads {CLIP_WINDOW} tokens per window."
)
EXACT_TOKENS_TIP = (
    f"CLIP tokens (the same for SD 1.x and SDXL). The text encoder reads {CLIP_WINDOW} tokens per "
    "window; longer prompts are encoded in several windows."
)
REMOVE_TIP = "Remove what the mask covers, no model needed (Delete)"
WARNING_STYLE = "color: #c26a00; font-weight: bold;"


def _as_number(value: object, kind: type) -> float:
    """An int or float from a widget value or an ini string ("20", "7.5"); ValueError if not."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(value)
    number = float(value)
    if not math.isfinite(number) or (kind is int and not number.is_integer()):
        raise ValueError(value)
    return kind(number)


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # how an ini file hands a bool back
    raise ValueError(value)


def _as_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(value)
    return value


class _SeedValidator(QValidator):
    """Digits only, 0 .. 2**32-1 (QIntValidator and QSpinBox stop at 2**31-1)."""

    def validate(self, text: str, pos: int) -> QValidator.State:
        if not text:
            return QValidator.State.Intermediate
        if text.isascii() and text.isdigit() and int(text) <= MAX_SEED:
            return QValidator.State.Acceptable
        return QValidator.State.Invalid


def _exact_counter() -> Callable[[str], int]:
    from sdstudio.engine.diffusion.clip_tokens import clip_tokenizer, count_clip_tokens

    clip_tokenizer()  # the slow part: reading the vocabulary
    return count_clip_tokens


class GenerationPanel(QWidget):
    generate_requested = Signal()
    cancel_requested = Signal()
    remove_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
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
        self.seed_edit.setValidator(_SeedValidator(self.seed_edit))
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
        self.reset()  # also fills in the token counters
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
        main.addLayout(row(self.generate_button, self.cancel_button, self.remove_button))

    # behaviour ---------------------------------------------------------------------------------
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

    # settings ----------------------------------------------------------------------------------
    def settings(self) -> dict:
        values = {
            "prompt": self.prompt_edit.toPlainText(),
            "negative_prompt": self.negative_edit.toPlainText(),
            "model": self.model_combo.currentText().strip(),
            "seed": self.seed(),
            "scheduler": Scheduler(self.scheduler_combo.currentData()),
            "loras": preset.loras if (preset := self.preset()) is not None else (),
        }
        values |= {key: box.value() for key, box in self.spins.items()}
        for key in ("width", "height"):
            values[key] = self._snap(values[key])
        return values

    def _make_setters(self) -> dict[str, Callable[[object], None]]:
        def number(key: str) -> Callable[[object], None]:
            box = self.spins[key]
            kind = float if isinstance(box, QDoubleSpinBox) else int
            step = NUMBERS[key][2] if key in ("width", "height") else 1

            def set_(value: object) -> None:
                value = _as_number(value, kind)
                value = round(value / step) * step if step > 1 else value
                if not box.minimum() <= value <= box.maximum():
                    raise ValueError(value)
                box.setValue(value)

            return set_

        def set_model(value: object) -> None:
            if not _as_text(value).strip():
                raise ValueError(value)
            self.model_combo.setCurrentText(value.strip())

        def set_seed(value: object) -> None:
            if value is None:
                self.random_check.setChecked(True)
                return
            seed = _as_number(value, int)
            if not 0 <= seed <= MAX_SEED:
                raise ValueError(value)
            self.seed_edit.setText(str(seed))
            self.random_check.setChecked(False)

        def set_scheduler(value: object) -> None:
            member = value if isinstance(value, Scheduler) else Scheduler.parse(_as_text(value))
            self.scheduler_combo.setCurrentIndex(self.scheduler_combo.findData(member.value))

        def set_loras(value: object) -> None:
            """Only the chosen preset's LoRA lives here (others go in the prompt as tags): the
            same again is kept, none means Custom."""
            loras = tuple(tuple(pair) for pair in value) if isinstance(value, list | tuple) else ()
            preset = self.preset()
            if loras == (preset.loras if preset is not None else ()):
                return
            if loras or not isinstance(value, list | tuple):
                raise ValueError(value)
            self.preset_combo.set_custom()

        return {
            "loras": set_loras,
            "prompt": lambda v: self.prompt_edit.setPlainText(_as_text(v)),
            "negative_prompt": lambda v: self.negative_edit.setPlainText(_as_text(v)),
            "model": set_model,
            "seed": set_seed,
            "scheduler": set_scheduler,
            **{key: number(key) for key in NUMBERS},
        }

    def apply(self, values: Mapping[str, object]) -> list[str]:
        """Show the given settings (any subset of ``settings()``'s keys).

        Returns the keys that were unknown or whose value was unusable (wrong type, out of
        range, unknown sampler); those fields keep what they showed. Never raises.
        """
        skipped = []
        for key, value in values.items():
            try:
                self._setters[key](value)
            except (KeyError, ValueError, TypeError, OverflowError, RequestError):
                skipped.append(key)
        return skipped

    def reset(self) -> None:
        """Every field back to its default (the recent models and the last seed are kept)."""
        self.seed_edit.clear()
        self.apply(DEFAULTS)
        self.preset_combo.set_custom()

    # persistence -------------------------------------------------------------------------------
    def save_state(self, qsettings: QSettings) -> None:
        values = self.settings()
        values["scheduler"] = values["scheduler"].value
        del values["loras"]  # the preset's: the preset's name is what is kept
        values["preset"] = self.preset_combo.currentText()
        values["seed"] = self.seed_edit.text()  # kept even while Random is on
        values["random_seed"] = self.random_check.isChecked()
        values["last_seed"] = "" if self._last_seed is None else str(self._last_seed)
        values["recent_models"] = self._recent
        values["advanced_open"] = self.advanced_button.isChecked()
        for key, value in values.items():
            qsettings.setValue(PREFIX + key, value)

    def restore_state(self, qsettings: QSettings) -> None:
        """Show what ``save_state`` stored; missing or unusable values become defaults."""

        def read(key: str) -> object:
            try:
                return qsettings.value(PREFIX + key)
            except Exception:  # a stored type PySide6 cannot convert
                return None

        def read_bool(key: str, default: bool) -> bool:
            try:
                return _as_bool(read(key))
            except ValueError:
                return default

        self.reset()
        self.apply({key: value for key in DEFAULTS if (value := read(key)) is not None})
        preset = read("preset")
        self.preset_combo.set_model(self.model_combo.currentText())
        if isinstance(preset, str) and preset != CUSTOM:
            self.preset_combo.choose(preset)  # its settings again, if it fits the model
        self.random_check.setChecked(read_bool("random_seed", True))
        self.set_advanced_open(read_bool("advanced_open", False))
        recent = read("recent_models")
        recent = [recent] if isinstance(recent, str) else recent  # ini: one item reads as a str
        ok = isinstance(recent, list) and recent and all(isinstance(m, str) for m in recent)
        self._set_recent(recent if ok else list(DEFAULT_MODELS))
        try:
            last = _as_number(read("last_seed"), int)
        except (ValueError, OverflowError):
            last = None
        self.set_last_seed(last if last is not None and 0 <= last <= MAX_SEED else None)
