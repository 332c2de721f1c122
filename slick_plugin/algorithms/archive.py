"""Processing algorithms for archives: "Detect slicks in many scenes" (the engine's Dask batch) and
"Find seep sites" (the engine's seeps), with their layers on the temporal controller and styled.

Processing runs an algorithm started from its dialog as a background task, so QGIS stays usable while
a batch runs for hours; progress shows the scenes done, failed and left and the time left.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

from qgis.core import (QgsMapLayer, QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback, QgsProcessingLayerPostProcessorInterface,
                       QgsProcessingOutputFile, QgsProcessingOutputNumber, QgsProcessingOutputVectorLayer,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterFolderDestination, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterNumber, QgsProcessingParameterString)

from ..archive_layers import bind_to_time, show_sites
from ..engine_runner import EngineCommand
from .engine_call import handed_over, run_engine


class _OnTimeline(QgsProcessingLayerPostProcessorInterface):
    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,  # noqa: N802 - QGIS API
                         feedback: QgsProcessingFeedback) -> None:
        bind_to_time(layer)


class _SitesWithSlicks(QgsProcessingLayerPostProcessorInterface):
    """Styles the sites and brings their slicks in, timed and linked to the sites' selection."""

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,  # noqa: N802 - QGIS API
                         feedback: QgsProcessingFeedback) -> None:
        try:
            show_sites(layer, context.project())
        except ValueError as exc:
            feedback.reportError(str(exc))


class DetectManyScenesAlgorithm(QgsProcessingAlgorithm):
    SCENES = "SCENES"
    FOLDER = "FOLDER"
    MODEL = "MODEL"
    WORKERS = "WORKERS"
    SCHEDULER = "SCHEDULER"
    TILE = "TILE"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    SLICKS = "SLICKS"
    FOOTPRINTS = "FOOTPRINTS"
    MANIFEST = "MANIFEST"
    N_DETECTED = "N_DETECTED"
    N_FAILED = "N_FAILED"

    def name(self) -> str:
        return "batch"

    def displayName(self) -> str:
        return "Detect slicks in many scenes"

    def shortHelpString(self) -> str:
        return ("Detects slicks in every scene given (layers and/or a folder searched for GeoTIFFs and VRTs) as "
                "Dask tasks, on a local cluster or an existing one (scheduler address). The output folder keeps a "
                "manifest, so a rerun skips finished scenes and redoes failed or changed ones; a bad scene is "
                "recorded with its error and never stops the others. Loads the catalogue of all slicks (bound to "
                "the temporal controller by acquisition time) and the scenes' footprints.")

    def createInstance(self) -> "DetectManyScenesAlgorithm":
        return DetectManyScenesAlgorithm()

    def initAlgorithm(self, config: Dict[str, Any] = None) -> None:
        self.addParameter(QgsProcessingParameterMultipleLayers(self.SCENES, "Scenes", QgsProcessing.TypeRaster,
                                                               optional=True))
        self.addParameter(QgsProcessingParameterFile(self.FOLDER, "Folder of scenes", QgsProcessingParameterFile.Folder,
                                                     optional=True))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, "Model file (empty: the bundled default)",
                                                     optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.WORKERS, "Local workers (0: sized to this machine)",
                                                       QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterString(self.SCHEDULER, "Dask scheduler address (empty: this machine)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.TILE, "Tile size (0: the model's)",
                                                       QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Batch folder"))
        self.addOutput(QgsProcessingOutputVectorLayer(self.SLICKS, "Slick catalogue", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputVectorLayer(self.FOOTPRINTS, "Scene footprints", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputFile(self.MANIFEST, "Manifest"))
        self.addOutput(QgsProcessingOutputNumber(self.N_DETECTED, "Scenes detected in this run"))
        self.addOutput(QgsProcessingOutputNumber(self.N_FAILED, "Scenes that failed"))

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        scenes = [layer.source() for layer in self.parameterAsLayerList(parameters, self.SCENES, context)]
        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        scenes += [folder] if folder else []
        if not scenes:
            raise QgsProcessingException("Give scenes, a folder of scenes, or both.")
        out_dir = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        os.makedirs(out_dir, exist_ok=True)
        args = [*scenes, "--out", out_dir]
        for flag, value in (("--model", self.parameterAsFile(parameters, self.MODEL, context)),
                            ("--workers", self.parameterAsInt(parameters, self.WORKERS, context)),
                            ("--scheduler", self.parameterAsString(parameters, self.SCHEDULER, context)),
                            ("--tile", self.parameterAsInt(parameters, self.TILE, context))):
            if value:
                args += [flag, str(value)]
        data = run_engine(EngineCommand("batch", tuple(args)), feedback, with_message=True)
        for failure in data.get("failures", []):
            feedback.reportError(f"{Path(failure['scene']).name}: {failure['error']}")
        feedback.pushInfo(f"{data['detected']} detected, {data['already_done']} already done, {data['failed']} failed, "
                          f"{data['duplicates']} copies; {data['slicks']} slicks in the catalogue.")
        gpkg = data["catalogue"]["geopackage"]
        outputs = {self.SLICKS: f"{gpkg}|layername=slicks", self.FOOTPRINTS: f"{gpkg}|layername=footprints"}
        for key, name in ((self.FOOTPRINTS, "Scene footprints"), (self.SLICKS, "Slick catalogue")):
            details = QgsProcessingContext.LayerDetails(name, context.project(), key)
            if key == self.SLICKS:
                details.setPostProcessor(handed_over(_OnTimeline()))
            context.addLayerToLoadOnCompletion(outputs[key], details)
        return {**outputs, self.MANIFEST: data["manifest"], self.N_DETECTED: data["detected"],
                self.N_FAILED: data["failed"]}


class SeepSitesAlgorithm(QgsProcessingAlgorithm):
    CATALOGUE = "CATALOGUE"
    DISTANCE = "DISTANCE"
    MIN_SCENES = "MIN_SCENES"
    OUTPUT = "OUTPUT"
    SITES = "SITES"
    N_SITES = "N_SITES"

    def name(self) -> str:
        return "seepsites"

    def displayName(self) -> str:
        return "Find seep sites"

    def shortHelpString(self) -> str:
        return ("Groups the slicks of a batch catalogue into seep sites: places whose slicks come back scene after "
                "scene. Each site has its source point (where the slicks' narrow upstream ends converge) with an "
                "uncertainty radius, the scenes with a slick, the scenes that observed it and the recurrence rate. "
                "Selecting a site selects its slicks.")

    def createInstance(self) -> "SeepSitesAlgorithm":
        return SeepSitesAlgorithm()

    def initAlgorithm(self, config: Dict[str, Any] = None) -> None:
        self.addParameter(QgsProcessingParameterFile(self.CATALOGUE, "Catalogue (catalogue.gpkg or slicks.parquet)",
                                                     fileFilter="Catalogue (*.gpkg *.parquet)"))
        self.addParameter(QgsProcessingParameterNumber(self.DISTANCE, "Distance scale (m)",
                                                       QgsProcessingParameterNumber.Double, 1000.0, minValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_SCENES, "Scenes with a slick a site needs",
                                                       QgsProcessingParameterNumber.Integer, 3, minValue=1))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Seep sites", "GeoPackage (*.gpkg)"))
        self.addOutput(QgsProcessingOutputVectorLayer(self.SITES, "Seep sites", QgsProcessing.TypeVectorPoint))
        self.addOutput(QgsProcessingOutputNumber(self.N_SITES, "Number of sites"))

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        command = EngineCommand("seeps", (
            self.parameterAsFile(parameters, self.CATALOGUE, context), "--out", out,
            "--distance", str(self.parameterAsDouble(parameters, self.DISTANCE, context)),
            "--min-scenes", str(self.parameterAsInt(parameters, self.MIN_SCENES, context))))
        data = run_engine(command, feedback)
        feedback.pushInfo(f"{data['sites']} sites; {data['slicks_in_sites']} of {data['slicks']} slicks belong to one.")
        sites = f"{out}|layername=sites"
        details = QgsProcessingContext.LayerDetails("Seep sites", context.project(), self.SITES)
        details.setPostProcessor(handed_over(_SitesWithSlicks()))
        context.addLayerToLoadOnCompletion(sites, details)
        return {self.SITES: sites, self.N_SITES: data["sites"]}
