"""Processing algorithm "Scene info": what the engine detects about a scene and what detection will do."""

from __future__ import annotations

import json
from typing import Any, Dict

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingFeedback, QgsProcessingOutputNumber, QgsProcessingOutputString,
                       QgsProcessingParameterRasterLayer)

from ..commands import info_command
from ..scene_check import scene_path
from .engine_call import run_engine


class SceneInfoAlgorithm(QgsProcessingAlgorithm):
    """Runs the engine's ``info``: CRS, pixel size, band and polarisation, value scale and warnings."""

    INPUT = "INPUT"
    STRING_OUTPUTS = {"CRS": "crs", "UTM_CRS": "utm_crs", "POLARISATION": "polarisation",
                      "VALUE_SCALE": "value_scale", "PLAN": "plan"}
    NUMBER_OUTPUTS = {"WIDTH": "width", "HEIGHT": "height", "BAND": "band", "PIXEL_SIZE": "pixel_size",
                      "VALID_FRACTION": "valid_fraction"}
    WARNINGS = "WARNINGS"
    JSON = "JSON"

    def name(self) -> str:
        return "sceneinfo"

    def displayName(self) -> str:
        return "Scene info"

    def shortHelpString(self) -> str:
        return ("Reports what Slick Mapper's engine finds in a SAR scene (CRS or ground control points, pixel size, "
                "band and polarisation, value scale, valid fraction) and what detection will do with it. "
                "Fails with the reason when the scene cannot be used.")

    def createInstance(self) -> "SceneInfoAlgorithm":
        return SceneInfoAlgorithm()

    def initAlgorithm(self, config: Dict[str, Any] = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "SAR scene"))
        for name, key in self.STRING_OUTPUTS.items():
            self.addOutput(QgsProcessingOutputString(name, key.replace("_", " ")))
        for name, key in self.NUMBER_OUTPUTS.items():
            self.addOutput(QgsProcessingOutputNumber(name, key.replace("_", " ")))
        self.addOutput(QgsProcessingOutputString(self.WARNINGS, "warnings (one per line)"))
        self.addOutput(QgsProcessingOutputString(self.JSON, "everything, as JSON"))

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        path = scene_path(layer) if layer is not None else ""
        if not path:
            raise QgsProcessingException("The SAR scene must be a raster file (GeoTIFF, COG or VRT).")
        data = run_engine(info_command(path), feedback)
        for line in data.get("warnings") or ():
            feedback.reportError(str(line), fatalError=False)
        if data.get("plan"):
            feedback.pushInfo(str(data["plan"]))
        results: Dict[str, Any] = {name: data.get(key) for name, key in self.STRING_OUTPUTS.items()}
        results.update({name: data.get(key) for name, key in self.NUMBER_OUTPUTS.items()})
        results[self.WARNINGS] = "\n".join(str(line) for line in data.get("warnings") or ())
        results[self.JSON] = json.dumps(data)
        return results
