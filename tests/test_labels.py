"""The label store on the real Arctic labels: import, rasterise by georeference, export, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from engine.cli.main import main
from engine.errors import InputError, OutputError
from engine.jobs.evaluate import align_to_grid, read_label_mask, slick_dice, slick_dice_arrays
from engine.jobs.labels import add_labels, create_store, export_mask, import_mask, rasterise, read_store, scene_grid, summary
from engine.scenes.grid import Grid

SAMPLES = Path(__file__).resolve().parents[1] / "resources" / "samples" / "arctic_s1"
SCENE = SAMPLES / "sample_1" / "raw_mosaic.tif"
LABEL = SAMPLES / "sample_1" / "labels_mosaic.png"


def _store(path, crs, samples=("sample_1",)):
    create_store(path, crs)
    for sample in samples:
        import_mask(path, SAMPLES / sample / "raw_mosaic.tif", SAMPLES / sample / "labels_mosaic.png")
    return read_store(path)


@pytest.fixture(scope="module")
def utm_store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("utm") / "labels.gpkg", "EPSG:32636")


@pytest.fixture(scope="module")
def lonlat_store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("lonlat") / "labels.gpkg", "EPSG:4326")


def test_a_new_store_has_both_layers_and_is_never_overwritten(tmp_path):
    path = create_store(tmp_path / "project.gpkg", "EPSG:4326")
    assert sorted(fiona.listlayers(path)) == ["labels", "reviewed"]
    with fiona.open(path, layer="labels") as layer:
        assert set(layer.schema["properties"]) == {"class", "scene", "author", "created", "origin"}
    before = path.read_bytes()
    with pytest.raises(OutputError, match="never overwritten"):
        create_store(path, "EPSG:32636")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["project.gpkg"]  # no staging folder left behind
    with pytest.raises(InputError, match="Unknown CRS"):
        create_store(tmp_path / "other.gpkg", "EPSG:999999")


def test_rasterised_labels_sit_where_the_png_says(utm_store):
    grid = scene_grid(SCENE)
    target, known = rasterise(utm_store, SCENE, grid)
    label, transform, crs = read_label_mask(LABEL)
    aligned = align_to_grid(label.astype(np.uint8), grid.transform, rasterio.crs.CRS.from_user_input(grid.crs), target.shape,
                            src_transform=transform, src_crs=crs)
    assert slick_dice_arrays(target.astype(bool), aligned.astype(bool), grid.describe()).dice > 0.999
    assert target.sum() == label.sum() > 0
    assert known.all()  # the label's footprint is the scene's: every pixel was reviewed


def test_a_store_in_another_crs_rasterises_to_the_same_pixels(utm_store, lonlat_store):
    assert lonlat_store.crs == "EPSG:4326"
    grid = scene_grid(SCENE)
    for a, b in zip(rasterise(utm_store, SCENE, grid), rasterise(lonlat_store, SCENE, grid)):
        np.testing.assert_array_equal(a, b)
    # A window of the grid gets the same pixels as the window of the whole.
    window = Grid(grid.crs, grid.transform @ Affine.translation(300, 200), 256, 128)
    target, _ = rasterise(lonlat_store, SCENE, window)
    np.testing.assert_array_equal(target, rasterise(utm_store, SCENE, grid)[0][200:328, 300:556])


def test_lookalikes_are_known_sea_even_outside_reviewed_areas(tmp_path):
    path = create_store(tmp_path / "l.gpkg", "EPSG:32636")
    grid = scene_grid(SCENE)
    left, top = grid.transform.c, grid.transform.f
    add_labels(path, SCENE, [box(left, top - 250, left + 500, top)], "lookalike", crs="EPSG:32636", author="t", origin="drawn")
    target, known = rasterise(read_store(path), SCENE, grid)
    assert target.sum() == 0 and known.sum() == 10 * 20 and known[:10, :20].all()


def test_content_hash_is_stable_and_follows_the_content(tmp_path):
    store = _store(tmp_path / "h.gpkg", "EPSG:32636")
    assert read_store(store.path).sha256 == store.sha256
    add_labels(store.path, SCENE, [box(450000, 8350000, 451000, 8351000)], "lookalike", crs="EPSG:32636", author="t", origin="edited")
    assert read_store(store.path).sha256 != store.sha256


def test_exported_masks_match_the_original_labels(tmp_path, lonlat_store):
    png = export_mask(lonlat_store, SCENE, tmp_path / "mask.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.pgw", "mask.png", "mask.png.aux.xml"]
    with rasterio.open(png) as ds:
        assert ds.crs.to_epsg() == 32636 and ds.res == (25.0, 25.0)
        assert set(np.unique(ds.read(1))) == {0, 255}
    assert slick_dice(png, LABEL).dice == 1.0
    tif = export_mask(lonlat_store, SCENE, tmp_path / "mask.tif")
    assert slick_dice(tif, LABEL).dice == 1.0
    before = png.read_bytes()
    with pytest.raises(OutputError, match="never overwritten"):
        export_mask(lonlat_store, SCENE, png)
    assert png.read_bytes() == before


def test_summary_counts_labels_and_reviewed_area(tmp_path):
    store = _store(tmp_path / "s.gpkg", "EPSG:4326", ("sample_1", "sample_2"))
    result = summary(store)
    assert set(result["scenes"]) == {str(SAMPLES / s / "raw_mosaic.tif") for s in ("sample_1", "sample_2")}
    for scene in result["scenes"].values():
        assert scene["slick"] > 0 and scene["lookalike"] == 0 and scene["scene_found"]
        assert scene["reviewed_km2"] == pytest.approx(768 * 768 * 625 / 1e6, rel=1e-3)  # 768 x 768 pixels of 25 m


def test_unusable_stores_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_store(tmp_path / "missing.gpkg")
    (tmp_path / "text.gpkg").write_text("not a database")
    with pytest.raises(InputError, match="cannot be read"):
        read_store(tmp_path / "text.gpkg")
    with fiona.open(tmp_path / "other.gpkg", "w", driver="GPKG", schema={"geometry": "Point", "properties": {}}, crs="EPSG:4326"):
        pass
    with pytest.raises(InputError, match="not a label store"):
        read_store(tmp_path / "other.gpkg")
    path = create_store(tmp_path / "bad.gpkg", "EPSG:4326")
    with fiona.open(path, "a", layer="labels") as layer:
        layer.write({"geometry": box(30, 75, 31, 76).__geo_interface__,
                     "properties": {"class": "oil", "scene": "x.tif", "author": "", "created": None, "origin": "drawn"}})
    with pytest.raises(InputError, match="class 'oil'"):
        read_store(path)


def test_cli(tmp_path, capsys):
    store = tmp_path / "cli.gpkg"
    assert main(["labels", "init", str(store), "--crs", "EPSG:4326"]) == 0
    assert main(["labels", "init", str(store), "--crs", "EPSG:4326"]) == 2
    assert main(["labels", "import", str(store), "--scene", str(SCENE), "--mask", str(LABEL)]) == 0
    capsys.readouterr()
    assert main(["labels", "summary", str(store), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["labels"] > 0 and data["reviewed_km2"] == pytest.approx(368.64, rel=1e-3)
    assert main(["--jsonl", "labels", "export", str(store), "--scene", str(SCENE), "--out", str(tmp_path / "m.tif")]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["data"]["mask"].endswith("m.tif")
    assert main(["--jsonl", "labels", "export", str(store), "--scene", "elsewhere.tif", "--out", str(tmp_path / "n.tif")]) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert error["event"] == "error" and "no labels for elsewhere.tif" in error["message"]
