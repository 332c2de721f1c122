"""Processing algorithm "Detect slicks": the dock's detection, batchable and usable in the Modeler."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

from qgis.core import (QgsMapLayer, QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback, QgsProcessingLayerPostProcessorInterface,
                       QgsProcessingOutputNumber, QgsProcessingOutputRasterLayer, QgsProcessingOutputVectorLayer,
                       QgsProcessingParameterBoolean, QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterFile, QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString)

from .. import settings
from ..commands import DetectParameters, unique_prefix
from ..layers import changes_summary, fit_ramp_to_threshold
from ..paths import style_path
from ..scene_check import SceneFacts, issues
from .engine_call import handed_over, run_engine


class _Styler(QgsProcessingLayerPostProcessorInterface):
    """Gives a layer loaded by Processing the same style as the dock's, once it is in the project."""

    def __init__(self, style: str, threshold: Optional[float] = None) -> None:
        super().__init__()
        self.style = style
        self.threshold = threshold
        """The threshold a probability layer was cut at: its ramp is fitted to it."""

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,  # noqa: N802 - QGIS API
                         feedback: QgsProcessingFeedback) -> None:
        message, ok = layer.loadNamedStyle(style_path(self.style))
        if not ok:
            feedback.reportError(f"The style {style_path(self.style)} cannot be read: {message}")
        if self.threshold is not None:
            fit_ramp_to_threshold(layer, self.threshold)
        layer.triggerRepaint()


class DetectSlicksAlgorithm(QgsProcessingAlgorithm):
    """Runs the engine's ``detect`` on one scene and returns the probability, mask and slick polygons."""

    INPUT = "INPUT"
    MODEL = "MODEL"
    DEVICE = "DEVICE"
    TILE = "TILE"
    OVERLAP = "OVERLAP"
    THRESHOLD = "THRESHOLD"
    MIN_AREA = "MIN_AREA"
    MIRROR = "MIRROR"
    EXTENT = "EXTENT"
    PREFIX = "PREFIX"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    PROBABILITY = "PROBABILITY"
    MASK = "MASK"
    SLICKS = "SLICKS"
    N_SLICKS = "N_SLICKS"
    TOTAL_AREA_KM2 = "TOTAL_AREA_KM2"
    AGAINST_PARENT = "AGAINST_PARENT"
    CHANGES = "CHANGES"
    N_NEW = "N_NEW"
    N_GONE = "N_GONE"

    def name(self) -> str:
        return "detect"

    def displayName(self) -> str:
        return "Detect slicks"

    def shortHelpString(self) -> str:
        return ("Finds oil-seep slicks in a Sentinel-1 SAR scene with a segmentation model, in a separate engine "
                "process. Writes <prefix>_probability.tif (0..1), <prefix>_mask.tif and <prefix>_slicks.gpkg "
                "(polygons with area_km2, length_km, mean_prob) to the output folder; existing files are never "
                "overwritten. Leave Model empty for the bundled default, and Threshold at 0 for the model's own (stored "
                "in the model, calibrated when it was fine-tuned). Slicks under the smallest area are dropped as speckle. "
                "With a fine-tuned model, 'Show what fine-tuning changed' detects with its parent too and writes "
                "<prefix>_changes.gpkg: the slicks only the new model finds (new) and those only the parent finds (gone).")

    def createInstance(self) -> "DetectSlicksAlgorithm":
        return DetectSlicksAlgorithm()

    def initAlgorithm(self, config: Dict[str, Any] = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "SAR scene"))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model file (empty: the bundled default)", optional=True,
            defaultValue=settings.DEFAULT_MODEL.value() or None))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, settings.DEVICE.label, options=list(settings.DEVICE.choices),
            defaultValue=settings.DEVICE.choices.index(settings.DEVICE.value())))
        for name, setting in ((self.TILE, settings.TILE), (self.OVERLAP, settings.OVERLAP)):
            self.addParameter(QgsProcessingParameterNumber(
                name, setting.label + (" (0: the model's own)" if setting.special else ""), QgsProcessingParameterNumber.Integer, setting.value(),
                minValue=setting.minimum, maxValue=setting.maximum))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, settings.THRESHOLD.label + " (0: the model's own)", QgsProcessingParameterNumber.Double,
            settings.THRESHOLD.value(), minValue=settings.THRESHOLD.minimum, maxValue=settings.THRESHOLD.maximum))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, settings.MIN_AREA.label + " (0: the model's own)", QgsProcessingParameterNumber.Double,
            settings.MIN_AREA.value(), minValue=settings.MIN_AREA.minimum, maxValue=settings.MIN_AREA.maximum))
        self.addParameter(QgsProcessingParameterBoolean(self.MIRROR, settings.MIRROR.label, settings.MIRROR.value()))
        self.addParameter(QgsProcessingParameterBoolean(self.AGAINST_PARENT, "Show what fine-tuning changed (a fine-tuned model only)",
                                                        False))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Only this extent", optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.PREFIX, "File name prefix (empty: scene_model_time)", optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer(self.PROBABILITY, "Slick probability"))
        self.addOutput(QgsProcessingOutputRasterLayer(self.MASK, "Slick mask"))
        self.addOutput(QgsProcessingOutputVectorLayer(self.SLICKS, "Slick outlines", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.N_SLICKS, "Number of slicks"))
        self.addOutput(QgsProcessingOutputNumber(self.TOTAL_AREA_KM2, "Total slick area (km²)"))
        self.addOutput(QgsProcessingOutputVectorLayer(self.CHANGES, "Changes against the parent", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.N_NEW, "Slicks only the fine-tuned model finds"))
        self.addOutput(QgsProcessingOutputNumber(self.N_GONE, "Slicks only its parent finds"))

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException("The SAR scene cannot be opened as a raster layer.")
        facts = SceneFacts.from_layer(layer)
        blocking = [issue.text for issue in issues(facts, None, "") if issue.blocking]
        if blocking:
            raise QgsProcessingException(blocking[0])
        out_dir = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        os.makedirs(out_dir, exist_ok=True)
        model = self.parameterAsFile(parameters, self.MODEL, context)
        prefix = self.parameterAsString(parameters, self.PREFIX, context) or unique_prefix(
            out_dir, facts.path, Path(model).stem if model else "default")
        bounds, bounds_crs = None, ""
        if parameters.get(self.EXTENT):
            extent = self.parameterAsExtent(parameters, self.EXTENT, context)
            crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
            bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
            bounds_crs = crs.authid() or crs.toWkt()
        run = DetectParameters(
            scene=facts.path, out_dir=out_dir, prefix=prefix, model=model,
            device=settings.DEVICE.choices[self.parameterAsEnum(parameters, self.DEVICE, context)],
            tile=self.parameterAsInt(parameters, self.TILE, context),
            overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
            threshold=self.parameterAsDouble(parameters, self.THRESHOLD, context),
            min_area_km2=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            bounds=bounds, bounds_crs=bounds_crs, mirror=self.parameterAsBool(parameters, self.MIRROR, context),
            against_parent=self.parameterAsBool(parameters, self.AGAINST_PARENT, context))
        data = run_engine(run.command(), feedback, cleanup=run.remove_outputs)
        feedback.pushInfo(f"{data.get('n_slicks')} slicks, {data.get('total_area_km2')} km², "
                          f"{data.get('seconds')} s on {data.get('device')}")
        shown = [(self.SLICKS, "slicks", "Slick outlines"), (self.PROBABILITY, "probability", "Slick probability")]
        if run.against_parent:
            feedback.pushInfo(changes_summary(data))
            shown.insert(0, (self.CHANGES, "changes", "Changes against the parent"))
        for output, key, name in shown:
            details = QgsProcessingContext.LayerDetails(f"{name} – {layer.name()}", context.project(), output)
            threshold = float(data["threshold"]) if key == "probability" and data.get("threshold") is not None else None
            details.setPostProcessor(handed_over(_Styler(key, threshold)))
            context.addLayerToLoadOnCompletion(data[key], details)
        return {self.PROBABILITY: data["probability"], self.MASK: data["mask"], self.SLICKS: data["slicks"],
                self.N_SLICKS: data.get("n_slicks"), self.TOTAL_AREA_KM2: data.get("total_area_km2"),
                self.CHANGES: data.get("changes"), self.N_NEW: data.get("new_slicks"), self.N_GONE: data.get("gone_slicks")}
