"""Detection through the dock and Processing with the real engine, on a real Arctic Sentinel-1 tile.

One dock run (module fixture) is shared by the checks on its group, its files, its rendering and the
Processing comparison; cancel and kill each get their own run. Runs are kept to a few tiles by
detecting in the map view only, with the map in EPSG:3857 (not the scene's UTM zone) on purpose.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsLayerTreeGroup, QgsLayerTreeLayer,
                       QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorLayer)
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QColor, QImage

from engine.models.registry import DEFAULT_MODEL, read_card
from slick_plugin.contract import DEFAULT_MIN_AREA_KM2
from slick_plugin.layers import open_results, summary
from slick_plugin.engine_runner import CANCEL_GRACE_S, Status

from .conftest import OUTPUT, SAMPLE, FakeIface, add_scene, needs_model, opened_dock, render

pytestmark = needs_model

WEB_MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")
SLICK_WINDOW_PX = (256, 256, 640, 512)
"""(col0, row0, col1, row1) around the analysts' two labelled slicks in sample_1."""


def window(layer: QgsRasterLayer, crs: QgsCoordinateReferenceSystem) -> QgsRectangle:
    """SLICK_WINDOW_PX of ``layer`` as a rectangle in ``crs``."""
    extent, size = layer.extent(), layer.rasterUnitsPerPixelX()
    col0, row0, col1, row1 = SLICK_WINDOW_PX
    native = QgsRectangle(extent.xMinimum() + col0 * size, extent.yMaximum() - row1 * size,
                          extent.xMinimum() + col1 * size, extent.yMaximum() - row0 * size)
    return QgsCoordinateTransform(layer.crs(), crs, QgsProject.instance()).transformBoundingBox(native)


def small_run(dock, iface: FakeIface, layer: QgsRasterLayer, crs: QgsCoordinateReferenceSystem) -> None:
    """Dock settings for a quick run: CPU, 256-px tiles, only the map view around the slicks."""
    QgsProject.instance().setCrs(crs)
    iface.canvas.setDestinationCrs(crs)
    iface.canvas.setExtent(window(layer, crs))
    dock.device.setCurrentText("cpu")
    dock.tile.setValue(256)
    dock.overlap.setValue(32)
    dock.map_view.setChecked(True)


def features(path: str) -> List[Tuple[float, float, float]]:
    """(area_km2, centroid x, centroid y) of every slick, sorted, rounded: comparable across runs."""
    layer = QgsVectorLayer(f"{path}|layername=slicks", "slicks", "ogr")
    assert layer.isValid()
    found = []
    for feature in layer.getFeatures():
        centroid = feature.geometry().centroid().asPoint()
        found.append((round(feature["area_km2"], 4), round(centroid.x(), 1), round(centroid.y(), 1)))
    return sorted(found)


@dataclass
class Detection:
    """What one dock run left behind, as plain values (its QGIS objects are gone after the fixture)."""

    folder: Path
    scene_path: str
    extent: str
    files: List[str]
    tree: List[str]
    group_layers: List[str]
    attributes: List[Dict[str, object]]
    data: Dict[str, object]
    percents: List[float]
    messages: List[str]


@pytest.fixture(scope="module")
def detection(qgis_app, tmp_path_factory, module_qtbot) -> Detection:
    """Runs the dock once and unloads the plugin again: only files and plain values outlive it."""
    folder = tmp_path_factory.mktemp("dock_run")
    iface = FakeIface()
    with opened_dock(iface, module_qtbot) as dock:
        scene = add_scene(folder, iface)
        small_run(dock, iface, scene, WEB_MERCATOR)
        module_qtbot.waitUntil(lambda: not dock._tasks, timeout=120_000)
        OUTPUT.mkdir(exist_ok=True)
        dock.grab().save(str(OUTPUT / "dock_before_detection.png"))
        extent = iface.canvas.extent()
        dock.detect()
        task = dock.detect_task
        assert task is not None, iface.messages()
        percents: List[float] = []
        task.progressChanged.connect(percents.append)
        module_qtbot.waitUntil(lambda: dock.detect_task is None, timeout=300_000)
        dock.grab().save(str(OUTPUT / "dock_after_detection.png"))
        assert task.result.ok, task.result.message
        root = QgsProject.instance().layerTreeRoot()
        group = root.children()[0]
        assert isinstance(group, QgsLayerTreeGroup)
        slicks = group.findLayers()[0].layer()
        return Detection(
            folder=folder, scene_path=scene.source(),
            extent=f"{extent.xMinimum()},{extent.xMaximum()},{extent.yMinimum()},{extent.yMaximum()} [EPSG:3857]",
            files=sorted(path.name for path in folder.iterdir()),
            tree=[child.name() for child in root.children()],
            group_layers=[f"{node.layer().type()}:{node.name()}" for node in group.findLayers()],
            attributes=[feature.attributeMap() for feature in slicks.getFeatures()],
            data=dict(task.result.data), percents=percents, messages=iface.messages())


def test_dock_detection_adds_a_styled_group_above_the_scene(detection: Detection) -> None:
    assert detection.tree[0].startswith("Slicks – sample_1 – ")
    assert detection.tree[1] == "sample_1"
    assert [entry.split(":")[0] for entry in detection.group_layers] == ["0", "1"]  # vector above raster
    assert detection.group_layers[0].endswith(f"Slick outlines ({detection.data['n_slicks']})")
    prefix = Path(str(detection.data["probability"])).name[: -len("_probability.tif")]
    assert prefix.startswith("sample_1_")
    for suffix in ("_probability.tif", "_mask.tif", "_slicks.gpkg"):
        assert prefix + suffix in detection.files
    assert not [name for name in detection.files if name.startswith(".slickmapper-tmp")]
    assert "slick" in detection.messages[-1] and "km²" in detection.messages[-1]
    # the smallest slick kept is said with the count: by default the model's own, which its card carries
    assert detection.data["min_area_km2"] == read_card(DEFAULT_MODEL).min_area_km2 != DEFAULT_MIN_AREA_KM2
    assert f"slicks of at least {detection.data['min_area_km2']:g} km²," in detection.messages[-1]
    # and which threshold cut them, and whence: the engine's word for it
    assert f"threshold {detection.data['threshold']:.2f} ({detection.data['threshold_from']})" in detection.messages[-1]
    # mirror averaging is the dock's default, and the message says the run used it
    assert detection.data["mirrored"] is True and "mirror averaged" in detection.messages[-1]


def test_dock_detection_reports_progress_and_fills_attributes(detection: Detection) -> None:
    assert len(detection.percents) >= 3 and max(detection.percents) == 100
    assert int(detection.data["tiles"]) >= 1
    assert 0 < detection.data["threshold"] < 1  # the dock's default: the model's own, which the engine reports
    assert len(detection.attributes) == detection.data["n_slicks"]
    for attributes in detection.attributes:
        assert attributes["area_km2"] > 0 and attributes["length_km"] > 0
        assert 0 < attributes["mean_prob"] <= 1
        assert attributes["scene"] and attributes["model"] and attributes["created"]


def test_the_summary_names_the_views_each_tile_was_averaged_over() -> None:
    """What the layer group's summary says follows the detection's own record of its views, one clause for each."""
    record = {"n_slicks": 2, "total_area_km2": 1.5, "threshold": 0.4, "seconds": 3, "device": "cpu"}
    said = {views: summary({**record, **dict.fromkeys(views, True)})
            for views in ((), ("mirrored",), ("mirrored", "rotated"), ("mirrored", "half_turn"))}
    assert said[()].endswith("s on cpu.")
    assert said[("mirrored",)].endswith(", mirror averaged.")
    assert said[("mirrored", "rotated")].endswith(", mirror averaged with rotations.")
    assert said[("mirrored", "half_turn")].endswith(", each tile averaged with its half turn.")


def test_processing_detect_gives_the_dock_s_polygons(detection: Detection, processing, plugin,
                                                    tmp_path: Path) -> None:
    import processing as qgis_processing

    QgsProject.instance().clear()
    result = qgis_processing.runAndLoadResults("slickmapper:detect", {
        "INPUT": detection.scene_path, "DEVICE": 2, "TILE": 256, "OVERLAP": 32, "THRESHOLD": 0.0,
        "EXTENT": detection.extent, "OUTPUT_FOLDER": str(tmp_path)})
    assert result["N_SLICKS"] == detection.data["n_slicks"]
    assert Path(result["PROBABILITY"]).exists() and Path(result["MASK"]).exists()
    assert features(result["SLICKS"]) == features(str(detection.data["slicks"]))
    loaded = {layer.name().split(" – ")[0]: layer for layer in QgsProject.instance().mapLayers().values()}
    assert loaded["Slick probability"].renderer().type() == "singlebandpseudocolor"  # the dock's styles
    stops = [item.value for item in loaded["Slick probability"].renderer().shader().rasterShaderFunction().colorRampItemList()]
    assert detection.data["threshold"] in [pytest.approx(stop) for stop in stops] and detection.data["threshold"] != 0.5
    assert loaded["Slick outlines"].labelsEnabled()
    # A second run in the same session is styled too: Processing deletes each run's post-processors once it has used them.
    QgsProject.instance().clear()
    again = qgis_processing.runAndLoadResults("slickmapper:detect", {
        "INPUT": detection.scene_path, "DEVICE": 2, "TILE": 256, "OVERLAP": 32, "THRESHOLD": 0.0,
        "EXTENT": detection.extent, "OUTPUT_FOLDER": str(tmp_path / "again")})
    assert again["N_SLICKS"] == detection.data["n_slicks"]
    loaded = {layer.name().split(" – ")[0]: layer for layer in QgsProject.instance().mapLayers().values()}
    assert loaded["Slick probability"].renderer().type() == "singlebandpseudocolor" and loaded["Slick outlines"].labelsEnabled()


def test_processing_keeps_only_slicks_of_the_smallest_area_asked_for(detection: Detection, processing, plugin,
                                                                     tmp_path: Path) -> None:
    import processing as qgis_processing

    found = features(str(detection.data["slicks"]))  # the dock's run, at the engine's default smallest area
    areas = sorted({area for area, _, _ in found})
    assert len(areas) >= 2, "the window needs slicks of two sizes to tell a smallest area apart"
    cut = (areas[0] + areas[1]) / 2  # between the two smallest: every slick but the smallest ones stays
    QgsProject.instance().clear()
    result = qgis_processing.run("slickmapper:detect", {
        "INPUT": detection.scene_path, "DEVICE": 2, "TILE": 256, "OVERLAP": 32, "THRESHOLD": 0.0, "MIN_AREA": cut,
        "EXTENT": detection.extent, "OUTPUT_FOLDER": str(tmp_path)})
    assert features(result["SLICKS"]) == [slick for slick in found if slick[0] > cut]
    kept = gdal.Open(str(result["MASK"])).ReadAsArray()
    assert (kept == 1).sum() < (gdal.Open(str(detection.data["mask"])).ReadAsArray() == 1).sum()  # and gone from the mask


def test_processing_scene_info_reports_the_scene(processing, plugin) -> None:
    import processing as qgis_processing

    result = qgis_processing.run("slickmapper:sceneinfo", {"INPUT": str(SAMPLE / "raw_mosaic.tif")})
    assert result["WIDTH"] == 768 and result["HEIGHT"] == 768 and result["PIXEL_SIZE"] == 25
    assert result["UTM_CRS"] == "EPSG:32636" and result["VALUE_SCALE"] == "uint8_stretched"


def test_rendering_is_red_where_probability_is_high_and_clear_where_it_is_zero(detection: Detection) -> None:
    slicks, probability = open_results(detection.data)
    scene = QgsRasterLayer(detection.scene_path, "scene")
    OUTPUT.mkdir(exist_ok=True)
    render([slicks, probability, scene], probability.extent(), probability.crs(), QSize(768, 768),
           QColor("white")).save(str(OUTPUT / "detection_on_scene.png"))

    values = gdal.Open(str(detection.data["probability"])).ReadAsArray()
    rows, cols = values.shape
    image = render([probability], probability.extent(), probability.crs(), QSize(cols, rows),
                   QColor(0, 0, 0, 0)).convertToFormat(QImage.Format_ARGB32)
    image.save(str(OUTPUT / "probability_only.png"))
    pixels = np.frombuffer(image.constBits().asstring(image.byteCount()), np.uint8).reshape(rows, cols, 4)
    blue, green, red, alpha = (pixels[..., channel].astype(int) for channel in range(4))
    cut = float(detection.data["threshold"])  # the ramp is fitted to the threshold the run was cut at
    likely, zero = values >= cut, (values >= 0) & (values < 0.005)
    assert likely.any() or zero.any(), "the probability raster holds neither likely slick nor clear sea"
    if likely.any():  # opaque and red where a slick is likely
        assert (alpha[likely] > 140).mean() > 0.95
        assert (red[likely] > green[likely] + 60).mean() > 0.95 and (red[likely] > blue[likely] + 100).mean() > 0.95
    below = (values >= cut / 2) & (values < 0.8 * cut)  # not slick: clearly fainter than what is
    if likely.any() and below.any():
        assert alpha[below].mean() < alpha[likely].mean() - 50
    if zero.any():  # see-through where there is no slick at all
        assert (alpha[zero] < 10).mean() > 0.95
    # and between, the more likely a slick, the more opaque: mean alpha rises from band to band of probability
    edges = [0.0, cut / 4, cut / 2, cut, 1.0001]
    bands = [alpha[(values >= lo) & (values < hi)] for lo, hi in zip(edges, edges[1:])]
    means = [band.mean() for band in bands if band.size >= 20]
    assert len(means) >= 2 and all(a < b for a, b in zip(means, means[1:])), means
    labels = gdal.Open(str(SAMPLE / "labels_mosaic.png")).ReadAsArray()
    print(f"slick-labelled pixels in the sample: {(labels == 1).sum()}; likely-slick pixels in the window: "
          f"{likely.sum()} of {values.size}")


def test_cancel_mid_run_leaves_no_layer_and_no_file(dock, iface, scene, qtbot, tmp_path: Path) -> None:
    dock.device.setCurrentText("cpu")
    dock.tile.setValue(256)
    dock.overlap.setValue(32)
    qtbot.waitUntil(lambda: not dock._tasks, timeout=60_000)
    files, layers = set(tmp_path.iterdir()), set(QgsProject.instance().mapLayers())
    dock.detect()
    task = dock.detect_task
    qtbot.waitUntil(lambda: 0 < task.progress() < 50, timeout=60_000)
    assert dock.run_controls.cancel_button.isEnabled()
    asked = time.monotonic()
    qtbot.mouseClick(dock.run_controls.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.detect_task is None, timeout=10_000)
    # The runner escalates to SIGKILL CANCEL_GRACE_S after SIGTERM, so Cancel is bounded by design; how fast
    # the engine cleans up under load is a benchmark figure, not a test.
    assert time.monotonic() - asked < CANCEL_GRACE_S + 2
    assert task.result.status is Status.CANCELLED
    assert set(tmp_path.iterdir()) == files
    assert set(QgsProject.instance().mapLayers()) == layers
    assert len(QgsProject.instance().layerTreeRoot().children()) == 1
    assert "cancelled" in iface.messages()[0]
    assert dock.run_controls.run_button.isEnabled() and not dock.run_controls.cancel_button.isEnabled()


def test_a_killed_worker_is_reported_and_the_next_run_succeeds(dock, iface, scene, qtbot, tmp_path: Path) -> None:
    small_run(dock, iface, scene, scene.crs())
    qtbot.waitUntil(lambda: not dock._tasks, timeout=60_000)
    files = set(tmp_path.iterdir())
    dock.detect()
    task = dock.detect_task
    qtbot.waitUntil(lambda: task.pid is not None and task.progress() > 0, timeout=60_000)
    os.kill(task.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: dock.detect_task is None, timeout=10_000)
    assert task.result.status is Status.FAILED
    assert "The engine process stopped unexpectedly (signal 9" in iface.messages()[0]
    assert set(tmp_path.iterdir()) == files
    assert len(QgsProject.instance().layerTreeRoot().children()) == 1

    dock.detect()
    qtbot.waitUntil(lambda: dock.detect_task is None, timeout=300_000)
    tree = QgsProject.instance().layerTreeRoot().children()
    assert [type(node) for node in tree] == [QgsLayerTreeGroup, QgsLayerTreeLayer]
    assert "stopped unexpectedly" not in iface.messages()[0]
