"""Detection end to end on real and synthetic scenes, with a small real model."""

from __future__ import annotations

import os
import shutil

import fiona
import numpy as np
import pytest
import rasterio

from engine.data.synth import SceneSpec, write_scene
from engine.errors import Cancelled, InputError, ModelError, OutputError, ResourceError
from engine.jobs.detect import DetectOptions, detect
from engine.models.registry import DEFAULT_MODEL
from engine.progress import Progress
from engine.scenes.fingerprint import scene_fingerprint

from conftest import SAMPLES, SMALL_MODEL, cancel_at


def _options(model, **kw) -> DetectOptions:
    return DetectOptions(**{"model": str(model), "tile": 256, "min_area_km2": 0.0, **kw})


def test_detect_on_a_real_arctic_tile(tmp_path, sample_scene, tiny_model):
    seen = []
    progress = Progress(lambda stage, done, total, msg: seen.append((stage, done, total)))
    result = detect(sample_scene, tmp_path, _options(tiny_model, threshold=0.5), progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "raw_mosaic_mask.tif", "raw_mosaic_probability.tif", "raw_mosaic_slicks.gpkg"]
    with rasterio.open(result.probability) as ds:
        assert ds.crs.to_string() == "EPSG:32636" and ds.res == (25.0, 25.0)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        prob = ds.read(1)
    valid = np.isfinite(prob)
    assert valid.mean() > 0.5 and 0 <= np.nanmin(prob) and np.nanmax(prob) <= 1
    with rasterio.open(sample_scene) as scene:
        assert not np.isfinite(prob[scene.read(1) == 0]).any()  # the scene's nodata stays nodata
    with rasterio.open(result.mask) as ds:
        mask = ds.read(1)
    assert set(np.unique(mask)) <= {0, 1, 255}
    assert ((prob > 0.5) == (mask == 1))[valid].all()
    with fiona.open(result.slicks, layer="slicks") as layer:
        features = list(layer)
        assert layer.crs.to_string() == "EPSG:32636"
    assert len(features) == result.n_slicks > 0
    first = features[0]["properties"]
    assert first["area_km2"] > 0 and first["length_km"] > 0 and 0.5 < first["mean_prob"] <= 1
    assert first["scene"] == "raw_mosaic.tif" and first["model"] == "test model" and first["created"]
    assert sum(f["properties"]["area_km2"] for f in features) == pytest.approx(result.total_area_km2, rel=1e-3)
    tiles = [s for s in seen if s[0] == "tiles"]
    assert tiles[-1][1] == tiles[-1][2] == result.tiles


def test_slicks_under_the_minimum_area_leave_the_outlines_and_the_mask_alike(tmp_path, sample_scene, tiny_model):
    """The mask holds exactly the 8-connected slick patches of at least the minimum area (counted here by
    scipy, not by the code under test), the outlines are those patches, and their mean probability is
    taken over their own pixels."""
    from scipy import ndimage

    every = detect(sample_scene, tmp_path / "every", _options(tiny_model, threshold=0.5))
    kept = detect(sample_scene, tmp_path / "kept", _options(tiny_model, threshold=0.5, min_area_km2=0.05))
    with rasterio.open(kept.probability) as ds:
        prob = ds.read(1)
        pixel_km2 = abs(ds.transform.a * ds.transform.e) / 1e6
    with rasterio.open(kept.mask) as ds:
        mask = ds.read(1)
    patches, _ = ndimage.label(np.nan_to_num(prob) > 0.5, structure=np.ones((3, 3)))
    sizes = np.bincount(patches.ravel()) * pixel_km2
    big = (sizes >= 0.05)[patches] & (patches > 0)
    assert 0 < big.sum() < (patches > 0).sum()  # some patches are kept and some dropped: the test can tell
    assert ((mask == 1) == big).all() and ((mask == 255) == np.isnan(prob)).all()
    assert kept.n_slicks == int((sizes[1:] >= 0.05).sum()) < every.n_slicks
    assert (kept.min_area_km2, every.min_area_km2) == (0.05, 0.0)  # the result says which smallest slick it kept
    with fiona.open(kept.slicks, layer="slicks") as layer:
        areas = sorted(f["properties"]["area_km2"] for f in layer)
        means = {round(f["properties"]["area_km2"], 4): f["properties"]["mean_prob"] for f in layer}
    assert areas == pytest.approx(sorted(sizes[1:][sizes[1:] >= 0.05]), abs=1e-4)
    largest = np.argmax(sizes[1:]) + 1
    nearest = min(means, key=lambda area: abs(area - sizes[largest]))  # areas are stored to 4 decimals, rounded from the polygon's
    assert means[nearest] == pytest.approx(float(prob[patches == largest].mean()), abs=1e-4)


def test_without_a_smallest_slick_detection_keeps_the_model_s_own(tmp_path, sample_scene, tiny_model):
    """A model carries the smallest slick it was measured with, as it carries its threshold."""
    from dataclasses import replace

    from scipy import ndimage

    from engine.models.registry import load_model, read_card, save_model

    model = save_model(load_model(tiny_model)[0], replace(read_card(tiny_model), min_area_km2=0.002), tmp_path / "cut.safetensors")
    own = detect(sample_scene, tmp_path / "own", _options(model, threshold=0.5, min_area_km2=None))
    with rasterio.open(own.probability) as ds:
        patches, _ = ndimage.label(np.nan_to_num(ds.read(1)) > 0.5, structure=np.ones((3, 3)))
        sizes = np.bincount(patches.ravel())[1:] * abs(ds.transform.a * ds.transform.e) / 1e6
    assert (sizes >= 0.05).sum() < (sizes >= 0.002).sum() < len(sizes)  # the model's cut is neither the default's nor none
    assert own.min_area_km2 == 0.002 and own.n_slicks == (sizes >= 0.002).sum()


def test_without_a_threshold_detection_cuts_at_the_model_s_own(tmp_path, sample_scene, model_factory):
    """A model carries its calibrated threshold, and a fine-tuned one its own on the scenes it was taught on,
    wherever that scene's file now lies; detection uses them unless told otherwise."""
    moved = shutil.copy(sample_scene, tmp_path / "moved.tif")
    other_scene = SAMPLES / "sample_2" / "raw_mosaic.tif"
    model = model_factory(tmp_path / "calibrated.safetensors", **SMALL_MODEL, threshold=0.498,
                          scene_thresholds={scene_fingerprint(sample_scene): 0.502})
    own = detect(moved, tmp_path / "own", _options(model))
    other = detect(other_scene, tmp_path / "other", _options(model))
    given = detect(sample_scene, tmp_path / "given", _options(model, threshold=0.495))
    assert (own.threshold, own.threshold_from) == (0.502, "calibrated on labels of this scene")
    assert (other.threshold, other.threshold_from) == (0.498, "the model's")
    assert (given.threshold, given.threshold_from) == (0.495, "given")
    for result in (own, other, given):
        with rasterio.open(result.probability) as ds:
            prob = ds.read(1)
        with rasterio.open(result.mask) as ds:
            mask = ds.read(1)
        valid = np.isfinite(prob)
        assert ((prob > result.threshold) == (mask == 1))[valid].all()
    # the cuts differ on this scene, so the test can tell which one was used
    assert 0 < np.count_nonzero((prob > 0.495) & (prob <= 0.498)) and 0 < np.count_nonzero((prob > 0.498) & (prob <= 0.502))


def test_existing_outputs_are_never_overwritten(tmp_path, sample_scene, tiny_model):
    detect(sample_scene, tmp_path, _options(tiny_model))
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(OutputError, match="already exist"):
        detect(sample_scene, tmp_path, _options(tiny_model))
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("stage, done", [("tiles", 1), ("polygons", 0)])
def test_cancel_leaves_no_file(tmp_path, sample_scene, tiny_model, stage, done):
    """Among the tiles, and while the slicks are traced with the COGs being written beside them."""
    with pytest.raises(Cancelled):
        detect(sample_scene, tmp_path, _options(tiny_model), cancel_at(stage, done))
    assert list(tmp_path.iterdir()) == []


def test_a_scene_too_wide_for_the_free_memory_is_refused_before_any_file(tmp_path, sample_scene, tiny_model, monkeypatch):
    """What the tile stage needs grows with the scene's width: on a machine without room for it, a clear error
    that says what to do, and nothing written, rather than running out of memory half way."""
    import engine.jobs.detect as detect_job

    monkeypatch.setattr(detect_job, "_available_memory", lambda: 2**20)
    with pytest.raises(ResourceError, match="wide strip needs about") as info:
        detect(sample_scene, tmp_path, _options(tiny_model))
    assert "smaller tile size" in str(info.value) and list(tmp_path.iterdir()) == []


def test_a_scene_wider_than_the_strip_budget_is_detected_in_panels_that_map_as_one(tmp_path, tiny_model, monkeypatch):
    """Memory stays flat in a scene's width: past the tile stage's budget the scene is detected in panels of tile
    columns. Their seams blend the same tiles, a land buffer crosses them (land ending 4 px before a seam, buffered
    by 8), and every output is the one-panel run's (seam sums add in another order: masks compared off the threshold)."""
    import engine.jobs.detect as detect_job
    from engine.scenes.tiling import panels

    spec = SceneSpec(height=520, width=2300, seed=6, nodata_border=True)
    scene = write_scene(spec, tmp_path / "wide.tif")
    seam = panels(spec.width, 256, 64, 0)[1].x0
    x, y = spec.origin
    land = tmp_path / "land.gpkg"
    ring = [(x + (seam - 40) * 25, y - 300 * 25), (x + (seam - 4) * 25, y - 300 * 25), (x + (seam - 4) * 25, y - 200 * 25),
            (x + (seam - 40) * 25, y - 200 * 25), (x + (seam - 40) * 25, y - 300 * 25)]
    with fiona.open(land, "w", driver="GPKG", crs=spec.crs, schema={"geometry": "Polygon", "properties": {}}) as dst:
        dst.write({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {}})
    # The untrained model's probabilities lie within 0.01 of 0.5: cut at 0.5, half the scene is a few convoluted slicks whose
    # evidence took most of a minute; cut in their top percent, a thousand specks cross the seams in a few seconds.
    cut = 0.5075
    options = _options(tiny_model, threshold=cut, land_mask=str(land), land_buffer=8)
    whole = detect(scene, tmp_path / "whole", options)
    layouts = []
    monkeypatch.setattr(detect_job, "_STRIP_BUDGET", 0)  # the narrowest panels
    monkeypatch.setattr(detect_job, "panels", lambda *args: layouts.append(panels(*args)) or layouts[-1])
    parts = detect(scene, tmp_path / "parts", options)
    assert len(layouts[0]) >= 3 and max(p.width for p in layouts[0]) < 1000 and layouts[0][1].x0 == seam
    assert (parts.tiles, parts.tiles_skipped_by) == (whole.tiles, whole.tiles_skipped_by)
    with rasterio.open(whole.probability) as a, rasterio.open(parts.probability) as b:
        p_whole, p_parts = a.read(1), b.read(1)
    with rasterio.open(whole.mask) as a, rasterio.open(parts.mask) as b:
        m_whole, m_parts = a.read(1), b.read(1)
    assert (p_whole[210:290, seam - 30 : seam + 4] == 0).all() and (p_whole[210:290, seam + 5 :] > 0).any()
    np.testing.assert_array_equal(np.isnan(p_whole), np.isnan(p_parts))
    np.testing.assert_array_equal(p_whole == 0, p_parts == 0)  # land, its buffer and no-data borders
    np.testing.assert_allclose(p_parts, p_whole, atol=1e-6)
    off_threshold = np.abs(p_whole - cut) > 1e-5
    np.testing.assert_array_equal(m_parts[off_threshold], m_whole[off_threshold])
    assert parts.n_slicks == whole.n_slicks > 100


def test_unwritable_output_folder(tmp_path, sample_scene, tiny_model):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who can write anywhere (root)")
    with pytest.raises(OutputError, match="Cannot write"):
        detect(sample_scene, locked, _options(tiny_model))


def test_output_folder_that_is_a_file(tmp_path, sample_scene, tiny_model):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    with pytest.raises(OutputError, match="Cannot write"):
        detect(sample_scene, target, _options(tiny_model))
    assert target.read_text() == "not a folder"


def test_extent_run_sits_on_the_whole_scene_lattice(tmp_path, sample_scene, tiny_model):
    with rasterio.open(sample_scene) as ds:
        left, bottom, right, top = ds.bounds
    bounds = (left + 3010, bottom + 5020, left + 9990, bottom + 12000)
    result = detect(sample_scene, tmp_path, _options(tiny_model, bounds=bounds, bounds_crs="EPSG:32636"))
    with rasterio.open(result.probability) as ds:
        assert ds.width < 768 and ds.height < 768
        col = (ds.transform.c - left) / 25
        row = (top - ds.transform.f) / 25
        assert col == int(col) and row == int(row)


def test_extent_outside_the_scene(tmp_path, sample_scene, tiny_model):
    with pytest.raises(InputError, match="does not overlap"):
        detect(sample_scene, tmp_path, _options(tiny_model, bounds=(0, 0, 10, 10), bounds_crs="EPSG:32636"))


def test_grd_scene_in_radar_geometry(tmp_path, grd_scene, model_factory):
    model = model_factory(tmp_path / "m200.safetensors", **SMALL_MODEL, pixel_size=200.0, polarisation="VV", mode="IW")
    result = detect(grd_scene, tmp_path / "out", _options(model))
    with rasterio.open(result.probability) as ds:
        assert ds.crs.to_string() == "EPSG:32618" and ds.res == (200.0, 200.0)
        assert 0.5 < np.isfinite(ds.read(1)).mean() < 0.95  # the rotated swath inside its UTM box


def test_model_for_another_pixel_size_is_refused_before_anything_is_written(tmp_path, grd_scene, tiny_model):
    with pytest.raises(ModelError, match="works at 25 m"):
        detect(grd_scene, tmp_path, _options(tiny_model))
    assert list(tmp_path.iterdir()) == []


def test_synthetic_db_scene_reprojected_and_resampled(tmp_path, tiny_model):
    spec = SceneSpec(height=300, width=300, mode="EW_HH", pixel_size=40.0, seed=2, crs="EPSG:32635", origin=(650000.0, 8360000.0))
    scene = write_scene(spec, tmp_path / "ew_db.tif", encoding="float32_db")
    result = detect(scene, tmp_path / "out", _options(tiny_model))
    with rasterio.open(result.probability) as ds:
        assert ds.crs.to_string() == "EPSG:32636"  # 33.6 E belongs to zone 36, not the file's 35
        assert ds.res == (25.0, 25.0)
        assert np.isfinite(ds.read(1)).mean() > 0.3


def test_source_grid_writes_back_on_the_scene_pixels(tmp_path, tiny_model):
    spec = SceneSpec(height=200, width=200, pixel_size=40.0, seed=3)
    scene = write_scene(spec, tmp_path / "ew.tif")
    result = detect(scene, tmp_path / "out", _options(tiny_model, source_grid=True))
    with rasterio.open(scene) as src, rasterio.open(result.probability) as ds:
        assert ds.transform == src.transform and ds.shape == src.shape


def test_writing_back_on_the_scene_pixels_never_holds_the_whole_raster(tmp_path):
    """The warp back onto the scene's pixels streams block by block: numpy never holds the scene, which once took
    4 bytes a pixel of the probability (1.4 GB peak on a 12,000-px scene)."""
    import tracemalloc

    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.transform import array_bounds
    from rasterio.warp import calculate_default_transform

    from engine.jobs.detect import _write_cog

    side = 1500
    staged = tmp_path / "analysis_probability.tif"
    values = np.random.default_rng(0).uniform(0, 1, (side, side)).astype(np.float32)
    profile = dict(driver="GTiff", width=side, height=side, count=1, dtype="float32", nodata=float("nan"), tiled=True,
                   crs="EPSG:32634", transform=Affine(25.0, 0, 300000.0, 0, -25.0, 8700000.0))
    with rasterio.open(staged, "w", **profile) as dst:
        dst.write(values, 1)
    transform, width, height = calculate_default_transform("EPSG:32634", "EPSG:32633", side, side,
                                                            *array_bounds(side, side, profile["transform"]), resolution=20.0)
    scene_pixels = {"crs": rasterio.crs.CRS.from_epsg(32633), "transform": transform, "width": width, "height": height}
    tracemalloc.start()
    try:
        _write_cog(staged, tmp_path / "probability.tif", Resampling.bilinear, scene_pixels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < values.nbytes / 8
    with rasterio.open(tmp_path / "probability.tif") as cog:
        assert cog.crs.to_epsg() == 32633 and cog.transform == transform and cog.shape == (height, width)
        written = cog.read(1)
    inside = np.isfinite(written)
    assert 0.3 < inside.mean() < 1 and 0.4 < written[inside].mean() < 0.6


def test_test_time_averaging_takes_four_mirror_images_two_views_with_half_turn_or_eight_with_rotations(tmp_path, sample_scene, tiny_model):
    """A random network sees a tile and its mirror image differently; with ``tta`` the probability is the
    mean of the four views, each mapped back, so it is mirror-symmetric by construction; with ``half_turn``, of the tile
    and its half turn only, so symmetric under that turn and not under a mirror; with ``rotations`` too, of
    eight (the mirrors of the tile and of its transpose), through detection as well."""
    import torch

    from engine.models.inference import Predictor
    from engine.models.registry import load_model

    model, card = load_model(tiny_model, "cpu")
    predictor = Predictor(model, card, torch.device("cpu"), fast=False)
    tiles = np.random.default_rng(0).uniform(1, 255, (2, 64, 64)).astype(np.float32)
    views = [predictor(tiles), predictor(tiles[:, :, ::-1])[:, :, ::-1],
             predictor(tiles[:, ::-1])[:, ::-1], predictor(tiles[:, ::-1, ::-1])[:, ::-1, ::-1]]
    assert not np.allclose(views[0], views[1], atol=1e-4)
    predictor.tta = True
    mirrored = predictor(tiles)
    np.testing.assert_allclose(mirrored, np.mean(views, axis=0), atol=1e-5)
    np.testing.assert_allclose(predictor(tiles[:, :, ::-1])[:, :, ::-1], mirrored, atol=1e-5)
    predictor.half_turn = True
    halved = predictor(tiles)
    np.testing.assert_allclose(halved, np.mean([views[0], views[3]], axis=0), atol=1e-5)
    np.testing.assert_allclose(predictor(tiles[:, ::-1, ::-1])[:, ::-1, ::-1], halved, atol=1e-5)
    assert not np.allclose(predictor(tiles[:, :, ::-1])[:, :, ::-1], halved, atol=1e-4)
    predictor.half_turn = False
    predictor.tta = False
    turned = [predictor(np.ascontiguousarray(t.swapaxes(-2, -1))).swapaxes(-2, -1) for t in
              (tiles, tiles[:, :, ::-1], tiles[:, ::-1], tiles[:, ::-1, ::-1])]
    turned = [turned[0], turned[1][:, :, ::-1], turned[2][:, ::-1], turned[3][:, ::-1, ::-1]]
    assert not np.allclose(turned[0], views[0], atol=1e-4)
    predictor.tta = predictor.rotations = True
    np.testing.assert_allclose(predictor(tiles), np.mean(views + turned, axis=0), atol=1e-5)
    np.testing.assert_allclose(predictor(np.ascontiguousarray(tiles.swapaxes(-2, -1))).swapaxes(-2, -1), predictor(tiles), atol=1e-5)
    predictor.rotations = False

    # Cut above every probability of the untrained model: only the probabilities are compared, and tracing half the scene
    # as slick took most of the time.
    quiet = dict(model=str(tiny_model), runtime="torch", threshold=0.99)
    plain = detect(sample_scene, tmp_path, DetectOptions(prefix="plain", tta=False, **quiet))
    tta = detect(sample_scene, tmp_path, DetectOptions(prefix="tta", **quiet))  # the default
    rotated = detect(sample_scene, tmp_path, DetectOptions(prefix="rotated", rotations=True, **quiet))
    turned = detect(sample_scene, tmp_path, DetectOptions(prefix="turned", half_turn=True, **quiet))
    assert tta.mirrored and not plain.mirrored and not tta.rotated and rotated.mirrored and rotated.rotated
    assert turned.mirrored and turned.half_turn and not tta.half_turn and not rotated.half_turn
    with rasterio.open(plain.probability) as a, rasterio.open(tta.probability) as b, rasterio.open(rotated.probability) as c, \
            rasterio.open(turned.probability) as d:
        assert a.shape == b.shape == c.shape == d.shape and not np.allclose(a.read(1), b.read(1)) and not np.allclose(b.read(1), c.read(1))
        assert not np.allclose(b.read(1), d.read(1)) and not np.allclose(a.read(1), d.read(1))


@pytest.mark.parametrize("encoding, staged", [("uint8", False), ("float32_db", True)])
def test_the_scene_s_values_are_staged_only_for_a_scene_that_holds_backscatter(tmp_path, monkeypatch, encoding, staged):
    """The look-alike evidence averages backscatter from a copy staged during prediction; a stretched 8-bit
    scene holds grey levels, which it never averages, so nothing is staged for it."""
    written = []
    real_open = rasterio.open

    def recording_open(path, mode="r", *args, **kwargs):
        if mode == "w":
            written.append(os.path.basename(str(path)))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("engine.jobs.detect.rasterio.open", recording_open)
    scene = write_scene(SceneSpec(height=300, width=300, seed=4), tmp_path / f"ew_{encoding}.tif", encoding=encoding)
    result = detect(scene, tmp_path / "out", _options(DEFAULT_MODEL, threshold=0.9, runtime="torch"))
    assert ("analysis_backscatter.tif" in written) == staged
    assert {"analysis_probability.tif", "analysis_mask.tif"} <= set(written)
    with fiona.open(result.slicks, layer="slicks") as layer:
        contrasts = [f["properties"]["contrast_db"] for f in layer]
    assert len(contrasts) > 1 and any(c is not None for c in contrasts) == staged


def test_stage_seconds_add_up_and_put_the_model_s_time_in_the_model(tmp_path, monkeypatch, sample_scene, tiny_model):
    """A network slowed by a known sleep per call: its time lands in ``model``, and the stages add up to the
    run's seconds, so the pipeline benchmark's split of the overhead is whole."""
    import time

    from engine.models.inference import Predictor

    calls, pause = [], 0.05
    call = Predictor.__call__

    def slow(self, tiles):
        calls.append(len(tiles))
        time.sleep(pause)
        return call(self, tiles)

    monkeypatch.setattr(Predictor, "__call__", slow)
    result = detect(sample_scene, tmp_path, _options(tiny_model, runtime="torch"))
    stages = result.stage_seconds
    assert set(stages) == {"before_tiles", "model", "tiles_outside_model", "tracing", "evidence", "writing", "finishing"}
    assert sum(calls) == result.tiles and all(value >= 0 for value in stages.values())
    assert sum(stages.values()) == pytest.approx(result.seconds, abs=0.02)
    assert stages["model"] >= pause * len(calls)


def test_pytorch_averages_the_views_on_its_device_as_the_exported_runtimes_do_on_the_host(tiny_model):
    """PyTorch makes, runs and averages the views in one batch on its device; a runtime that only maps numpy
    to numpy gets them one by one from the Predictor. Both are one computation, and a tile's views share the
    runtime's batch, so a call holds as many tiles as its images per call allow with every view."""
    import torch

    from engine.models.eager import EagerForward
    from engine.models.inference import Predictor
    from engine.models.registry import load_model

    model, card = load_model(tiny_model, "cpu")
    eager = EagerForward(model, torch.device("cpu"), None, channels_last=False)
    on_device = Predictor(None, card, forward=eager)
    on_host = Predictor(None, card, forward=lambda x: eager(x))
    tiles = np.random.default_rng(1).uniform(1, 255, (3, 64, 64)).astype(np.float32)
    for tta, rotations, half_turn in ((False, False, False), (True, False, False), (True, True, False), (True, False, True)):
        for predictor in (on_device, on_host):
            predictor.tta, predictor.rotations, predictor.half_turn = tta, rotations, half_turn
        np.testing.assert_allclose(on_device(tiles), on_host(tiles), atol=1e-5)
    on_device.images_per_call = 16
    assert on_device.batch_size == 8  # two views with the half turn
    on_device.half_turn, on_device.rotations = False, True
    assert on_device.batch_size == 2  # eight views with rotations
    on_device.rotations = False
    assert on_device.batch_size == 4
    on_device.tta = False
    assert on_device.batch_size == 16
