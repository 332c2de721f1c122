"""Look-alike evidence per slick: backscatter contrast, wind from CMOD5.n, noise margin, shape, distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box, mapping

from engine.archive.evidence import FIELDS, NOMINAL_INCIDENCE, add_evidence, score
from engine.archive.wind import backscatter
from engine.jobs.detect import DetectOptions, detect
from engine.models.registry import SYNTHETIC_MODEL
from engine.scenes.grid import analysis_grid, open_on_grid
from engine.progress import silent
from engine.scenes.raster import inspect, open_raster
from engine.data.synth import SceneSpec, write_scene


def _calm_scene(tmp_path, wind: float, contrast_db: float):
    """A noiseless VV scene on a 25 m UTM grid: sea at CMOD5.n's sigma0 for ``wind``, a 4 x 0.5 km dark
    strip ``contrast_db`` below it, and 40 columns of no-data on the west."""
    sea = backscatter(wind, NOMINAL_INCIDENCE["IW"], "VV")
    values = np.full((200, 200), sea, np.float32)
    values[90:110, 40:200] = sea * 10 ** (contrast_db / 10)  # rows 90..110: 500 m wide, 4 km long
    values[:, :40] = 0
    mask = np.zeros((200, 200), np.uint8)
    mask[90:110, 40:200] = 1
    mask[:, :40] = 255
    transform = Affine(25, 0, 500000, 0, -25, 7000000)
    profile = {"driver": "GTiff", "width": 200, "height": 200, "count": 1, "crs": "EPSG:32633", "transform": transform}
    scene = tmp_path / "S1A_IW_GRDH_1SDV_20240101T050000_calm-vv.tif"
    with rasterio.open(scene, "w", dtype="float32", nodata=0, **profile) as dst:
        dst.write(values, 1)
        dst.set_band_description(1, "VV")
    with rasterio.open(tmp_path / "mask.tif", "w", dtype="uint8", nodata=255, **profile) as dst:
        dst.write(mask, 1)
    slick = box(500000 + 40 * 25, 7000000 - 110 * 25, 500000 + 200 * 25, 7000000 - 90 * 25)
    return scene, tmp_path / "mask.tif", {"geometry": mapping(slick), "area_km2": slick.area / 1e6}


def _weighed(tmp_path, wind: float, contrast_db: float) -> dict:
    """The strip of ``_calm_scene`` with the evidence detection adds to it."""
    scene, mask, slick = _calm_scene(tmp_path, wind=wind, contrast_db=contrast_db)
    info = inspect(scene)
    with open_raster(scene) as ds:
        grid = analysis_grid(ds, info.utm_crs, 25.0)
        with open_on_grid(ds, info.band, grid) as reader:
            add_evidence([slick], reader, info, grid, mask, [], None, silent())
    return slick


def test_a_dark_strip_on_a_calm_sea_is_weighed_as_a_low_wind_look_alike(tmp_path):
    slick = _weighed(tmp_path, wind=1.5, contrast_db=-4.0)
    assert slick["contrast_db"] == pytest.approx(-4.0, abs=0.05)
    assert slick["background_db"] == pytest.approx(10 * math.log10(backscatter(1.5, 37.5, "VV")), abs=0.05)
    assert slick["incidence_deg"] == 37.5 and slick["incidence_source"] == "assumed IW mid-swath"
    assert slick["wind_ms"] == pytest.approx(1.5, abs=0.1)
    assert slick["margin_db"] == pytest.approx(slick["slick_db"] - slick["nesz_db"])
    assert slick["elongation"] == pytest.approx(8.0, rel=0.01) and slick["width_m"] == pytest.approx(500, rel=0.01)
    assert slick["dist_edge_km"] < 0.3  # its west end touches the no-data strip
    assert slick["lookalike_reasons"].startswith("wind below 2 m/s: low-wind look-alike likely")
    assert slick["lookalike_score"] >= 0.5


def test_the_same_strip_on_a_windy_sea_is_not_a_low_wind_look_alike(tmp_path):
    slick = _weighed(tmp_path, wind=7.0, contrast_db=-6.0)
    assert slick["wind_ms"] == pytest.approx(7.0, abs=0.2)
    assert "wind" not in slick["lookalike_reasons"] and slick["lookalike_score"] < 0.5


def test_score_reasons_strongest_first_and_capped():
    facts = {"wind_ms": 1.0, "margin_db": 1.0, "contrast_db": -0.5, "elongation": 1.2, "complexity": 5.0,
             "dist_edge_km": 0.1, "dist_land_km": 0.5}
    total, reasons = score(facts, 20.0, True, "VV")
    assert total == 1.0 and reasons.split("; ")[0] == "wind below 2 m/s: low-wind look-alike likely"
    assert score({"elongation": 6.0, "complexity": 1.5}, 1.0, False, "HH") == (
        0.0, "backscatter not calibrated: wind and noise margin unknown")


@pytest.mark.parametrize("encoding", ["float32_linear", "uint16_dn"])
def test_detection_writes_the_evidence_of_every_slick(tmp_path, encoding):
    scene = write_scene(SceneSpec(height=256, width=256, seed=3, n_seeps=2, nodata_border=True),
                        tmp_path / "S1A_EW_GRDM_1SDH_20240101T050000_s.tif", encoding=encoding)
    result = detect(scene, tmp_path / "out", DetectOptions(model=str(SYNTHETIC_MODEL), tile=256, device="cpu"))
    import fiona

    with fiona.open(result.slicks) as src:
        assert set(FIELDS) <= set(src.schema["properties"])
        rows = [dict(f["properties"]) for f in src]
    assert len(rows) == result.n_slicks > 0  # every slick kept, whatever its score
    assert all(r["lookalike_score"] is not None and r["elongation"] and r["dist_edge_km"] is not None for r in rows)
    assert all(r["incidence_source"] == "assumed EW mid-swath" for r in rows)
    if encoding == "float32_linear":
        assert all(r["wind_ms"] is not None and r["background_db"] < 0 for r in rows)
    else:  # amplitude numbers: a contrast (a ratio) but no calibrated backscatter, hence no wind
        assert all(r["contrast_db"] is not None and r["wind_ms"] is None for r in rows)
        assert all("not calibrated" in r["lookalike_reasons"] for r in rows)
