"""The Slick Mapper page in Settings › Options, generated from the declarations in ``settings.py``.

``make_editor`` / ``editor_value`` are also how the dock builds its run parameter fields, so a setting's
range and type are written down once.
"""

from __future__ import annotations

from typing import Dict

from qgis.core import QgsSettings
from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox, QWidget

from . import settings
from .paths import icon_path
from .settings import Setting, Value


def make_editor(setting: Setting) -> QWidget:
    """A widget for ``setting`` showing its stored value, with its description as tooltip."""
    editor: QWidget
    if setting.kind in ("file", "folder"):
        editor = QgsFileWidget()
        if setting.kind == "folder":
            editor.setStorageMode(QgsFileWidget.GetDirectory)
        editor.lineEdit().setShowClearButton(True)
    elif setting.kind == "choice":
        editor = QComboBox()
        editor.addItems(setting.choices)
    elif setting.kind == "int":
        editor = QSpinBox()
        editor.setRange(int(setting.minimum), int(setting.maximum))
        editor.setSingleStep(int(setting.step))
    elif setting.kind == "float":
        editor = QDoubleSpinBox()
        editor.setDecimals(2)
        editor.setRange(setting.minimum, setting.maximum)
        editor.setSingleStep(setting.step)
    elif setting.kind == "bool":
        editor = QCheckBox()
    else:
        raise ValueError(f"Setting {setting.name} has unknown kind {setting.kind!r}")
    if setting.special:
        editor.setSpecialValueText(setting.special)
    editor.setToolTip(setting.description)
    set_editor_value(editor, setting.value())
    return editor


def set_editor_value(editor: QWidget, value: Value) -> None:
    if isinstance(editor, QgsFileWidget):
        editor.setFilePath(str(value))
    elif isinstance(editor, QComboBox):
        editor.setCurrentText(str(value))
    elif isinstance(editor, QCheckBox):
        editor.setChecked(bool(value))
    else:
        editor.setValue(value)


def editor_value(editor: QWidget) -> Value:
    if isinstance(editor, QgsFileWidget):
        return editor.filePath()
    if isinstance(editor, QComboBox):
        return editor.currentText()
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    return editor.value()


class SlickMapperOptionsPage(QgsOptionsPageWidget):
    """One row per declared setting; ``apply`` (the dialog's OK) stores them all."""

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(parent)
        layout = QFormLayout(self)
        self.editors: Dict[str, QWidget] = {}
        for setting in settings.ALL:
            self.editors[setting.name] = make_editor(setting)
            layout.addRow(setting.label, self.editors[setting.name])
        note = QLabel(f"Stored in the QGIS settings under {settings.GROUP}/. "
                      "Hover over a field for what it does.")
        note.setWordWrap(True)
        layout.addRow(note)

    def apply(self) -> None:
        for setting in settings.ALL:
            setting.set_value(editor_value(self.editors[setting.name]))
        QgsSettings().sync()


class SlickMapperOptionsFactory(QgsOptionsWidgetFactory):
    """Registered with ``iface.registerOptionsWidgetFactory`` by the plugin."""

    def __init__(self) -> None:
        super().__init__("Slick Mapper", QIcon(icon_path()))

    def createWidget(self, parent: QWidget = None) -> QgsOptionsPageWidget:
        return SlickMapperOptionsPage(parent)
