"""The North Sea page: tiles staged on a georeferenced grid without changing a pixel, scores pooled over the slick tiles."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from north_sea import grey_as_db, page, summed  # noqa: E402

from engine.data.bundled import NORTH_SEA, NORTH_SEA_PIXEL_M  # noqa: E402
from engine.data.north_sea import CRS, georeferenced  # noqa: E402
from engine.data.real_scenes import load_labelled  # noqa: E402
from engine.experiments.benchmark import score  # noqa: E402
from engine.progress import silent  # noqa: E402
from engine.scenes.normalise import scene_stretch  # noqa: E402
from engine.scenes.raster import inspect, open_raster  # noqa: E402


def test_a_staged_tile_keeps_its_pixels_and_labels_on_a_20_m_grid_that_scores_its_own_label_perfectly(tmp_path):
    scene = georeferenced(NORTH_SEA[0], tmp_path)
    with rasterio.open(NORTH_SEA[0].image) as source, rasterio.open(scene.image) as ds:
        assert np.array_equal(source.read(1), ds.read(1))
        assert ds.crs.to_string() == CRS and ds.res == (NORTH_SEA_PIXEL_M, NORTH_SEA_PIXEL_M) and ds.nodata == 0
    with rasterio.open(NORTH_SEA[0].labels) as source, rasterio.open(scene.labels) as ds:
        assert np.array_equal(source.read(1) > 0, ds.read(1) == 1)
    perfect = score(scene.labels, scene, 0.5)
    assert perfect.dice == 1.0 and perfect.fp == perfect.fn == 0 and perfect.tp > 0


def _row(group: str, seed, scene: str, tp: int, fp: int, fn: int, false: int, slicks: int) -> dict:
    return {"group": group, "seed": seed, "scene": scene, "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
            "tp": tp, "fp": fp, "fn": fn, "false_pixels": false, "clear_pixels": 1000, "pixel_km2": 0.0004,
            "false_km2_per_1000km2": false, "slicks": slicks}


def test_the_page_pools_slick_tiles_and_gives_the_slick_free_tile_false_area_only():
    rows = []
    for seed in (0, 1):
        rows += [_row("no North Sea tile", seed, "north_sea_1", 10, 0, 10, 0, 1), _row("no North Sea tile", seed, "north_sea_2", 0, 4, 0, 4, 2),
                 _row("no North Sea tile", seed, "north_sea_3", 0, 0, 30, 0, 0), _row("no North Sea tile", seed, "north_sea_4", 0, 0, 0, 0, 0)]
    rows += [dict(r, group=g, seed="") for g in ("synthetic", "dark-spot") for r in rows[:4]]
    rows += [dict(r, group="three North Sea tiles") for r in rows[:8]]
    text = page(rows, "cmd", "abc")
    # north_sea_4 holds no slick here either, so only tiles 1 and 3 are slick tiles: pooled 2*10 / (2*10 + 0 + 40)
    assert "| north_sea_1 | north_sea_3 | mean | pooled | false slicks on north_sea_2, north_sea_4 (slick-free)" in text
    assert "|   seed 0 | 0.667 | 0.000 | 0.333 | 0.333 | 2.0 (2 slicks) | 1.0 |" in text
    assert "| north_sea_2 | (no slick) | 4.0 | (no slick) | 4.0 |" in text


def test_the_page_gives_the_paired_models_their_own_rows_and_names_the_partner(tmp_path):
    partner = tmp_path / "synthetic_dlv3r18.safetensors"
    partner.write_bytes(b"weights")
    rows = [_row("no North Sea tile", 0, "north_sea_1", 10, 0, 10, 0, 1), _row("no North Sea tile", 0, "north_sea_2", 0, 4, 0, 4, 2)]
    rows += [_row("no North Sea tile, with the partner", 0, "north_sea_1", 20, 0, 0, 0, 1),
             _row("no North Sea tile, with the partner", 0, "north_sea_2", 0, 0, 0, 0, 0)]
    rows += [dict(r, group="three North Sea tiles") for r in rows[:2]]
    rows += [dict(r, group="three North Sea tiles, with the partner") for r in rows[2:4]]
    text = page(rows, "cmd", "abc", partner)
    assert "`synthetic_dlv3r18.safetensors` (sha256 `" in text
    assert "| the same U-Nets, each beside the partner network as one model (mean of seeds 0) | 1.000 | 1.000 | 1.000 | 0.0 (0 slicks) | 0.0 |" in text
    assert "| north_sea_1 (with the partner) | 1.000 | 0.0 | 1.000 | 0.0 |" in text
    assert "| north_sea_1 | 0.667 | 0.0 | 0.667 | 0.0 |" in text


def test_a_narrow_tile_read_as_db_is_stretched_by_detection_as_training_stretches_it_and_a_wide_one_is_left(tmp_path):
    """north_sea_1 spreads its levels far less than eq. 1: its dB copy, stretched by detection's own statistics, is the
    training code's re-stretch; learnt as it is, the tile keeps its levels. north_sea_2 spreads them enough to stay as it is."""
    narrow = georeferenced(NORTH_SEA[0], tmp_path)
    copy = grey_as_db(narrow, tmp_path)
    assert copy.image != narrow.image and copy.labels == narrow.labels
    info = inspect(copy.image)
    assert info.value_scale == "float32_db"
    with open_raster(copy.image) as ds:
        stretch = scene_stretch(ds, info.band, info.value_scale, silent())
        db = ds.read(1)
    with rasterio.open(narrow.image) as ds:
        grey = ds.read(1).astype(np.float32)
    detected = stretch.apply(np.where(db != 0, db, np.nan))
    trained = load_labelled(NORTH_SEA[0], NORTH_SEA_PIXEL_M).values
    assert np.abs(detected - trained).max() < 1e-3 and 55 < trained[grey > 0].std() < 65
    as_is = load_labelled(NORTH_SEA[0], NORTH_SEA_PIXEL_M, restretch=False).values
    assert np.array_equal(as_is, grey)
    wide = georeferenced(NORTH_SEA[1], tmp_path)
    assert grey_as_db(wide, tmp_path) == wide
