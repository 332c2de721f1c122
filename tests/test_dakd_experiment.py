"""The DAKD experiment end to end with tiny real networks on the real Arctic tiles: its tables, that its 0 % arm is
a real-only student, that a generator trained elsewhere is evaluated beside the ones trained here, bad requests;
and the Fréchet distance it reports."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.cli.main import main
from engine.data.bundled import POOL, SAMPLES_DIR, scenes_named
from engine.errors import InputError
from engine.experiments.dakd_eval import CAFT, PLAIN, DakdOptions, dakd_experiment
from engine.experiments.sample_quality import frechet_distance
from engine.experiments.students import EQ6, REAL, Arm, arm_epochs, eq6_student
from engine.experiments.transfer import TEST, label_store, score_test_scenes
from engine.generation.generator import GeneratorOptions, train_generator
from engine.generation.joint_ddpm import GeneratorCard, load_generator, read_generator_card, save_generator
from engine.generation.jointnet import JointNetOptions
from engine.jobs.finetune import FinetuneOptions
from engine.jobs.labels import read_store
from engine.progress import Progress

from conftest import TINY_NET


CONDITIONS = [REAL, EQ6, "dakter 100 % soft", "sar-jointnet 100 % soft", "dakter-pretrained 100 % soft", "sar-jointnet 200 % soft",
              "sar-jointnet 100 % hard", CAFT, PLAIN]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A DAKTer generator trained outside the experiment, on the pool's labels."""
    folder = tmp_path_factory.mktemp("pretrained")
    path = folder / "dakter_elsewhere.safetensors"
    train_generator(label_store(folder / "pool.gpkg", POOL), path, GeneratorOptions(tile=64, net=TINY_NET, steps=2, low_res_steps=2, batch_size=2,
                                                                                   seed=5, device="cpu"))
    return path


def _options(model: Path, **changes) -> DakdOptions:
    options = DakdOptions(
        dakter=GeneratorOptions(tile=64, net=TINY_NET, steps=2, low_res_steps=2, batch_size=2, lr=1e-3, device="cpu"),
        jointnet=JointNetOptions(tile=64, net=TINY_NET, stage_steps=(2, 2, 2), batch_size=2, device="cpu"),
        n_samples=4, amounts=(100, 200), solver_steps=3, seeds=(0,),
        recipe=FinetuneOptions(tile=64, epochs=1, lr=1e-3, device="cpu", val_fraction=0.25, parent_competes=False),
        model=model,
    )
    return replace(options, **changes)


@pytest.fixture(scope="module")
def run(tmp_path_factory, pool_model, pretrained):
    out = tmp_path_factory.mktemp("dakd") / "out"
    stages: list[str] = []
    result = dakd_experiment(out, _options(pool_model, from_pretrained=(("dakter", pretrained),)), Progress(lambda s, *_: stages.append(s)),
                             "python -m engine experiment dakd (test)")
    return out, result, stages


def _csv(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _finite(value: str) -> bool:
    return math.isfinite(float(value))


def test_writes_its_tables_and_trains_on_the_pool_only(run, pretrained):
    out, result, stages = run
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "ablations.csv", "dakd.json", "dakd.md", "dakd_samples.png", "generators", "generators.csv", "pool_labels.gpkg", "quality.csv",
        "samples", "students.csv", "students_summary.csv"])
    assert sorted(p.name for p in (out / "generators").iterdir()) == ["dakter.safetensors", "sar-jointnet.safetensors"]
    pool_scenes = {str((SAMPLES_DIR / s / "raw_mosaic.tif").resolve()) for s in POOL}
    for name, kind in (("dakter", "dakter"), ("sar-jointnet", "sar-jointnet")):
        card = read_generator_card(out / "generators" / f"{name}.safetensors")
        assert card.kind == kind and {str(Path(s).resolve()) for s in card.training["scenes"]} <= pool_scenes
    assert json.loads((out / "dakd.json").read_text()) == json.loads(json.dumps(result, default=str))
    assert {"training (low res)", "stage 1: SAR-Net", "stage 3: all layers", "generating", "students", "quality"} <= set(stages)

    generators = {r["generator"]: r for r in _csv(out / "generators.csv")}
    assert list(generators) == ["dakter", "sar-jointnet", "dakter-pretrained"]
    assert generators["dakter-pretrained"]["origin"] == "pretrained" and generators["dakter-pretrained"]["path"] == str(pretrained)
    # The 100 % is 4 samples; SAR-JointNet makes 200 % for the amount ablation.
    assert [int(r["samples"]) for r in generators.values()] == [4, 8, 4]
    assert all(len(r["sha256"]) == 64 and _finite(r["samples_per_minute"]) for r in generators.values())
    text = (out / "dakd.md").read_text()
    assert "python -m engine experiment dakd (test)" in text and result["commit"] in text
    assert all(g["sha256"][:16] in text for g in result["generators"].values()) and result["models"]["starting model"]["sha256"][:16] in text


def test_quality_rows_are_finite_and_the_frechet_distance_is_zero_for_the_reference(run):
    out, _, _ = run
    rows = {r["set"]: r for r in _csv(out / "quality.csv")}
    assert list(rows) == ["held-out real", "pool real", "generated dakter", "generated sar-jointnet", "generated dakter-pretrained"]
    held = rows["held-out real"]
    assert float(held["frechet"]) == pytest.approx(0, abs=1e-3) and float(held["histogram_w1"]) == 0 and float(held["enl_ratio"]) == 1
    for row in rows.values():
        for key in ("frechet", "histogram_w1", "psd_db", "agreement_bundled", "agreement_student"):
            assert _finite(row[key]) and float(row[key]) >= 0, (row["set"], key)
        # ENL is NaN where no window of a set is clear sea (a few steps of training make no clean speckle)
        assert float(row["enl"]) > 0 if row["set"].endswith("real") else not float(row["enl"]) <= 0
        assert 0 <= float(row["agreement_bundled"]) <= 1
    assert all(int(rows[f"generated {name}"]["tiles"]) == 4 for name in ("dakter", "sar-jointnet", "dakter-pretrained"))
    assert float(rows["pool real"]["frechet"]) > 0  # two different real scenes are not the same set


def test_students_take_the_same_steps_and_their_tables_hold_every_arm(run):
    out, result, _ = run
    runs = {r["condition"]: r for r in _csv(out / "students.csv")}
    assert list(runs) == CONDITIONS
    assert [int(runs[c]["generated"]) for c in CONDITIONS] == [0, 0, 4, 4, 4, 8, 4, 0, 0]
    arms = {a["condition"]: a for a in result["students"]["arms"]}
    for r in runs.values():  # one epoch each at this size: the budget's epochs are tested below
        assert int(r["epochs"]) == arms[r["condition"]]["epochs"] == 1
        assert int(r["steps"]) == (int(r["train_tiles"]) + int(r["generated"])) // 4
        assert (r["train_tiles"], r["val_tiles"]) == (runs[REAL]["train_tiles"], runs[REAL]["val_tiles"])
        per_scene = [float(r[f"dice_{s}"]) for s in TEST]
        assert all(0 <= d <= 1 for d in per_scene) and float(r["dice_mean"]) == pytest.approx(np.mean(per_scene), abs=1e-4)
    assert arms["sar-jointnet 100 % hard"]["labels"] == "hard" and arms["sar-jointnet 100 % soft"]["labels"] == "soft"
    assert not arms[CAFT]["from_parent"] and len(arms[CAFT]["model_sha256"]) == 64 and arms[CAFT]["model_sha256"] != arms[PLAIN]["model_sha256"]
    summary = {r["condition"]: r for r in _csv(out / "students_summary.csv")}
    assert list(summary) == CONDITIONS and all(_finite(r["dice_mean"]) for r in summary.values())

    ablations = [(r["ablation"], r["setting"], r["condition"], r["compared_with"]) for r in _csv(out / "ablations.csv")]
    assert ablations == [
        ("amount", "0 %", EQ6, ""), ("amount", "100 %", "sar-jointnet 100 % soft", EQ6),
        ("amount", "200 %", "sar-jointnet 200 % soft", EQ6), ("labels", "hard", "sar-jointnet 100 % hard", EQ6),
        ("labels", "soft", "sar-jointnet 100 % soft", "sar-jointnet 100 % hard"), ("skips", "plain UNet++", PLAIN, ""), ("skips", "CAFT", CAFT, PLAIN)]
    for row in _csv(out / "ablations.csv"):
        assert float(row["dice_mean"]) == float(summary[row["condition"]]["dice_mean"])
        if row["compared_with"]:
            change = float(runs[row["condition"]]["dice_mean"]) - float(runs[row["compared_with"]]["dice_mean"])
            assert float(row["change"]) == pytest.approx(change, abs=1e-4)


def test_every_arm_takes_the_steps_of_the_arm_with_the_most_samples():
    arms = [Arm(EQ6, eq6=True), Arm("50 %", n=147), Arm("100 %", n=294), Arm("200 %", n=588)]
    epochs = arm_epochs(2, 294, arms)
    assert epochs == {EQ6: 6, "50 %": 4, "100 %": 3, "200 %": 2}
    assert {e * (294 + arm.n) for e, arm in zip(epochs.values(), arms)} == {1764}
    assert arm_epochs(2, 294, arms[:1]) == {EQ6: 2}


def test_the_0_percent_arm_is_a_real_only_student(run, pool_model, tmp_path):
    """Trained again outside the experiment with the recipe it records, the real-only student with the students'
    loss scores what the ablation's 0 % row says."""
    out, result, _ = run
    arm = next(a for a in result["students"]["arms"] if a["condition"] == EQ6)
    assert arm["n"] == 0 and arm["samples"] is None
    recipe = replace(_options(pool_model).recipe, seed=0, epochs=arm["epochs"], patience=arm["epochs"])
    facts = eq6_student(pool_model, out / "pool_labels.gpkg", recipe, tmp_path / "real_only.safetensors", Progress())
    dice = score_test_scenes(tmp_path / "real_only.safetensors", tmp_path / "detections", None, "cpu", Progress())
    zero = next(r for r in _csv(out / "ablations.csv") if r["setting"] == "0 %")
    assert float(zero["dice_mean"]) == pytest.approx(np.mean(list(dice.values())), abs=1e-4)
    row = next(r for r in result["students"]["runs"] if r["condition"] == EQ6)
    assert (row["generated"], row["train_tiles"], row["epochs"]) == (0, facts["train_tiles"], facts["epochs"])


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(16.0, rel=1e-6)  # |mu shift|^2; equal covariances add nothing
    assert frechet_distance(a, 2 * a) == pytest.approx(np.sum(a.mean(0) ** 2) + np.trace(np.cov(a, rowvar=False)), rel=1e-4)
    b = rng.normal(size=(400, 16))
    assert 0 < frechet_distance(a, b) < frechet_distance(a, b + 0.5) < frechet_distance(a, b + 1.0)
    few = rng.normal(size=(5, 16))  # fewer vectors than features: singular covariances
    assert math.isfinite(frechet_distance(few, few + 1.0)) and frechet_distance(few, few + 1.0) == pytest.approx(16.0, rel=1e-3)
    with pytest.raises(ValueError, match="at least two vectors"):
        frechet_distance(a[:1], a)


def test_the_scenes_a_generator_learnt_from_are_read_wherever_its_card_names_them():
    card = GeneratorCard(name="g", classes=["sea", "slick"], tile_size=64, pixel_size=25.0, b=0.5, unet={}, training={
        "scenes": [str(SAMPLES_DIR / "sample_0" / "raw_mosaic.tif")],
        "initialised_from": {"training": {"arctic_scenes": {"sample_70": "all but the edge band"}}},
        "history": [{"loss": 1.0}]})
    assert scenes_named(card.training) == {"sample_0", "sample_70"}
    assert scenes_named({}) == set()


def test_bad_requests_fail_before_anything_is_trained(run, tmp_path, pool_model, capsys):
    def refused(options, message):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        stages = []
        with pytest.raises(InputError, match=message):
            dakd_experiment(out, options, Progress(lambda s, *_: stages.append(s)))
        assert stages == [] and not out.exists()

    options = _options(pool_model)
    refused(replace(options, recipe=replace(options.recipe, tile=128)), "differs from the generators'")
    refused(replace(options, amounts=(50, 200)), "including 100")
    refused(replace(options, amounts=(100, 0)), "positive")
    refused(replace(options, amounts=(100, 100)), "must be distinct")
    refused(replace(options, seeds=(0, 0)), "seeds must be distinct")
    refused(replace(options, n_samples=1), "at least 2")
    refused(replace(options, jointnet=replace(options.jointnet, stage_steps=(1, -1, 1))), "none negative")
    refused(replace(options, from_pretrained=(("ddpm", run[0] / "generators" / "dakter.safetensors"),)), "KIND one of dakter, sar-jointnet")
    refused(replace(options, from_pretrained=(("dakter",),)), "takes KIND=FILE")
    refused(replace(options, from_pretrained=(("dakter", tmp_path / "nowhere.safetensors"),)), "No generator file")
    refused(replace(options, from_pretrained=(("sar-jointnet", run[0] / "generators" / "dakter.safetensors"),)), "holds a dakter generator, not sar-jointnet")
    twice = (("dakter", run[0] / "generators" / "dakter.safetensors"),) * 2
    refused(replace(options, from_pretrained=twice), "names a kind twice")
    net, card = load_generator(run[0] / "generators" / "dakter.safetensors")
    card.training["init"] = {"scenes": [str(SAMPLES_DIR / "sample_123" / "raw_mosaic.tif")]}  # it started from a generator of a test scene
    save_generator(net, card, tmp_path / "leaky.safetensors")
    refused(replace(options, from_pretrained=(("dakter", tmp_path / "leaky.safetensors"),)), "learnt from sample_123")
    assert read_store(run[0] / "pool_labels.gpkg").scenes  # the run's own files are untouched

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("an earlier run")
    assert main(["--jsonl", "experiment", "dakd", "--out", str(busy), "--model", str(pool_model)]) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert error["event"] == "error" and error["kind"] == "OutputError"
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
