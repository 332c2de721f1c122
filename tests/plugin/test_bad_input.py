"""Scenes that cannot work get a clear message in the dock and never start a detection."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
from osgeo import gdal, osr
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt

from .conftest import SAMPLE


def write_tif(path: Path, bands: int, epsg: Optional[int]) -> str:
    """A small uint8 GeoTIFF; without ``epsg`` it has neither CRS nor geotransform."""
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 64, 48, bands, gdal.GDT_Byte)
    if epsg is not None:
        dataset.SetGeoTransform((500_000, 25, 0, 8_400_000, 0, -25))
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        dataset.SetProjection(srs.ExportToWkt())
    for band in range(1, bands + 1):
        dataset.GetRasterBand(band).WriteArray(np.full((48, 64), 40 * band, dtype=np.uint8))
    dataset = None
    return str(path)


def add_active(iface, path: str, name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(path, name)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    iface.canvas.setCurrentLayer(layer)
    return layer


def click_detect(dock, qtbot) -> None:
    qtbot.mouseClick(dock.run_controls.run_button, Qt.LeftButton)
    assert dock.detect_task is None
    assert not [task for task in QgsApplication.taskManager().tasks() if "detecting" in task.description()]


def test_a_layer_without_crs_is_refused_once_with_the_engines_advice(dock, iface, qtbot, tmp_path: Path) -> None:
    layer = add_active(iface, write_tif(tmp_path / "no_crs.tif", 1, None), "no_crs")
    assert dock.layer_combo.currentLayer() is layer
    qtbot.waitUntil(lambda: not dock._tasks and "no coordinate system" in dock.scene_info.text(), timeout=60_000)
    click_detect(dock, qtbot)
    assert "no coordinate system" in iface.messages()[0] and "gdal_edit.py" in iface.messages()[0]
    assert dock.scene_info.text().count("✖") == 1  # said once, in the words that fix the file the engine reads


def test_an_rgb_photo_is_not_offered_and_explained(dock, iface, qtbot, tmp_path: Path) -> None:
    add_active(iface, write_tif(tmp_path / "photo.tif", 3, 32636), "photo")
    assert dock.layer_combo.currentLayer() is None and dock.layer_combo.count() == 0
    assert "looks like an RGB picture" in dock.active_note.text()
    click_detect(dock, qtbot)
    assert "looks like an RGB picture" in iface.messages()[0]


def test_a_scene_deleted_after_loading_is_refused(dock, iface, qtbot, tmp_path: Path) -> None:
    path = tmp_path / "gone.tif"
    shutil.copy(SAMPLE / "raw_mosaic.tif", path)
    add_active(iface, str(path), "gone")
    qtbot.waitUntil(lambda: not dock._tasks, timeout=60_000)
    path.unlink()
    click_detect(dock, qtbot)
    assert "no longer exists" in iface.messages()[0]


def test_a_partial_download_is_explained_in_the_dock_and_in_processing(dock, iface, qtbot, processing, tmp_path: Path) -> None:
    import processing as qgis_processing
    from qgis.core import QgsProcessingException

    path = tmp_path / "partial download.tif"
    data = (SAMPLE / "raw_mosaic.tif").read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    add_active(iface, str(path), "partial")  # its header is whole: QGIS loads it
    qtbot.waitUntil(lambda: not dock._tasks and "interrupted download" in dock.scene_info.text(), timeout=60_000)
    assert "the file ends after 6" in dock.scene_info.text() and "Traceback" not in dock.scene_info.text()
    click_detect(dock, qtbot)
    assert "probably an interrupted download" in iface.messages()[0]
    try:
        qgis_processing.run("slickmapper:sceneinfo", {"INPUT": str(path)})
    except QgsProcessingException as error:
        message = str(error)
    else:
        raise AssertionError("Processing accepted a cut-off scene")
    assert "partial download.tif: the file ends after 6" in message and "Traceback" not in message


def test_an_8_bit_tile_stretched_another_way_is_said_before_detection(dock, iface, qtbot, tmp_path: Path) -> None:
    from engine.data.bundled import NORTH_SEA
    from engine.data.north_sea import georeferenced

    tile = georeferenced(NORTH_SEA[0], tmp_path)
    add_active(iface, str(tile.image), "north_sea_1")
    qtbot.waitUntil(lambda: not dock._tasks and "spread far less" in dock.scene_info.text(), timeout=60_000)
    assert "standard deviation 13 against about 60" in dock.scene_info.text()
    assert dock.run_controls.run_button.isEnabled()  # said, not refused: the analyst may still detect
