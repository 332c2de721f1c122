"""Whole-scene measurements kept between runs: asked again of the same file they are not read again, a rewritten
file is measured afresh, a broken cache only costs the reading, and a detection finds the same either way."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from engine.data.synth import SceneSpec, write_scene
from engine.jobs.detect import DetectOptions, detect
from engine.progress import Progress
from engine.scenes import normalise, raster
from engine.scenes.normalise import Stretch, scene_stretch
from engine.scenes.raster import inspect


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "slick_mapper" / "scenes"


@pytest.fixture
def counted(monkeypatch):
    """The number of whole-scene reads: decimated previews and statistics chunks."""
    reads = {"preview": 0, "statistics": 0}
    preview = raster.preview

    def counting_preview(*args, **kwargs):
        reads["preview"] += 1
        return preview(*args, **kwargs)

    monkeypatch.setattr(raster, "preview", counting_preview)

    def stretch(path):
        with rasterio.open(path) as ds:
            return scene_stretch(ds, 1, "float32_db", _counting(reads))

    return reads, stretch


def _counting(reads: dict) -> Progress:
    """A progress that counts the statistics pass's chunks (one update each)."""
    return Progress(lambda stage, done, total, message="": reads.__setitem__(stage, reads.get(stage, 0) + 1))


def test_the_same_file_is_read_once_and_a_rewritten_one_again(tmp_path, cache, counted):
    reads, stretch = counted
    scene = write_scene(SceneSpec(height=300, width=300, seed=1), tmp_path / "scene.tif", encoding="float32_db")
    first, first_stretch = inspect(scene), stretch(scene)
    assert reads["preview"] == 1 and reads["statistics"] > 0 and len(list(cache.glob("*.json"))) == 1
    read = dict(reads)
    again, again_stretch = inspect(scene), stretch(scene)
    assert reads == read  # answered from the cache: nothing read
    assert (again.value_scale, again.valid_fraction, again_stretch) == (first.value_scale, first.valid_fraction, first_stretch)

    write_scene(SceneSpec(height=300, width=300, seed=2, mode="IW_VV"), scene, encoding="float32_db")  # same name, other data
    rewritten = stretch(scene)
    assert reads["statistics"] > read["statistics"] and rewritten != first_stretch
    with rasterio.open(scene) as ds:
        values = ds.read(1)
    values[~np.isfinite(values) | (values == 0)] = np.nan
    fresh = Stretch.fit("float32_db", [values])  # the rewritten file's own statistics, computed here
    assert (rewritten.mean, rewritten.std) == pytest.approx((fresh.mean, fresh.std), rel=1e-6)


def test_a_cache_that_cannot_be_written_only_costs_the_reading(tmp_path, monkeypatch, counted):
    reads, stretch = counted
    (tmp_path / "blocked").write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocked"))
    scene = write_scene(SceneSpec(height=300, width=300, seed=1), tmp_path / "scene.tif", encoding="float32_db")
    assert stretch(scene) == stretch(scene) and inspect(scene).value_scale == inspect(scene).value_scale == "float32_db"
    assert reads["preview"] == 2


def test_a_detection_from_remembered_measurements_finds_the_same(tmp_path, monkeypatch, cache, tiny_model):
    scene = write_scene(SceneSpec(height=600, width=600, seed=3), tmp_path / "scene.tif", encoding="float32_db")
    options = {"model": str(tiny_model), "tile": 256, "runtime": "torch", "land_mask": "none"}
    cold = detect(scene, tmp_path / "cold", DetectOptions(**options))
    assert len(list(cache.glob("*.json"))) == 1

    def unread(*args, **kwargs):
        raise AssertionError("the scene was read again for what was kept")

    monkeypatch.setattr(raster, "preview", unread)
    monkeypatch.setattr(normalise, "_measured_stretch", unread)
    warm = detect(scene, tmp_path / "warm", DetectOptions(**options))
    for kind in ("probability", "mask"):
        with rasterio.open(getattr(cold, kind)) as a, rasterio.open(getattr(warm, kind)) as b:
            np.testing.assert_array_equal(a.read(1), b.read(1))
    assert warm.n_slicks == cold.n_slicks and warm.total_area_km2 == cold.total_area_km2


@pytest.mark.parametrize("garbage", ["not json", "[1, 2]", '{"eq. 1 statistics of band 1 as float32_db": "cut short'])
def test_a_damaged_cache_file_is_measured_again(tmp_path, cache, counted, garbage):
    reads, stretch = counted
    scene = write_scene(SceneSpec(height=300, width=300, seed=1), tmp_path / "scene.tif", encoding="float32_db")
    first = stretch(scene)
    (kept,) = cache.glob("*.json")
    kept.write_text(garbage)
    read = reads["statistics"]
    assert stretch(scene) == first and reads["statistics"] > read
    assert stretch(scene) == first and json.loads(kept.read_text())  # written whole again, and answered from it


def test_a_scene_measured_ahead_is_not_read_again_by_detection(tmp_path, cache, counted):
    """The dock runs ``measure`` when a scene is chosen: what it reports is what a detection then uses, unread."""
    from engine.cli.main import main

    reads, stretch = counted
    scene = write_scene(SceneSpec(height=300, width=300, seed=4), tmp_path / "scene.tif", encoding="float32_db")
    assert main(["--jsonl", "measure", str(scene)]) == 0
    read = dict(reads)
    kept = stretch(scene)
    assert reads == read
    with rasterio.open(scene) as ds:
        values = ds.read(1)
    values[~np.isfinite(values) | (values == 0)] = np.nan
    fresh = Stretch.fit("float32_db", [values])
    assert (kept.mean, kept.std) == pytest.approx((fresh.mean, fresh.std), rel=1e-6)


STATISTICS = "eq. 1 statistics of band 1 as float32_db"


def _hold_the_measurement(scene, cache):
    """The lock on the scene's statistics, taken as another process measuring them would hold it."""
    from engine.locks import try_lock
    from engine.scenes.remembered import _key, _lock_file

    with rasterio.open(scene) as ds:
        key = _key(ds.files)
    cache.mkdir(parents=True, exist_ok=True)
    handle = try_lock(_lock_file(cache / f"{key}.json", STATISTICS))
    assert handle is not None
    return handle, cache / f"{key}.json"


def test_a_detection_started_while_the_scene_is_measured_waits_for_that_answer(tmp_path, cache, counted):
    import threading
    import time

    reads, stretch = counted
    scene = write_scene(SceneSpec(height=300, width=300, seed=5), tmp_path / "scene.tif", encoding="float32_db")
    handle, answers = _hold_the_measurement(scene, cache)
    got = []
    waiting = threading.Thread(target=lambda: got.append(stretch(scene)))
    waiting.start()
    time.sleep(0.5)
    assert waiting.is_alive() and reads["statistics"] == 0  # waits, reads nothing meanwhile
    assert reads["waiting"] == 1  # and says so, once
    theirs = Stretch("float32_db", -17.25, 2.5)  # what the other process measured
    answers.write_text(json.dumps({STATISTICS: theirs.to_dict()}))
    handle.close()
    waiting.join(timeout=30)
    assert got == [theirs] and reads["statistics"] == 0


def test_a_cancel_while_waiting_for_another_measurement_stops_at_once(tmp_path, cache, monkeypatch):
    from engine.errors import Cancelled
    from engine.progress import Progress

    scene = write_scene(SceneSpec(height=300, width=300, seed=5), tmp_path / "scene.tif", encoding="float32_db")
    handle, _ = _hold_the_measurement(scene, cache)

    def measured(*args, **kwargs):
        raise AssertionError("measured instead of waiting")

    monkeypatch.setattr(normalise, "_measured_stretch", measured)
    progress = Progress()
    progress.cancel()
    try:
        with rasterio.open(scene) as ds, pytest.raises(Cancelled):
            scene_stretch(ds, 1, "float32_db", progress)
    finally:
        handle.close()


def test_another_run_measuring_the_statistics_does_not_hold_up_the_preview(tmp_path, cache, counted):
    reads, _ = counted
    scene = write_scene(SceneSpec(height=300, width=300, seed=6), tmp_path / "scene.tif", encoding="float32_db")
    import threading

    handle, _ = _hold_the_measurement(scene, cache)
    got = []
    looking = threading.Thread(target=lambda: got.append(inspect(scene).value_scale), daemon=True)
    looking.start()
    looking.join(timeout=20)
    alive = looking.is_alive()
    handle.close()  # lets a wrongly waiting look-up finish
    looking.join(timeout=30)
    assert not alive and got == ["float32_db"] and reads["preview"] == 1
