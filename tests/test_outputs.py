"""Tracing slicks from a mask file: around the blocks that hold slick pixels, as a trace of the whole band would."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from shapely import normalize
from shapely.geometry import shape

from engine.jobs import outputs
from engine.jobs.outputs import MASK_NODATA, polygonise
from engine.progress import Progress


def _mask(path, height: int = 650, width: int = 905) -> np.ndarray:
    """Slicks where tracing by blocks could go wrong: two patches meeting only at a corner of four blocks, a ring
    around a speck, a strand across many blocks, an L whose window holds another group's patch, a patch on the
    raster's last rows and columns (not a whole block), patches apart in neighbouring blocks, specks, and a no-data
    corner."""
    block = outputs.TRACE_BLOCK
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[:40, 800:] = MASK_NODATA
    mask[block - 6:block, block - 6:block] = 1  # ends at a block corner...
    mask[block:block + 5, block:block + 5] = 1  # ...where this one starts, diagonally: one 8-connected slick
    mask[300:340, 20:60] = 1
    mask[310:330, 30:50] = 0
    mask[318:321, 38:41] = 1  # a speck in the ring's hole
    cols = np.arange(300, 560)
    mask[(120 + 40 * np.sin(cols / 30)).astype(int), cols] = 1  # a one-pixel strand, 8-connected
    mask[300:560, 300:306] = 1  # an L: its window reaches over the next patch's blocks
    mask[554:560, 300:560] = 1
    mask[330:345, 500:515] = 1  # another group, inside the L's bounding box
    mask[645:, 900:] = 1  # the last rows and columns
    mask[400:410, 680:690] = 1  # two patches in neighbouring blocks...
    mask[415:425, 720:730] = 1  # ...that do not touch
    mask[5, 5] = mask[250, 700] = 1
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": Affine(25.0, 0, 500000.0, 0, -25.0, 8000000.0), "nodata": MASK_NODATA,
               "tiled": True, "blockxsize": 256, "blockysize": 64}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(mask, 1)
    profile.update(dtype="float32", nodata=np.nan)
    prob = np.random.default_rng(0).random((height, width), dtype=np.float32)
    prob[mask == MASK_NODATA] = np.nan
    with rasterio.open(path.with_name("prob.tif"), "w", **profile) as ds:
        ds.write(prob, 1)
    return mask


def _slicks(mask_path, min_area_km2: float) -> tuple[list, np.ndarray]:
    slicks = polygonise(mask_path, mask_path.with_name("prob.tif"), min_area_km2, Progress())
    with rasterio.open(mask_path) as ds:
        kept = ds.read(1)
    return sorted((normalize(shape(s["geometry"])).wkt, s["area_km2"], s["mean_prob"]) for s in slicks), kept


@pytest.mark.parametrize("min_area_km2", [0.0, 0.01])
@pytest.mark.parametrize("strip", [None, 100])
def test_tracing_around_the_slick_blocks_gives_the_whole_band_s_slicks(tmp_path, monkeypatch, min_area_km2, strip):
    """``strip``: rows of a strip of the passes over the mask (None: the product's, the whole test mask): 100 makes a
    strip of every block row, so slicks cross from one strip into the next."""
    monkeypatch.setattr(outputs, "TRACE_BLOCK", 64)  # the blocks the mask's slicks are laid out around
    if strip:
        monkeypatch.setattr(outputs, "strip_rows", lambda width: strip)
    mask = _mask(tmp_path / "mask.tif")
    with rasterio.open(tmp_path / "mask.tif") as ds:
        groups = outputs._slick_groups(ds)
    assert groups is not None and len(groups) >= 5  # traced by windows, several of them...
    assert sum(window.width * window.height for window, _ in groups) < mask.size / 2  # ...around a part of the mask
    holding = [[k for k, (w, inside) in enumerate(groups) if w.row_off <= r < w.row_off + w.height
                and w.col_off <= c < w.col_off + w.width and (inside is None or inside[r - w.row_off, c - w.col_off])] for r, c in ((405, 685), (420, 725))]
    assert len(holding[0]) == len(holding[1]) == 1 and holding[0] != holding[1]  # neighbouring blocks, slicks apart: two groups
    shutil.copy(tmp_path / "mask.tif", tmp_path / "whole.tif")
    shutil.copy(tmp_path / "prob.tif", tmp_path / "whole_prob.tif")
    by_blocks, kept = _slicks(tmp_path / "mask.tif", min_area_km2)
    monkeypatch.setattr(outputs, "TRACE_WINDOW_PIXELS", 0)  # every window too large: GDAL walks the whole band
    (tmp_path / "whole_prob.tif").replace(tmp_path / "prob.tif")
    whole, kept_whole = _slicks(tmp_path / "whole.tif", min_area_km2)
    assert by_blocks == whole and (kept == kept_whole).all()
    corner = [s for s in by_blocks if pytest.approx(s[1], abs=1e-4) == (36 + 25) * 625 / 1e6]
    assert len(corner) == 1  # the two patches meeting at the blocks' corner are one slick
    assert ((kept == 1).sum() < (mask == 1).sum()) == (min_area_km2 > 0)  # specks dropped from the mask only when asked


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), cover=st.floats(0.02, 0.6), min_pixels=st.sampled_from([0, 1, 5, 16, 40]))
def test_random_masks_traced_by_blocks_give_the_whole_band_s_slicks(tmp_path_factory, monkeypatch, seed, cover, min_pixels):
    """Speckled masks of every density (smoothed noise cut at a random share, so slicks of every size, with holes,
    touching block borders and corners, and a no-data band), each minimum area: the same slicks, means and mask
    both ways."""
    monkeypatch.setattr(outputs, "TRACE_BLOCK", 32)
    folder = tmp_path_factory.mktemp("random")
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((150, 230)), rng.uniform(0.5, 3))
    mask = (noise > np.quantile(noise, 1 - cover)).astype(np.uint8)
    mask[:, :rng.integers(0, 20)] = MASK_NODATA
    profile = {"driver": "GTiff", "width": 230, "height": 150, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": Affine(25.0, 0, 500000.0, 0, -25.0, 8000000.0), "nodata": MASK_NODATA,
               "tiled": True, "blockxsize": 64, "blockysize": 64}
    prob = np.where(mask == MASK_NODATA, np.nan, rng.random(mask.shape)).astype(np.float32)
    for name in ("blocks", "whole"):
        with rasterio.open(folder / f"{name}.tif", "w", **profile) as ds:
            ds.write(mask, 1)
        with rasterio.open(folder / f"{name}_prob.tif", "w", **{**profile, "dtype": "float32", "nodata": np.nan}) as ds:
            ds.write(prob, 1)
    min_area_km2 = min_pixels * 625 / 1e6
    found = {}
    # Set for each example: the fixture undoes it only once every example has run.
    for name, window_pixels in (("blocks", mask.size), ("whole", 0)):
        monkeypatch.setattr(outputs, "TRACE_WINDOW_PIXELS", window_pixels)
        slicks = polygonise(folder / f"{name}.tif", folder / f"{name}_prob.tif", min_area_km2, Progress())
        with rasterio.open(folder / f"{name}.tif") as ds:
            found[name] = (sorted((normalize(shape(s["geometry"])).wkt, s["area_km2"], s["mean_prob"]) for s in slicks), ds.read(1))
    assert found["blocks"][0] == found["whole"][0] and (found["blocks"][1] == found["whole"][1]).all()
