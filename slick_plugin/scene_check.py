"""Which layers are SAR scenes, and what will go wrong with a run, said before it starts.

The rules work on plain values (``SceneFacts``, the engine's ``info`` and model dicts) so they are
testable without layers; ``SceneFacts.from_layer`` is the one place that reads a QgsRasterLayer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import QgsMapLayer, QgsProviderRegistry, QgsRasterLayer

POLARISATION = re.compile(r"\b(VV|VH|HH|HV)\b", re.IGNORECASE)
PIXEL_SIZE_TOLERANCE = 1.5
"""A model used on pixels more than this factor larger or smaller than its own tends to miss slicks."""


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
    band_count: int
    band_names: Tuple[str, ...]
    crs_valid: bool

    @classmethod
    def from_layer(cls, layer: QgsRasterLayer) -> "SceneFacts":
        return cls(layer.name(), scene_path(layer), layer.bandCount(),
                   tuple(layer.bandName(band) for band in range(1, layer.bandCount() + 1)),
                   layer.crs().isValid())

    @property
    def polarisations(self) -> List[str]:
        return [match.group(1).upper() for name in self.band_names for match in [POLARISATION.search(name)] if match]

    @property
    def looks_like_sar(self) -> bool:
        """One band, or bands named for a polarisation: an RGB photo has neither."""
        return bool(self.path) and (self.band_count == 1 or bool(self.polarisations))

    def why_not_sar(self) -> str:
        if not self.path:
            return f"'{self.name}' is not a file-based raster (GeoTIFF, COG or VRT); Slick Mapper reads files."
        return (f"'{self.name}' has {self.band_count} bands and none is named VV, VH, HH or HV, so it looks like "
                "a photo rather than a SAR scene. Load a single-band Sentinel-1 GeoTIFF (or one with VV/HH bands).")


@dataclass(frozen=True)
class Issue:
    """Something the analyst should know before a run; a blocking one stops the run from starting."""

    text: str
    blocking: bool


def issues(facts: SceneFacts, info: Optional[Dict[str, Any]], info_error: str,
           model: Optional[Dict[str, Any]]) -> List[Issue]:
    """Everything known to be wrong with running ``model`` on this scene, blocking problems first.

    ``info`` is the engine's ``info`` data when it has arrived; ``info_error`` its failure message.
    """
    found: List[Issue] = []
    if not facts.looks_like_sar:
        found.append(Issue(facts.why_not_sar(), True))
    if facts.path and not Path(facts.path).exists():
        found.append(Issue(f"The file of '{facts.name}' no longer exists ({facts.path}). Remove the layer, or "
                           "point it to the moved file (right-click › Change Data Source).", True))
    elif not facts.crs_valid:
        found.append(Issue(f"'{facts.name}' has no coordinate reference system and no ground control points, so "
                           "slicks cannot be placed on the map. Assign its CRS (Layer Properties › Source) or "
                           "use the georeferenced product.", True))
    if info_error:
        found.append(Issue(info_error, True))
    if info:
        found.extend(Issue(str(warning), False) for warning in info.get("warnings") or ())
    if info and model:
        found.extend(_model_mismatches(info, model))
    return sorted(found, key=lambda issue: not issue.blocking)


def _model_mismatches(info: Dict[str, Any], model: Dict[str, Any]) -> List[Issue]:
    found: List[Issue] = []
    scene_size, model_size = info.get("pixel_size"), model.get("pixel_size")
    if scene_size and model_size and max(scene_size / model_size, model_size / scene_size) > PIXEL_SIZE_TOLERANCE:
        found.append(Issue(f"The model '{model.get('name')}' was made for {model_size:g} m pixels but the scene has "
                           f"{scene_size:g} m pixels: expect missed or false slicks. Choose a model for this "
                           "pixel size if there is one.", False))
    scene_pol, model_pol = info.get("polarisation"), model.get("polarisation")
    if scene_pol and model_pol and str(scene_pol).upper() not in str(model_pol).upper():
        found.append(Issue(f"The model '{model.get('name')}' was trained on {model_pol} but the scene band is "
                           f"{scene_pol}.", False))
    return found
