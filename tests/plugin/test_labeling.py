"""Labelling slicks in QGIS and fine-tuning from the dock, on the real Arctic tile with the real engine.

One plugin and dock serve the whole module (each test starts from an empty project), so its model list
is read once. Label stores are made by the engine's own functions in this process (an engine child would
cost seconds of imports), once per module where a test only needs an empty one, and copied; the
store-creation test makes its own through the dock. Every check of what was saved reads the GeoPackage
again with a fresh layer, as a restarted QGIS would.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from osgeo import gdal
from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsDistanceArea, QgsGeometry,
                       QgsLayerTreeGroup, QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings, QgsVectorLayer,
                       QgsVectorLayerUtils)
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QAction, QFileDialog, QMessageBox

from engine.contract import CLOSE_PARENT_WEIGHT
from engine.jobs.labels import create_store, import_mask
from engine.models.registry import DEFAULT_MODEL, LIGHT_MODEL
from slick_plugin import label_store
from slick_plugin.commands import finetuned_model_path
from slick_plugin.dock import SlickMapperDock
from slick_plugin.layers import open_results
from slick_plugin.loss_chart import LossChart
from slick_plugin.rich_text import html_text
from slick_plugin.engine_runner import EngineRunner, Status, _Transcript

from .conftest import OUTPUT, SAMPLE, FakeIface, engine, load_scene, needs_model, opened_dock, render

pytestmark = needs_model

SCENE_CRS = "EPSG:32636"
WINDOW_PX = (256, 256, 640, 512)
"""(col0, row0, col1, row1) around the two labelled slicks of sample_1."""


class LabelingIface(FakeIface):
    """FakeIface plus the two QgisInterface calls labelling uses; records what the add-feature tool was for."""

    def __init__(self) -> None:
        super().__init__()
        self.add_feature = QAction("Add Polygon Feature", self.window)
        self.digitized: List[str] = []
        self.add_feature.triggered.connect(lambda: self.digitized.append(self.canvas.currentLayer().id()))

    def actionAddFeature(self) -> QAction:  # noqa: N802 - QgisInterface's names
        return self.add_feature

    def setActiveLayer(self, layer) -> bool:  # noqa: N802
        self.canvas.setCurrentLayer(layer)
        return True


@dataclass
class Session:
    iface: LabelingIface
    dock: SlickMapperDock


@pytest.fixture(scope="module")
def session(qgis_app, module_dir: Path, module_qtbot) -> Iterator[Session]:
    iface = LabelingIface()
    with opened_dock(iface, module_qtbot) as dock:
        yield Session(iface, dock)


@pytest.fixture
def ui(session: Session, tmp_path: Path, monkeypatch) -> Session:
    """The module's dock on an empty project; new models go to this test's own folder."""
    monkeypatch.setenv("SLICK_MAPPER_MODELS", str(tmp_path / "models"))
    QgsProject.instance().clear()
    session.iface.bar.clearWidgets()
    session.iface.digitized.clear()
    session.dock.device.setCurrentText("cpu")
    return session


@pytest.fixture(scope="module")
def blank_stores(module_dir: Path) -> Dict[str, Path]:
    """Empty stores made by the engine, in the scene's CRS and in EPSG:4326, to copy into projects."""
    stores = {}
    for crs in (SCENE_CRS, "EPSG:4326"):
        stores[crs] = create_store(module_dir / "blank" / f"{crs.replace(':', '_')}.gpkg", crs)
    return stores


def saved_project(folder: Path, name: str, scene: Path, ui: Session) -> QgsRasterLayer:
    """A new project in ``folder`` holding ``scene``, saved as ``name``.qgz, with the scene picked in the dock."""
    folder.mkdir(parents=True, exist_ok=True)
    layer = load_scene(scene, ui.iface)
    assert QgsProject.instance().write(str(folder / f"{name}.qgz"))
    ui.dock.layer_combo.setLayer(layer)
    return layer


def labelling(ui: Session, store: Path, blank: Path) -> label_store.StoreLayers:
    """Copy an engine-made empty store to ``store`` (the project's) and start labelling in it."""
    shutil.copy(blank, store)
    ui.dock.labels_panel.start_button.click()
    layers = label_store.StoreLayers.find(QgsProject.instance(), str(store))
    assert layers is not None, ui.iface.messages()
    return layers


def pixel_window(layer: QgsRasterLayer, col0: int, row0: int, col1: int, row1: int) -> QgsRectangle:
    extent, size = layer.extent(), layer.rasterUnitsPerPixelX()
    return QgsRectangle(extent.xMinimum() + col0 * size, extent.yMaximum() - row1 * size,
                        extent.xMinimum() + col1 * size, extent.yMaximum() - row0 * size)


def on_disk(store: Path, name: str = "labels") -> List[dict]:
    """What a restarted QGIS would find in the store: each feature's attributes and its geometry."""
    layer = QgsVectorLayer(f"{store}|layername={name}", name, "ogr")
    assert layer.isValid()
    return [dict(feature.attributeMap(), geometry=feature.geometry()) for feature in layer.getFeatures()]


def draw(layers: label_store.StoreLayers, geometry: QgsGeometry, **values: object) -> None:
    """What QGIS's add-feature tool does once a polygon is finished: a feature with the layer's defaults."""
    layer = layers.labels
    fields = layer.fields()
    feature = QgsVectorLayerUtils.createFeature(layer, geometry, {fields.indexOf(k): v for k, v in values.items()},
                                                layer.createExpressionContext())
    assert layer.addFeature(feature)


# ---- the store, one per project -------------------------------------------------------------------------


def test_each_project_gets_its_own_store_created_by_the_engine(ui: Session, qtbot, tmp_path: Path,
                                                               module_dir: Path, monkeypatch) -> None:
    project = QgsProject.instance()
    scene_path = module_dir / "sample_1.tif"
    panel = ui.dock.labels_panel
    scene = saved_project(tmp_path / "a", "alpha", scene_path, ui)
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    alpha = tmp_path / "a" / "alpha_slick_labels.gpkg"
    qtbot.waitUntil(lambda: label_store.StoreLayers.find(project, str(alpha)) is not None, timeout=60_000)
    layers = label_store.StoreLayers.find(project, str(alpha))
    assert layers.labels.crs().authid() == SCENE_CRS  # the engine made it, in the scene's CRS
    assert layers.labels.isEditable() and ui.iface.activeLayer() is layers.labels
    assert ui.iface.digitized == [layers.labels.id()]  # QGIS's own add-feature tool, on the labels layer
    group = project.layerTreeRoot().children()[0]
    assert isinstance(group, QgsLayerTreeGroup) and group.name() == "Slick labels"
    assert [node.layer() for node in group.findLayers()] == [layers.labels, layers.reviewed]
    assert layers.labels.renderer().type() == "categorizedSymbol" and layers.labels.renderer().classAttribute() == "class"
    draw(layers, QgsGeometry.fromRect(pixel_window(scene, *WINDOW_PX)))
    qtbot.waitUntil(lambda: len(on_disk(alpha)) == 1, timeout=2_000)
    assert project.write()

    project.clear()
    saved_project(tmp_path / "b", "beta", scene_path, ui)
    assert "0 slick labels" not in panel.counts_label.text()  # no store yet, nothing counted
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    beta = tmp_path / "b" / "beta_slick_labels.gpkg"
    qtbot.waitUntil(lambda: label_store.StoreLayers.find(project, str(beta)) is not None, timeout=60_000)
    assert on_disk(beta) == [] and len(on_disk(alpha)) == 1
    assert "0 slick labels" in panel.counts_label.text()

    project.clear()  # an unsaved project: the analyst picks the file, the project remembers it
    load_scene(scene_path, ui.iface)
    ui.dock.layer_combo.setLayer(project.mapLayersByName("sample_1")[0])
    chosen = tmp_path / "c" / "my labels"
    asked: List[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *args, **kwargs: (asked.append(args[2]) or str(chosen), "")))
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: label_store.StoreLayers.find(project, f"{chosen}.gpkg") is not None, timeout=60_000)
    assert asked == [str(scene_path.parent / "slick_labels.gpkg")]
    assert project.readEntry("SlickMapper", "label_store", "")[0] == f"{chosen}.gpkg"
    assert not [key for key in QgsSettings().allKeys() if "label_store" in key]  # never global

    project.clear()
    assert project.read(str(tmp_path / "a" / "alpha.qgz"))
    ui.dock.layer_combo.setLayer(project.mapLayersByName("sample_1")[0])
    assert "1 slick label," in panel.counts_label.text()
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)  # the saved project's layers are used again
    assert len(project.mapLayers()) == 3 and len(on_disk(alpha)) == 1


# ---- drawing, accepting, reviewing ------------------------------------------------------------------------


def test_a_drawn_polygon_is_on_disk_as_soon_as_it_is_added(ui: Session, qtbot, tmp_path: Path, module_dir: Path,
                                                           blank_stores) -> None:
    scene = saved_project(tmp_path, "draw", module_dir / "sample_1.tif", ui)
    store = tmp_path / "draw_slick_labels.gpkg"
    layers = labelling(ui, store, blank_stores[SCENE_CRS])
    shape = QgsGeometry.fromRect(pixel_window(scene, *WINDOW_PX))
    draw(layers, shape)
    qtbot.waitUntil(lambda: len(on_disk(store)) == 1, timeout=1_000)
    saved = on_disk(store)[0]
    assert saved["class"] == "slick" and saved["origin"] == "drawn"
    assert saved["scene"] == str(module_dir / "sample_1.tif")
    assert saved["author"] and saved["created"].isValid()
    assert saved["geometry"].equals(shape)
    assert layers.labels.isEditable() and not layers.labels.isModified()  # still drawing, nothing pending

    fid = next(layers.labels.getFeatures()).id()
    layers.labels.changeAttributeValue(fid, layers.labels.fields().indexOf("class"), "lookalike")
    qtbot.waitUntil(lambda: on_disk(store)[0]["class"] == "lookalike", timeout=1_000)
    smaller = QgsGeometry.fromRect(pixel_window(scene, 256, 256, 400, 400))
    layers.labels.changeGeometry(fid, smaller)
    qtbot.waitUntil(lambda: on_disk(store)[0]["geometry"].equals(smaller), timeout=1_000)
    assert on_disk(store)[0]["origin"] == "drawn"  # only accepted polygons become 'edited'
    layers.labels.deleteFeature(fid)
    qtbot.waitUntil(lambda: on_disk(store) == [], timeout=1_000)


@pytest.fixture(scope="module")
def detection(module_dir: Path) -> Dict[str, object]:
    """A whole-scene detection of sample_1 with the light bundled model (CPU, 256-px tiles): outlines to accept or reject."""
    return engine("detect", str(module_dir / "sample_1.tif"), "--out", str(module_dir / "detection"), "--model", str(LIGHT_MODEL),
                  "--tile", "256", "--overlap", "32", "--device", "cpu")


def test_accept_and_reject_copy_selected_outlines_into_the_store(ui: Session, qtbot, tmp_path: Path,
                                                                module_dir: Path, blank_stores, detection) -> None:
    project = QgsProject.instance()
    saved_project(tmp_path, "accept", module_dir / "sample_1.tif", ui)
    store = tmp_path / "wgs84_labels.gpkg"
    label_store.remember_store(project, str(store))  # as if the analyst had picked a store in EPSG:4326
    layers = labelling(ui, store, blank_stores["EPSG:4326"])
    panel = ui.dock.labels_panel

    qtbot.mouseClick(panel.accept_button, Qt.LeftButton)
    assert "No detected slick is selected" in ui.iface.messages()[0]

    outlines, probability = open_results(detection)
    project.addMapLayers([outlines, probability])
    largest = sorted(outlines.getFeatures(), key=lambda f: -f["area_km2"])[:3]
    outlines.selectByIds([largest[0].id(), largest[1].id()])
    qtbot.mouseClick(panel.accept_button, Qt.LeftButton)
    outlines.selectByIds([largest[2].id()])
    qtbot.mouseClick(panel.reject_button, Qt.LeftButton)
    assert outlines.selectedFeatureCount() == 0  # copied ones are deselected, so they are not copied twice

    saved = on_disk(store)
    assert sorted(feature["class"] for feature in saved) == ["lookalike", "slick", "slick"]
    assert {feature["origin"] for feature in saved} == {"accepted"}
    assert {feature["scene"] for feature in saved} == {str(module_dir / "sample_1.tif")}
    to_wgs84 = QgsCoordinateTransform(outlines.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), project)
    for source, copy in zip(largest, sorted(saved, key=lambda f: -f["geometry"].area())):
        expected = QgsGeometry(source.geometry())
        expected.transform(to_wgs84)
        assert copy["geometry"].centroid().asPoint().distance(expected.centroid().asPoint()) < 1e-6
        assert copy["geometry"].area() == pytest.approx(expected.area(), rel=1e-6)
    assert "2 slick labels, 1 look-alike, 0.0 km² reviewed" in panel.counts_label.text()

    fid = next(f.id() for f in layers.labels.getFeatures() if f["class"] == "slick")
    layers.labels.changeGeometry(fid, layers.labels.getFeature(fid).geometry().buffer(0.001, 4))
    qtbot.waitUntil(lambda: sorted(f["origin"] for f in on_disk(store)) == ["accepted", "accepted", "edited"],
                    timeout=1_000)

    other = QgsVectorLayer(f"{detection['slicks']}|layername=slicks", "other scene", "ogr")
    other.selectByIds([largest[0].id()])
    project.addMapLayer(other)
    other.startEditing()
    other.changeAttributeValue(largest[0].id(), other.fields().indexOf("scene"), "sample_2.tif")
    qtbot.mouseClick(panel.accept_button, Qt.LeftButton)
    assert "detected on sample_2.tif" in ui.iface.messages()[0] and len(on_disk(store)) == 3
    other.rollBack()


def test_the_map_view_is_marked_reviewed_clipped_to_the_scene_and_counted(ui: Session, qtbot, tmp_path: Path,
                                                                          module_dir: Path, blank_stores) -> None:
    project = QgsProject.instance()
    scene = saved_project(tmp_path, "review", module_dir / "sample_1.tif", ui)
    store = tmp_path / "review_slick_labels.gpkg"
    layers = labelling(ui, store, blank_stores[SCENE_CRS])
    panel = ui.dock.labels_panel

    window = pixel_window(scene, *WINDOW_PX)
    ui.iface.canvas.setExtent(window)
    view = ui.iface.canvas.extent()  # the canvas keeps its aspect ratio: what it shows is what is reviewed
    qtbot.mouseClick(panel.reviewed_button, Qt.LeftButton)
    reviewed = on_disk(store, "reviewed")
    assert len(reviewed) == 1 and reviewed[0]["scene"] == str(module_dir / "sample_1.tif") and reviewed[0]["author"]
    expected = QgsGeometry.fromRect(view).intersection(QgsGeometry.fromRect(scene.extent()))
    assert reviewed[0]["geometry"].symDifference(expected).area() < 1e-3 * expected.area()

    mercator = QgsCoordinateReferenceSystem("EPSG:3857")
    ui.iface.canvas.setDestinationCrs(mercator)
    around = QgsCoordinateTransform(scene.crs(), mercator, project).transformBoundingBox(scene.extent())
    around.scale(3)  # far larger than the scene: clipped to it
    ui.iface.canvas.setExtent(around)
    qtbot.mouseClick(panel.reviewed_button, Qt.LeftButton)
    whole = on_disk(store, "reviewed")[1]["geometry"]
    assert whole.boundingBox().buffered(1).contains(scene.extent())
    assert scene.extent().buffered(1).contains(whole.boundingBox())

    draw(layers, QgsGeometry.fromRect(pixel_window(scene, 300, 300, 340, 340)))
    draw(layers, QgsGeometry.fromRect(pixel_window(scene, 400, 300, 440, 340)))
    draw(layers, QgsGeometry.fromRect(pixel_window(scene, 500, 300, 540, 340)), **{"class": "lookalike"})
    draw(layers, QgsGeometry.fromRect(pixel_window(scene, 600, 300, 640, 340)), scene="/elsewhere/other.tif")
    qtbot.waitUntil(lambda: len(on_disk(store)) == 4, timeout=1_000)
    measure = QgsDistanceArea()
    measure.setSourceCrs(scene.crs(), project.transformContext())
    measure.setEllipsoid("EPSG:7030")
    km2 = measure.measureArea(QgsGeometry.fromRect(scene.extent())) / 1e6  # the union: the whole scene
    assert abs(km2 - 19.2 * 19.2) < 2  # 768 × 768 pixels of 25 m
    counts = label_store.counts(project, layers, str(module_dir / "sample_1.tif"))
    assert (counts.slicks, counts.lookalikes) == (2, 1) and counts.reviewed_km2 == pytest.approx(km2, rel=1e-3)
    qtbot.waitUntil(lambda: f"2 slick labels, 1 look-alike, {km2:.1f} km² reviewed" in panel.counts_label.text(),
                    timeout=1_000)

    ui.iface.canvas.setDestinationCrs(scene.crs())
    ui.iface.canvas.setLayers([layers.labels, layers.reviewed, scene])
    ui.iface.canvas.setExtent(pixel_window(scene, 200, 200, 700, 500))
    ui.iface.canvas.waitWhileRendering()
    ui.iface.canvas.refreshAllLayers()
    qtbot.waitUntil(lambda: not ui.iface.canvas.isDrawing(), timeout=5_000)
    ui.iface.canvas.grab().save(str(OUTPUT / "labels_on_scene.png"))


def test_export_mask_runs_the_engine_on_the_store(ui: Session, qtbot, tmp_path: Path, module_dir: Path,
                                                  blank_stores, monkeypatch) -> None:
    scene = saved_project(tmp_path, "export", module_dir / "sample_1.tif", ui)
    layers = labelling(ui, tmp_path / "export_slick_labels.gpkg", blank_stores[SCENE_CRS])
    draw(layers, QgsGeometry.fromRect(pixel_window(scene, 100, 200, 164, 232)))
    qtbot.waitUntil(lambda: not layers.labels.isModified(), timeout=1_000)
    out = tmp_path / "masks" / "sample_1_labels.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *args, **kwargs: (str(out), "")))
    qtbot.mouseClick(ui.dock.labels_panel.export_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not ui.dock._tasks, timeout=60_000)
    assert f"Label mask written: {out}" in ui.iface.messages()[0]
    mask = gdal.Open(str(out)).ReadAsArray()
    assert mask.shape == (768, 768) and (mask == 255).sum() == 64 * 32
    assert (mask[200:232, 100:164] == 255).all() and out.with_suffix(".pgw").exists()


# ---- where to label next ------------------------------------------------------------------------------------


def test_where_to_label_next_lists_the_engine_s_ranking_and_zooms(ui: Session, qtbot, module_dir: Path,
                                                                   detection) -> None:
    scene = load_scene(module_dir / "sample_1.tif", ui.iface)
    _, probability = open_results(detection)
    blocks = detection["uncertain_blocks"]  # the engine's answer, in detect's result
    assert len(blocks) == 9 and blocks[0]["uncertainty"] >= blocks[-1]["uncertainty"] > 0  # 768 px: 3 × 3 blocks
    ui.dock.labels_panel.show_uncertain(probability, blocks)
    items = ui.dock.labels_panel.next_list
    assert [items.item(i).text() for i in range(items.count())] == [
        f"{n}. uncertainty {b['uncertainty']:.2f} · {100 * b['above']:.0f} % slick" for n, b in enumerate(blocks, 1)]
    last = items.item(items.count() - 1)
    qtbot.mouseClick(items.viewport(), Qt.LeftButton, pos=items.visualItemRect(last).center())
    view, block = ui.iface.canvas.extent(), QgsRectangle(*blocks[-1]["extent"])
    assert view.contains(block) and view.width() < 2 * block.width() + 1 and scene.extent().contains(block)


# ---- fine-tuning -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arctic_store(module_dir: Path) -> Path:
    """The analysts' labels of sample_1 (two slicks, the whole tile reviewed), imported by the engine."""
    store = create_store(module_dir / "arctic_slick_labels.gpkg", SCENE_CRS)
    import_mask(store, module_dir / "sample_1.tif", SAMPLE / "labels_mosaic.png")
    return store


def model_card(path: Path) -> dict:
    """The card a .safetensors model file carries in its header (read without torch)."""
    with open(path, "rb") as file:
        size = struct.unpack("<Q", file.read(8))[0]
        metadata = json.loads(file.read(size))["__metadata__"]
    return json.loads(next(value for value in metadata.values() if value.lstrip().startswith("{")))


def tiny_finetune(ui: Session, module_dir: Path, arctic_store: Path) -> None:
    """A short fine-tune of the light bundled model: the dock runs any network model's alike, and the product's model
    takes twice as long (the engine's tests fine-tune an ensemble). Its U-Net learnt sample_1 whole."""
    saved_project(module_dir, "arctic", module_dir / "sample_1.tif", ui)
    assert label_store.store_path(QgsProject.instance()) == str(arctic_store)
    combo = ui.dock.model_combo
    combo.setCurrentIndex([Path(combo.itemData(i)["path"]) for i in range(combo.count())].index(LIGHT_MODEL.resolve()))
    panel = ui.dock.finetune_panel
    panel.epochs.setValue(2)
    panel.tile.setValue(128)
    panel.train_layers.setCurrentText("decoder")


def test_fine_tune_from_the_dock_makes_a_model_with_lineage_detects_with_it_and_shows_what_changed(
        ui: Session, qtbot, tmp_path: Path, module_dir: Path, arctic_store: Path, monkeypatch, processing) -> None:
    tiny_finetune(ui, module_dir, arctic_store)
    panel = ui.dock.finetune_panel
    # The U-Net learnt sample_1: two epochs find its labels no better, which the check would answer with the parent's
    # weights (the next test); unticked, the new weights stay, and there is something to compare.
    panel.label_check.setChecked(False)
    panel.close_to_parent.setChecked(True)  # the stronger pull: the command, the run and the card all carry it
    assert not ui.dock.against_parent.isEnabled()  # the bundled model has no parent to compare with
    assert "2 slick labels, 0 look-alikes, 368." in ui.dock.labels_panel.counts_label.text()
    percents: List[int] = []
    panel.run_controls.progress.valueChanged.connect(percents.append)
    qtbot.mouseClick(panel.run_controls.run_button, Qt.LeftButton)
    assert panel.task is not None and panel.run_controls.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.task is None, timeout=240_000)
    assert panel.result.ok, panel.result.message

    models = list((tmp_path / "models").iterdir())
    parent = Path(ui.dock._current_model()["path"])
    assert len(models) == 1 and models[0].name.startswith(f"{parent.stem}_ft_")
    assert str(models[0]) == panel.result.data["model"]
    lineage = model_card(models[0])["lineage"]
    assert lineage["parent"]["path"] == str(parent.resolve()) and len(lineage["parent"]["sha256"]) == 64
    assert lineage["labels"]["path"] == str(arctic_store.resolve()) and lineage["tile"] == 128
    assert lineage["train_layers"] == "decoder" and lineage["epochs"] <= 2 and lineage["stay_close"]
    assert lineage["parent_weight"] == CLOSE_PARENT_WEIGHT and lineage["parent_share"] == 0.5  # one network: the stronger pull

    data = panel.result.data
    # The engine's recipe keeps no validation tile: every epoch runs on every labelled tile, the last is kept.
    assert data["val_tiles"] == 0 and data["val_dice_before"] is data["val_dice_after"] is None and data["best_epoch"] == data["epochs_run"] == 2
    assert not data["holds_parent_weights"]
    assert data["seeds_averaged"] == 2 and lineage["seeds_averaged"] == 2  # the engine's default: two runs' weights averaged
    assert html_text(f"2 epochs in each of 2 runs on all {data['train_tiles']} labelled tiles (their weights averaged), layers: "
                     "decoder, kept close to the parent's weights,") in panel.summary.text()
    assert data["threshold_note"].startswith("Threshold") and html_text(data["threshold_note"]) in panel.summary.text()
    assert panel.labelled_only.isChecked() and model_card(models[0])["taught_scenes"]  # the default: the labelled scene only
    assert data["use_note"].startswith("Its weights were moved 50% of the way back to the parent's") and lineage["parent_share"] == 0.5
    assert "Its weights detect on the 1 labelled scene only" in data["use_note"] and html_text(data["use_note"]) in panel.summary.text()
    assert [e.number for e in panel.chart.epochs] == list(range(1, data["epochs_run"] + 1))
    assert panel.chart.epochs[0].train_loss == pytest.approx(data["history"][0]["train_loss"], abs=1e-3)
    assert max(percents) == 100 and panel.run_controls.progress.format() == "Done" and panel.detect_button.isVisible()
    assert f"New model {models[0].name}: trained on every labelled tile" in ui.iface.messages()[0]
    body = ui.dock.widget().widget()
    body.resize(body.width(), body.sizeHint().height())
    body.grab().save(str(OUTPUT / "dock_finetune.png"))

    ui.iface.canvas.setExtent(pixel_window(QgsProject.instance().mapLayersByName("sample_1")[0], *WINDOW_PX))
    ui.dock.tile.setValue(256)
    ui.dock.overlap.setValue(32)
    qtbot.mouseClick(panel.detect_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: ui.dock.detect_task is not None, timeout=60_000)
    assert Path(ui.dock._current_model()["path"]) == models[0] and ui.dock.map_view.isChecked()
    qtbot.waitUntil(lambda: ui.dock.detect_task is None, timeout=120_000)
    group = QgsProject.instance().layerTreeRoot().children()[0]
    assert group.name().endswith(model_card(models[0])["name"]), ui.iface.messages()
    assert not any("Weights:" in message for message in ui.iface.messages())  # its own weights on the scene it learnt
    assert ui.dock.labels_panel.next_list.count() > 0

    # What fine-tuning changed: both models on the same view, the slicks only one of them finds drawn above.
    assert ui.dock.against_parent.isEnabled() and not ui.dock.against_parent.isChecked()
    qtbot.mouseClick(panel.changes_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: ui.dock.detect_task is not None, timeout=60_000)
    assert ui.dock.against_parent.isChecked()
    task = ui.dock.detect_task
    qtbot.waitUntil(lambda: ui.dock.detect_task is None, timeout=180_000)
    assert task.result.ok, task.result.message
    data = task.result.data
    assert data["parent"]["model_name"] == model_card(parent)["name"] and Path(data["parent"]["slicks"]).is_file()
    root = QgsProject.instance().layerTreeRoot()
    group = root.children()[root.children().index(root.findLayer(ui.dock.layer_combo.currentLayer().id())) - 1]
    changes = group.findLayers()[0].layer()
    assert changes.name() == f"Changes against the parent ({data['new_slicks']} new, {data['gone_slicks']} gone)"
    assert [node.layer().source() for node in group.findLayers()[1:]] == [
        f"{data['slicks']}|layername=slicks", f"{data['parent']['slicks']}|layername=slicks", data["probability"]]
    assert [node.itemVisibilityChecked() for node in group.findLayers()] == [True, True, False, True]  # the parent's hidden
    kinds = [feature["change"] for feature in changes.getFeatures()]
    assert kinds.count("new") == data["new_slicks"] and kinds.count("gone") == data["gone_slicks"]
    said = [m for m in ui.iface.messages() if f"Against its parent {data['parent']['model_name']}" in m]
    assert len(said) == 1 and f"{data['new_slicks']} new ({data['new_area_km2']:.2f} km²), {data['gone_slicks']} gone" in said[0]
    image = render([changes], changes.extent().buffered(500), changes.crs(), QSize(400, 400), QColor("white"))
    image.save(str(OUTPUT / "dock_changes_layer.png"))
    pixels = [QColor(image.pixel(x, y)) for x in range(0, 400, 2) for y in range(0, 400, 2)]
    green = any(c.green() > 150 and c.red() < 120 and c.blue() < 170 for c in pixels)
    red = any(c.red() > 200 and c.green() < 80 for c in pixels)
    assert green == (data["new_slicks"] > 0) and red == (data["gone_slicks"] > 0), (data["new_slicks"], data["gone_slicks"])

    # Processing gives the same comparison, for batches and the Modeler.
    import processing as qgis_processing

    view = ui.iface.canvas.extent()
    ran = qgis_processing.run("slickmapper:detect", {
        "INPUT": ui.dock.layer_combo.currentLayer().source(), "MODEL": str(models[0]), "AGAINST_PARENT": True, "DEVICE": 2,
        "TILE": 256, "OVERLAP": 32, "THRESHOLD": 0.0, "OUTPUT_FOLDER": str(tmp_path / "processing"),
        "EXTENT": f"{view.xMinimum()},{view.xMaximum()},{view.yMinimum()},{view.yMaximum()} [{ui.iface.canvas.mapSettings().destinationCrs().authid()}]"})
    assert (ran["N_NEW"], ran["N_GONE"]) == (data["new_slicks"], data["gone_slicks"]) and Path(ran["CHANGES"]).is_file()

    # Found wanting, the new model goes: after a No nothing happens, after a Yes its file and its entry are gone.
    assert ui.dock.remove_model_button.isEnabled() and Path(ui.dock._current_model()["path"]) == models[0]
    answers = [QMessageBox.No, QMessageBox.Yes]
    monkeypatch.setattr(QMessageBox, "question", lambda *args: answers.pop(0))
    qtbot.mouseClick(ui.dock.remove_model_button, Qt.LeftButton)
    assert models[0].is_file() and not ui.dock._tasks
    qtbot.mouseClick(ui.dock.remove_model_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not models[0].exists() and not ui.dock._tasks, timeout=60_000)
    listed = [ui.dock.model_combo.itemData(i)["path"] for i in range(ui.dock.model_combo.count())]
    assert str(models[0]) not in listed and Path(ui.dock._current_model()["path"]) == parent != DEFAULT_MODEL.resolve()  # its parent, not the default
    assert not ui.dock.remove_model_button.isEnabled()  # the bundled parent cannot be removed
    assert any(f"Removed {data['model_name']}." in m for m in ui.iface.messages())


def test_a_fine_tune_that_finds_the_labelled_slicks_no_better_keeps_the_parent_s_weights_and_says_so(
        ui: Session, qtbot, tmp_path: Path, module_dir: Path, arctic_store: Path) -> None:
    tiny_finetune(ui, module_dir, arctic_store)
    panel = ui.dock.finetune_panel
    panel.label_check.setChecked(True)  # the defaults (a test before may have changed them)
    panel.close_to_parent.setChecked(False)
    qtbot.mouseClick(panel.run_controls.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.task is None, timeout=240_000)
    assert panel.result.ok, panel.result.message
    data = panel.result.data
    assert data["holds_parent_weights"] and data["best_epoch"] == 0 and data["epochs_run"] == 2
    assert data["labels_dice_after"] <= data["labels_dice_before"]
    assert data["weights_note"].startswith("It keeps the parent's weights: on the labelled tiles themselves")
    assert html_text(data["weights_note"]) in panel.summary.text()
    name = Path(data["model"]).name
    assert any(f"New model {name} holds its parent's weights." in m for m in ui.iface.messages()), ui.iface.messages()
    assert model_card(Path(data["model"]))["lineage"]["best_epoch"] == 0
    assert panel.detect_button.isVisible() and not panel.changes_button.isVisible()  # the same weights: nothing to compare
    panel.grab().save(str(OUTPUT / "dock_finetune_kept_parent.png"))


def test_cancelling_a_fine_tune_leaves_no_model_file(ui: Session, qtbot, tmp_path: Path, module_dir: Path,
                                                      arctic_store: Path) -> None:
    tiny_finetune(ui, module_dir, arctic_store)
    panel = ui.dock.finetune_panel
    qtbot.mouseClick(panel.run_controls.run_button, Qt.LeftButton)
    task = panel.task
    qtbot.waitUntil(lambda: task.progress() > 0, timeout=60_000)
    qtbot.mouseClick(panel.run_controls.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.task is None, timeout=15_000)
    assert task.result.status is Status.CANCELLED
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []
    assert "Fine-tuning cancelled; no model file was written." in ui.iface.messages()[0]
    assert panel.run_controls.run_button.isEnabled() and not panel.run_controls.cancel_button.isEnabled()


def test_a_failed_fine_tune_says_why_and_leaves_no_model_file(ui: Session, qtbot, tmp_path: Path,
                                                                module_dir: Path, blank_stores) -> None:
    saved_project(tmp_path, "unlabelled", module_dir / "sample_1.tif", ui)
    shutil.copy(blank_stores[SCENE_CRS], tmp_path / "unlabelled_slick_labels.gpkg")
    panel = ui.dock.finetune_panel
    qtbot.mouseClick(panel.run_controls.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.task is None, timeout=60_000)
    assert panel.result.status is Status.FAILED
    assert "holds no slick labels" in panel.summary.text() and "Draw or accept a few slicks" in panel.summary.text()
    assert any("Fine-tuning failed" in message for message in ui.iface.messages())
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []
    assert not panel.detect_button.isVisible() and panel.run_controls.run_button.isEnabled()


def test_fine_tune_says_what_is_missing_without_a_store(ui: Session, tmp_path: Path, module_dir: Path) -> None:
    saved_project(tmp_path, "empty", module_dir / "sample_1.tif", ui)
    ui.dock.finetune_panel.run_controls.run_button.click()
    assert ui.dock.finetune_panel.task is None
    assert "This project has no label store yet" in ui.iface.messages()[0]


def test_the_engine_s_metrics_events_reach_the_chart_as_numbers_and_log_lines_do_not(capsys, qtbot) -> None:
    from engine.cli.main import Reporter

    reporter = Reporter(jsonl=True)
    reporter.metrics({"epoch": 2, "train_loss": 0.6055, "val_loss": float("nan"), "val_dice": 0.024,
                      "threshold": 0.8, "val_dice_calibrated": 0.031})
    reporter.log("epoch 3: train loss 0.5708, val loss 1.0559, val Dice 0.065")
    chart, logged = LossChart(), []
    qtbot.addWidget(chart)
    for line in capsys.readouterr().out.splitlines():
        EngineRunner._handle(line, _Transcript(), None, logged.append, chart.add_metrics)
    [epoch] = chart.epochs
    assert (epoch.number, epoch.train_loss) == (2, 0.6055)
    assert logged == ["epoch 3: train loss 0.5708, val loss 1.0559, val Dice 0.065"]


def test_fine_tuned_model_names_never_collide(tmp_path: Path) -> None:
    from datetime import datetime

    now = datetime(2024, 5, 1, 12, 0, 0)
    first = finetuned_model_path(tmp_path, "/models/slick_unet.safetensors", now)
    assert first.name == "slick_unet_ft_20240501-120000.safetensors"
    first.touch()
    assert finetuned_model_path(tmp_path, "/models/slick_unet.safetensors", now).name == \
        "slick_unet_ft_20240501-120000-2.safetensors"
