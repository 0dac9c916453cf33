"""The Generate panel's Control section: steer a generation with a ControlNet.

A checkable "Control" group (off by default): which ControlNet (those installed in the models
folder, listed from small files only, plus any chosen with Browse, remembered like the recent
models), what it is given (the Sketch layer, or the picture), how strongly and during which part of
the steps. ControlNets made for another family than the chosen model are listed but marked; the
engine refuses such a run in one line anyway. The section only gathers, shows and remembers;
the session builds the control image from the document.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QMenu,
    QPushButton,
    QWidget,
)

from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import MAX_CONTROL_STRENGTH, ControlKind, ModelFamily

log = logging.getLogger(__name__)

MAX_RECENT = 10
NONE_TEXT = "None chosen"
FAMILY_WORDS = {ModelFamily.SD1: "SD 1.x", ModelFamily.SDXL: "SDXL"}
GROUP_TIP = (
    "Steer the generation with a ControlNet: the sketch (or the picture) fixes the layout while "
    "the prompt fills it in."
)
COMBO_TIP = (
    "The ControlNet to steer with: those in the models folder's controlnet folder (download them "
    "in Models > Model library), or one chosen with Browse. Marked ones are for another model "
    "family than the chosen model."
)
# kind: (label, tooltip); the order is the menu's
KINDS: dict[ControlKind, tuple[str, str]] = {
    ControlKind.SCRIBBLE: (
        "Scribble",
        "Your sketch as drawn: the Sketch layer's strokes (white on black) set the layout. "
        "For a scribble ControlNet.",
    ),
    ControlKind.CANNY: (
        "Canny edges",
        "The edges of the picture as shown (found with OpenCV's Canny) keep its outlines. "
        "For a canny ControlNet.",
    ),
    ControlKind.LINEART: (
        "Line art",
        "Your sketch as line art (white lines on black). For a line-art ControlNet.",
    ),
    ControlKind.TILE: (
        "Tile",
        "The picture itself as shown: keeps its layout and colours while details change. "
        "For a tile/blur ControlNet.",
    ),
    ControlKind.INPAINT: (
        "Inpaint",
        "The picture with the erased area marked, for an inpaint ControlNet: it fills the area "
        "in keeping with the rest, with any model of its family. Inpaint mode only (erase first).",
    ),
}
SKETCH_KINDS = frozenset({ControlKind.SCRIBBLE, ControlKind.LINEART})
# key: (minimum, maximum, step, default, tooltip)
NUMBERS: dict[str, tuple[float, float, float, float, str]] = {
    "strength": (
        0.0,
        MAX_CONTROL_STRENGTH,
        0.05,
        1.0,
        "How strongly the control steers: 0 not at all, 1 the usual, up to 2",
    ),
    "start": (0.0, 1.0, 0.05, 0.0, "Fraction of the steps after which the control starts"),
    "end": (
        0.0,
        1.0,
        0.05,
        1.0,
        "Fraction of the steps after which the control stops (earlier: freer details)",
    ),
}
DEFAULT_VALUE: dict[str, object] = {
    "reference": "",
    "kind": ControlKind.SCRIBBLE,
    **{key: spec[3] for key, spec in NUMBERS.items()},
}

Scan = Callable[[Path], Sequence[Any]]
"""models folder -> ControlNet entries (reference, name, family, source, size_bytes, problem)."""


def scan_installed(models: Path) -> list[Any]:
    """The ControlNets in the models folder and the hub cache (``engine.models.controlnets``,
    imported when first needed); none when the folder cannot be read."""
    from sdstudio.engine.models.controlnets import scan_controlnets

    try:
        return list(scan_controlnets(models))
    except (OSError, SDStudioError):
        log.exception("listing the ControlNets in %s failed", models)
        return []


def _number(value: object) -> float:
    """A float from a widget value or an ini string; ValueError if not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _kind(value: object) -> ControlKind:
    if isinstance(value, ControlKind):
        return value
    if isinstance(value, str):
        return ControlKind(value.strip().lower())  # ValueError if unknown
    raise ValueError(value)


def _name(reference: str) -> str:
    return reference.rstrip("/\\").replace("\\", "/").split("/")[-1] or reference


class ControlNetCombo(QComboBox):
    """A combo that asks for a fresh list just before its popup opens."""

    about_to_show = Signal()

    def showPopup(self) -> None:  # noqa: N802 - Qt's name
        self.about_to_show.emit()
        super().showPopup()


class ControlSection(QGroupBox):
    changed = Signal()
    """Any control setting changed, switching it on or off included."""

    def __init__(
        self,
        models_folder: Callable[[], Path] | None = None,
        scan: Scan = scan_installed,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Control", parent, objectName="control_group", toolTip=GROUP_TIP)
        self.setCheckable(True)
        self.setChecked(False)
        self._models_folder, self._scan = models_folder, scan
        self._entries: list[Any] = []
        self._recent: list[str] = []
        self.family: ModelFamily | None = None
        """The chosen model's family, when known: ControlNets of another family are marked."""

        self.combo = ControlNetCombo(objectName="controlnet_combo", toolTip=COMBO_TIP)
        self.combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.combo.setMinimumContentsLength(8)  # the label beside it must not be clipped
        self.combo.about_to_show.connect(self.refresh)
        self.browse_button = QPushButton(
            "Browse…", objectName="controlnet_browse_button", toolTip="Choose a ControlNet"
        )
        menu = QMenu(self.browse_button)
        menu.addAction("A ControlNet folder…", self.browse_folder)
        menu.addAction("A .safetensors file…", self.browse_file)
        self.browse_button.setMenu(menu)
        self.kind_combo = QComboBox(objectName="control_kind_combo")
        for index, (kind, (label, tip)) in enumerate(KINDS.items()):
            self.kind_combo.addItem(label, kind.value)
            self.kind_combo.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
        self.kind_combo.currentIndexChanged.connect(self._show_kind_tip)
        self.spins: dict[str, QDoubleSpinBox] = {}
        for key, (lo, hi, step, default, tip) in NUMBERS.items():
            box = QDoubleSpinBox(decimals=2, objectName=f"control_{key}_spin", toolTip=tip)
            box.setRange(lo, hi)
            box.setSingleStep(step)
            box.setValue(default)
            box.valueChanged.connect(lambda _value: self.changed.emit())
            self.spins[key] = box

        form = QFormLayout(self)
        chooser = QHBoxLayout()
        chooser.setContentsMargins(0, 0, 0, 0)
        chooser.addWidget(self.combo, 1)
        chooser.addWidget(self.browse_button)
        form.addRow("ControlNet", chooser)
        form.addRow("Use", self.kind_combo)
        form.addRow("Strength", self.spins["strength"])
        form.addRow("Start", self.spins["start"])
        form.addRow("End", self.spins["end"])

        self._fill()
        self._show_kind_tip()
        self.toggled.connect(lambda _on: self.changed.emit())
        self.combo.currentIndexChanged.connect(lambda _index: self.changed.emit())
        self.kind_combo.currentIndexChanged.connect(lambda _index: self.changed.emit())

    # the list of ControlNets -------------------------------------------------------------------
    def refresh(self) -> None:
        """List the installed ControlNets again (cheap: configs and headers only)."""
        folder = self._models_folder() if self._models_folder is not None else None
        self._entries = list(self._scan(folder)) if folder is not None else []
        self._fill()

    def set_model_family(self, family: ModelFamily | None) -> None:
        """The chosen model's family (None: unknown); marks ControlNets made for another."""
        if family is not self.family:
            self.family = family
            self._fill()

    def entries(self) -> list[Any]:
        return list(self._entries)

    def recent(self) -> list[str]:
        return list(self._recent)

    def add_recent(self, reference: str) -> None:
        """Put ``reference`` first among the browsed ControlNets (at most 10 are kept)."""
        self._set_recent([reference, *self._recent])

    def _set_recent(self, references: Sequence[str]) -> None:
        unique = dict.fromkeys(r.strip() for r in references if r.strip())
        self._recent = list(unique)[:MAX_RECENT]
        self._fill()

    def _fill(self, current: str | None = None) -> None:
        """The combo's items: none, the installed ControlNets, the browsed ones; ``current``
        (default: the one shown now) stays chosen, listed even if it is no longer found."""
        current = self.reference() if current is None else current
        items: list[tuple[str, str, str, bool]] = [(NONE_TEXT, "", COMBO_TIP, True)]
        for entry in self._entries:
            items.append(self._item(entry))
        listed = {item[1] for item in items}
        for reference in [*self._recent, current]:
            if reference not in listed:
                items.append((_name(reference), reference, reference, True))
                listed.add(reference)
        self.combo.blockSignals(True)
        self.combo.clear()
        for index, (text, reference, tip, usable) in enumerate(items):
            self.combo.addItem(text, reference)
            self.combo.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
            if not usable:
                self.combo.model().item(index).setEnabled(False)
        self.combo.setCurrentIndex(max(0, self.combo.findData(current)))
        self.combo.blockSignals(False)

    def _item(self, entry: Any) -> tuple[str, str, str, bool]:
        text, tip = entry.name, f"{entry.reference} ({entry.source})"
        family = entry.family
        if entry.problem:
            return f"{text} (unusable)", entry.reference, f"{tip}: {entry.problem}", False
        if family is not None:
            tip += f", for {FAMILY_WORDS[family]} models"
            if self.family is not None and family is not self.family:
                text = f"⚠ {text} ({FAMILY_WORDS[family]}: not for this model)"
        return text, entry.reference, tip, True

    def browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a ControlNet folder")
        if folder:
            self.choose(folder)

    def browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a ControlNet file", "", "ControlNet (*.safetensors)"
        )
        if path:
            self.choose(path)

    def choose(self, reference: str) -> None:
        """Show ``reference`` as the ControlNet (remembered among the browsed ones)."""
        self.add_recent(reference)
        self.combo.setCurrentIndex(self.combo.findData(reference.strip()))

    def _show_kind_tip(self) -> None:
        self.kind_combo.setToolTip(KINDS[self.kind()][1])

    # values ------------------------------------------------------------------------------------
    def reference(self) -> str:
        """The chosen ControlNet's reference; "" when none is chosen."""
        data = self.combo.currentData()
        return data if isinstance(data, str) else ""

    def kind(self) -> ControlKind:
        return ControlKind(self.kind_combo.currentData())

    def value(self) -> dict[str, object] | None:
        """None when Control is off, else reference, kind, strength, start and end."""
        if not self.isChecked():
            return None
        return {
            "reference": self.reference(),
            "kind": self.kind(),
            **{key: box.value() for key, box in self.spins.items()},
        }

    def set_value(self, value: Mapping[str, object] | None) -> None:
        """Show ``value`` (None: Control off; a mapping with any of ``value()``'s keys: on).
        ValueError (nothing changed) when a field is unusable."""
        if value is None:
            self.setChecked(False)
            return
        if not isinstance(value, Mapping):
            raise ValueError(value)
        checked: dict[str, object] = {}
        for key, item in value.items():
            if key == "reference":
                if not isinstance(item, str):
                    raise ValueError(item)
                checked[key] = item.strip()
            elif key == "kind":
                checked[key] = _kind(item)
            elif key in NUMBERS:
                number = _number(item)
                if not NUMBERS[key][0] <= number <= NUMBERS[key][1]:
                    raise ValueError(item)
                checked[key] = number
            else:
                raise ValueError(key)
        if "reference" in checked:
            before = self.reference()
            self._fill(current=str(checked["reference"]))
            if self.reference() != before:  # the combo's signals were blocked while it filled
                self.changed.emit()
        if "kind" in checked:
            kind = checked["kind"]
            assert isinstance(kind, ControlKind)
            self.kind_combo.setCurrentIndex(self.kind_combo.findData(kind.value))
        for key, box in self.spins.items():
            if key in checked:
                box.setValue(float(checked[key]))  # type: ignore[arg-type]
        self.setChecked(True)

    def reset(self) -> None:
        """Off, with the default settings (the browsed ControlNets are kept)."""
        self.set_value(DEFAULT_VALUE)
        self.setChecked(False)

    # persistence -------------------------------------------------------------------------------
    def save_state(self, qsettings: QSettings, prefix: str) -> None:
        qsettings.setValue(prefix + "on", self.isChecked())
        qsettings.setValue(prefix + "reference", self.reference())
        qsettings.setValue(prefix + "kind", self.kind().value)
        for key, box in self.spins.items():
            qsettings.setValue(prefix + key, box.value())
        qsettings.setValue(prefix + "recent", self._recent)

    def restore_state(self, qsettings: QSettings, prefix: str) -> None:
        """Show what ``save_state`` stored; an unusable value leaves its field at the default."""

        def read(key: str) -> object:
            try:
                return qsettings.value(prefix + key)
            except Exception:  # a stored type PySide6 cannot convert
                return None

        self.reset()
        recent = read("recent")
        recent = [recent] if isinstance(recent, str) else recent  # ini: one item reads as a str
        if isinstance(recent, list) and all(isinstance(r, str) for r in recent):
            self._set_recent(recent)
        self.refresh()
        for key in DEFAULT_VALUE:
            value = read(key)
            if value is not None:
                with contextlib.suppress(ValueError, TypeError, OverflowError):
                    self.set_value({key: value})
        on = read("on")
        self.setChecked(on is True or (isinstance(on, str) and on.lower() == "true"))
