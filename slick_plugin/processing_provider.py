"""The "Slick Mapper" Processing provider: detection, scene info, archives of scenes and seep sites."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms.archive import DetectManyScenesAlgorithm, SeepSitesAlgorithm
from .algorithms.detect import DetectSlicksAlgorithm
from .algorithms.scene_info import SceneInfoAlgorithm
from .paths import icon_path

PROVIDER_ID = "slickmapper"


class SlickMapperProvider(QgsProcessingProvider):
    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "Slick Mapper"

    def icon(self) -> QIcon:
        return QIcon(icon_path())

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(DetectSlicksAlgorithm())
        self.addAlgorithm(SceneInfoAlgorithm())
        self.addAlgorithm(DetectManyScenesAlgorithm())
        self.addAlgorithm(SeepSitesAlgorithm())
