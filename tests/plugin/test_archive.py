"""Archives in QGIS: the batch and seep-site Processing algorithms through the real engine, the slicks on
the temporal controller, the sites graduated by recurrence, labelled, and selecting their slicks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from qgis.core import QgsProcessingFeedback, QgsProject, QgsVectorLayer

from .conftest import needs_model


class Recorder(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list = []

    def setProgressText(self, text: str) -> None:  # noqa: N802 - QGIS API
        self.texts.append(text)


def _layers() -> dict:
    return {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}


@needs_model
def test_batch_detects_a_folder_in_the_background_and_puts_the_catalogue_on_the_timeline(processing, plugin, tmp_path):
    import processing as qgis_processing

    from engine.data.synth import SceneSpec, write_scene
    from engine.models.registry import SYNTHETIC_MODEL

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for day in (1, 7):
        write_scene(SceneSpec(height=160, width=160, seed=day, n_seeps=2),
                    scenes / f"S1A_EW_GRDM_1SDH_202401{day:02d}T050000_x.tif")
    (scenes / "broken.tif").write_bytes(b"not a raster")
    feedback = Recorder()
    QgsProject.instance().clear()
    result = qgis_processing.runAndLoadResults("slickmapper:batch", {
        "FOLDER": str(scenes), "MODEL": str(SYNTHETIC_MODEL), "WORKERS": 1, "TILE": 256, "OUTPUT_FOLDER": str(tmp_path / "batch")}, feedback=feedback)
    assert result["N_DETECTED"] == 2 and result["N_FAILED"] == 1
    assert any("done" in text and "left" in text for text in feedback.texts)
    layers = _layers()
    slicks, footprints = layers["Slick catalogue"], layers["Scene footprints"]
    assert footprints.featureCount() == 2
    properties = slicks.temporalProperties()
    assert properties.isActive() and properties.startField() == "acquired"
    times = {f["acquired"].toString("yyyy-MM-dd") for f in slicks.getFeatures()}
    assert times <= {"2024-01-01", "2024-01-07"} and slicks.featureCount() > 0
    assert "lookalike_score" in slicks.fields().names()


def _fan_catalogue(path: Path) -> None:
    """Three scenes whose slicks leave one point (narrow there, widening downstream) and one stray slick."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Polygon, box

    centre = "+proj=aeqd +lat_0=75.3 +lon_0=31.3 +datum=WGS84 +units=m"
    rows, prints = [], []
    for k, heading in enumerate((0.3, 1.9, 4.0)):
        ux, uy = math.cos(heading), math.sin(heading)
        tip = [(-uy * 25, ux * 25), (uy * 25, -ux * 25)]
        end = [(4000 * ux + uy * 200, 4000 * uy - ux * 200), (4000 * ux - uy * 200, 4000 * uy + ux * 200)]
        facts = {"scene_hash": f"scene{k}", "acquired": pd.Timestamp(f"2024-01-0{k + 1}T05:00", tz="UTC"),
                 "model_name": "m", "model_hash": "h"}
        rows.append({**facts, "area_km2": 0.9, "geometry": Polygon(tip + end)})
        prints.append({**facts, "geometry": box(-20000, -20000, 20000, 20000)})
    rows.append({**rows[0], "area_km2": 0.5, "geometry": box(9000, 9000, 9300, 11000)})
    for layer, frame in (("slicks", rows), ("footprints", prints)):
        gpd.GeoDataFrame(frame, crs=centre).to_crs(4326).to_file(path, layer=layer, driver="GPKG", engine="fiona")


def test_seep_sites_are_graduated_labelled_and_select_their_slicks(processing, plugin, tmp_path):
    import processing as qgis_processing

    catalogue = tmp_path / "catalogue.gpkg"
    _fan_catalogue(catalogue)
    QgsProject.instance().clear()
    result = qgis_processing.runAndLoadResults("slickmapper:seepsites", {
        "CATALOGUE": str(catalogue), "MIN_SCENES": 3, "OUTPUT": str(tmp_path / "sites.gpkg")})
    assert result["N_SITES"] == 1
    layers = _layers()
    sites, slicks = layers["Seep sites"], layers["Slicks of the seep sites"]
    assert sites.renderer().type() == "graduatedSymbol" and sites.renderer().classAttribute() == "recurrence"
    assert sites.labelsEnabled()
    site = next(sites.getFeatures())
    assert (site["scenes_with_slick"], site["scenes_observed"], site["recurrence"]) == (3, 3, 1.0)
    assert slicks.temporalProperties().isActive()

    sites.selectByIds([site.id()])
    chosen = {f["scene_hash"] for f in slicks.selectedFeatures()}
    assert slicks.selectedFeatureCount() == 3 and chosen == {"scene0", "scene1", "scene2"}
    sites.removeSelection()
    assert slicks.selectedFeatureCount() == 0
