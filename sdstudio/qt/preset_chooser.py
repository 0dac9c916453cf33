"""The Generate panel's sampler-preset chooser: "Custom" and the few-step presets that fit the
chosen model (its family read from small files, offline; unknown: all, named with their family).

It only lists and remembers; the panel puts a chosen preset's settings in its fields and passes
the preset's LoRA with the request.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QWidget

from sdstudio.core.presets import CUSTOM, SamplerPreset, presets_for
from sdstudio.core.request import ModelFamily

TIP = (
    "Few-step sampling for fast (live) generation: the sampler, steps and guidance a distilled "
    "model or LoRA is made for. A preset's LoRA is switched on by itself (download it in "
    "Models > Model library). Changing those settings by hand returns to Custom."
)


class PresetChooser(QComboBox):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="preset_combo", toolTip=TIP)
        self._presets: list[SamplerPreset] = []
        self._families: dict[str, ModelFamily | None] = {}
        self.model = ""
        self.family: ModelFamily | None = None
        self._fill()

    def preset(self) -> SamplerPreset | None:
        """The chosen preset; None for Custom."""
        index = self.currentIndex()
        return self._presets[index - 1] if index > 0 else None

    def names(self) -> list[str]:
        return [self.itemText(i) for i in range(self.count())]

    def choose(self, name: str) -> SamplerPreset | None:
        """Show the preset called ``name`` (Custom when there is none); the one shown."""
        index = self.findText(name)
        self.setCurrentIndex(max(index, 0))
        return self.preset()

    def set_custom(self) -> None:
        """Back to Custom without telling anyone (the person changed a setting by hand)."""
        self.blockSignals(True)
        self.setCurrentIndex(0)
        self.blockSignals(False)

    def set_model(self, reference: str) -> None:
        """List the presets for ``reference``'s family; the chosen one stays if it still fits,
        else the chooser goes back to Custom (and says so through its signal)."""
        reference = reference.strip()
        if reference == self.model and self.count():
            return
        if reference not in self._families:
            from sdstudio.engine.models.library import guess_family

            self._families[reference] = guess_family(reference)
        self.model, self.family = reference, self._families[reference]
        self._fill()

    def _fill(self) -> None:
        current = self.preset()
        self._presets = presets_for(self.family, self.model)
        with_family = self.family is None
        self.blockSignals(True)
        self.clear()
        self.addItem(CUSTOM)
        for preset in self._presets:
            self.addItem(preset.label(with_family))
            self.setItemData(
                self.count() - 1,
                f"{preset.source}. Licence: {preset.licence}",
                Qt.ItemDataRole.ToolTipRole,
            )
        index = self._presets.index(current) + 1 if current in self._presets else 0
        self.setCurrentIndex(index)
        self.blockSignals(False)
        if current is not None and index == 0:
            self.currentIndexChanged.emit(0)
