"""Which layers are SAR scenes, and what will go wrong with a run, said before it starts.

The verdicts are the engine's: which rasters can be scenes at all (``engine/contract.py``) and, once its
``info`` has run on the scene with the chosen model, every refusal and warning. This module only adds
what QGIS alone knows (a layer that is not a file, a file that has gone). A scene without a CRS is the
engine's to refuse: it reads the file, so a CRS given to the layer in QGIS alone would not reach it.
``SceneFacts.from_layer`` is the one place that reads a QgsRasterLayer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import Qgis, QgsMapLayer, QgsProviderRegistry, QgsRasterLayer

from .contract import not_sar_reason

_DTYPES = {Qgis.Byte: "uint8", Qgis.UInt16: "uint16", Qgis.Int16: "int16", Qgis.UInt32: "uint32",
           Qgis.Int32: "int32", Qgis.Float32: "float32", Qgis.Float64: "float64"}
"""QGIS's raster data types under the names GDAL and numpy give them."""


def scene_path(layer: QgsMapLayer) -> str:
    """The file behind a GDAL raster layer (GeoTIFF, COG, VRT); empty for other providers."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return ""
    return str(QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or "")


@dataclass(frozen=True)
class SceneFacts:
    """What QGIS itself knows about a raster layer, as plain values."""

    name: str
    path: str
    band_names: Tuple[str, ...]
    """The bands' own descriptions (empty when a band has none), not QGIS's ``Band 1: ...`` labels."""
    dtypes: Tuple[str, ...]

    @classmethod
    def from_layer(cls, layer: QgsRasterLayer) -> "SceneFacts":
        bands = range(1, layer.bandCount() + 1)
        provider = layer.dataProvider()
        return cls(layer.name(), scene_path(layer),
                   tuple(layer.bandName(band).partition(": ")[2] for band in bands),
                   tuple(_DTYPES.get(provider.dataType(band), "other") for band in bands))

    @property
    def looks_like_sar(self) -> bool:
        return not self.why_not_sar()

    def why_not_sar(self) -> str:
        """Empty when the engine would take this layer as a scene; otherwise why not, for the analyst."""
        if not self.path:
            return f"'{self.name}' is not a file-based raster (GeoTIFF, COG or VRT); Slick Mapper reads files."
        reason = not_sar_reason(f"'{self.name}'", self.dtypes, self.band_names)
        return f"{reason} Load a single-band Sentinel-1 GeoTIFF, or one whose SAR band is named." if reason else ""


@dataclass(frozen=True)
class Issue:
    """Something the analyst should know before a run; a blocking one stops the run from starting."""

    text: str
    blocking: bool


def issues(facts: SceneFacts, info: Optional[Dict[str, Any]], info_error: str) -> List[Issue]:
    """Everything known to be wrong with running the chosen model on this scene, blocking problems first.

    ``info`` is the engine's ``info`` data for the scene and model when it has arrived (its warnings);
    ``info_error`` its refusal.
    """
    found: List[Issue] = []
    if not facts.looks_like_sar:
        found.append(Issue(facts.why_not_sar(), True))
    if facts.path and not Path(facts.path).exists():
        found.append(Issue(f"The file of '{facts.name}' no longer exists ({facts.path}). Remove the layer, or "
                           "point it to the moved file (right-click › Change Data Source).", True))
    if info_error:
        found.append(Issue(info_error, True))
    if info:
        found.extend(Issue(str(warning), False) for warning in info.get("warnings") or ())
    return sorted(found, key=lambda issue: not issue.blocking)
