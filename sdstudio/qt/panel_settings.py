"""The Generate panel's values: its fields' defaults, reading them back (``settings()``), showing
given ones (``apply()``, which never raises), and remembering them across runs
(``save_state``/``restore_state``; unusable stored values fall back to the defaults).

``PanelState`` is mixed into ``GenerationPanel``, which provides the widgets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from PySide6.QtCore import QSettings
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QDoubleSpinBox, QPlainTextEdit

from sdstudio.core.errors import RequestError
from sdstudio.core.presets import CUSTOM
from sdstudio.core.request import MAX_SEED, Scheduler
from sdstudio.core.tokens import CLIP_WINDOW
from sdstudio.engine.models.resolve import DEFAULT_INPAINT_MODEL, DEFAULT_MODEL

PREFIX = "generation/"
CONTROL_PREFIX = PREFIX + "control/"
MAX_RECENT = 10
DEFAULT_MODELS = (DEFAULT_INPAINT_MODEL, DEFAULT_MODEL)
STRENGTH_HINT = "for inpainting models 1.0 is usual"
LIVE_STRENGTH_TIP = (
    "How much each live frame may change the picture: low keeps it, high follows the sketch "
    "and prompt more freely"
)
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
    "live_strength": (0.05, 1.0, 0.05, 0.5, "", LIVE_STRENGTH_TIP),
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


def _set_text(edit: QPlainTextEdit, value: object) -> None:
    """Show ``value`` (the same text again changes nothing, so ``changed`` stays quiet)."""
    if _as_text(value) != edit.toPlainText():
        edit.setPlainText(value)


class SeedValidator(QValidator):
    """Digits only, 0 .. 2**32-1 (QIntValidator and QSpinBox stop at 2**31-1)."""

    def validate(self, text: str, pos: int) -> QValidator.State:
        if not text:
            return QValidator.State.Intermediate
        if text.isascii() and text.isdigit() and int(text) <= MAX_SEED:
            return QValidator.State.Acceptable
        return QValidator.State.Invalid


class PanelState:
    """Settings, their setters and persistence, over ``GenerationPanel``'s widgets."""

    def settings(self) -> dict:
        values = {
            "prompt": self.prompt_edit.toPlainText(),
            "negative_prompt": self.negative_edit.toPlainText(),
            "model": self.model_combo.currentText().strip(),
            "seed": self.seed(),
            "scheduler": Scheduler(self.scheduler_combo.currentData()),
            "loras": preset.loras if (preset := self.preset()) is not None else (),
            "control": self.control.value(),
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
            "prompt": lambda v: _set_text(self.prompt_edit, v),
            "negative_prompt": lambda v: _set_text(self.negative_edit, v),
            "model": set_model,
            "seed": set_seed,
            "scheduler": set_scheduler,
            "control": self.control.set_value,
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
        self.control.reset()

    # persistence -------------------------------------------------------------------------------
    def save_state(self, qsettings: QSettings) -> None:
        values = self.settings()
        values["scheduler"] = values["scheduler"].value
        del values["loras"]  # the preset's: the preset's name is what is kept
        del values["control"]  # a group of its own, below
        values["preset"] = self.preset_combo.currentText()
        values["seed"] = self.seed_edit.text()  # kept even while Random is on
        values["random_seed"] = self.random_check.isChecked()
        values["last_seed"] = "" if self._last_seed is None else str(self._last_seed)
        values["recent_models"] = self._recent
        values["advanced_open"] = self.advanced_button.isChecked()
        for key, value in values.items():
            qsettings.setValue(PREFIX + key, value)
        self.control.save_state(qsettings, CONTROL_PREFIX)

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
        self.control.restore_state(qsettings, CONTROL_PREFIX)
