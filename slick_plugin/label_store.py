"""The project's label store in QGIS: which file it is, its two layers on the map, and every edit saved at once.

The engine creates the store (it owns the schema); from then on QGIS edits it like any GeoPackage, so
analysts draw with QGIS's own digitizing tools. Each finished edit is committed straight away: a QGIS
that is killed mid-session loses at most the polygon being drawn. The price is QGIS's: a commit clears
the layer's undo stack, so a finished polygon is taken back by deleting it (which is saved too), while
Backspace and Esc still undo vertices of the polygon being drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsDefaultValue, QgsDistanceArea,
                       QgsEditorWidgetSetup, QgsExpression, QgsFeatureRequest, QgsGeometry,
                       QgsMapLayer, QgsProject, QgsProviderRegistry, QgsRectangle, QgsVectorLayer,
                       QgsVectorLayerUtils, QgsWkbTypes)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, QTimer

from .contract import LABEL_CLASSES, LABEL_ORIGINS, LABELS_LAYER, REVIEWED_LAYER, SLICK_FIELDS, SLICKS_LAYER
from .paths import style_path

SCOPE, STORE_KEY = "SlickMapper", "label_store"
"""Where the project file remembers its store (QgsProject entries, never global settings)."""
STORE_SUFFIX = "_slick_labels.gpkg"
LABELS, REVIEWED = LABELS_LAYER, REVIEWED_LAYER
GROUP = "Slick labels"
CLASS_TITLES = dict(zip(LABEL_CLASSES, ("Slick", "Look-alike")))
ORIGIN_TITLES = dict(zip(LABEL_ORIGINS, ("Drawn", "Accepted from a detection", "Accepted, then edited")))
AUTHOR = "coalesce(nullif(@user_full_name, ''), @user_account_name)"
"""The analyst's full name from the OS account, else the login name."""
ELLIPSOID = "EPSG:7030"
"""WGS 84: reviewed areas are measured on the ellipsoid, whatever the store's CRS."""
DENSIFY = 16
"""Extra vertices per rectangle side before reprojecting, so a map view's edges follow the projection."""


class LabelingError(Exception):
    """Something the analyst has to fix before labels can be written; the text says what."""


def store_path(project: QgsProject) -> str:
    """The store this project remembers, else ``<project folder>/<project name>_slick_labels.gpkg``.

    Empty for an unsaved project that has none yet: then the analyst picks a file.
    """
    entry, _ = project.readEntry(SCOPE, STORE_KEY, "")
    if entry:
        return project.readPath(entry)
    if project.fileName():
        return str(Path(project.absolutePath()) / f"{project.baseName()}{STORE_SUFFIX}")
    return ""


def remember_store(project: QgsProject, path: str) -> None:
    """Record ``path`` in the project (relative to it when the project uses relative paths)."""
    project.writeEntry(SCOPE, STORE_KEY, project.writePath(path))


def store_crs(scene: QgsMapLayer) -> str:
    """The CRS a new store gets: the scene's, so labels drawn on it need no reprojection."""
    crs = scene.crs()
    return (crs.authid() or crs.toWkt()) if crs.isValid() else "EPSG:4326"


def _source(layer: QgsVectorLayer) -> Tuple[str, str]:
    """(resolved file path, GeoPackage layer name) behind an ogr layer."""
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    path = parts.get("path") or ""
    return (str(Path(path).resolve()) if path else "", parts.get("layerName") or "")


@dataclass
class StoreLayers:
    """The store's ``labels`` and ``reviewed`` layers, as loaded in a project or opened for reading."""

    path: str
    labels: QgsVectorLayer
    reviewed: QgsVectorLayer

    @classmethod
    def open(cls, path: str) -> "StoreLayers":
        """Open both layers (not added to any project); refuse a file that is not a label store."""
        layers = [QgsVectorLayer(f"{path}|layername={name}", title, "ogr")
                  for name, title in ((LABELS, "Labels"), (REVIEWED, "Reviewed areas"))]
        needed = {LABELS: {"class", "scene", "author", "created", "origin"}, REVIEWED: {"scene", "author", "created"}}
        for layer, (name, fields) in zip(layers, needed.items()):
            if not layer.isValid() or not fields <= set(layer.fields().names()):
                raise LabelingError(f"{path} is not a Slick Mapper label store (it has no usable '{name}' layer). "
                                    "Choose another file, or a new name to create a store.")
        return cls(path, *layers)

    @classmethod
    def find(cls, project: QgsProject, path: str) -> Optional["StoreLayers"]:
        """The layers of the store at ``path`` already in ``project`` (e.g. from a saved project), if both are."""
        wanted = str(Path(path).resolve())
        found = {}
        for layer in project.mapLayers().values():
            if isinstance(layer, QgsVectorLayer) and layer.providerType() == "ogr":
                source, name = _source(layer)
                if source == wanted and name in (LABELS, REVIEWED):
                    found[name] = layer
        return cls(path, found[LABELS], found[REVIEWED]) if len(found) == 2 else None

    def add_to(self, project: QgsProject) -> None:
        """Style the layers and put them in a "Slick labels" group at the top of the layer tree."""
        root = project.layerTreeRoot()
        group = root.findGroup(GROUP) or root.insertGroup(0, GROUP)
        for layer, style in ((self.labels, "labels"), (self.reviewed, "reviewed")):
            message, ok = layer.loadNamedStyle(style_path(style))
            if not ok:
                raise LabelingError(f"The layer style {style_path(style)} cannot be read: {message}")
            project.addMapLayer(layer, False)
            group.addLayer(layer)

    @property
    def crs(self) -> QgsCoordinateReferenceSystem:
        return self.labels.crs()


def configure(layers: StoreLayers, scene: str) -> None:
    """Defaults for what the analyst draws next, and pick lists for ``class`` and ``origin``.

    Defaults are expressions, so QGIS's own feature form shows them and the analyst can still change them.
    """
    scene_literal = QgsExpression.quotedString(scene)
    defaults = {
        layers.labels: {"scene": scene_literal, "author": AUTHOR, "created": "now()", "origin": "'drawn'",
                        "class": "'slick'"},
        layers.reviewed: {"scene": scene_literal, "author": AUTHOR, "created": "now()"},
    }
    for layer, expressions in defaults.items():
        for name, expression in expressions.items():
            layer.setDefaultValueDefinition(layer.fields().indexOf(name), QgsDefaultValue(expression))
    for name, values in (("class", CLASS_TITLES), ("origin", ORIGIN_TITLES)):
        value_map = [{title: value} for value, title in values.items()]
        layers.labels.setEditorWidgetSetup(layers.labels.fields().indexOf(name),
                                           QgsEditorWidgetSetup("ValueMap", {"map": value_map}))


class AutoCommit(QObject):
    """Commits a layer's edits to its file as soon as an edit is finished, keeping the layer editable,
    and calls ``on_saved`` after every commit of the layer (its own, the panel's or the analyst's).

    The commit runs from the event loop (never inside the signal), after QGIS has closed its edit command;
    while a multi-step command is still open (the vertex tool, a form) it waits for its end.
    Lives as a child of the layer, so it goes away with it; ``detach`` ends it before the plugin unloads.
    """

    def __init__(self, layer: QgsVectorLayer, on_error: Callable[[str], None], on_saved: Callable[[], None]) -> None:
        super().__init__(layer)
        self._layer = layer
        self._on_error = on_error
        self._on_saved = on_saved
        self._scheduled = False
        for signal in (layer.featureAdded, layer.featuresDeleted, layer.geometryChanged,
                       layer.attributeValueChanged, layer.editCommandEnded):
            signal.connect(self._schedule)
        layer.afterCommitChanges.connect(self._saved)

    @classmethod
    def attach(cls, layer: QgsVectorLayer, on_error: Callable[[str], None], on_saved: Callable[[], None]) -> None:
        """Attach once: a second Start labeling on the same layer must not commit twice."""
        if not layer.findChildren(cls):
            cls(layer, on_error, on_saved)

    @classmethod
    def detach(cls, layer: QgsVectorLayer) -> None:
        """Stop saving ``layer`` automatically (its edits stay in QGIS's usual edit buffer)."""
        for child in layer.findChildren(cls):
            sip.delete(child)

    def _saved(self) -> None:
        self._on_saved()

    def _schedule(self, *_: object) -> None:
        if not self._scheduled:
            self._scheduled = True
            QTimer.singleShot(0, self._commit)

    def _commit(self) -> None:
        self._scheduled = False
        layer = self._layer
        if not layer.isEditable() or not layer.isModified() or layer.isEditCommandActive():
            return
        _mark_edited(layer)
        if not layer.commitChanges(False):
            self._on_error(f"Slick Mapper could not save your edit of '{layer.name()}' to {layer.source()}: "
                           f"{'; '.join(layer.commitErrors())}. The edit is still in the layer: make the file "
                           "writable, then save the layer's edits (Layer › Save Layer Edits).")


def _mark_edited(layer: QgsVectorLayer) -> None:
    """An accepted polygon whose shape the analyst corrected becomes origin 'edited' in the same commit."""
    origin = layer.fields().indexOf("origin")
    changed = list(layer.editBuffer().changedGeometries().keys()) if origin >= 0 else []
    for feature in layer.getFeatures(QgsFeatureRequest().setFilterFids(changed)):
        if feature["origin"] == "accepted":
            layer.changeAttributeValue(feature.id(), origin, "edited")


def start_editing(layers: StoreLayers, on_error: Callable[[str], None], on_saved: Callable[[], None]) -> None:
    """Make both layers save every edit at once, and open the labels layer for drawing."""
    for layer in (layers.labels, layers.reviewed):
        AutoCommit.attach(layer, on_error, on_saved)
    if not layers.labels.isEditable() and not layers.labels.startEditing():
        raise LabelingError(f"QGIS cannot edit {layers.path}: the file or its folder is read-only. "
                            "Make it writable, or choose a store in a folder you can write to.")


def _polygons(geometry: QgsGeometry) -> List[QgsGeometry]:
    """Single polygons: the store's layers hold one polygon per feature, as QGIS draws them."""
    if geometry.isEmpty() or geometry.type() != QgsWkbTypes.PolygonGeometry:
        return []
    return geometry.asGeometryCollection() if geometry.isMultipart() else [geometry]


def _add(layer: QgsVectorLayer, geometries: Iterable[QgsGeometry], values: dict) -> int:
    """Add features with the layer's defaults plus ``values``, saved before returning."""
    was_editing = layer.isEditable()
    if not was_editing and not layer.startEditing():
        raise LabelingError(f"QGIS cannot edit {layer.source()}: the file is read-only. Make it writable.")
    context = layer.createExpressionContext()
    fields = layer.fields()
    features = [QgsVectorLayerUtils.createFeature(
        layer, geometry, {fields.indexOf(name): value for name, value in values.items()}, context)
        for geometry in geometries]
    ok = layer.addFeatures(features) and layer.commitChanges(not was_editing)
    if not ok:
        errors = "; ".join(layer.commitErrors()) or "the features were refused"
        layer.rollBack(not was_editing)
        raise LabelingError(f"Slick Mapper could not save to {layer.source()}: {errors}.")
    return len(features)


def detection_outlines(project: QgsProject) -> List[QgsVectorLayer]:
    """Every detection's polygon layer in the project, from the dock or from Processing."""
    return [layer for layer in project.mapLayers().values()
            if isinstance(layer, QgsVectorLayer) and layer.providerType() == "ogr"
            and _source(layer)[1] == SLICKS_LAYER and set(SLICK_FIELDS) <= set(layer.fields().names())]


def copy_selected(project: QgsProject, layers: StoreLayers, scene: str, cls: str) -> int:
    """Copy the selected detection outlines into the labels as ``cls``, origin 'accepted'; how many were copied.

    The engine names a detection's scene by its file name, so outlines of another scene are refused
    rather than filed under the scene being labelled.
    """
    sources = [(layer, list(layer.getSelectedFeatures())) for layer in detection_outlines(project)]
    sources = [(layer, features) for layer, features in sources if features]
    if not sources:
        raise LabelingError("No detected slick is selected. Select outlines on a 'Slick outlines' layer "
                            "(Select Features tool), then accept or reject them.")
    geometries: List[QgsGeometry] = []
    for layer, features in sources:
        others = {str(feature["scene"]) for feature in features} - {Path(scene).name}
        if others:
            raise LabelingError(f"The selected outlines were detected on {', '.join(sorted(others))}, but labels "
                                f"now go to {Path(scene).name}. Pick that scene in the Scene list first.")
        transform = QgsCoordinateTransform(layer.crs(), layers.crs, project)
        for feature in features:
            geometry = QgsGeometry(feature.geometry())
            geometry.transform(transform)
            geometries += _polygons(geometry)
    added = _add(layers.labels, geometries, {"class": cls, "origin": "accepted"})
    for layer, _ in sources:
        layer.removeSelection()
    return added


def _densified(rectangle: QgsRectangle) -> QgsGeometry:
    return QgsGeometry.fromRect(rectangle).densifyByCount(DENSIFY)


def add_reviewed_view(project: QgsProject, layers: StoreLayers, view: QgsRectangle,
                      view_crs: QgsCoordinateReferenceSystem, scene_extent: QgsRectangle,
                      scene_crs: QgsCoordinateReferenceSystem) -> QgsGeometry:
    """Store the map view, clipped to the scene, as a reviewed area; returns it in the store's CRS."""
    area = _densified(view)
    area.transform(QgsCoordinateTransform(view_crs, layers.crs, project))
    scene = _densified(scene_extent)
    scene.transform(QgsCoordinateTransform(scene_crs, layers.crs, project))
    reviewed = area.intersection(scene)
    parts = _polygons(reviewed)
    if not parts:
        raise LabelingError("The map view does not overlap the scene: pan to the part of the scene you checked.")
    _add(layers.reviewed, parts, {})
    return reviewed


@dataclass(frozen=True)
class SceneCounts:
    slicks: int
    lookalikes: int
    reviewed_km2: float

    def text(self) -> str:
        def plural(count: int, noun: str) -> str:
            return f"{count} {noun}{'' if count == 1 else 's'}"

        return (f"{plural(self.slicks, 'slick label')}, {plural(self.lookalikes, 'look-alike')}, "
                f"{self.reviewed_km2:.1f} km² reviewed")


def counts(project: QgsProject, layers: StoreLayers, scene: str) -> SceneCounts:
    """What the store holds for ``scene``; overlapping reviewed areas count once."""
    request = QgsFeatureRequest().setFilterExpression(f'"scene" = {QgsExpression.quotedString(scene)}')
    classes = [feature["class"] for feature in layers.labels.getFeatures(request)]
    reviewed = [feature.geometry() for feature in layers.reviewed.getFeatures(request) if feature.hasGeometry()]
    area = 0.0
    if reviewed:
        measure = QgsDistanceArea()
        measure.setSourceCrs(layers.reviewed.crs(), project.transformContext())
        measure.setEllipsoid(ELLIPSOID)
        area = measure.measureArea(QgsGeometry.unaryUnion(reviewed)) / 1e6
    return SceneCounts(classes.count("slick"), classes.count("lookalike"), area)

