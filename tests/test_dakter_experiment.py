"""The DAKTer evaluation end to end with tiny real networks on the real Arctic tiles: what it writes, that its
figures are the statistics of its own tiles and samples, that no test scene is trained on, and bad requests."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from engine.data.bundled import POOL, SAMPLES_DIR
from engine.errors import InputError
import engine.experiments.dakter_eval as dakter_eval
from engine.experiments.dakter_eval import AUTO, EQ6, REAL, DakterOptions, TileStack, dakter_experiment
from engine.experiments.sar_stats import histogram_distance, psd_distance
from engine.experiments.students import summarise
from engine.experiments.transfer import TEST, label_store, t_interval
from engine.generation.generator import GeneratorOptions
from engine.generation.training_set import training_tiles
from engine.generation.joint_ddpm import balancing_factor, load_generator, read_generator_card, save_generator
from engine.jobs.finetune import FinetuneOptions
from engine.jobs.labels import read_store
from engine.progress import Progress

from conftest import TINY_NET


def _options(model: Path, **changes) -> DakterOptions:
    options = DakterOptions(
        generator=GeneratorOptions(tile=64, net=TINY_NET, steps=2, low_res_steps=2, batch_size=2, lr=1e-3, device="cpu"),
        n_samples=4, solver_steps=3, seeds=(0,),
        recipe=FinetuneOptions(tile=64, epochs=1, lr=1e-3, device="cpu", val_fraction=0.25),
        model=model, quality_samples=2, speed_sizes=(32, 64), speed_samples=(1, 1),
    )
    return replace(options, **changes)


@pytest.fixture(scope="module")
def run(tmp_path_factory, pool_model):
    out = tmp_path_factory.mktemp("dakter") / "out"
    stages: list[str] = []
    result = dakter_experiment(out, _options(pool_model), Progress(lambda s, *_: stages.append(s)))
    return out, result, stages


def _csv(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_writes_its_files_and_trains_on_the_pool_only(run):
    out, result, stages = run
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "dakter.json", "dakter_samples.png", "generators", "pool_labels.gpkg", "quality.csv", "samples", "speed.csv",
        "students.csv", "students_summary.csv"])
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["b_0.1", "b_1", "b_auto", "b_auto_ddim"]
    pool_scenes = {str((SAMPLES_DIR / s / "raw_mosaic.tif").resolve()) for s in POOL}
    assert {str(Path(s).resolve()) for s in read_store(out / "pool_labels.gpkg").scenes} == pool_scenes
    for name in ("b_0.1", "b_auto", "b_1"):
        card = read_generator_card(out / "generators" / f"generator_{name}.safetensors")
        assert {str(Path(s).resolve()) for s in card.training["scenes"]} <= pool_scenes  # never a test scene
    assert json.loads((out / "dakter.json").read_text()) == json.loads(json.dumps(result, default=str))
    assert {"training (low res)", "training", "generating", "students", "quality", "speed"} <= set(stages)
    with Image.open(out / "dakter_samples.png") as picture:
        assert picture.format == "PNG" and picture.width > 500 and len(picture.convert("L").getcolors(65536)) > 50


def test_b_is_eq_16_on_the_pool_tiles_and_each_generator_trained_with_its_own(run, tmp_path):
    out, result, _ = run
    pool, _, _ = training_tiles(read_store(out / "pool_labels.gpkg"), 64, 25.0, Progress())
    assert result["b"]["pool"] == pytest.approx(balancing_factor(pool), abs=1e-4)
    assert result["b"]["paper"] == {"OSD": 0.5089, "SOS-ALOS": 0.4370, "SOS-Sentinel": 0.4655}
    cards = {name: read_generator_card(out / "generators" / f"generator_{name}.safetensors") for name in ("b_0.1", "b_auto", "b_1")}
    assert cards["b_0.1"].b == 0.1 and cards["b_1"].b == 1.0 and cards["b_auto"].b == pytest.approx(balancing_factor(pool))
    assert result["generators"]["b_auto"]["b_from"] == "tiles" and result["generators"]["b_1"]["b_from"] == "given"


def test_quality_rows_are_the_statistics_of_the_tiles_and_samples(run):
    out, result, _ = run
    rows = {r["set"]: r for r in _csv(out / "quality.csv")}
    assert list(rows) == ["held-out real", "pool real", "generated b_0.1", "generated b_auto", "generated b_1",
                          "generated b_auto, dpm++, first 2", "generated b_auto, ddim, first 2"]
    held = rows["held-out real"]
    assert float(held["histogram_w1"]) == 0 and float(held["psd_db"]) == 0 and float(held["enl_ratio"]) == 1
    # Recomputed here from the tiles and the sample folders the run left.
    pool_joint, _, _ = training_tiles(read_store(out / "pool_labels.gpkg"), 64, 25.0, Progress())
    held_joint, _, _ = training_tiles(read_store(label_store(out.parent / "held.gpkg", TEST)), 64, 25.0, Progress())
    pool, held_tiles = TileStack.from_joint(pool_joint), TileStack.from_joint(held_joint)
    assert int(rows["pool real"]["tiles"]) == len(pool) and int(held["tiles"]) == len(held_tiles)
    assert float(rows["pool real"]["histogram_w1"]) == pytest.approx(histogram_distance(pool.x, held_tiles.x), abs=1e-3)
    samples = TileStack.from_samples(out / "samples" / "b_auto")
    assert len(samples) == 4 and samples.x.min() >= 1 and samples.x.max() <= 255
    assert float(rows["generated b_auto"]["psd_db"]) == pytest.approx(psd_distance(samples.x, held_tiles.x), abs=1e-3)
    # The same seeds through the same solver give the same samples: the first two of the main set.
    assert float(rows["generated b_auto, dpm++, first 2"]["psd_db"]) == pytest.approx(psd_distance(samples.x[:2], held_tiles.x), abs=1e-3)
    for row in rows.values():
        for key in ("agreement_bundled", "agreement_student"):
            assert 0 <= float(row[key]) <= 1
        assert float(row["psd_db"]) >= 0 and float(row["histogram_w1"]) >= 0
    # Real pool tiles hold analysts' slicks on a few percent of their tiles.
    assert 0 < float(rows["pool real"]["slick_tile_share"]) < 0.5


def test_students_take_the_same_steps_with_and_without_samples_and_are_scored_on_the_test_scenes(run):
    out, result, _ = run
    runs = {r["condition"]: r for r in _csv(out / "students.csv")}
    assert list(runs) == [REAL, EQ6, "b_auto"]
    real, student = runs[REAL], runs["b_auto"]
    assert int(real["generated"]) == int(runs[EQ6]["generated"]) == 0 and int(student["generated"]) == 4
    for r in runs.values():  # one split, one budget
        assert (r["train_tiles"], r["val_tiles"]) == (real["train_tiles"], real["val_tiles"])
        assert abs(int(r["steps"]) - int(student["steps"])) <= int(real["epochs"])  # one rounding step per epoch at most
    for r in runs.values():
        per_scene = [float(r[f"dice_{s}"]) for s in TEST]
        assert all(0 <= d <= 1 for d in per_scene) and float(r["dice_mean"]) == pytest.approx(np.mean(per_scene), abs=1e-4)
    summary = {r["condition"]: r for r in _csv(out / "students_summary.csv")}
    change = float(student["dice_mean"]) - float(real["dice_mean"])
    assert float(summary["b_auto"]["change_from_real"]) == pytest.approx(change, abs=1e-4)
    assert summary["b_auto"]["change_ci"] == ""  # one seed: no interval
    reference = result["students"]["reference"]
    assert set(reference["paper"]) == {"pred_base", "pred_tl"} and reference["paper"]["pred_tl"]["sample_123"] == pytest.approx(0.793, abs=1e-3)


def test_speed_rows_time_both_solvers_at_every_size(run):
    out, _, _ = run
    rows = _csv(out / "speed.csv")
    assert [(int(r["tile"]), r["solver"], int(r["steps"])) for r in rows] == [(32, "ddim", 200), (32, "dpm++", 20), (64, "ddim", 200), (64, "dpm++", 20)]
    assert all(float(r["samples_per_minute"]) > 0 for r in rows)
    assert [r["trained_size"] for r in rows] == ["False", "False", "True", "True"]


def test_summary_is_the_t_interval_over_seeds_and_the_paired_change():
    def row(seed, condition, dice):
        return {"seed": seed, "condition": condition, "dice_mean": dice, **{f"dice_{s}": dice for s in TEST}}

    runs = [row(0, REAL, 0.30), row(0, "b_auto", 0.35), row(1, REAL, 0.20), row(1, "b_auto", 0.20), row(2, REAL, 0.40), row(2, "b_auto", 0.50)]
    summary = {r["condition"]: r for r in summarise(runs)}
    mean, half = t_interval([0.30, 0.20, 0.40])
    assert summary[REAL]["dice_mean"] == pytest.approx(mean) and summary[REAL]["dice_mean_ci"] == pytest.approx(half, abs=1e-4)
    mean, half = t_interval([0.05, 0.0, 0.10])
    assert summary["b_auto"]["change_from_real"] == pytest.approx(mean) and summary["b_auto"]["change_ci"] == pytest.approx(half, abs=1e-4)
    assert summary["b_auto"]["seeds_better"] == 2 and summary[REAL]["change_from_real"] is None


def test_generators_of_an_earlier_run_are_evaluated_without_training(run, tmp_path, pool_model, monkeypatch):
    earlier, _, _ = run
    monkeypatch.setattr(dakter_eval, "train_generator", lambda *a, **k: pytest.fail("trained a generator again"))
    options = _options(pool_model, generators=earlier / "generators", b_values=(AUTO,), student_b=(), eq6_control=False, n_samples=2,
                       quality_samples=1, speed_sizes=(32,), speed_samples=(1,))
    result = dakter_experiment(tmp_path / "again", options, Progress())
    reused = earlier / "generators" / "generator_b_auto.safetensors"
    assert not (tmp_path / "again" / "generators").exists() and result["generators"]["b_auto"]["path"] == str(reused)
    index = json.loads((tmp_path / "again" / "samples" / "b_auto" / "index.json").read_text())
    assert [g["path"] for g in index["generators"].values()] == [str(reused.resolve())]
    # The same generator and seeds make the same samples as the earlier run did.
    again = TileStack.from_samples(tmp_path / "again" / "samples" / "b_auto")
    assert np.array_equal(again.x, TileStack.from_samples(earlier / "samples" / "b_auto", 2).x)
    assert [r["condition"] for r in result["students"]["runs"]] == [REAL]


def test_bad_requests_fail_before_anything_is_trained(run, tmp_path, pool_model, capsys):
    def refused(options, message):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        stages = []
        with pytest.raises(InputError, match=message):
            dakter_experiment(out, options, Progress(lambda s, *_: stages.append(s)))
        assert stages == [] and not out.exists()

    options = _options(pool_model)
    refused(replace(options, recipe=replace(options.recipe, tile=128)), "differs from the generators'")
    refused(replace(options, b_values=(0.1, 1.0)), "must include auto")
    refused(replace(options, b_values=(AUTO, -1.0)), "must be positive")
    refused(replace(options, student_b=(2.0,)), "which are not trained")
    refused(replace(options, speed_sizes=(64, 66)), "Tile size 66 does not fit")
    refused(replace(options, speed_samples=(1,)), "one count of at least 1 per")

    # Generators of an earlier run must be the ones asked for and must never have seen a test scene.
    earlier = run[0] / "generators"
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for name, source in (("b_auto", "b_auto"), ("b_0.1", "b_1")):
        (swapped / f"generator_{name}.safetensors").write_bytes((earlier / f"generator_{source}.safetensors").read_bytes())
    refused(replace(options, generators=swapped, b_values=(0.1, AUTO), student_b=()), r"generator_b_0.1.safetensors was trained with b = 1 ")
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    net, card = load_generator(earlier / "generator_b_auto.safetensors")
    card.training["scenes"] = [*card.training["scenes"], str(SAMPLES_DIR / "sample_2" / "raw_mosaic.tif")]
    save_generator(net, card, leaky / "generator_b_auto.safetensors")
    refused(replace(options, generators=leaky, b_values=(AUTO,), student_b=()), "learnt from scenes other than the pool")
    refused(replace(options, generators=tmp_path / "nowhere", b_values=(AUTO,), student_b=()), "No generator generator_b_auto")

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("an earlier run")
    assert main(["--jsonl", "experiment", "dakter", "--out", str(busy), "--model", str(pool_model)]) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert error["event"] == "error" and error["kind"] == "OutputError"
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
