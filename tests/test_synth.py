"""The synthetic scene generator: reproducible, SAR-like statistics, honest labels, sound files."""

from __future__ import annotations

import argparse
import tracemalloc

import numpy as np
import pytest
import rasterio

from engine.data import synth
from engine.data.synth import LAND, LOOKALIKE, OIL, SEA, SHIP, SceneSpec, generate, training_pairs, write_scene
from engine.cli.args import options_from
from engine.errors import Cancelled, InputError
from engine.progress import Progress, silent


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square dilation by shifts; enough to draw a ring of sea around a slick."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            grown |= np.roll(out, shift, axis) | np.roll(out, -shift, axis)
        out = grown
    return out


def test_same_seed_gives_identical_arrays_and_other_seeds_differ():
    spec = SceneSpec(height=300, width=260, seed=7, land=True, nodata_border=True)
    a_sigma, a_mask = generate(spec)
    b_sigma, b_mask = generate(spec)
    assert a_sigma.dtype == np.float32 and a_mask.dtype == np.uint8 and a_sigma.shape == (300, 260)
    assert a_sigma.tobytes() == b_sigma.tobytes() and np.array_equal(a_mask, b_mask)
    c_sigma, c_mask = generate(SceneSpec(height=300, width=260, seed=8, land=True, nodata_border=True))
    assert not np.array_equal(a_sigma, c_sigma) and not np.array_equal(a_mask, c_mask)


@pytest.mark.parametrize("mode", ["EW_HH", "IW_VV"])
def test_oil_is_darker_than_the_sea_around_it_by_a_damping_ratio(mode):
    sigma0, mask = generate(SceneSpec(height=512, width=512, mode=mode, seed=3, n_ships=0, n_lookalikes=0))
    oil = mask == OIL
    assert oil.mean() > 0.001
    ring = _dilate(oil, 12) & ~_dilate(oil, 3) & (mask == SEA)
    ratio = np.median(sigma0[oil]) / np.median(sigma0[ring])
    assert 0.15 < ratio < 0.6


def test_lookalikes_are_dark_but_never_labelled_oil():
    sigma0, mask = generate(SceneSpec(height=512, width=512, seed=11, n_seeps=0, n_ships=0, n_lookalikes=4))
    assert not (mask == OIL).any()
    lookalike = mask == LOOKALIKE
    assert lookalike.mean() > 0.001
    assert np.median(sigma0[lookalike]) < 0.7 * np.median(sigma0[mask == SEA])


def test_more_lookalikes_add_dark_rain_cells_and_ice_and_no_oil():
    quiet = dict(height=768, width=768, n_seeps=0, n_ships=0, n_lookalikes=0)
    darker = []
    for seed in range(6):
        sigma0, mask = generate(SceneSpec(seed=seed, more_lookalikes=True, **quiet))
        assert not (mask == OIL).any() and not (generate(SceneSpec(seed=seed, **quiet))[1] == LOOKALIKE).any()
        if (mask == LOOKALIKE).mean() > 0.001:
            darker.append(10 * np.log10(np.median(sigma0[mask == SEA]) / np.median(sigma0[mask == LOOKALIKE])))
    assert len(darker) >= 3 and min(darker) > 2.0  # rain cores and grease ice are dark, as oil is


def test_the_noise_floor_rises_towards_each_sub_swath_edge():
    ew = synth.MODES["EW_HH"]
    across = np.linspace(0.0, ew.swath_m, 5 * 400, endpoint=False)
    nesz_db = 10 * np.log10(synth._subswath_nesz(np.random.default_rng(0), ew, across))
    per_swath = nesz_db.reshape(5, 400)
    assert np.all(per_swath.argmin(axis=1) == 200)  # lowest at each of EW's five sub-swaths' centres
    rise = per_swath[:, 0] - per_swath[:, 200]
    assert np.allclose(rise, rise[0]) and 3.0 <= rise[0] <= 6.0
    # A scene 100 km across holds more than one sub-swath's edge; without more look-alikes the floor is flat.
    wide = dict(height=64, width=4096, seed=1, n_seeps=0, n_ships=0, n_lookalikes=0)
    floor_db = 10 * np.log10(synth._layout(SceneSpec(more_lookalikes=True, **wide)).nesz)
    assert floor_db.shape == (4096,) and floor_db.max() - floor_db.min() >= 3.0
    assert synth._layout(SceneSpec(**wide)).nesz is None


def test_ships_are_bright_and_land_is_labelled():
    sigma0, mask = generate(SceneSpec(height=512, width=512, mode="IW_VV", seed=2, n_ships=6, land=True))
    sea = np.median(sigma0[mask == SEA])
    assert (mask == SHIP).any() and np.median(sigma0[mask == SHIP]) > 10 * sea
    assert 0.05 < (mask == LAND).mean() < 0.8
    assert np.median(sigma0[mask == LAND]) > sea


@pytest.mark.parametrize("mode", ["EW_HH", "IW_VV"])
def test_speckle_has_the_equivalent_number_of_looks_of_the_mode(mode):
    sigma0, _ = generate(SceneSpec(height=256, width=256, mode=mode, seed=5, n_seeps=0, n_ships=0, n_lookalikes=0))
    windows = sigma0.reshape(8, 32, 8, 32).transpose(0, 2, 1, 3).reshape(64, -1).astype(np.float64)
    enl = np.median(windows.mean(1) ** 2 / windows.var(1))
    looks = synth.MODES[mode].looks
    assert abs(enl - looks) < 0.35 * looks


def test_nodata_border_is_zero_on_one_side_only():
    sigma0, mask = generate(SceneSpec(height=256, width=256, seed=4, nodata_border=True))
    empty = sigma0 == 0
    assert 0.02 < empty.mean() < 0.4
    assert not mask[empty].any()
    assert empty[:, 0].all() != empty[:, -1].all()  # a swath edge, not a frame
    assert (sigma0[~empty] > 0).all()


def test_written_geotiff_carries_grid_band_and_labels(tmp_path):
    spec = SceneSpec(height=300, width=200, mode="IW_VV", seed=1, origin=(500000.0, 7000000.0))
    scene = write_scene(spec, tmp_path / "scene.tif", label_path=tmp_path / "labels.tif")
    sigma0, mask = generate(spec)
    with rasterio.open(scene) as src:
        assert src.crs.to_epsg() == 32636
        assert src.res == (10.0, 10.0)
        assert (src.transform.c, src.transform.f) == (500000.0, 7000000.0)
        assert src.descriptions == ("VV",) and src.nodata == 0 and src.dtypes[0] == "float32"
        assert src.profile["tiled"] and src.compression.value == "DEFLATE"
        assert np.array_equal(src.read(1), sigma0)
    with rasterio.open(tmp_path / "labels.tif") as src:
        assert src.dtypes[0] == "uint8" and src.transform == rasterio.open(scene).transform
        assert np.array_equal(src.read(1), mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "scene.tif"]


@pytest.mark.parametrize("encoding", synth.ENCODINGS)
def test_every_encoding_round_trips_and_masks_nodata(tmp_path, encoding):
    spec = SceneSpec(height=256, width=256, seed=9, nodata_border=True)
    sigma0, _ = generate(spec)
    valid = sigma0 > 0
    with rasterio.open(write_scene(spec, tmp_path / "s.tif", encoding=encoding)) as src:
        data = src.read(1)
        assert np.array_equal(src.read_masks(1) > 0, valid)
        tags = src.tags()
    db = 10 * np.log10(sigma0[valid])
    if encoding == "float32_linear":
        assert np.array_equal(data, sigma0)
    elif encoding == "float32_db":
        assert np.allclose(data[valid], db, atol=1e-4) and (data[~valid] == synth.DB_NODATA).all()
    elif encoding == "uint16_dn":
        assert 100 < np.median(data[valid]) < 600
        bright = data[valid] >= 100
        back = (data[valid][bright] / float(tags["DN_SCALE"])) ** 2
        assert np.allclose(back, sigma0[valid][bright], rtol=0.011)
    else:
        assert data[valid].min() >= 1 and (data[~valid] == 0).all()
        lo, hi = float(tags["STRETCH_DB_MIN"]), float(tags["STRETCH_DB_MAX"])
        expected = np.clip(1 + 254 * (db - lo) / (hi - lo), 1, 255)
        assert np.abs(data[valid] - expected).max() <= 0.5 + 1e-3


def test_cancelled_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "scene.tif"
    target.write_bytes(b"previous")

    def cancel_once_writing(stage, done, total, message):
        if done > total // 2:
            progress.cancel()

    progress = Progress(cancel_once_writing)
    with pytest.raises(Cancelled):
        write_scene(SceneSpec(height=1100, width=64), target, label_path=tmp_path / "l.tif", progress=progress)
    assert [p.name for p in tmp_path.iterdir()] == ["scene.tif"] and target.read_bytes() == b"previous"


def test_memory_grows_with_rows_not_with_a_scene_sized_temporary_per_step():
    # Rendering goes in fixed row blocks over ~100 m fields, so the peak stays a small multiple of
    # the 5 bytes/pixel output; at 24 B/px an 8000 x 8000 scene stays under 1.6 GB.
    spec = SceneSpec(height=2048, width=512, land=True, nodata_border=True)
    tracemalloc.start()
    generate(spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak / (spec.height * spec.width) < 24


def test_training_pairs_are_tiles_that_mostly_hold_oil():
    pairs = list(training_pairs(10, tile=128, seed=3))
    assert len(pairs) == 10
    for sigma0, mask in pairs:
        assert sigma0.shape == mask.shape == (128, 128)
        assert sigma0.dtype == np.float32 and mask.dtype == np.uint8 and mask.max() <= LAND
    assert sum((mask == OIL).any() for _, mask in pairs) >= 7
    assert [m.tobytes() for _, m in training_pairs(3, tile=128, seed=3)] == [m.tobytes() for _, m in pairs[:3]]


def test_cli_subcommand_writes_scene_and_labels(tmp_path):
    parser = argparse.ArgumentParser()
    synth.add_cli(parser.add_subparsers())
    out, labels = tmp_path / "s.tif", tmp_path / "l.tif"
    args = parser.parse_args(
        ["synth", "--out", str(out), "--labels", str(labels), "--size", "128", "96", "--mode", "IW_VV",
         "--seed", "4", "--encoding", "uint16_dn", "--land", "--nodata-border", "--seeps", "1", "--ships", "2"]
    )
    result = args.func(args, silent())
    assert result == {"scene": str(out), "labels": str(labels), "height": 128, "width": 96}
    with rasterio.open(out) as src:
        assert (src.height, src.width, src.dtypes[0]) == (128, 96, "uint16") and src.res == (10.0, 10.0)
    more = parser.parse_args(["synth", "--out", str(tmp_path / "m.tif"), "--seed", "4", "--more-lookalikes"])
    assert options_from(more, SceneSpec).more_lookalikes and not options_from(args, SceneSpec).more_lookalikes


def test_bad_specs_raise_input_errors(tmp_path):
    with pytest.raises(InputError):
        SceneSpec(mode="SM_VV")
    with pytest.raises(InputError):
        SceneSpec(height=0)
    with pytest.raises(InputError):
        write_scene(SceneSpec(height=32, width=32), tmp_path / "s.tif", encoding="png")
