"""Few-shot fine-tuning on the real Arctic labels with a small real model: lineage, split, cancel, bad input."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
import rasterio
import torch
from shapely.affinity import translate
from shapely.geometry import box

import engine.models.training as training
from engine.cli.main import main
from engine.errors import Cancelled, InputError, ModelError, OutputError
from engine.contract import CLOSE_PARENT_SHARE, CLOSE_PARENT_WEIGHT, PARENT_WEIGHT
from engine.jobs.finetune import MIN_VAL_SLICK_PIXELS, PARENT_SHARE, FinetuneOptions, close_to_parent, finetune, weights_note
from engine.jobs.finetune_data import GAP, collect_tiles, split_by_area
from engine.jobs.labels import add_labels, add_reviewed, create_store, import_mask, rasterise, read_store, scene_grid
from engine.jobs.detect import DetectOptions, detect
from engine.models.registry import load_model, read_card, save_model, scenes_learnt, weights_for
from engine.models.training import THRESHOLDS, TileSet, TrainConfig, l2_sp, lr_range_test, train, train_mode, validate
from engine.progress import Progress
from engine.scenes.fingerprint import scene_fingerprint

from conftest import SMALL_MODEL as SMALL, cancel_at, make_ensemble

SAMPLES = Path(__file__).resolve().parents[1] / "resources" / "samples" / "arctic_s1"

FAST = dict(tile=128, epochs=1, lr=1e-3, device="cpu", train_layers="decoder", val_fraction=0.25)
"""The validated recipe (the product's default before leave one scene out chose one without validation): most
of what fine-tuning checks lives on that path."""
FROM_PARENT = dict(select_on_dice=True, frozen_statistics=True, parent_competes=True)
"""The TrainConfig fields fine-tuning from a trained parent sets (``finetune.train_config``)."""


def _scene(sample: str):
    return SAMPLES / sample / "raw_mosaic.tif"


def _store(path, crs="EPSG:4326", samples=("sample_1", "sample_2")):
    create_store(path, crs)
    for sample in samples:
        import_mask(path, _scene(sample), SAMPLES / sample / "labels_mosaic.png")
    return path


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, model_factory):
    return model_factory(tmp_path_factory.mktemp("base") / "small.safetensors", **SMALL)


@pytest.fixture(scope="module")
def arctic_store(tmp_path_factory):
    """Two real tiles' labels in EPSG:4326, while the scenes are in UTM 36N: reprojection must just work."""
    return _store(tmp_path_factory.mktemp("store") / "labels.gpkg")


def test_finetune_writes_a_new_model_with_its_lineage(tmp_path, small_model, arctic_store):
    parent_hash = _sha256(small_model)
    logs = []
    report = finetune(small_model, arctic_store, tmp_path / "tuned.safetensors", FinetuneOptions(**FAST), Progress(log=logs.append))
    assert _sha256(small_model) == parent_hash
    card = read_card(report.model)
    lineage = card.lineage
    assert lineage["parent"] == {"path": str(small_model.resolve()), "name": "test model", "sha256": parent_hash, "lineage": None,
                                 "learnt_from": []}
    assert lineage["labels"]["sha256"] == read_store(arctic_store).sha256
    assert lineage["scenes"] == sorted(str(_scene(s)) for s in ("sample_1", "sample_2"))
    assert lineage["train_tiles"] == report.train_tiles > lineage["val_tiles"] == report.val_tiles > 0
    assert lineage["val_dice_before"] == round(report.val_dice_before, 4) and lineage["val_dice_after"] == round(report.val_dice_after, 4)
    assert lineage["train_layers"] == "decoder" and lineage["device"] == "cpu" and lineage["lr"] == 1e-3 and lineage["epochs"] == 1
    assert lineage["seconds"] > 0 and len(lineage["history"]) == 1
    # The threshold calibrated on the labels belongs to the labelled scenes, wherever they lie; elsewhere the parent's stays.
    assert report.val_slick_pixels >= MIN_VAL_SLICK_PIXELS and report.threshold != 0.5
    assert card.threshold == report.threshold_elsewhere == lineage["threshold_elsewhere"] == 0.5 and lineage["threshold"] == report.threshold
    assert card.scene_thresholds == {scene_fingerprint(_scene(s)): report.threshold for s in ("sample_1", "sample_2")}
    assert card.threshold_for(_scene("sample_0")) == (0.5, "the model's")
    assert report.threshold_note.startswith(f"Threshold {report.threshold:.2f} on the scenes you labelled")
    assert list(report.timings) == ["checks", "tiles", "parent", "lr_range_test", "epochs", "validation", "saving"]
    assert sum(report.timings.values()) == pytest.approx(report.seconds, abs=0.3) and report.timings["epochs"] > 0
    assert any(line.startswith("epoch 1: train loss") for line in logs)
    # Only the decoder learnt: the encoder is the parent's, bit for bit.
    parent, _ = load_model(small_model)
    child, _ = load_model(report.model)
    assert all(torch.equal(a, b) for a, b in zip(parent.encoder.state_dict().values(), child.encoder.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(parent.decoder.state_dict().values(), child.decoder.state_dict().values()))


def test_a_fine_tuned_model_detects_on_its_labelled_scenes_and_hands_others_to_its_parent(tmp_path, small_model, arctic_store):
    """Labels of sample_1 and sample_2: the new weights detect there, and sample_0 gets the parent's, to the pixel;
    made for every scene, they detect everywhere."""
    report = finetune(small_model, arctic_store, tmp_path / "tuned.safetensors", FinetuneOptions(**FAST))
    card = read_card(report.model)
    assert card.taught_scenes == sorted(scene_fingerprint(_scene(s)) for s in ("sample_1", "sample_2"))
    assert report.use_note.startswith("Its weights detect on the 2 labelled scenes only; every other scene keeps the parent's (test model)")
    assert report.use_note.endswith("compare its map with the parent's there before relying on it.")
    options = DetectOptions(model=report.model, tile=256, runtime="torch", threshold=0.5, min_area_km2=0.0)

    def run(scene: str, name: str, model=None):
        result = detect(_scene(scene), tmp_path / name, replace(options, model=str(model or options.model)))
        with rasterio.open(result.probability) as ds:
            return result, ds.read(1)

    own, _ = run("sample_1", "own")
    assert own.weights_from == "" and own.model_name == card.name
    handed, values = run("sample_0", "handed")
    _, parent_values = run("sample_0", "parent", small_model)
    assert handed.model_name == "test model" and handed.weights_from.startswith("test model, the parent's")
    assert np.array_equal(values, parent_values, equal_nan=True)
    every = finetune(small_model, arctic_store, tmp_path / "every.safetensors", FinetuneOptions(**FAST, use_on="every"))
    assert read_card(every.model).taught_scenes == [] and every.use_note == "Its weights detect on every scene."
    assert weights_for(every.model, _scene("sample_0")) == (Path(every.model), "")


def test_a_parent_moved_beside_its_child_is_found_and_a_changed_one_is_not_used(tmp_path, small_model, arctic_store):
    parent = tmp_path / "parent.safetensors"
    shutil.copy(small_model, parent)
    report = finetune(parent, arctic_store, tmp_path / "tuned.safetensors", FinetuneOptions(**FAST))
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in (parent, Path(report.model)):
        path.rename(moved / path.name)
    child = moved / "tuned.safetensors"
    path, note = weights_for(child, _scene("sample_0"))
    assert path == moved / "parent.safetensors" and note.startswith("test model, the parent's")
    with open(moved / "parent.safetensors", "r+b") as changed:  # no longer the file it was fine-tuned from
        changed.seek(-1, 2)
        changed.write(b"\1")
    path, note = weights_for(child, _scene("sample_0"))
    assert path == child
    assert note.startswith("this model's own, which were fine-tuned on other scenes: its parent test model is no longer at")
    assert weights_for(child, _scene("sample_2")) == (child, "")


def test_a_child_says_what_its_parent_learnt_so_a_replaced_parent_changes_nothing(tmp_path, model_factory):
    """The demo refuses a model that learnt from its tiles, parents included. A bundled parent may be replaced by a
    newer model; the child's record of what its parent learnt still answers, and a child without that record (or
    whose parent's own parent is lost) has an unknown answer, which is an error rather than a guess."""
    parent = model_factory(tmp_path / "parent.safetensors", **SMALL, provenance={"arctic_scenes": {"sample_2": "all but a band"}})
    store = _store(tmp_path / "labels.gpkg", samples=("sample_0",))
    child = Path(finetune(parent, store, tmp_path / "child.safetensors", FinetuneOptions(**FAST)).model)
    assert read_card(child).lineage["parent"]["learnt_from"] == ["sample_2"]
    assert scenes_learnt(child) == {"sample_0", "sample_2"}
    parent.unlink()
    model_factory(parent, **SMALL)  # a newer model in its place, which learnt from nothing
    assert scenes_learnt(child) == {"sample_0", "sample_2"}
    model, card = load_model(child)
    del card.lineage["parent"]["learnt_from"]  # as a child fine-tuned before the record existed
    save_model(model, card, tmp_path / "older.safetensors")
    with pytest.raises(ModelError, match="does not say what that model learnt from"):
        scenes_learnt(tmp_path / "older.safetensors")
    grandchild = finetune(tmp_path / "older.safetensors", store, tmp_path / "grandchild.safetensors", FinetuneOptions(**FAST)).model
    assert "learnt_from" not in read_card(grandchild).lineage["parent"]
    with pytest.raises(ModelError):
        scenes_learnt(grandchild)


def test_without_validation_every_labelled_tile_trains_every_epoch_and_the_parent_s_threshold_stays(tmp_path, small_model, arctic_store):
    logs = []
    options = FinetuneOptions(**{**FAST, "epochs": 2, "val_fraction": 0.0, "pos_weight_cap": 10.0, "label_check": False})
    report = finetune(small_model, arctic_store, tmp_path / "tuned.safetensors", options, Progress(log=logs.append))
    tiles = collect_tiles(read_store(arctic_store), read_card(small_model), FAST["tile"], Progress())
    assert report.train_tiles == len(tiles) and report.val_tiles == report.val_slick_pixels == 0
    assert report.epochs_run == report.best_epoch == 2 and report.val_dice_before is report.val_dice_after is None
    assert not report.holds_parent_weights
    card = read_card(report.model)
    assert card.threshold == report.threshold == 0.5 and card.scene_thresholds == {}
    assert (read_card(small_model).pos_weight_cap, card.pos_weight_cap) == (100, 10)  # its own children will train as it did
    assert report.threshold_note == "Threshold 0.50, the parent's, on every scene: no tile was kept to validate on."
    assert [list(h) for h in report.history] == [["epoch", "train_loss"]] * 2 and "epoch 2: train loss" in " ".join(logs)
    labelled = sum(t.slick_pixels for t in tiles)
    with pytest.raises(InputError, match=f"The labels hold {labelled} slick pixels, fewer than the {labelled + 100}") as refused:
        finetune(small_model, arctic_store, tmp_path / "refused.safetensors", replace(options, min_slick_pixels=labelled + 100))
    assert refused.value.hint == "Label more slicks: 100 more pixels, about 0.06 km² at 25 m."
    assert not (tmp_path / "refused.safetensors").exists()


def test_without_validation_the_saved_weights_are_the_mean_of_runs_with_consecutive_seeds(tmp_path, small_model, arctic_store):
    """Two runs' weights averaged, each after its own move toward the parent: the file holds the mean of what the two
    single runs with seeds 3 and 4 save, and says it averages them; one run is the product of a single seed."""
    options = FinetuneOptions(**{**FAST, "val_fraction": 0.0, "label_check": False, "seed": 3, "average_seeds": 1})
    alone = [finetune(small_model, arctic_store, tmp_path / f"seed{seed}.safetensors", replace(options, seed=seed)) for seed in (3, 4)]
    logs = []
    averaged = finetune(small_model, arctic_store, tmp_path / "averaged.safetensors", replace(options, average_seeds=2), Progress(log=logs.append))
    (a, b), mean = ([load_model(r.model, torch.device("cpu"))[0].state_dict() for r in alone],
                    load_model(averaged.model, torch.device("cpu"))[0].state_dict())
    floats = [name for name, value in mean.items() if value.is_floating_point()]
    assert not all(torch.equal(a[name], b[name]) for name in floats)  # the seeds trained differently
    for name in floats:
        torch.testing.assert_close(mean[name], (a[name] + b[name]) / 2, rtol=0, atol=1e-6)
    assert (averaged.seeds_averaged, averaged.runs_kept_parent, alone[0].seeds_averaged) == (2, 0, 1)
    assert read_card(averaged.model).lineage["seeds_averaged"] == 2 and "run 2 of 2, seed 4" in logs
    assert "saved weights: the mean of 2 runs' (seeds 3 to 4)" in logs
    with pytest.raises(InputError, match="--average-seeds 0 is below 1"):
        finetune(small_model, arctic_store, tmp_path / "none.safetensors", replace(options, average_seeds=0))


def test_without_validation_a_run_that_loses_the_labelled_slicks_keeps_the_parent_s_weights(tmp_path, small_model, arctic_store):
    """The untrained test model marks about half of every tile, a few labelled slicks among them; an epoch on mostly
    clear sea teaches it to mark nothing, which finds fewer of the labelled slicks: the parent's weights are saved, to
    the bit, and the run says so. Without the check the trained weights are saved whatever they score."""
    options = FinetuneOptions(**{**FAST, "val_fraction": 0.0, "label_check": True})
    logs = []
    report = finetune(small_model, arctic_store, tmp_path / "checked.safetensors", options, Progress(log=logs.append))
    assert report.labels_dice_after < report.labels_dice_before and report.best_epoch == 0 and report.epochs_run == 1
    assert report.holds_parent_weights and report.use_note == ""
    assert any(line.startswith("warning: the fine-tuned weights do not find the labelled slicks better") for line in logs)
    assert report.weights_note.startswith("It keeps the parent's weights") and report.use_note == ""
    lineage = read_card(report.model).lineage
    assert (lineage["labels_dice_before"], lineage["labels_dice_after"], lineage["best_epoch"]) == (
        round(report.labels_dice_before, 4), round(report.labels_dice_after, 4), 0)
    assert "label_check" in report.timings
    parent, checked, unchecked = (load_model(p, torch.device("cpu"))[0].state_dict() for p in (
        small_model, report.model, finetune(small_model, arctic_store, tmp_path / "unchecked.safetensors", replace(options, label_check=False)).model))
    assert all(torch.equal(checked[name], value) for name, value in parent.items())
    assert not all(torch.equal(unchecked[name], value) for name, value in parent.items())


def test_the_weights_note_says_how_many_averaged_runs_handed_back_the_parent_s_weights():
    """An average of two runs, one of which found the labelled slicks no better and brought the parent's weights, is
    still a new model: the analyst reads that it is an average and that one run of it is the parent."""
    one_kept = weights_note(3, False, 0.40, 0.52, runs=2, kept_parent=1)
    assert one_kept.startswith("On the labelled tiles themselves it finds the slicks better than the parent (Dice 0.52 against 0.40)")
    assert one_kept.endswith("the mean of 2 runs with different seeds, 1 of which found the slicks no better and brought the parent's.")
    assert weights_note(3, False, 0.40, 0.52, runs=2).endswith("the mean of 2 runs with different seeds.")
    assert weights_note(0, False, 0.40, 0.38, runs=2, kept_parent=2).startswith("It keeps the parent's weights")


def test_the_labelled_tiles_keep_the_trained_weights_only_when_they_score_above_the_parent():
    """On tiles whose slicks the parent puts at 0.3-0.45 and sea at 0-0.25, it finds none at 0.5; weights that add 0.2
    find them all and are kept; weights that take 0.2 away find none either, so the parent's come back."""
    from engine.jobs.finetune import keep_if_better_on_labels

    rng = np.random.default_rng(2)
    slick = rng.random((4, 32, 32)) < 0.2
    data = _probability_tiles(np.where(slick, rng.uniform(0.3, 0.45, slick.shape), rng.uniform(0, 0.25, slick.shape)), slick)
    model = _Probability()
    parent = copy.deepcopy(model.state_dict())
    for shift, kept, dice in ((0.2, True, 1.0), (-0.2, False, 0.0)):
        model.load_state_dict(parent)
        torch.nn.init.constant_(model.decoder.bias, shift)
        trained = copy.deepcopy(model.state_dict())
        assert keep_if_better_on_labels(model, parent, data, TrainConfig(), 0.5) == (0.0, dice)
        assert all(torch.equal(v, (trained if kept else parent)[k]) for k, v in model.state_dict().items())


def test_parent_share_saves_weights_that_far_back_toward_the_parent(tmp_path, small_model, arctic_store):
    """The same seeded run saved as trained and half way back: every float tensor (batch-norm
    statistics too) lies on the line between child and parent, counters stay the child's."""
    options = FinetuneOptions(**{**FAST, "epochs": 1, "val_fraction": 0.0, "label_check": False})
    trained = finetune(small_model, arctic_store, tmp_path / "trained.safetensors", replace(options, parent_share=0.0))
    blended = finetune(small_model, arctic_store, tmp_path / "blended.safetensors", options)
    assert blended.parent_share == read_card(blended.model).lineage["parent_share"] == 0.5 == PARENT_SHARE
    parent, child, mix = (load_model(p, torch.device("cpu"))[0].state_dict() for p in (small_model, trained.model, blended.model))
    moved = 0
    for name, value in mix.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.5 * child[name] + 0.5 * parent[name], rtol=1e-4, atol=1e-5)
            moved += not torch.equal(child[name], parent[name])
        else:
            assert torch.equal(value, child[name])
    assert moved > 10
    with pytest.raises(InputError, match="--parent-share 1.0 is outside"):
        finetune(small_model, arctic_store, tmp_path / "parent.safetensors", replace(options, parent_share=1.0))
    with pytest.raises(InputError, match="--parent-share 0.5 with validation tiles"):
        finetune(small_model, arctic_store, tmp_path / "validated.safetensors", replace(options, parent_share=0.5, val_fraction=0.25))
    assert not any(tmp_path.glob("parent*")) and not any(tmp_path.glob("validated*"))


def test_fine_tuning_an_ensemble_trains_its_first_member_and_keeps_the_others(tmp_path, small_model, arctic_store):
    """The partner (in ``make quality-model``, a DeepLabV3 that never saw a real pixel) keeps its weights and batch-norm
    statistics to the bit; the first member's encoder and decoder learn."""
    parent = make_ensemble(small_model, tmp_path / "ensemble.safetensors")
    options = FinetuneOptions(**{**FAST, "train_layers": "all", "val_fraction": 0.0, "parent_share": 0.0, "label_check": False})
    logs = []
    report = finetune(parent, arctic_store, tmp_path / "tuned.safetensors", options, Progress(log=logs.append))
    member = f"unet / {SMALL['encoder']}"
    assert f"an ensemble: {member} learns, {member} keeps its weights" in logs
    before, after = (load_model(p, torch.device("cpu"))[0] for p in (parent, report.model))
    for name, value in after.members[1].state_dict().items():
        assert torch.equal(value, before.members[1].state_dict()[name]), name
    changed = [name for name, value in after.members[0].state_dict().items() if not torch.equal(value, before.members[0].state_dict()[name])]
    assert any("encoder" in name and "weight" in name for name in changed) and any("decoder" in name for name in changed)


def test_staying_close_keeps_more_of_a_pairing_s_weights_and_pulls_one_network_harder(tmp_path, small_model, arctic_store):
    """The one option means what was measured for each kind of parent: a pairing saves three quarters of its weights
    at the default pull, a single network trains under the stronger pull at the default share."""
    parent = make_ensemble(small_model, tmp_path / "ensemble.safetensors")
    options = FinetuneOptions(**{**FAST, "val_fraction": 0.0, "label_check": False, "average_seeds": 1, "stay_close": True})
    report = finetune(parent, arctic_store, tmp_path / "close.safetensors", options)
    lineage = read_card(report.model).lineage
    assert lineage["stay_close"] and report.stay_close and lineage["parent_share"] == report.parent_share == CLOSE_PARENT_SHARE
    assert lineage["parent_weight"] == PARENT_WEIGHT
    single = close_to_parent(options, read_card(small_model))
    assert single.parent_weight == CLOSE_PARENT_WEIGHT > PARENT_WEIGHT and single.parent_share is None
    assert close_to_parent(replace(options, stay_close=False), read_card(parent)) == replace(options, stay_close=False)
    for clash in ({"parent_share": 0.5}, {"parent_weight": 1.0}, {"val_fraction": 0.25}):
        with pytest.raises(InputError, match="--stay-close sets how close"):
            finetune(parent, arctic_store, tmp_path / "clash.safetensors", replace(options, **clash))
    assert not any(tmp_path.glob("clash*"))


def test_too_few_validation_slick_pixels_keep_the_parent_s_threshold(tmp_path, small_model):
    """sample_1 alone leaves 833 slick pixels to validate on at 128-pixel tiles: too few to place a threshold."""
    store = _store(tmp_path / "one.gpkg", samples=("sample_1",))
    report = finetune(small_model, store, tmp_path / "tuned.safetensors", FinetuneOptions(**FAST))
    assert 0 < report.val_slick_pixels < MIN_VAL_SLICK_PIXELS
    card = read_card(report.model)
    assert report.threshold == report.threshold_elsewhere == card.threshold == 0.5 and card.scene_thresholds == {}
    assert all(h["threshold"] == 0.5 for h in report.history)
    assert f"{report.val_slick_pixels} slick pixels, fewer than the {MIN_VAL_SLICK_PIXELS}" in report.threshold_note


def test_validation_tiles_share_no_pixel_with_training_tiles(small_model, arctic_store):
    tiles = collect_tiles(read_store(arctic_store), read_card(small_model), 128, Progress())
    assert len(tiles) == 2 * 36  # two 768 x 768 tiles fully reviewed, in 128-pixel tiles
    train_tiles, val_tiles = split_by_area(tiles, 0.25, seed=0)
    assert len(train_tiles) + len(val_tiles) == len(tiles) and len(val_tiles) == 18
    assert any(t.slick_pixels for t in val_tiles) and any(t.slick_pixels for t in train_tiles)
    for t in train_tiles:
        rows = np.arange(t.row, t.row + t.size)[:, None]
        cols = np.arange(t.col, t.col + t.size)[None, :]
        for v in val_tiles:
            if v.scene != t.scene:
                continue
            # Chebyshev distance, in pixels, from each training pixel to the validation tile.
            dr = np.maximum(np.maximum(v.row - rows, rows - (v.row + v.size - 1)), 0)
            dc = np.maximum(np.maximum(v.col - cols, cols - (v.col + v.size - 1)), 0)
            distance = np.maximum(dr, dc)
            assert distance.min() > 0  # no pixel in both
            assert distance[t.valid.astype(bool)].min() > GAP  # and a gap between what each side counts
    again, _ = split_by_area(tiles, 0.25, seed=0)
    other, _ = split_by_area(tiles, 0.25, seed=1)
    key = lambda ts: [(t.scene, t.row, t.col) for t in ts]  # noqa: E731
    assert key(again) == key(train_tiles) != key(other)


def test_lr_range_test_restores_the_weights(small_model):
    model, _ = load_model(small_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    tiles = [rng.uniform(1, 255, (64, 64)).astype(np.float32) for _ in range(4)]
    masks = [rng.random((64, 64)) > 0.8 for _ in range(4)]
    lr = lr_range_test(model, TileSet.from_arrays(tiles, masks), TrainConfig(batch_size=2, train_layers="decoder"), steps=6)
    assert 1e-7 <= lr <= 0.1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_lr_range_test_probes_the_tiles_with_slicks(small_model, monkeypatch):
    """One slick tile among twelve: the probe batch the rates are judged on holds it, whatever the draw."""
    rng = np.random.default_rng(0)
    tiles = [rng.uniform(1, 255, (32, 32)).astype(np.float32) for _ in range(12)]
    masks = [np.zeros((32, 32), bool) for _ in range(12)]
    masks[7][10:14, :] = True
    probes = []
    real_dice_score = training.dice_score
    monkeypatch.setattr(training, "dice_score", lambda model, data, config: probes.append(data) or real_dice_score(model, data, config))
    model, _ = load_model(small_model)
    for seed in range(3):
        lr_range_test(model, TileSet.from_arrays(tiles, masks), TrainConfig(batch_size=4, train_layers="decoder", seed=seed), steps=2)
    assert len(probes) == 6 and all(len(p) == 4 and p.y.sum() == 4 * 32 for p in probes)


def test_cancel_leaves_no_file(tmp_path, small_model, arctic_store):
    with pytest.raises(Cancelled):
        finetune(small_model, arctic_store, tmp_path / "out" / "tuned.safetensors", FinetuneOptions(**FAST),
                 cancel_at("training", 2))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _empty_store(tmp_path):
    return create_store(tmp_path / "empty.gpkg", "EPSG:32636")


def _labels_only(tmp_path):
    path = create_store(tmp_path / "unreviewed.gpkg", "EPSG:32636")
    add_labels(path, _scene("sample_1"), [box(455000, 8350000, 456000, 8351000)], "slick", crs="EPSG:32636", author="t", origin="drawn")
    return path


def _far_away(tmp_path):
    path = create_store(tmp_path / "far.gpkg", "EPSG:32636")
    area = translate(box(449500, 8340500, 468600, 8359600), yoff=-1_000_000)
    add_labels(path, _scene("sample_1"), [area.buffer(-5000)], "slick", crs="EPSG:32636", author="t", origin="drawn")
    add_reviewed(path, _scene("sample_1"), [area], crs="EPSG:32636", author="t")
    return path


def _moved_scene(tmp_path):
    moved = tmp_path / "moved_scene.tif"
    shutil.copy(_scene("sample_2"), moved)
    path = _store(tmp_path / "moved.gpkg", samples=("sample_1",))
    import_mask(path, moved, SAMPLES / "sample_2" / "labels_mosaic.png")
    moved.unlink()
    return path


def _pixels(col0, row0, col1, row1):
    """A box over sample_1's pixels (columns, rows)."""
    grid = scene_grid(_scene("sample_1"))
    left, top = grid.transform.c, grid.transform.f
    return box(left + 25 * col0, top - 25 * row1, left + 25 * col1, top - 25 * row0)


def _one_tile(tmp_path):
    path = create_store(tmp_path / "small.gpkg", "EPSG:32636")
    add_labels(path, _scene("sample_1"), [_pixels(150, 280, 170, 290)], "slick", crs="EPSG:32636", author="t", origin="drawn")
    add_reviewed(path, _scene("sample_1"), [_pixels(140, 270, 240, 370)], crs="EPSG:32636", author="t")  # inside tile (256, 128)
    return path


def _one_slick_tile(tmp_path):
    """Eight reviewed 128-pixel tiles, one slick: training needs it, so validation could only judge quiet sea."""
    path = create_store(tmp_path / "one_slick.gpkg", "EPSG:32636")
    add_labels(path, _scene("sample_1"), [_pixels(150, 280, 170, 290)], "slick", crs="EPSG:32636", author="t", origin="drawn")
    add_reviewed(path, _scene("sample_1"), [_pixels(0, 256, 512, 512)], crs="EPSG:32636", author="t")
    return path


@pytest.mark.parametrize("store, error, message", [
    (_empty_store, InputError, "no slick labels"),
    (_labels_only, InputError, "no reviewed areas"),
    (_far_away, InputError, "No reviewed area or label lies on valid pixels"),
    (_moved_scene, InputError, "moved or deleted.*moved_scene.tif"),
    (_one_tile, InputError, "at least 2"),
    (_one_slick_tile, InputError, "no validation tile holds a slick.*keep using the parent"),
])
def test_bad_labels_fail_before_training(tmp_path, small_model, store, error, message):
    stages = []
    out = tmp_path / "tuned.safetensors"
    with pytest.raises(error, match=message):
        finetune(small_model, store(tmp_path), out, FinetuneOptions(**FAST), Progress(lambda s, *_: stages.append(s)))
    assert "training" not in stages and not out.exists()


def test_the_default_recipe_refuses_too_few_labelled_slick_pixels_before_training(tmp_path, small_model):
    """One small slick (200 pixels at 25 m) is below the default's gate, however many tiles it lies in."""
    stages = []
    with pytest.raises(InputError, match="The labels hold 200 slick pixels, fewer than the 1000 fine-tuning needs") as refused:
        finetune(small_model, _one_tile(tmp_path), tmp_path / "tuned.safetensors", FinetuneOptions(device="cpu"),
                 Progress(lambda s, *_: stages.append(s)))
    assert refused.value.hint == "Label more slicks: 800 more pixels, about 0.50 km² at 25 m."
    assert "training" not in stages and not (tmp_path / "tuned.safetensors").exists()


def test_bad_models_and_outputs_fail_before_training(tmp_path, small_model, arctic_store, model_factory):
    def attempt(base, out, error, message):
        stages = []
        with pytest.raises(error, match=message):
            finetune(base, arctic_store, out, FinetuneOptions(**FAST), Progress(lambda s, *_: stages.append(s)))
        assert "training" not in stages

    two_bands = model_factory(tmp_path / "two_bands.safetensors", **{**SMALL, "in_channels": 2})
    attempt(two_bands, tmp_path / "a.safetensors", ModelError, "takes 2 bands")
    not_a_model = tmp_path / "notes.safetensors"
    not_a_model.write_text("just some notes")
    attempt(not_a_model, tmp_path / "b.safetensors", ModelError, "not a readable model file")
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"someone's model")
    attempt(small_model, existing, OutputError, "exists already")
    assert existing.read_bytes() == b"someone's model"
    attempt(small_model, small_model, OutputError, "exists already")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    attempt(small_model, blocker / "tuned.safetensors", OutputError, "not writable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "existing.safetensors", "notes.safetensors", "two_bands.safetensors"]


def test_cli_speaks_json_lines_with_a_loss_per_epoch(tmp_path, small_model, capsys):
    store = _store(tmp_path / "one.gpkg", samples=("sample_1",))
    out = tmp_path / "cli.safetensors"
    args = ["--jsonl", "finetune", "--base", str(small_model), "--labels", str(store), "--out", str(out),
            "--tile", "256", "--epochs", "2", "--lr", "1e-3", "--device", "cpu", "--seed", "3", "--val-fraction", "0.25"]
    assert main(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    epochs = [e for e in events if e["event"] == "metrics"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(0 <= e["val_dice"] <= 1 and e["train_loss"] > 0 and 0 < e["threshold"] < 1 for e in epochs)
    assert not [e for e in events if e["event"] == "log" and e["message"].startswith("epoch ")]
    assert any(e["event"] == "progress" and e["stage"] == "training" for e in events)
    result = events[-1]
    assert result["event"] == "result" and result["data"]["model"] == str(out) and len(result["data"]["history"]) == 2
    assert read_card(out).lineage["seed"] == 3
    assert main(args) == 2  # never overwrites
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert error["event"] == "error" and error["kind"] == "OutputError"


class _Probability(torch.nn.Module):
    """A two-part network whose slick probability is its input (0..1, as ``input_scale`` leaves it) at the
    start: a 1x1 convolution and a batch norm, both the identity, then the logit."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.BatchNorm2d(1))
        self.decoder = torch.nn.Conv2d(1, 1, 1)
        for conv in (self.encoder[0], self.decoder):
            torch.nn.init.ones_(conv.weight)
            torch.nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # bf16 would round 1 - 1e-4 to 1
            return torch.logit(self.decoder(self.encoder(x.float())).clamp(1e-4, 1 - 1e-4))


def _probability_tiles(probability: np.ndarray, slick: np.ndarray) -> TileSet:
    """Tiles whose stretched values make ``_Probability`` predict ``probability``."""
    return TileSet(torch.from_numpy(probability * 255).float()[:, None], torch.from_numpy(slick).float()[:, None],
                   torch.ones(probability.shape)[:, None])


def test_threshold_calibration_picks_the_dice_maximising_threshold():
    rng = np.random.default_rng(0)
    slick = rng.random((2, 32, 32)) < 0.1
    # Slicks at 0.72, sea below 0.6 but for a few sea pixels at 0.67: only a cut in [0.67, 0.72) is perfect.
    # Every value sits midway between candidate thresholds, so float rounding cannot move a pixel across one.
    probability = np.where(slick, 0.72, rng.choice(np.arange(0.025, 0.6, 0.05), slick.shape))
    probability[~slick & (rng.random(slick.shape) < 0.02)] = 0.67
    scores = validate(_Probability().eval(), _probability_tiles(probability, slick), TrainConfig())
    expected = [2 * np.sum((probability > t) & slick) / (np.sum(probability > t) + slick.sum()) for t in THRESHOLDS]
    assert np.allclose(scores.dice_at, expected, atol=1e-6)
    assert scores.calibrated(fallback=0.5) == (0.7, 1.0) and scores.dice < 1
    # Equal Dice over a range of thresholds: the one nearest 0.5 ...
    scores = validate(_Probability().eval(), _probability_tiles(np.where(slick, 0.9, 0.2), slick), TrainConfig())
    assert scores.calibrated(fallback=0.5) == (0.5, 1.0)
    # ... unless the fallback (a parent's threshold) is among them: a tie is no reason to move it.
    assert scores.calibrated(fallback=0.3) == (0.3, 1.0) and scores.calibrated(fallback=0.95) == (0.85, 1.0)
    # No slick to place a threshold by: the parent's stays.
    scores = validate(_Probability().eval(), _probability_tiles(probability, np.zeros_like(slick)), TrainConfig())
    assert scores.calibrated(fallback=0.8)[0] == 0.8


class _ShiftedProbability(_Probability):
    """``_Probability`` one column to the right: a network that mirroring changes, as a trained one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.roll(x, 1, dims=-1))


def test_mirrored_validation_scores_the_probability_detection_cuts():
    """With ``mirrored`` the thresholds are scored on the mean over the four mirror images, mapped back: for a
    one-column shift, the mean of the shifts left and right."""
    rng = np.random.default_rng(1)
    slick = rng.random((2, 32, 32)) < 0.2
    probability = np.where(slick, rng.uniform(0.5, 1, slick.shape), rng.uniform(0, 0.7, slick.shape))
    tiles = _probability_tiles(probability, slick)
    averaged = (np.roll(probability, 1, axis=-1) + np.roll(probability, -1, axis=-1)) / 2
    for seen, mirrored in ((np.roll(probability, 1, axis=-1), False), (averaged, True)):
        scores = validate(_ShiftedProbability().eval(), tiles, TrainConfig(), mirrored=mirrored)
        expected = [2 * np.sum((seen > t) & slick) / (np.sum(seen > t) + slick.sum()) for t in THRESHOLDS]
        assert np.allclose(scores.dice_at, expected, atol=1e-4)


def test_fine_tuning_keeps_the_parent_when_no_epoch_beats_it():
    """A parent already perfect on validation: training can at best tie, so its weights come back bit for bit,
    batch-norm statistics included (they stay the parent's during fine-tuning), and so does its threshold,
    though another one ties with it on the validation tiles."""
    rng = np.random.default_rng(1)
    slick = rng.random((8, 32, 32)) < 0.2
    data = _probability_tiles(np.where(slick, rng.uniform(0.6, 1, slick.shape), rng.uniform(0, 0.4, slick.shape)), slick)
    model = _Probability()
    before = copy.deepcopy(model.state_dict())
    parent_loss = validate(model, data, TrainConfig()).loss
    report = train(model, data, data, TrainConfig(epochs=3, batch_size=4, lr=0.5, patience=5, threshold=0.45, **FROM_PARENT))
    assert report.best_epoch == 0 and report.epochs_run == 3 and report.val_dice_calibrated == 1.0
    assert report.threshold == 0.45  # not 0.5, which validation calibration picks among equals
    assert any(abs(h["val_loss"] - parent_loss) > 1e-4 for h in report.history)  # the epochs did move the weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_too_few_validation_pixels_judge_every_epoch_at_the_parent_s_threshold():
    """Validation whose Dice is 1 from 0.6 to 0.7: calibrated, the threshold moves to 0.6; with ``calibrate`` off it stays
    the parent's, for every epoch and for the weights kept, and so does the Dice that judged them."""
    rng = np.random.default_rng(0)
    slick = rng.random((8, 32, 32)) < 0.2
    probability = np.where(slick, 0.72, rng.choice(np.arange(0.025, 0.6, 0.05), slick.shape))
    data = _probability_tiles(probability, slick)
    moved = train(_Probability(), data, data, TrainConfig(epochs=2, batch_size=4, lr=1e-3, threshold=0.45, **FROM_PARENT))
    assert moved.threshold == 0.6 and moved.val_dice_calibrated == 1.0
    model = _Probability()
    kept = train(model, data, data, TrainConfig(epochs=2, batch_size=4, lr=1e-3, threshold=0.45, calibrate=False, **FROM_PARENT))
    assert kept.threshold == 0.45 and all(h["threshold"] == 0.45 for h in kept.history)
    assert kept.val_dice_calibrated < 1
    assert kept.val_dice_calibrated == pytest.approx(validate(model, data, TrainConfig()).dice_near(0.45))


def test_an_experiment_can_keep_the_best_trained_epoch_below_the_parent():
    """The same perfect parent with ``parent_competes=False``: a trained epoch comes back, and the weights moved."""
    rng = np.random.default_rng(1)
    slick = rng.random((8, 32, 32)) < 0.2
    data = _probability_tiles(np.where(slick, rng.uniform(0.6, 1, slick.shape), rng.uniform(0, 0.4, slick.shape)), slick)
    model = _Probability()
    before = copy.deepcopy(model.state_dict())
    report = train(model, data, data, TrainConfig(epochs=3, batch_size=4, lr=0.5, patience=5, **{**FROM_PARENT, "parent_competes": False}))
    assert report.best_epoch >= 1
    assert report.val_dice_calibrated == max(h["val_dice_calibrated"] for h in report.history)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fine_tuning_keeps_the_parent_s_batch_norm_statistics():
    model = _Probability()
    x = torch.rand(4, 1, 8, 8) + 2
    train_mode(model, "all", frozen_statistics=True)
    model(x)
    assert model.encoder[1].running_mean.item() == 0 and model.encoder[1].weight.requires_grad
    train_mode(model, "all")
    model(x)
    assert model.encoder[1].running_mean.item() > 0.1


def test_l2_sp_holds_the_weights_near_the_parent(small_model):
    """One epoch on labels the parent gets wrong, with and without the pull toward the parent: the same steps
    move the decoder far less with it, and the loss it adds is the squared distance it penalises."""
    rng = np.random.default_rng(0)
    data = TileSet.from_arrays([rng.uniform(1, 255, (32, 32)).astype(np.float32) for _ in range(32)],
                               [rng.random((32, 32)) > 0.5 for _ in range(32)])
    parent, _ = load_model(small_model)
    before = [p.detach().clone() for p in parent.decoder.parameters()]

    def moved(parent_weight: float) -> float:
        model = copy.deepcopy(parent)
        config = TrainConfig(epochs=1, batch_size=2, lr=1e-2, train_layers="decoder", parent_weight=parent_weight, **FROM_PARENT)
        report = train(model, data, data, replace(config, parent_competes=False))
        assert report.best_epoch == 1
        return sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(model.decoder.parameters(), before))

    free, held = moved(0.0), moved(100.0)
    assert free > 0 and held < free / 4
    shifted = [b + 0.5 for b in before]
    assert float(l2_sp(shifted, before, 0.2)) == pytest.approx(0.1 * 0.25 * sum(b.numel() for b in before), rel=1e-5)
    assert l2_sp(shifted, [], 0.2) == 0.0


def test_context_tiles_hold_the_parent_s_own_map_where_nothing_is_labelled_or_reviewed(tmp_path, small_model):
    """Half of sample_1 labelled and reviewed: the context tiles lie in the other half, as many as the labelled tiles,
    each target the parent's map at its threshold; a fine-tuning with them records how many it trained on."""
    from engine.experiments.within_scene import labelled_scenes, split_scene, split_store
    from engine.jobs.finetune_data import context_tiles
    from engine.models.inference import Predictor

    card = read_card(small_model)
    split = split_scene(labelled_scenes(("sample_1",), tmp_path)["sample_1"], "left", card, 128)
    store_path = split_store(tmp_path / "half.gpkg", split)
    store = read_store(store_path)
    labelled = collect_tiles(store, card, 128, Progress())
    parent = Predictor(load_model(small_model)[0], card, "cpu", fast=False)
    calls = []

    def parent_map(x):
        calls.append(x)
        return parent(x[None])[0] > card.threshold

    found = context_tiles(store, card, 128, labelled, 1.0, 0, parent_map, Progress())
    assert len(found) == len(labelled) == len(calls) > 0
    for tile in found:
        assert tile.col >= split.line  # the held half: nothing labelled or reviewed there
        grid = scene_grid(_scene("sample_1"))
        cell = replace(grid, transform=grid.transform @ Affine.translation(tile.col, tile.row), width=128, height=128)
        assert not rasterise(store, tile.scene, cell)[1].any()
        assert np.array_equal(tile.target, (parent(tile.x[None])[0] > card.threshold).astype(np.float32))
        assert tile.valid.mean() >= 0.5
    report = finetune(small_model, store_path, tmp_path / "tuned.safetensors", FinetuneOptions(**{**FAST, "val_fraction": 0.0},
                                                                                             context=1.0, min_slick_pixels=0))
    assert read_card(report.model).lineage["context_tiles"] == len(found)
    with pytest.raises(InputError, match="--context 5 needs"):
        finetune(small_model, store_path, tmp_path / "refused.safetensors", FinetuneOptions(**FAST, context=5.0))
    assert not (tmp_path / "refused.safetensors").exists()


def test_replay_rehearses_the_parent_s_own_labelled_scenes_never_the_taught_one(tmp_path, pool_model):
    """The pool model learnt from sample_0 and sample_70: a fine-tuning on sample_0's labels with replay draws its
    rehearsal crops from sample_70 alone, as many as its labelled tiles, with that scene's labels; labels on both of its
    scenes leave nothing to replay, and crops larger than the scenes cannot be cut: both refused before training."""
    from engine.data.bundled import ARCTIC
    from engine.data.real_scenes import load_labelled
    from engine.jobs.finetune_data import replay_tiles

    store_path = _store(tmp_path / "labels.gpkg", samples=("sample_0",))
    report = finetune(pool_model, store_path, tmp_path / "tuned.safetensors",
                      FinetuneOptions(**{**FAST, "val_fraction": 0.0}, replay=1.0, min_slick_pixels=0))
    lineage = read_card(report.model).lineage
    assert lineage["replayed_from"] == ["sample_70"]
    assert lineage["replay_tiles"] == report.train_tiles > 0

    replayed, names = replay_tiles({"sample_0", "sample_70"}, [_scene("sample_0")], 25.0, 128, 6, 0, Progress())
    assert names == ["sample_70"] and len(replayed) == 6
    scene = load_labelled(next(s for s in ARCTIC if s.name == "sample_70"), 25.0)
    for x, y in zip(replayed.x[:, 0].numpy(), replayed.y[:, 0].numpy()):
        rows, cols = np.nonzero(np.all(np.lib.stride_tricks.sliding_window_view(scene.values, (1, 128))[:, :, 0] == x[0], axis=-1))
        assert any(np.array_equal(scene.values[r:r + 128, c:c + 128], x) and np.array_equal(scene.slick[r:r + 128, c:c + 128], y > 0)
                   for r, c in zip(rows, cols))  # a crop of sample_70 with its own label
    assert replayed.y.sum() > 0

    with pytest.raises(InputError, match="Replay needs a bundled labelled scene"):
        finetune(pool_model, _store(tmp_path / "both.gpkg", samples=("sample_0", "sample_70")), tmp_path / "refused.safetensors",
                 FinetuneOptions(**{**FAST, "val_fraction": 0.0}, replay=1.0, min_slick_pixels=0))
    assert not (tmp_path / "refused.safetensors").exists()
    with pytest.raises(InputError, match="Replay could not cut"):
        replay_tiles({"sample_70"}, [], 25.0, 2048, 2, 0, Progress())
