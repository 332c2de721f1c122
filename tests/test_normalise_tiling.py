"""Eq. 1 stretch and tiling with weighted blending."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.scenes.normalise import Stretch, to_db
from engine.scenes.tiling import BLOCK, StripBlender, blend_weights, count_tiles, panels, tile_starts


def test_streaming_statistics_equal_whole_scene_statistics():
    rng = np.random.default_rng(0)
    values = rng.gamma(10, 0.002, size=(300, 200)).astype(np.float32)
    values[:20] = np.nan  # a no-data border
    streamed = Stretch.fit("float32_linear", [values[i : i + 64] for i in range(0, 300, 64)])
    db = to_db(values, "float32_linear")
    assert streamed.mean == pytest.approx(np.nanmean(db), rel=1e-5)
    assert streamed.std == pytest.approx(np.nanstd(db), rel=1e-4)


def test_two_sigma_stretch_maps_mean_to_middle_and_keeps_nodata_zero():
    stretch = Stretch("float32_db", mean=-20.0, std=2.0)
    out = stretch.apply(np.array([-20.0, -24.0, -16.0, -40.0, 0.0, np.nan], np.float32))
    assert out[0] == pytest.approx(128.0)
    assert out[1] == pytest.approx(1.0) and out[2] == pytest.approx(255.0)  # mean -/+ 2 sigma
    assert out[3] == 1.0 and out[4] == 255.0  # clipped, still valid
    assert out[5] == 0.0  # no data



def test_stretching_a_db_scene_leaves_the_read_values_alone():
    """dB values are the array read from the scene itself (no conversion copies them); the look-alike evidence
    and the staged backscatter use it after the stretch."""
    values = np.array([[-20.0, -30.0, np.nan, 5.0]], np.float32)
    before = values.copy()
    out = Stretch("float32_db", mean=-20.0, std=2.0).apply(values)
    np.testing.assert_array_equal(values, before)
    assert out.tolist() == [[128.0, 1.0, 0.0, 255.0]]

def test_already_stretched_8_bit_passes_through():
    values = np.array([[0, 12, 200]], np.float32)
    values[values == 0] = np.nan
    assert Stretch.fit("uint8_stretched", [values]).apply(values).tolist() == [[0.0, 12.0, 200.0]]


def test_flat_scene_is_refused():
    with pytest.raises(InputError, match="flat"):
        Stretch.fit("float32_db", [np.full((8, 8), -20.0, np.float32)])


@pytest.mark.parametrize("length", [100, 512, 513, 1000, 4000])
def test_tiles_cover_the_axis_and_end_flush(length):
    starts = tile_starts(length, 512, 64)
    assert starts[0] == 0
    assert starts[-1] + 512 >= length
    assert all(b - a <= 512 - 64 for a, b in zip(starts, starts[1:]))


def test_overlap_cost_of_default_tiling_on_a_4000_pixel_scene():
    needed = count_tiles(4000, 4000, 512, 0)
    assert count_tiles(4000, 4000, 512, 64) / needed <= 1.3


def test_blending_reconstructs_a_smooth_field_without_seams():
    """Tiles that each see the same smooth field must blend back to it exactly, with no step at borders."""
    height, width, tile, overlap = 300, 250, 128, 32
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.sin(yy / 40) * np.cos(xx / 30)
    blender = StripBlender(height, width, tile, overlap)
    out = np.full((height, width), np.nan, np.float32)
    for index, row in enumerate(blender.rows):
        for col in row.cols:
            cut = np.zeros((tile, tile), np.float32)
            piece = field[row.row : row.row + tile, col : col + tile]
            cut[: piece.shape[0], : piece.shape[1]] = piece
            blender.add(col, cut)
        top, rows = blender.finish_row(index)
        assert np.isnan(out[top : top + rows.shape[0]]).all()  # every row is written exactly once
        out[top : top + rows.shape[0]] = rows
    np.testing.assert_allclose(out, field, atol=1e-5)


def test_panels_of_tile_columns_blend_as_one_strip_does():
    """Each tile predicts its own values (the field plus its column's offset), so the blend weighs them; panels that
    hand their seam sums on give the one-strip blend, every pixel written once, each panel starting on a block."""
    height, width, tile, overlap = 300, 1900, 128, 32
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.sin(yy / 40) * np.cos(xx / 30)

    def blend(layout):
        out, seam = np.full((height, width), np.nan, np.float32), None
        for panel in layout:
            blender = StripBlender(height, width, tile, overlap, panel, seam)
            for index, row in enumerate(blender.rows):
                for col in row.cols:
                    cut = np.zeros((tile, tile), np.float32)
                    x = panel.x0 + col
                    piece = field[row.row : row.row + tile, x : x + tile] + 0.01 * x / (tile - overlap)
                    cut[: piece.shape[0], : piece.shape[1]] = piece
                    blender.add(col, cut)
                top, rows = blender.finish_row(index)
                assert np.isnan(out[top : top + rows.shape[0], panel.x0 : panel.x0 + panel.own]).all()
                out[top : top + rows.shape[0], panel.x0 : panel.x0 + panel.own] = rows
            seam = blender.seam_out
        return out

    layout = panels(width, tile, overlap, 0)
    assert len(layout) >= 3 and all(p.x0 % BLOCK == 0 and p.seam in (0, overlap) for p in layout)
    assert sorted(p.x0 + c for p in layout for c in p.cols) == tile_starts(width, tile, overlap)
    one = blend(panels(width, tile, overlap))
    assert not np.isnan(one).any()
    np.testing.assert_allclose(blend(layout), one, rtol=0, atol=1e-6)


def test_pixels_no_predicted_tile_covers_stay_no_data():
    """A skipped tile (all land, no data or outside the extent) leaves NaN where no other tile reaches, never 0."""
    blender = StripBlender(128, 300, 128, 32)
    first, *rest = blender.rows[0].cols
    blender.add(first, np.full((128, 128), 0.25, np.float32))
    top, rows = blender.finish_row(0)
    assert top == 0 and rows.shape == (128, 300) and rows.dtype == np.float32 and rest
    np.testing.assert_allclose(rows[:, :128], 0.25)
    assert np.isnan(rows[:, 128:]).all()


def test_blending_weights_are_positive_and_peak_in_the_core():
    w = blend_weights(64, 16)
    assert w.min() > 0 and w[32, 32] == 1.0 and w[0, 0] < w[8, 8] < w[20, 20]


def test_the_statistics_of_a_wide_scene_are_read_in_strips_of_a_few_megapixels(tmp_path):
    """The eq. 1 statistics' chunks hold about ``STRIP_PIXELS`` whatever the scene's width (512 full-width rows of a
    32,768-px-wide scene held 17 times a strip's float32 bytes at once, its dB copies included), and the chunked
    statistics are the whole scene's."""
    import tracemalloc

    import rasterio
    from affine import Affine

    from engine.progress import silent
    from engine.scenes.normalise import _measured_stretch
    from engine.scenes.tiling import STRIP_PIXELS

    height, width = 512, 32768
    values = np.random.default_rng(0).uniform(0.01, 1, (height, width)).astype(np.float32)
    path = tmp_path / "wide.tif"
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32", tiled=True,
                       crs="EPSG:32634", transform=Affine(25.0, 0, 300000.0, 0, -25.0, 8700000.0)) as dst:
        dst.write(values, 1)
    whole = Stretch.fit("float32_linear", [values])
    del values
    with rasterio.open(path) as ds:
        tracemalloc.start()
        stretch = _measured_stretch(ds, 1, "float32_linear", silent())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 12 * STRIP_PIXELS * 4
    assert stretch.mean == pytest.approx(whole.mean, rel=1e-9) and stretch.std == pytest.approx(whole.std, rel=1e-9)
