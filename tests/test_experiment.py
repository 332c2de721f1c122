"""The transfer experiment end to end with a tiny real model, its interval maths on known numbers, its
training-set draws, and that no test-scene pixel ever reaches training."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from engine.data.bundled import POOL
from engine.data.synth import SceneSpec, write_scene
from engine.errors import InputError
import engine.experiments.transfer as transfer
from engine.experiments.transfer import CHANGE, TEST, TransferOptions, draw_set, summarise, t_interval, t_quantile, transfer_experiment
from engine.jobs.finetune import FinetuneOptions
from engine.jobs.finetune_data import Tile, collect_tiles, split_by_area
from engine.jobs.labels import create_store, import_mask, read_store
from engine.machine import file_sha256
from engine.models.registry import read_card
from engine.progress import Progress

from conftest import EXPERIMENT_MODEL as SMALL, single_thread



@pytest.fixture(scope="module")
def small_model(tmp_path_factory, model_factory):
    return model_factory(tmp_path_factory.mktemp("model") / "small.safetensors", **SMALL)


@pytest.fixture(scope="module")
def source_store(tmp_path_factory):
    """Source-domain labels: one synthetic IW/VV-like scene at 25 m."""
    folder = tmp_path_factory.mktemp("source")
    spec = SceneSpec(height=512, width=512, mode="IW_VV", pixel_size=25.0, seed=5, n_seeps=3)
    write_scene(spec, folder / "iw.tif", label_path=folder / "iw_labels.tif")
    store = create_store(folder / "source.gpkg", "EPSG:32636")
    import_mask(store, folder / "iw.tif", folder / "iw_labels.tif")
    return store


def test_t_quantiles_match_the_tables():
    for df, expected in ((1, 12.7062), (2, 4.3027), (7, 2.3646), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)
    assert t_quantile(0.95, 7) == pytest.approx(1.8946, abs=2e-4)


def test_t_interval_on_known_numbers():
    mean, half = t_interval([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert mean == pytest.approx(0.45)
    assert half == pytest.approx(2.3646 * 0.244949 / math.sqrt(8), abs=1e-4)  # = 0.2048
    mean, half = t_interval([0.4])
    assert mean == 0.4 and math.isnan(half)


def test_summary_pairs_the_runs_of_one_training_set():
    def run(n, b, init, dice):
        return {"n": n, "bootstrap": b, "init": init, "dice_mean": dice}

    runs = [run(2, 0, "base", 0.1), run(2, 0, "finetuned", 0.4), run(2, 1, "base", 0.3), run(2, 1, "finetuned", 0.4),
            run(2, 2, "base", 0.2), run(2, 2, "finetuned", 0.6), run(19, 0, "base", 0.5), run(19, 0, "finetuned", 0.7)]
    rows = {(r["init"], r["n"]): r for r in summarise(runs)}
    base = rows[("base", 2)]
    assert base["runs"] == 3 and base["mean_dice"] == pytest.approx(0.2)
    assert base["ci_half_width"] == pytest.approx(4.3027 * 0.1 / math.sqrt(3), abs=1e-4)
    assert base["ci_low"] == pytest.approx(0.2 - base["ci_half_width"], abs=1e-4)
    change = rows[(CHANGE, 2)]  # paired differences 0.3, 0.1, 0.4
    assert change["mean_dice"] == pytest.approx(0.2667, abs=1e-4)
    assert change["ci_half_width"] == pytest.approx(4.3027 * np.std([0.3, 0.1, 0.4], ddof=1) / math.sqrt(3), abs=1e-4)
    assert rows[("finetuned", 19)]["runs"] == 1 and rows[("finetuned", 19)]["ci_low"] is None
    assert {n for _, n in rows} == {2, 19}  # no interval pools runs of different N


def _tiles(slick: int, sea: int) -> list[Tile]:
    def tile(i, has_slick):
        target = np.zeros((4, 4), np.uint8)
        target[0, 0] = has_slick
        return Tile("scene", 0, 4 * i, np.ones((4, 4), np.float32), target, np.ones((4, 4), np.uint8))

    return [tile(i, i < slick) for i in range(slick + sea)]


def test_training_sets_are_distinct_tiles_with_slicks_in_the_pool_proportion():
    pool = _tiles(slick=4, sea=15)
    key = lambda ts: sorted(t.col for t in ts)  # noqa: E731
    for n, slick in ((1, 1), (2, 1), (8, 2), (12, 3), (19, 4)):
        drawn = draw_set(pool, n, np.random.default_rng(n))
        assert len(drawn) == len(set(key(drawn))) == n
        assert sum(1 for t in drawn if t.slick_pixels) == slick
    assert key(draw_set(pool, 8, np.random.default_rng(3))) == key(draw_set(pool, 8, np.random.default_rng(3)))
    assert len({tuple(key(draw_set(pool, 8, np.random.default_rng(s)))) for s in range(8)}) > 1
    assert sum(1 for t in draw_set(_tiles(slick=6, sea=1), 4, np.random.default_rng(0)) if t.slick_pixels) == 3  # 3.4 rounds to 3, the one sea tile fills the set


def test_experiment_end_to_end_never_trains_on_a_test_scene(tmp_path, small_model, source_store, monkeypatch):
    seen, configs = [], []
    real_train = transfer.train

    def recording_train(model, train_set, val_set, config, progress):
        seen.append(train_set.x[:, 0].numpy().copy())
        configs.append(config)
        return real_train(model, train_set, val_set, config, progress)

    monkeypatch.setattr(transfer, "train", recording_train)
    out = tmp_path / "transfer"
    recipe = FinetuneOptions(tile=256, epochs=1, lr=1e-3, device="cpu", val_fraction=0.25)
    options = TransferOptions(ns=(2, "all"), bootstraps=2, epoch_tiles=4, model=small_model, source=source_store, recipe=recipe)
    result = transfer_experiment(out, options, Progress(), "python -m engine experiment transfer --n 2 all")

    assert sorted(p.name for p in out.iterdir()) == ["runs.csv", "source_model.safetensors", "summary.csv", "target_labels.gpkg",
                                                     "transfer.json", "transfer.png"]
    assert read_card(out / "source_model.safetensors").lineage["scenes"] == [str(source_store.parent / "iw.tif")]
    with open(out / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    pool_size = result["pool"]["train_tiles"]
    assert [(int(r["n"]), int(r["bootstrap"]), r["init"]) for r in runs] == [
        (2, 0, "base"), (2, 0, "finetuned"), (pool_size, 0, "base"), (pool_size, 0, "finetuned"), (2, 1, "base"), (2, 1, "finetuned")]
    for r in runs:
        per_scene = [float(r[f"dice_{s}"]) for s in TEST]
        assert all(0 <= d <= 1 for d in per_scene) and float(r["dice_mean"]) == pytest.approx(np.mean(per_scene), abs=1e-4)
        assert int(r["epochs_run"]) == 1 and int(r["slick_tiles"]) >= 1
    # The two runs of one training set share its tiles, seed and recipe; the two sets differ.
    assert runs[0]["train_tile_ids"] == runs[1]["train_tile_ids"] != runs[4]["train_tile_ids"] and runs[0]["seed"] == runs[1]["seed"]
    assert len(configs) == len(runs) and all(base == tuned for base, tuned in zip(configs[::2], configs[1::2]))
    assert all(c.select_on_dice and not c.frozen_statistics and not c.parent_competes and c.parent_weight == 0 for c in configs)
    assert {r["best_epoch"] for r in runs} == {"1"}  # no starting weights competed as epoch 0

    # Every training tile is a pool tile, cut from a pool scene's file, and never a validation tile.
    store = read_store(out / "target_labels.gpkg")
    assert sorted(Path(s).parent.name for s in store.scenes) == sorted(POOL)
    tiles = collect_tiles(store, read_card(small_model), 256, Progress())
    pool, val = split_by_area(tiles, 0.25, 0)
    ids = lambda ts: {f"{Path(t.scene).parent.name}:{t.row}:{t.col}" for t in ts}  # noqa: E731
    assert set(result["pool"]["val_ids"]) == ids(val)
    for r in runs:
        trained = set(r["train_tile_ids"].split())
        assert trained <= ids(pool) and not trained & ids(val)
    assert set(runs[2]["train_tile_ids"].split()) == ids(pool)
    pool_pixels = {t.x.tobytes() for t in pool}
    assert len(seen) == len(runs) and all(tile.tobytes() in pool_pixels for batch in seen for tile in batch)

    # The summary is the runs' t-intervals.
    with open(out / "summary.csv") as handle:
        summary = {(r["init"], r["n"]): r for r in csv.DictReader(handle)}
    base = [float(r["dice_mean"]) for r in runs if r["init"] == "base" and r["n"] == "2"]
    mean, half = t_interval(base)
    assert float(summary[("base", "2")]["mean_dice"]) == pytest.approx(mean, abs=1e-4)
    assert float(summary[("base", "2")]["ci_half_width"]) == pytest.approx(half, abs=1e-4)
    assert summary[("base", str(pool_size))]["ci_low"] == ""  # one run: no interval
    written = json.loads((out / "transfer.json").read_text())
    assert written["notes"]["base_init"].startswith("random")
    assert written["reference_dice"]["pred_tl"]["sample_123"] == 0.793  # the paper's own prediction, as in the demo
    assert 0 <= written["reference_dice"]["source"]["mean"] <= 1  # the source model before any target training
    # What made it, so that its page can say so: the command, the commit, the machine and the source model's hash.
    made = written["made"]
    assert made["command"] == "python -m engine experiment transfer --n 2 all" and made["commit"] and "cores" in made["machine"]
    assert made["source_model_sha256"] == file_sha256(out / "source_model.safetensors")
    page = transfer.page(written)
    assert "`python -m engine experiment transfer --n 2 all`" in page and made["source_model_sha256"][:16] in page
    change = next(r for r in result["summary"] if r["init"] == CHANGE and r["n"] == 2)
    assert "| 2 | 2 | " in page and f"{change['mean_dice']:+.3f} [{change['ci_low']:.3f}, {change['ci_high']:.3f}]" in page
    assert f"| {pool_size} = all | 1 | " in page and "`pred_tl` 0.665" in page
    with Image.open(out / "transfer.png") as picture:
        assert picture.format == "PNG" and picture.width > 500 and len(picture.convert("L").getcolors()) > 10  # not blank


def test_bad_requests_fail_before_training(tmp_path, small_model, capsys):
    def refused(options, out, message):
        stages = []
        with pytest.raises(InputError, match=message):
            transfer_experiment(out, options, Progress(lambda s, *_: stages.append(s)))
        assert "training" not in stages
        assert not out.exists() or list(out.iterdir()) == []

    recipe = FinetuneOptions(tile=256, epochs=1, lr=1e-3, device="cpu", val_fraction=0.25)
    refused(TransferOptions(ns=(2, 64), model=small_model, recipe=recipe), tmp_path / "a", "N = 64 is more than the 19 training tiles")
    leaky = create_store(tmp_path / "leaky.gpkg", "EPSG:32636")
    sample = transfer.SAMPLES_DIR / "sample_2"
    import_mask(leaky, sample / "raw_mosaic.tif", sample / "labels_mosaic.png")
    refused(TransferOptions(model=small_model, source=leaky, recipe=recipe), tmp_path / "b", r"target-domain scenes of this experiment \(sample_2\)")
    refused(TransferOptions(ns=(0,), model=small_model, recipe=recipe), tmp_path / "c", "positive whole numbers")

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("an earlier run")
    assert main(["--jsonl", "experiment", "transfer", "--out", str(busy), "--model", str(small_model)]) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert error["event"] == "error" and error["kind"] == "OutputError"
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


def test_leave_one_scene_out_fine_tunes_on_the_other_tiles_only_and_says_what_made_it(tmp_path, pool_model):
    out, page = tmp_path / "loso", tmp_path / "loso.md"
    with single_thread():  # a network this small trains and detects faster on one thread
        assert main(["--jsonl", "experiment", "loso", "--base", str(pool_model), "--out", str(out), "--epochs", "1", "--tile", "128",
                     "--device", "cpu", "--markdown", str(page)]) == 0
    written = json.loads((out / "loso.json").read_text())
    rows = {r["left_out"]: r for r in written["rows"]}
    assert sorted(rows) == sorted(TEST)
    for held in TEST:  # each fine-tuned model learnt from the other two tiles' labels, never from the one it is scored on
        store = read_store(out / f"labels_without_{held}.gpkg")
        assert sorted(Path(s).parent.name for s in store.scenes) == sorted(set(TEST) - {held})
        assert 0 <= rows[held]["dice_finetuned"] <= 1 and rows[held]["weights"] in ("fine-tuned", "the parent's, kept")
        assert rows[held]["dice_paper_tl"] == pytest.approx(transfer.paper_test_dice()["pred_tl"][held], abs=1e-3)
    assert written["mean"]["dice_finetuned"] == pytest.approx(np.mean([r["dice_finetuned"] for r in rows.values()]), abs=1e-3)
    made = written["made"]
    assert made["command"].startswith("python -m engine experiment loso --base") and made["base_model_sha256"] == file_sha256(pool_model)
    assert written["recipe"]["epochs"] == 1 and written["recipe"]["val_fraction"] == 0  # the product's recipe, as the command changed it
    text = page.read_text()
    assert f"`{made['command']}`" in text and made["base_model_sha256"][:16] in text and f"`{out}`" in text
    assert f"| sample_123 | {rows['sample_123']['dice_base_model']:.3f} ({rows['sample_123']['threshold_base_model']:g}) |" in text
