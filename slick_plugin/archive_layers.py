"""The archive's layers in QGIS: slicks on the temporal controller, seep sites graduated by recurrence and
labelled with their counts, and selecting a site selecting its slicks.

Only presentation: every number shown comes from the engine's catalogue and sites files.
"""

from __future__ import annotations

from typing import Dict

from qgis.core import (QgsGraduatedSymbolRenderer, QgsMarkerSymbol, QgsPalLayerSettings, QgsProject,
                       QgsRendererRange, QgsTextFormat, QgsVectorLayer, QgsVectorLayerSimpleLabeling,
                       QgsVectorLayerTemporalProperties)
from qgis.PyQt.QtCore import QObject
from qgis.PyQt.QtGui import QColor

TIME_FIELD = "acquired"
SITE_FIELD = "site_id"
RECURRENCE_CLASSES = ((0.0, 0.25, "#fee08b"), (0.25, 0.5, "#fdae61"), (0.5, 0.75, "#f46d43"), (0.75, 1.0, "#a50026"))
"""Recurrence bins, pale to dark red: a site active in most passes stands out."""


def bind_to_time(layer: QgsVectorLayer, field: str = TIME_FIELD) -> None:
    """Each slick shows at its scene's acquisition time on QGIS's temporal controller."""
    properties = layer.temporalProperties()
    properties.setMode(QgsVectorLayerTemporalProperties.ModeFeatureDateTimeInstantFromField)
    properties.setStartField(field)
    properties.setIsActive(True)


def style_sites(layer: QgsVectorLayer) -> None:
    """Markers graduated by recurrence (colour and size) and labelled "scenes with a slick/observed"."""
    ranges = []
    for index, (low, high, colour) in enumerate(RECURRENCE_CLASSES):
        symbol = QgsMarkerSymbol.createSimple({"name": "circle", "color": colour, "outline_color": "black",
                                               "size": str(3 + 1.5 * index)})
        ranges.append(QgsRendererRange(low, high, symbol, f"recurrence {low:.0%}–{high:.0%}"))
    layer.setRenderer(QgsGraduatedSymbolRenderer("recurrence", ranges))
    settings = QgsPalLayerSettings()
    settings.isExpression = True
    settings.fieldName = "concat(\"scenes_with_slick\", '/', \"scenes_observed\", ' scenes')"
    text = QgsTextFormat()
    text.setSize(9)
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()


class SiteSelection(QObject):
    """Keeps the slicks layer's selection on the slicks of the sites selected in the sites layer."""

    def __init__(self, sites: QgsVectorLayer, slicks: QgsVectorLayer) -> None:
        super().__init__(sites)  # lives and dies with the sites layer
        self.sites, self.slicks = sites, slicks
        sites.selectionChanged.connect(self._follow)

    def _follow(self, *_args) -> None:
        ids = sorted({int(f[SITE_FIELD]) for f in self.sites.selectedFeatures() if f[SITE_FIELD] is not None})
        if not ids:
            self.slicks.removeSelection()
            return
        self.slicks.selectByExpression(f'"{SITE_FIELD}" IN ({", ".join(map(str, ids))})')


_LINKS: Dict[str, SiteSelection] = {}


def link_sites_to_slicks(sites: QgsVectorLayer, slicks: QgsVectorLayer) -> SiteSelection:
    link = SiteSelection(sites, slicks)
    _LINKS[sites.id()] = link
    sites.willBeDeleted.connect(lambda: _LINKS.pop(sites.id(), None))
    return link


def show_sites(sites: QgsVectorLayer, project: QgsProject) -> QgsVectorLayer:
    """Style a loaded "Seep sites" layer and bring in its slicks, timed and following its selection."""
    style_sites(sites)
    path = sites.source().split("|")[0]
    slicks = QgsVectorLayer(f"{path}|layername=slicks", "Slicks of the seep sites", "ogr")
    if not slicks.isValid():
        raise ValueError(f"QGIS cannot open the slicks of {path}; the file may be damaged.")
    bind_to_time(slicks)
    project.addMapLayer(slicks)
    link_sites_to_slicks(sites, slicks)
    return slicks
