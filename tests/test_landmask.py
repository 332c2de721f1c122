"""Land and no-data borders never become slicks: the default coastline, the analyst's own, none; tiles skipped."""

from __future__ import annotations

import json

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as transform_points

from engine.cli import main as cli
from engine.jobs.detect import DetectOptions, detect
from engine.errors import InputError
from engine.scenes.landmask import CoastlineLandMask, dilate
from engine.scenes.prefetch import prefetch
from engine.data.synth import SceneSpec, write_scene

from conftest import SAMPLES

SVALBARD = dict(crs="EPSG:32633", origin=(495000.0, 8680000.0))
"""The mouth of Adventfjorden in Isfjorden, Svalbard (UTM 33N): about 40 % land, a real coastline."""


def _gshhg_truth(path) -> np.ndarray:
    """Land at every pixel centre, asked of roaring-landmask point by point (independently of the lattice)."""
    from roaring_landmask import RoaringLandmask

    with rasterio.open(path) as ds:
        rows, cols = np.mgrid[0 : ds.height, 0 : ds.width]
        xs, ys = ds.transform * (cols.ravel() + 0.5, rows.ravel() + 0.5)
        lon, lat = transform_points(ds.crs, "EPSG:4326", xs, ys)
        shape = (ds.height, ds.width)
    return RoaringLandmask.new().contains_many(np.asarray(lon), np.asarray(lat)).reshape(shape)


@pytest.fixture(scope="module")
def svalbard_scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("svalbard") / "isfjorden.tif"
    return write_scene(SceneSpec(height=384, width=384, seed=3, **SVALBARD), path)


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_default_land_mask_zeroes_the_svalbard_coast_and_skips_land_tiles(tmp_path, svalbard_scene, tiny_model):
    truth = _gshhg_truth(svalbard_scene)
    assert 0.3 < truth.mean() < 0.6
    options = dict(model=str(tiny_model), tile=128, overlap=16, threshold=0.3, min_area_km2=0.0)
    masked = detect(svalbard_scene, tmp_path / "masked", DetectOptions(**options))
    open_ = detect(svalbard_scene, tmp_path / "open", DetectOptions(land_mask="none", **options))
    prob, mask = _read(masked.probability), _read(masked.mask)
    assert (prob[truth] == 0).all() and (mask[truth] == 0).all()
    assert (_read(open_.probability)[truth] > 0).mean() > 0.9  # without a land mask the model marks the land
    far_sea = ~dilate(truth, 20)
    assert far_sea.mean() > 0.2 and (prob[far_sea] > 0).all()
    assert masked.tiles_skipped_by["land_or_border"] > 0 and open_.tiles_skipped == 0
    assert masked.tiles + masked.tiles_skipped == open_.tiles
    assert "GSHHG" in masked.masked and open_.masked.startswith("no land mask")


def test_land_buffer_widens_land_by_its_pixels(tmp_path, sample_scene, tiny_model):
    """The analyst's own polygons: 7 km of land on the left of a real Arctic tile, buffered or not."""
    with rasterio.open(sample_scene) as ds:
        left, bottom, right, top = ds.bounds
    land = tmp_path / "land.gpkg"
    ring = [(left, bottom), (left + 7000, bottom), (left + 7000, top), (left, top), (left, bottom)]
    schema = {"geometry": "Polygon", "properties": {"name": "str"}}
    with fiona.open(land, "w", driver="GPKG", crs="EPSG:32636", schema=schema) as dst:
        dst.write({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"name": "coast"}})
    strip = (left, top - 256 * 25, left + 448 * 25, top)  # one row of two tiles keeps the test quick
    options = dict(model=str(tiny_model), tile=256, min_area_km2=0.0, land_mask=str(land), bounds=strip, bounds_crs="EPSG:32636")
    exact = detect(sample_scene, tmp_path / "exact", DetectOptions(land_buffer=0, **options))
    wide = detect(sample_scene, tmp_path / "wide", DetectOptions(land_buffer=10, **options))
    exact_prob, wide_prob = _read(exact.probability), _read(wide.probability)
    assert (exact_prob[:, :280] == 0).all() and (exact_prob[:, 280:290] > 0).all()
    assert (wide_prob[:, :290] == 0).all() and (wide_prob[:, 290:300] > 0).all()
    assert exact.tiles_skipped_by["land_or_border"] == 1 and exact.tiles == 1  # the left tile is all land


def test_no_slick_along_the_no_data_corner_of_a_real_tile(tmp_path, tiny_model):
    scene = SAMPLES / "sample_70" / "raw_mosaic.tif"  # a real EW tile with no data in three corners
    with rasterio.open(scene) as ds:
        left, top = ds.transform.c + 512 * 25, ds.transform.f - 768 * 25
    corner = (left, top - 512 * 25, left + 512 * 25, top)  # its bottom-right 512 x 512 px
    options = dict(model=str(tiny_model), tile=256, threshold=0.3, min_area_km2=0.0, land_mask="none",
                   bounds=corner, bounds_crs="EPSG:32636")
    banded = detect(scene, tmp_path / "banded", DetectOptions(nodata_buffer=8, **options))
    bare = detect(scene, tmp_path / "bare", DetectOptions(nodata_buffer=0, **options))
    nodata = (_read(scene) == 0)[768:, 512:]
    band = (dilate(_read(scene) == 0, 8) & ~(_read(scene) == 0))[768:, 512:]
    mask_banded, mask_bare = _read(banded.mask), _read(bare.mask)
    assert band.sum() > 2000
    assert (mask_bare[band] == 1).any()  # the model does mark the border ramp
    assert not (mask_banded[band] == 1).any() and (_read(banded.probability)[band] == 0).all()
    assert np.isnan(_read(banded.probability)[nodata]).all()
    assert banded.tiles_skipped_by["no_data"] > 0


def test_coastline_windows_agree_across_strips_and_with_the_points():
    """The lattice is anchored on the CRS's pixels: two overlapping windows give the same land."""
    mask = CoastlineLandMask()
    transform = Affine(25, 0, 495000, 0, -25, 8680000)
    whole = mask.land("EPSG:32633", transform, (300, 200))
    lower = mask.land("EPSG:32633", transform * Affine.translation(7, 133), (167, 150))
    assert (whole[133:, 7:157] == lower).all()
    rows, cols = np.mgrid[0:300:7, 0:200:7]
    xs, ys = transform * (cols.ravel() + 0.5, rows.ravel() + 0.5)
    lon, lat = transform_points("EPSG:32633", "EPSG:4326", xs, ys)
    from roaring_landmask import RoaringLandmask

    truth = RoaringLandmask.new().contains_many(np.asarray(lon), np.asarray(lat))
    assert (truth == whole[rows.ravel(), cols.ravel()]).mean() > 0.99


def test_a_coastline_window_asked_again_comes_from_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    transform = Affine(25, 0, 495000 + 150 * 25, 0, -25, 8680000 - 250 * 25)  # Adventfjorden's shore
    first = CoastlineLandMask().land("EPSG:32633", transform, (120, 90))
    assert 0.1 < first.mean() < 0.9  # the window crosses the coast

    def refuse(*args):
        raise AssertionError("the coastline was asked again")

    monkeypatch.setattr(CoastlineLandMask, "_query", refuse)
    np.testing.assert_array_equal(CoastlineLandMask().land("EPSG:32633", transform, (120, 90)), first)
    with pytest.raises(AssertionError, match="asked again"):  # another window is not the cached one
        CoastlineLandMask().land("EPSG:32633", transform * Affine.translation(1, 0), (120, 90))


def test_the_coastline_cache_keeps_to_its_size_and_is_never_needed(tmp_path, monkeypatch):
    from engine.scenes import landmask

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(landmask, "LAND_CACHE_BYTES", 3000)  # room for two windows of 100 x 100 (1,378 bytes each)
    transform = Affine(25, 0, 495000 + 150 * 25, 0, -25, 8680000 - 250 * 25)
    for shift in range(4):
        CoastlineLandMask().land("EPSG:32633", transform * Affine.translation(shift, 0), (100, 100))
    cached = list((tmp_path / "cache" / "slick_mapper" / "land").glob("*.npy"))
    assert len(cached) == 2 and sum(p.stat().st_size for p in cached) <= 3000
    (tmp_path / "blocked").write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocked"))
    expected = CoastlineLandMask()._query("EPSG:32633", transform, (100, 100))
    np.testing.assert_array_equal(CoastlineLandMask().land("EPSG:32633", transform, (100, 100)), expected)


def test_dilate_is_a_square_buffer():
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    grown = dilate(mask, 2)
    assert grown.sum() == 25 and grown[2:7, 2:7].all()
    assert (dilate(mask, 0) == mask).all()


@pytest.mark.parametrize("radius", [1, 2, 3, 8, 20])
def test_dilate_matches_a_pixel_by_pixel_square_window(radius):
    rng = np.random.default_rng(radius)
    for shape, density in [((1, 1), 0.5), ((5, 3), 0.3), ((37, 61), 0.01), ((40, 23), 0.2)]:
        mask = rng.random(shape) < density
        padded = np.pad(mask, radius)
        expected = np.array([[padded[r : r + 2 * radius + 1, c : c + 2 * radius + 1].any() for c in range(shape[1])]
                             for r in range(shape[0])])
        np.testing.assert_array_equal(dilate(mask, radius), expected)


def test_info_says_what_the_land_mask_covers(svalbard_scene, capsys):
    assert cli.main(["--jsonl", "info", str(svalbard_scene)]) == 0
    result = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"result"' in line][0]["data"]
    assert "GSHHG" in result["land_mask"]["source"] and 0.3 < result["land_mask"]["land_fraction"] < 0.6
    assert cli.main(["--jsonl", "info", str(svalbard_scene), "--land-mask", "none"]) == 0
    result = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"result"' in line][0]["data"]
    assert result["land_mask"] == {"source": "none", "land_fraction": 0.0}


def test_a_missing_land_mask_file_is_an_input_error(tmp_path, sample_scene, tiny_model):
    with pytest.raises(InputError, match="Land mask file not found"):
        detect(sample_scene, tmp_path, DetectOptions(model=str(tiny_model), land_mask=str(tmp_path / "coast.gpkg")))


def test_prefetch_hands_on_errors_and_stops_its_reader():
    made = []

    def produce():
        for i in range(100):
            made.append(i)
            if i == 3:
                raise ValueError("unreadable block")
            yield i

    with pytest.raises(ValueError, match="unreadable block"):
        assert list(prefetch(produce)) == [0, 1, 2]
    made.clear()
    for item in prefetch(lambda: iter(made.append(i) or i for i in range(100))):
        if item == 1:
            break
    assert len(made) <= 5  # the reader stopped a queue's depth ahead, not at the end
