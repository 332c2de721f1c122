"""Puts a detection's files on the map: a styled group inserted just above the scene it came from.

Called only from a task's ``finished()`` (main thread). A group never replaces an earlier one: a second
run on the same scene adds a second group with a numbered name.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from qgis.core import (QgsColorRampShader, QgsLayerTreeGroup, QgsMapLayer, QgsProject, QgsRasterLayer,
                       QgsSingleBandPseudoColorRenderer, QgsVectorLayer)

from .contract import SLICKS_LAYER
from .paths import style_path

START_HIDDEN = "slick_mapper/start_hidden"
"""Custom property of a result layer added to its group unticked."""
STYLE_THRESHOLD = 0.5
"""The threshold ``probability.qml``'s colour ramp is drawn for: its 0.5 stop is where a pixel becomes slick."""


class LayerError(Exception):
    """An output file exists but QGIS cannot open it as a layer."""


def group_name(scene_name: str, model_name: str) -> str:
    return f"Slicks – {scene_name} – {model_name}"


def summary(data: Dict[str, Any]) -> str:
    """One line for the message bar: how many slicks of at least what area (a stored setting that outlives the run),
    their total area, the threshold they were cut at (and whence: a fine-tuned model has its own on the scenes it was
    taught on), the time taken (and whether mirror averaging, four times the model's work, was in it), and whose weights
    detected where they are not the chosen model's (one fine-tuned for other scenes hands this one to its parent)."""
    count = int(data.get("n_slicks", 0))
    noun = "slick" if count == 1 else "slicks"
    smallest = f" of at least {float(data['min_area_km2']):g} km²" if data.get("min_area_km2") else ""
    return (f"{count} {noun}{smallest}, {float(data.get('total_area_km2', 0.0)):.2f} km² in total, "
            f"threshold {float(data.get('threshold', 0.5)):.2f} ({data.get('threshold_from', 'the model’s')}), "
            f"{float(data.get('seconds', 0.0)):.0f} s on {data.get('device', '?')}"
            + _averaging(data)
            + (f" Weights: {data['weights_from']}." if data.get("weights_from") else "")
            + (f" {changes_summary(data)}" if data.get("changes") else ""))


def _averaging(data: dict) -> str:
    """The views each tile's probability was averaged over, as the summary's clause (and the sentence's end)."""
    if not data.get("mirrored"):
        return "."
    if data.get("half_turn"):
        return ", each tile averaged with its half turn."
    return ", mirror averaged" + (" with rotations." if data.get("rotated") else ".")


def changes_summary(data: Dict[str, Any]) -> str:
    """What fine-tuning changed on the map, from a ``changes`` run's ``data``: both models' maps are on the map
    view, so the counts say what to look at."""
    parent = data.get("parent") or {}
    return (f"Against its parent {parent.get('model_name', '')} (threshold {float(parent.get('threshold', 0.5)):.2f}): "
            f"{int(data.get('new_slicks', 0))} new ({float(data.get('new_area_km2', 0.0)):.2f} km²), "
            f"{int(data.get('gone_slicks', 0))} gone ({float(data.get('gone_area_km2', 0.0)):.2f} km²), "
            f"{int(data.get('both_slicks', 0))} found by both.")


def open_results(data: Dict[str, Any]) -> List[QgsMapLayer]:
    """The styled polygon and probability layers of a detection's ``data``, polygons first (on top); for a
    comparison with the parent, its changes above them and the parent's outlines (hidden) below the new ones."""
    def outlines(path: str, name: str) -> QgsVectorLayer:
        return QgsVectorLayer(f"{path}|layername={SLICKS_LAYER}", name, "ogr")

    probability = QgsRasterLayer(str(data["probability"]), "Slick probability", "gdal")
    styled = [(outlines(data["slicks"], f"Slick outlines ({int(data.get('n_slicks', 0))})"), "slicks")]
    hidden: List[QgsMapLayer] = []
    if data.get("changes"):
        parent = data["parent"]
        changes = outlines(data["changes"], f"Changes against the parent ({int(data.get('new_slicks', 0))} new, "
                                            f"{int(data.get('gone_slicks', 0))} gone)")
        hidden.append(outlines(parent["slicks"], f"Parent's slick outlines ({int(parent.get('n_slicks', 0))})"))
        styled = [(changes, "changes"), *styled, (hidden[0], "slicks")]
    styled.append((probability, "probability"))
    for layer, style in styled:
        if not layer.isValid():
            raise LayerError(f"QGIS cannot open the result {layer.source()}; the file may be damaged.")
        message, ok = layer.loadNamedStyle(style_path(style))
        if not ok:
            raise LayerError(f"The layer style {style_path(style)} cannot be read: {message}")
    for layer in hidden:  # after styling: a style carries custom properties
        layer.setCustomProperty(START_HIDDEN, True)
    fit_ramp_to_threshold(probability, float(data.get("threshold", STYLE_THRESHOLD)))
    return [layer for layer, _ in styled]


def fit_ramp_to_threshold(layer: QgsRasterLayer, threshold: float) -> None:
    """Move the probability ramp's stops so that its slick stop sits at the run's ``threshold``.

    A model cut at 0.85 draws everything from 0.5 up in strong red under a ramp made for 0.5, and the map
    looks covered in slicks that the outlines do not confirm; stretched this way a pixel turns strong red
    only where it is a slick, and the stops below keep their shares of the threshold."""
    renderer = layer.renderer()
    if not isinstance(renderer, QgsSingleBandPseudoColorRenderer):
        return
    ramp = renderer.shader().rasterShaderFunction()
    if not isinstance(ramp, QgsColorRampShader):
        return

    def moved(value: float) -> float:
        if value <= STYLE_THRESHOLD:
            return value * threshold / STYLE_THRESHOLD
        return threshold + (value - STYLE_THRESHOLD) * (1.0 - threshold) / (1.0 - STYLE_THRESHOLD)

    items = []
    for item in ramp.colorRampItemList():
        value = moved(item.value)
        items.append(QgsColorRampShader.ColorRampItem(value, item.color, f"{value:.2f}"))
    ramp.setColorRampItemList(items)
    layer.triggerRepaint()


def add_result_group(project: QgsProject, scene: Optional[QgsMapLayer], scene_name: str, model_name: str,
                     layers: List[QgsMapLayer]) -> QgsLayerTreeGroup:
    """Insert a group holding ``layers`` just above ``scene`` (at the top if the scene was removed). A parent's
    outlines, from a comparison, start hidden: one tick shows the map before fine-tuning."""
    root = project.layerTreeRoot()
    scene_node = root.findLayer(scene.id()) if scene is not None else None
    parent = scene_node.parent() if scene_node is not None else root
    index = parent.children().index(scene_node) if scene_node is not None else 0
    base = group_name(scene_name, model_name)
    taken = {child.name() for child in parent.children() if isinstance(child, QgsLayerTreeGroup)}
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base} ({number})"
    group = parent.insertGroup(index, name)
    for layer in layers:
        project.addMapLayer(layer, False)
        group.addLayer(layer).setItemVisibilityChecked(not layer.customProperty(START_HIDDEN, False))
    return group
