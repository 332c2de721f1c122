"""A real offscreen QgsApplication, a minimal iface, and the plugin loaded into it.

Settings go to a temporary QGIS profile so tests never touch the analyst's own configuration.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTEST_QT_API", "pyqt5")

import pytest  # noqa: E402
from qgis.core import (QgsApplication, QgsCoordinateReferenceSystem, QgsMapRendererSequentialJob,  # noqa: E402
                       QgsMapSettings, QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings)
from qgis.gui import QgsMapCanvas, QgsMessageBar  # noqa: E402
from qgis.PyQt.QtCore import QCoreApplication, QObject, QSettings, QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor, QImage  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow  # noqa: E402
from pytestqt.qtbot import QtBot  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, "/usr/share/qgis/python/plugins")

from slick_plugin.engine_runner import EngineCommand, EngineRunner  # noqa: E402
from slick_plugin.paths import default_engine_python, engine_root  # noqa: E402
from slick_plugin.settings import GROUP  # noqa: E402

if TYPE_CHECKING:
    from slick_plugin.dock import SlickMapperDock

SAMPLE = REPO / "resources" / "samples" / "arctic_s1" / "sample_1"
OUTPUT = REPO / "test_output"
"""PNGs for a person to look at (gitignored)."""


@pytest.fixture(scope="session", autouse=True)
def qgis_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QgsApplication]:
    profile = tmp_path_factory.mktemp("qgis-profile")
    for settings_format in (QSettings.NativeFormat, QSettings.IniFormat):
        QSettings.setPath(settings_format, QSettings.UserScope, str(profile))
    QCoreApplication.setOrganizationName("SlickMapperTests")
    app = QgsApplication([], False, str(profile))
    app.setPrefixPath("/usr", True)
    app.initQgis()
    OUTPUT.mkdir(exist_ok=True)  # the windows and maps tests save for a person to look at
    yield app
    QgsProject.instance().clear()


@pytest.fixture(scope="module", autouse=True)
def fresh_settings(qgis_app: QgsApplication) -> None:
    """Every module starts from a profile without Slick Mapper settings, as after a fresh install: the dock stores its
    editors' values on each run, and with modules spread over two test processes in any order, one module's output
    folder once sent another's detection elsewhere."""
    QgsSettings().remove(GROUP)


@pytest.fixture(scope="session")
def processing(qgis_app: QgsApplication) -> None:
    from processing.core.Processing import Processing

    Processing.initialize()


class FakeIface(QObject):
    """The part of QgisInterface a plugin uses, backed by real QGIS widgets; records what was added."""

    def __init__(self) -> None:
        super().__init__()
        self.window = QMainWindow()
        self.window.resize(1200, 800)
        self.window.show()
        self.canvas = QgsMapCanvas(self.window)
        self.window.setCentralWidget(self.canvas)
        self.bar = QgsMessageBar(self.window)
        self.toolbar_actions: List[object] = []
        self.menu_actions: List[object] = []
        self.docks: List[object] = []
        self.options_factories: List[object] = []

    def mainWindow(self) -> QMainWindow:  # noqa: N802 - QgisInterface's names
        return self.window

    def mapCanvas(self) -> QgsMapCanvas:  # noqa: N802
        return self.canvas

    def messageBar(self) -> QgsMessageBar:  # noqa: N802
        return self.bar

    def activeLayer(self):  # noqa: N802
        return self.canvas.currentLayer()

    def addDockWidget(self, area, dock) -> None:  # noqa: N802
        self.window.addDockWidget(area, dock)
        self.docks.append(dock)

    def removeDockWidget(self, dock) -> None:  # noqa: N802
        self.window.removeDockWidget(dock)
        self.docks.remove(dock)

    def addToolBarIcon(self, action) -> None:  # noqa: N802
        self.toolbar_actions.append(action)

    def removeToolBarIcon(self, action) -> None:  # noqa: N802
        self.toolbar_actions.remove(action)

    def addPluginToMenu(self, menu: str, action) -> None:  # noqa: N802
        self.menu_actions.append((menu, action))

    def removePluginMenu(self, menu: str, action) -> None:  # noqa: N802
        self.menu_actions.remove((menu, action))

    def registerOptionsWidgetFactory(self, factory) -> None:  # noqa: N802
        self.options_factories.append(factory)

    def unregisterOptionsWidgetFactory(self, factory) -> None:  # noqa: N802
        self.options_factories.remove(factory)

    def messages(self) -> List[str]:
        """Every message bar text so far, as "title: text"."""
        return [f"{item.title()}: {item.text()}" for item in self.bar.items()]


def close_iface(fake: FakeIface) -> None:
    fake.bar.clearWidgets()
    QgsProject.instance().clear()
    fake.window.close()
    fake.window.deleteLater()


@pytest.fixture(scope="module")
def module_qtbot(request: pytest.FixtureRequest) -> QtBot:
    """pytest-qt's qtbot for module fixtures and what they share with tests (its own fixture serves one test)."""
    return QtBot(request)


@contextmanager
def opened_dock(iface: FakeIface, bot: QtBot) -> Iterator["SlickMapperDock"]:
    """A module's dock: the plugin loaded into ``iface`` in an empty project, its dock opened once the model
    list has arrived; unloaded, and ``iface`` closed, afterwards."""
    from slick_plugin import classFactory

    QgsProject.instance().clear()
    plugin = classFactory(iface)
    plugin.initGui()
    plugin.action.trigger()
    bot.waitUntil(lambda: not plugin.dock._tasks, timeout=120_000)
    try:
        yield plugin.dock
    finally:
        plugin.unload()
        close_iface(iface)


def engine(command: str, *args: str) -> Dict[str, object]:
    """Run an engine command the way the plugin's worker does; its result data."""
    result = EngineRunner(default_engine_python(), engine_root()).run(EngineCommand(command, args))
    assert result.ok, result.message
    return result.data


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A folder for one test module holding the real Arctic tile as sample_1.tif (results go next to it)."""
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    shutil.copy(SAMPLE / "raw_mosaic.tif", folder / "sample_1.tif")
    return folder


def _has_bundled_model() -> bool:
    from slick_plugin import settings

    root = settings.engine_root()
    return root is not None and any((root / "resources" / "models").glob("*.safetensors"))


needs_model = pytest.mark.skipif(
    not _has_bundled_model(),
    reason="The engine's bundled model (resources/models/*.safetensors) is not in this checkout yet; "
           "detection through the real engine cannot run without it.")


@pytest.fixture
def iface(qgis_app: QgsApplication) -> Iterator[FakeIface]:
    QgsProject.instance().clear()
    fake = FakeIface()
    yield fake
    close_iface(fake)


@pytest.fixture
def plugin(iface: FakeIface):
    from slick_plugin import classFactory

    loaded = classFactory(iface)
    loaded.initGui()
    yield loaded
    loaded.unload()


@pytest.fixture
def dock(plugin, qtbot):
    """The dock, opened the way an analyst opens it, once its model list has arrived."""
    plugin.action.trigger()
    qtbot.waitUntil(lambda: not plugin.dock._tasks, timeout=60_000)
    return plugin.dock


def add_scene(folder: Path, iface: FakeIface) -> QgsRasterLayer:
    """The real Arctic tile, copied into ``folder`` (results go next to it), loaded, shown and active."""
    path = folder / "sample_1.tif"
    shutil.copy(SAMPLE / "raw_mosaic.tif", path)
    return load_scene(path, iface)


def load_scene(path: Path, iface: FakeIface) -> QgsRasterLayer:
    """A raster loaded, shown and made the active layer, the map zoomed to it."""
    layer = QgsRasterLayer(str(path), path.stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    iface.canvas.setDestinationCrs(layer.crs())
    iface.canvas.setLayers([layer])
    iface.canvas.setExtent(layer.extent())
    iface.canvas.setCurrentLayer(layer)
    return layer


@pytest.fixture
def scene(tmp_path: Path, iface: FakeIface) -> QgsRasterLayer:
    return add_scene(tmp_path, iface)


def render(layers: list, extent: QgsRectangle, crs: QgsCoordinateReferenceSystem, size: QSize,
           background: QColor) -> QImage:
    """``layers`` drawn by QGIS's own renderer, as the map canvas would draw them."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setExtent(extent)
    settings.setOutputSize(size)
    settings.setBackgroundColor(background)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()
