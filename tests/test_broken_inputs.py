"""Broken inputs end as the engine's typed error with what is wrong and what to do, never a traceback and
never a half-written file: cut-off downloads, VRTs missing a source, full disks, runs that collide, files
that try to escape their folder or run code."""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from shapely.geometry import box

from engine.atomic import write_bytes
from engine.errors import InputError, ModelError, OutputError
from engine.generation import samples
from engine.jobs.detect import DetectOptions, detect
from engine.jobs.labels import add_labels, create_store, import_mask, read_store, summary
from engine.jobs.outputs import OutputSet
from engine.models.registry import ModelCard, build_model, load_encoder_weights, load_model, save_model
from engine.progress import Progress, silent
from engine.scenes.grid import analysis_grid, open_on_grid
from engine.scenes.normalise import scene_stretch
from engine.scenes.raster import inspect, preview

from conftest import ROOT, SAMPLES, SMALL_MODEL, make_model

SCENE = SAMPLES / "sample_1" / "raw_mosaic.tif"
LABEL = SAMPLES / "sample_1" / "labels_mosaic.png"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", **SMALL_MODEL)


def cut(src: Path, dst: Path, share: float) -> Path:
    """A partial download: the first ``share`` of the file's bytes."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * share)])
    return dst


@contextmanager
def file_size_limit(limit: int):
    """A real write failure from the kernel: no file of this process may grow past ``limit`` bytes (EFBIG,
    as a quota or a full disk stops writers), whatever library writes it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def float_scene(path: Path, size: int = 512) -> Path:
    """A float32 dB scene (statistics are read for it, unlike 8-bit scenes), tiled and compressed."""
    rng = np.random.default_rng(0)
    with rasterio.open(SCENE) as ds:
        profile = ds.profile
    profile.update(dtype="float32", nodata=None, width=size, height=size, tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rng.normal(-20, 3, (size, size)).astype("float32"), 1)
    return path


# Reading ---------------------------------------------------------------------------------------------

def test_a_partial_download_is_named_at_every_stage_that_reads_it(tmp_path: Path) -> None:
    scene = cut(float_scene(tmp_path / "whole.tif"), tmp_path / "partial.tif", 0.6)
    expected = r"partial\.tif: the file ends after 6\d % of its data: probably an interrupted download"
    with pytest.raises(InputError, match=expected) as info_error:
        inspect(scene)
    assert "Download or copy it again" in str(info_error.value)
    with rasterio.open(scene) as ds:  # the header is whole, so the file opens; each reading stage fails clearly
        with pytest.raises(InputError, match=expected):
            preview(ds, 1)
        with pytest.raises(InputError, match=expected):
            scene_stretch(ds, 1, "float32_db", silent())
        grid = analysis_grid(ds, "EPSG:32636", 25.0)
        with open_on_grid(ds, 1, grid) as reader, pytest.raises(InputError, match=expected):
            reader.read(Window(0, grid.height - 64, grid.width, 64))


def test_fine_tuning_and_generator_training_name_a_cut_off_labelled_scene(tmp_path: Path) -> None:
    from engine.generation.training_set import training_tiles
    from engine.jobs.finetune_data import collect_tiles

    scene = cut(SCENE, tmp_path / "labelled.tif", 0.7)
    store = create_store(tmp_path / "labels.gpkg", "EPSG:32636")
    import_mask(store, scene, LABEL)
    card = ModelCard(name="m", architecture="unet", encoder="resnet18")
    with pytest.raises(InputError, match="labelled.tif: the file ends after \\d+ % of its data"):
        collect_tiles(read_store(store), card, 256, silent())
    with pytest.raises(InputError, match="labelled.tif: the file ends after \\d+ % of its data"):
        training_tiles(read_store(store), 64, 25.0, silent())


def test_a_vrt_whose_source_is_missing_says_which(tmp_path: Path) -> None:
    shutil.copy(SCENE, tmp_path / "present.tif")
    vrt = tmp_path / "mosaic.vrt"
    with rasterio.open(tmp_path / "present.tif") as ds:
        xml = f"""<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}"><SRS>{ds.crs.to_wkt()}</SRS>
<GeoTransform>{', '.join(map(str, ds.transform.to_gdal()))}</GeoTransform>
<VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="1">present.tif</SourceFilename>
<SourceBand>1</SourceBand></SimpleSource><SimpleSource><SourceFilename relativeToVRT="1">missing.tif</SourceFilename>
<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"""
    vrt.write_text(xml)
    with pytest.raises(InputError, match="the VRT points to missing.tif, which does not exist. Put missing.tif back"):
        inspect(vrt)
    vrt.write_text(xml.replace("missing.tif", "cut.tif"))
    cut(SCENE, tmp_path / "cut.tif", 0.5)
    with pytest.raises(InputError, match="the VRT's source cut.tif is damaged: the file ends after"):
        inspect(vrt)


def test_the_cli_says_it_in_one_line_with_no_traceback(tmp_path: Path, model: Path) -> None:
    scene = cut(SCENE, tmp_path / "scene.tif", 0.6)
    for command in (["info", str(scene)], ["detect", str(scene), "--out", str(tmp_path / "out"), "--model", str(model)]):
        run = subprocess.run([sys.executable, "-m", "engine", "--jsonl", *command], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 2
        assert "Traceback" not in run.stdout + run.stderr
        error = json.loads(run.stdout.splitlines()[-1])
        assert error["kind"] == "InputError" and "probably an interrupted download" in error["message"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# Writing ---------------------------------------------------------------------------------------------

def test_a_full_disk_during_detection_leaves_no_output_and_says_so(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "out"
    with file_size_limit(40_000), pytest.raises(OutputError, match="the disk or your quota is full") as error:
        detect(SCENE, out, DetectOptions(model=str(model), device="cpu"))
    assert "MB free there" in str(error.value) and "Free some space" in str(error.value)
    assert list(out.iterdir()) == []


def test_a_full_disk_while_saving_a_model_or_samples_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    card = ModelCard(name="m", architecture="unet", encoder="resnet18", tile_size=64)
    with file_size_limit(100_000), pytest.raises(OutputError, match="the disk or your quota is full"):
        save_model(build_model(card), card, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []

    folder = tmp_path / "samples"
    key = samples.prepare(folder, {"path": "g", "name": "g", "sha256": "0" * 64, "tile_size": 256, "classes": ["water", "slick"], "b": 0.5})
    before = (folder / "index.json").read_bytes()
    rng = np.random.default_rng(0)
    made = [samples.NewSample(rng.integers(1, 255, (256, 256), dtype=np.uint8), rng.normal(size=(2, 256, 256)).astype(np.float32),
                              seed, [0, 1, 2], "dpm++", 3, "cpu", 1) for seed in range(3)]
    with file_size_limit(150_000), pytest.raises(OutputError, match="the disk or your quota is full"):
        samples.add(folder, key, made)
    assert (folder / "index.json").read_bytes() == before
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == [".index.lock", "index.json"]


def test_a_full_disk_while_adding_labels_leaves_the_store_whole(tmp_path: Path) -> None:
    store = create_store(tmp_path / "labels.gpkg", "EPSG:32636")
    import_mask(store, SCENE, LABEL)
    before = summary(read_store(store))
    many = [box(450_000 + i * 30, 8_345_000, 450_000 + i * 30 + 20, 8_345_000 + 20).buffer(5, 64) for i in range(400)]
    with file_size_limit(store.stat().st_size + 4096), pytest.raises(OutputError, match="the disk or your quota is full"):
        add_labels(store, SCENE, many, "slick", crs="EPSG:32636", author="a 'quoted'; DROP TABLE labels; --", origin="drawn")
    after = summary(read_store(store))
    assert (after["labels"], after["sha256"]) == (before["labels"], before["sha256"])


# Collisions ------------------------------------------------------------------------------------------

def test_two_runs_writing_the_same_outputs_into_one_folder_are_refused_not_raced(tmp_path: Path) -> None:
    names = {"probability": "s_probability.tif", "mask": "s_mask.tif"}
    first = OutputSet(tmp_path, names)
    with pytest.raises(OutputError, match="Another run is writing s_mask.tif, s_probability.tif"):
        OutputSet(tmp_path, names)
    other = OutputSet(tmp_path, {"probability": "t_probability.tif"})  # another scene into the same folder is fine
    other.discard()
    for key in names:
        first.path(key).write_text(key)
    assert sorted(Path(p).name for p in first.commit().values()) == sorted(names.values())
    with pytest.raises(OutputError, match="already exist"):
        OutputSet(tmp_path, names)


def test_what_a_killed_detection_left_is_removed_by_the_next_run(tmp_path: Path) -> None:
    code = ("import sys, time; from engine.jobs.outputs import OutputSet; "
            "o = OutputSet(sys.argv[1], {'p': 'k_probability.tif'}); o.path('p').write_bytes(b'x' * 1000); print('ready', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    with pytest.raises(OutputError, match="Another run is writing k_probability.tif"):
        OutputSet(tmp_path, {"p": "k_probability.tif"})
    child.kill()
    child.wait()
    [stage] = tmp_path.iterdir()  # what the kill left: its staging folder, with a file in it
    assert (stage / "k_probability.tif").exists()
    OutputSet(tmp_path, {"p": "k_probability.tif"}).discard()
    assert list(tmp_path.iterdir()) == []


def test_a_scene_replaced_while_detection_reads_it_is_refused(tmp_path: Path, model: Path) -> None:
    scene = tmp_path / "scene.tif"
    shutil.copy(SCENE, scene)
    shutil.copy(SAMPLES / "sample_2" / "raw_mosaic.tif", tmp_path / "newer.tif")

    def replace(stage: str, done: int, total: int, message: str) -> None:
        if stage == "tiles" and (tmp_path / "newer.tif").exists():
            os.replace(tmp_path / "newer.tif", scene)  # a copy finishing into place mid-run

    out = tmp_path / "out"
    with pytest.raises(InputError, match="scene.tif was replaced or changed while it was being read; nothing was written"):
        detect(scene, out, DetectOptions(model=str(model), device="cpu"), Progress(replace))
    assert list(out.iterdir()) == []


def _writer(store: Path, rounds: int) -> subprocess.Popen:
    """Another process adding labels to the store, ten polygons per transaction, as fast as it can."""
    code = f"""
import sys
from shapely.geometry import box
from engine.jobs.labels import add_labels
for r in range({rounds}):
    add_labels(sys.argv[1], 'scene.tif', [box(450000 + 30 * i, 8345000 + 30 * r, 450020 + 30 * i, 8345020 + 30 * r) for i in range(10)],
               'slick', crs='EPSG:32636', author='w', origin='drawn')
    print(r, flush=True)
"""
    return subprocess.Popen([sys.executable, "-c", code, str(store)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_readers_see_whole_transactions_while_another_process_writes_the_store(tmp_path: Path) -> None:
    store = create_store(tmp_path / "labels.gpkg", "EPSG:32636")
    writer = _writer(store, 40)
    writer.stdout.readline()
    counts = []
    while writer.poll() is None:  # what a fine-tune and a generation each read meanwhile
        counts.append(summary(read_store(store))["labels"])
    writer.wait()
    assert len(counts) >= 2 and all(c % 10 == 0 for c in counts)
    assert summary(read_store(store))["labels"] == 400


def test_a_store_survives_kills_at_any_moment_and_says_what_it_repaired(tmp_path: Path) -> None:
    store = create_store(tmp_path / "labels.gpkg", "EPSG:32636")
    rng = np.random.default_rng(7)
    for _ in range(3):
        writer = _writer(store, 1000)
        writer.stdout.readline()
        try:
            writer.wait(timeout=float(rng.uniform(0.05, 0.6)))
        except subprocess.TimeoutExpired:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        journal = Path(f"{store}-journal")
        left = journal.exists()  # hot when the kill came inside a transaction; SQLite tells from its header
        result = read_store(store)
        if result.repairs:
            assert left and not journal.exists() and "was rolled back" in result.repairs[0]
        assert summary(result)["labels"] % 10 == 0
    before = summary(read_store(store))["labels"]
    # A write too large for SQLite's cache: it syncs its journal and starts changing the file before the
    # commit, the moment a kill leaves the store half-written until the journal is rolled back.
    code = ("import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); db.execute('PRAGMA cache_size = 1'); "
            "db.execute('BEGIN'); db.execute(\"UPDATE gpkg_contents SET description = 'half-saved'\"); "
            "db.execute('CREATE TABLE scratch AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000) "
            "SELECT randomblob(1000) AS b FROM c'); print('inside', flush=True); time.sleep(60)")
    writer = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "inside"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert Path(f"{store}-journal").read_bytes()[:8] == bytes.fromhex("d9d505f920a163d7")  # a hot journal
    result = read_store(store)
    assert result.repairs == ["An interrupted write to labels.gpkg (a program killed while saving) was rolled back; the labels saved before it are intact."]
    assert summary(result)["labels"] == before
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert "half-saved" not in {row[0] for row in db.execute("SELECT description FROM gpkg_contents")}
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'scratch'").fetchone() == (0,)


def test_a_damaged_store_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    store = create_store(tmp_path / "labels.gpkg", "EPSG:32636")
    import_mask(store, SCENE, LABEL)
    data = bytearray(store.read_bytes())
    page = 4096
    data[3 * page : 3 * page + 200] = os.urandom(200)  # a b-tree page overwritten, as a bad sector would
    store.write_bytes(bytes(data))
    with pytest.raises(InputError, match="labels.gpkg is damaged.*Restore the store from a backup"):
        read_store(store)
    with pytest.raises(InputError, match="damaged"):
        add_labels(store, SCENE, [box(450_000, 8_345_000, 450_100, 8_345_100)], "slick", crs="EPSG:32636", author="a", origin="drawn")
    assert store.read_bytes() == bytes(data)


# Hostile files ---------------------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_model_files_never_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    hostile = {"encoder.conv1.weight": _Payload(marker)}
    for name in ("model.safetensors", "model.pth"):
        (tmp_path / name).write_bytes(pickle.dumps(hostile))
    with pytest.raises(ModelError, match="not a readable model file"):
        load_model(tmp_path / "model.safetensors")
    unet = build_model(ModelCard(name="m", architecture="unet", encoder="resnet18"))
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        load_encoder_weights(unet, tmp_path / "model.pth")
    torch.save(hostile, tmp_path / "saved.pth")  # the real PyTorch format, with the payload inside
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        load_encoder_weights(unet, tmp_path / "saved.pth")
    assert not marker.exists()


def test_a_cut_off_model_file_or_a_foreign_card_is_a_model_error(tmp_path: Path, model: Path) -> None:
    cut(model, tmp_path / "cut.safetensors", 0.7)
    with pytest.raises(ModelError, match="cut.safetensors is not a readable model file"):
        load_model(tmp_path / "cut.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, tmp_path / "card.safetensors", metadata={"slick_mapper_card": "[1, 2"})
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(tmp_path / "card.safetensors")


def test_a_sample_index_naming_paths_outside_its_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    key = samples.prepare(folder, {"path": "g", "name": "g", "sha256": "0" * 64, "tile_size": 8, "classes": ["water", "slick"], "b": 0.5})
    samples.add(folder, key, [samples.NewSample(np.full((8, 8), 9, np.uint8), np.zeros((2, 8, 8), np.float32), 0, [0], "ddim", 2, "cpu", 1)])
    index = json.loads((folder / "index.json").read_text())
    secret = tmp_path / "secret.npz"
    np.savez(secret, tile=np.zeros((8, 8), np.uint8), logits=np.zeros((2, 8, 8), np.float16))
    index["samples"][0]["id"] = "../../secret"
    write_bytes(folder / "index.json", json.dumps(index).encode())
    for call in (samples.load_samples, samples.summary):
        with pytest.raises(InputError, match="damaged or was edited by hand.*'../../secret'"):
            call(folder)


def test_a_sample_file_holding_pickled_objects_is_refused_without_running_them(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    key = samples.prepare(folder, {"path": "g", "name": "g", "sha256": "0" * 64, "tile_size": 8, "classes": ["water", "slick"], "b": 0.5})
    [sample_id] = samples.add(folder, key, [samples.NewSample(np.full((8, 8), 9, np.uint8), np.zeros((2, 8, 8), np.float32), 0, [0], "ddim", 2, "cpu", 1)])
    marker = tmp_path / "executed"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    with open(folder / "tiles" / f"{sample_id}.npz", "wb") as f:
        np.savez(f, tile=payload, logits=payload)
    with pytest.raises(InputError, match="missing or damaged"):
        samples.load_samples(folder)
    assert not marker.exists()


def test_two_generations_adding_to_one_folder_never_take_the_same_ids(tmp_path: Path) -> None:
    import threading

    folder = tmp_path / "samples"
    key = samples.prepare(folder, {"path": "g", "name": "g", "sha256": "0" * 64, "tile_size": 8, "classes": ["water", "slick"], "b": 0.5})
    made = {}

    def generation(first_seed: int) -> None:
        batch = [samples.NewSample(np.full((8, 8), first_seed + 1, np.uint8), np.zeros((2, 8, 8), np.float32), first_seed + i, [first_seed],
                                   "ddim", 2, "cpu", 1) for i in range(3)]
        made[first_seed] = [i for _ in range(4) for i in samples.add(folder, key, batch)]

    threads = [threading.Thread(target=generation, args=(seed,)) for seed in (0, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = made[0] + made[100]
    assert len(set(ids)) == len(ids) == 24 == len(samples.read_index(folder)["samples"])
    for first_seed, own in made.items():  # each id's file holds the tile its generation made
        assert all(samples.read_sample(folder, i)[0][0, 0] == first_seed + 1 for i in own)


def test_odd_layer_names_and_sql_in_values_are_only_data(tmp_path: Path) -> None:
    store = create_store(tmp_path / "labels.gpkg", "EPSG:32636")
    odd = "x\"; DROP TABLE labels; --"
    with fiona.open(store, "w", driver="GPKG", layer=odd, crs="EPSG:32636", schema={"geometry": "Polygon", "properties": {"a": "str"}}) as layer:
        layer.write({"geometry": box(0, 0, 1, 1).__geo_interface__, "properties": {"a": "'); DELETE FROM reviewed; --"}})
    scene = "scène 'one'; DROP TABLE reviewed; --.tif"
    add_labels(store, scene, [box(450_000, 8_345_000, 450_100, 8_345_100)], "slick", crs="EPSG:32636", author="Robert'); DROP TABLE labels;--", origin="drawn")
    result = read_store(store)
    assert list(result.scenes) == [scene] and result.scenes[scene].labels[0].author == "Robert'); DROP TABLE labels;--"
    assert odd in fiona.listlayers(store) and {"labels", "reviewed"} <= set(fiona.listlayers(store))


def test_scene_paths_with_spaces_quotes_and_non_ascii_work_end_to_end(tmp_path: Path, model: Path) -> None:
    folder = tmp_path / "d'été \"SAR\" $HOME `x`"
    folder.mkdir()
    scene = folder / "scène 'Barents' ø; rm -rf x.tif"
    shutil.copy(SCENE, scene)
    run = subprocess.run([sys.executable, "-m", "engine", "--jsonl", "detect", str(scene), "--out", str(folder / "out put"),
                          "--model", str(model), "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.splitlines()[-1])["data"]
    assert Path(result["probability"]).name == "scène 'Barents' ø; rm -rf x_probability.tif"
    with rasterio.open(result["probability"]) as ds:
        assert ds.count == 1 and ds.width > 0
    assert sorted(p.name for p in (folder / "out put").iterdir()) == sorted(
        [*(Path(result[k]).name for k in ("probability", "mask", "slicks"))])
