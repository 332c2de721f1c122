"""The plugin object QGIS loads: adds the toolbar button, menu entry, dock, options page and provider.

``unload`` removes each of them again, so reloading the plugin leaves nothing behind.
"""

from __future__ import annotations

from typing import Any, Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import settings
from .dock import TITLE, SlickMapperDock
from .options_page import SlickMapperOptionsFactory
from .paths import icon_path
from .processing_provider import SlickMapperProvider

MENU = "&Slick Mapper"


class SlickMapperPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.action: Optional[QAction] = None
        self.dock: Optional[SlickMapperDock] = None
        self.provider: Optional[SlickMapperProvider] = None
        self.options_factory: Optional[SlickMapperOptionsFactory] = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS calls this name for Processing-only loads
        self.provider = SlickMapperProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS plugin API
        settings.migrate()
        self.initProcessing()
        self.action = QAction(QIcon(icon_path()), TITLE, self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.setToolTip("Slick Mapper: detect oil slicks in Sentinel-1 SAR")
        self.action.toggled.connect(self._toggle_dock)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(MENU, self.action)
        self.options_factory = SlickMapperOptionsFactory()
        self.iface.registerOptionsWidgetFactory(self.options_factory)

    def _toggle_dock(self, visible: bool) -> None:
        """Build the dock on first use, so QGIS starts no engine process until the analyst asks."""
        if self.dock is None:
            self.dock = SlickMapperDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.setToggleVisibilityAction(self.action)  # from now on the dock follows the action
            self.action.toggled.disconnect(self._toggle_dock)
        self.dock.setUserVisible(visible)

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            self.iface.removePluginMenu(MENU, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.options_factory is not None:
            self.iface.unregisterOptionsWidgetFactory(self.options_factory)
            self.options_factory = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
