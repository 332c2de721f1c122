"""The within-scene experiment on the real Arctic tiles with a small real model: the scored half never reaches
training, the half scores add up to the whole, and the run writes its figures with their provenance."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from shapely.geometry import Point, box, mapping

import engine.jobs.finetune as finetune_module
from engine.data.bundled import SAMPLES_DIR
from engine.errors import InputError
from engine.experiments.within_scene import (WithinSceneOptions, held_changes, label_polygons, labelled_scenes, part_dice, split_scene, split_store,
                                             within_scene_experiment)
from engine.jobs.evaluate import slick_dice
from engine.jobs.finetune import FinetuneOptions, finetune
from engine.jobs.labels import rasterise, read_store, scene_grid
from engine.jobs.outputs import write_slicks
from engine.models.registry import read_card
from engine.progress import Progress

from conftest import EXPERIMENT_MODEL as SMALL

FAST = FinetuneOptions(tile=128, epochs=1, lr=1e-3, device="cpu", train_layers="decoder", val_fraction=0.25)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, model_factory):
    return model_factory(tmp_path_factory.mktemp("model") / "small.safetensors", **SMALL)


@pytest.mark.parametrize("sample, side", [("sample_1", "left"), ("sample_70", "right"), ("sample_70", "top")])
def test_the_scored_half_is_in_no_training_or_validation_tile(tmp_path, small_model, monkeypatch, sample, side):
    split = split_scene(labelled_scenes((sample,), tmp_path)[sample], side, read_card(small_model), 128)
    assert split.line % 128 == 0 and split.labelled_share == pytest.approx(0.5, abs=0.1)
    store = split_store(tmp_path / "labels.gpkg", split)
    # The store knows the labelled half only: every slick drawn lies inside it, and no held pixel is known.
    labels = read_store(store)
    entry = labels.scenes[str(split.scene)]
    assert entry.labels and all(split.labelled.buffer(1e-6).contains(label.geometry) for label in entry.labels)
    grid = scene_grid(split.scene)
    _, known = rasterise(labels, split.scene, grid)
    across = side in ("left", "right")
    lines = np.arange(grid.width if across else grid.height)
    held = lines >= split.line if side in ("left", "top") else lines < split.line
    known = known if across else known.T
    assert known[:, held].sum() == 0 and known[:, ~held].sum() > 0

    used = []
    real_split = finetune_module.split_by_area

    def recording_split(tiles, *args, **kwargs):
        train, val = real_split(tiles, *args, **kwargs)
        used.extend(train + val)
        return train, val

    monkeypatch.setattr(finetune_module, "split_by_area", recording_split)
    finetune(small_model, store, tmp_path / "tuned.safetensors", FAST, Progress())
    assert used and all(t.size == 128 for t in used)
    for tile in used:  # the actual windows, whatever their valid masks say
        start = tile.col if across else tile.row
        window = range(start, start + tile.size)
        assert (window.stop <= split.line) if side in ("left", "top") else (window.start >= split.line)


def test_half_scores_add_up_to_the_whole_scene():
    """The paper's own prediction scored on the two halves of sample_2: their counts are the whole's, which is
    ``slick_dice``'s figure."""
    label, prediction = SAMPLES_DIR / "sample_2" / "labels_mosaic.png", SAMPLES_DIR / "sample_2" / "pred_base.tif"
    whole = part_dice(prediction, label)
    assert whole == slick_dice(prediction, label)
    halves = [part_dice(prediction, label, h, "EPSG:32636")
              for h in (box(0, 0, 461800, 1e7), box(461800, 0, 1e6, 1e7))]
    assert [sum(getattr(h, k) for h in halves) for k in ("tp", "fp", "fn")] == [whole.tp, whole.fp, whole.fn]
    assert all(0 < h.label_pixels < whole.label_pixels for h in halves)


def test_experiment_writes_every_figure_with_its_provenance(tmp_path, small_model):
    """sample_1's left half holds slicks in two tiles and is fine-tuned on; sample_2's holds them in one, which
    training needs, so nothing could validate a fine-tuned model and the analyst keeps the parent."""
    out = tmp_path / "within"
    options = WithinSceneOptions(base=small_model, scenes=("sample_1", "sample_2"), recipe=FAST)
    result = within_scene_experiment(out, options, Progress(), command="python -m engine experiment within-scene")
    with open(out / "within_scene.csv") as handle:
        rows = {r["scene"]: r for r in csv.DictReader(handle)}
    assert [(r["scene"], r["labelled_half"]) for r in rows.values()] == [("sample_1", "left"), ("sample_2", "left")]
    written = json.loads((out / "within_scene.json").read_text())
    assert written["command"] == "python -m engine experiment within-scene" and len(written["commit"]) == 40
    assert set(written["models_sha256"]) == {"parent", "sample_1_left"} and written["models_sha256"]["parent"] == _sha256(small_model)
    tuned, kept = rows["sample_1"], rows["sample_2"]
    assert tuned["not_finetuned"] == "" and tuned["model_sha256"] == written["models_sha256"]["sample_1_left"] == _sha256(
        out / "models" / "sample_1_left.safetensors")
    # The other tile's score is the product's detection scored whole, as evaluate scores it: its mask, cut at the
    # fine-tuned model's threshold, without the patches under the smallest slick.
    detection = out / "detections" / "sample_1_left_sample_2"
    assert float(tuned["dice_sample_2_finetuned"]) == float(tuned["dice_others_finetuned"]) == pytest.approx(
        slick_dice(f"{detection}_mask.tif", SAMPLES_DIR / "sample_2" / "labels_mosaic.png").dice, abs=1e-4)
    with rasterio.open(f"{detection}_probability.tif") as prob, rasterio.open(f"{detection}_mask.tif") as mask:
        assert ((mask.read(1) == 1) <= (prob.read(1) > float(tuned["threshold_finetuned"]))).all()
    assert "no validation tile holds a slick" in kept["not_finetuned"] and kept["model_sha256"] == ""
    assert not (out / "models" / "sample_2_left.safetensors").exists()
    assert (kept["dice_held_finetuned"], kept["dice_others_finetuned"]) == (kept["dice_held_parent"], kept["dice_others_parent"])
    for row in rows.values():
        assert 0 <= float(row["dice_held_parent"]) <= 1 and int(row["held_slick_pixels"]) > 0
        assert float(row["held_change"]) == pytest.approx(float(row["dice_held_finetuned"]) - float(row["dice_held_parent"]), abs=1e-4)
    assert result["summary"]["runs"] == 2 and result["summary"]["finetuned"] == 1 and written["summary"] == result["summary"]
    assert (kept["held_new_slicks"], kept["held_gone_slicks"]) == ("0", "0")  # the parent's map stayed the map
    assert result["summary"]["held_new_slicks"] == sum(int(r["held_new_slicks"]) for r in rows.values())


def test_the_held_half_s_changes_count_slicks_reaching_into_it_and_those_a_label_confirms(tmp_path, small_model):
    """Hand-placed outlines on sample_1's split: on its held half one slick each model has, one only the parent has
    on a label (a loss), one only the fine-tuned model has on a label (a find) and one off any label; a new one on
    the labelled half is not counted."""
    split = split_scene(labelled_scenes(("sample_1",), tmp_path)["sample_1"], "left", read_card(small_model), FAST.tile)
    truth = shapely.union_all(label_polygons(split)).intersection(split.held)
    on_label = truth.representative_point()
    far_on_label = max((Point(c) for c in truth.exterior.coords) if truth.geom_type == "Polygon" else
                       (Point(c) for g in truth.geoms for c in g.exterior.coords), key=on_label.distance)
    assert far_on_label.distance(on_label) > 100
    minx, miny, maxx, maxy = split.held.bounds
    corners = [Point(x, y) for x in (minx + 300, maxx - 300) for y in (miny + 300, maxy - 300)]
    off = sorted((c for c in corners if c.distance(truth) > 600), key=truth.distance)
    assert len(off) >= 2
    both, loss, find, stray, elsewhere = (off[0].buffer(100), on_label.buffer(40), far_on_label.buffer(40), off[1].buffer(100),
                                          split.labelled.centroid.buffer(100))
    files = {}
    for name, outlines in (("parent", [both, loss]), ("tuned", [both, find, stray, elsewhere])):
        slicks = [{"geometry": mapping(g), "area_km2": g.area / 1e6, "length_km": 0.1, "mean_prob": 0.9} for g in outlines]
        files[name] = tmp_path / f"{name}.gpkg"
        write_slicks(files[name], split.crs, slicks, "sample_1", name)
    assert held_changes(files["tuned"], files["parent"], split) == {
        "held_new_slicks": 2, "held_new_on_label": 1, "held_gone_slicks": 1, "held_gone_on_label": 1}


def test_leave_one_scene_out_parents_each_score_the_one_tile_they_never_saw(tmp_path, model_factory):
    """With a folder of fold parents every tile gets its own, which learnt from the other tiles: those are not
    scored, and the parent's figures are its own detection's."""
    folder = tmp_path / "benchmark"
    (folder / "models").mkdir(parents=True)
    parents = {scene: model_factory(folder / "models" / f"real_texture_without_{scene}.safetensors", **SMALL, threshold=threshold)
               for scene, threshold in (("sample_1", 0.3), ("sample_2", 0.6))}
    out = tmp_path / "within"
    options = WithinSceneOptions(parents=folder, scenes=("sample_1", "sample_2"), recipe=FAST)
    result = within_scene_experiment(out, options, Progress(), command="python -m engine experiment within-scene --parents x")
    with open(out / "within_scene.csv") as handle:
        rows = {r["scene"]: r for r in csv.DictReader(handle)}
    assert {s: float(r["threshold_parent"]) for s, r in rows.items()} == {"sample_1": 0.3, "sample_2": 0.6}
    assert all(r[key] == "" for r in rows.values() for key in
               ("dice_others_parent", "dice_others_finetuned", "worst_other_change", "dice_sample_1_parent", "dice_sample_2_finetuned"))
    written = json.loads((out / "within_scene.json").read_text())
    assert {s: p["sha256"] for s, p in written["parents"].items()} == {s: _sha256(p) for s, p in parents.items()}
    assert written["models_sha256"]["parent_sample_2"] == _sha256(parents["sample_2"]) and "parent" not in written["models_sha256"]
    assert "mean_dice_others_parent" not in result["summary"] and result["summary"]["runs"] == 2
    split = split_scene(labelled_scenes(("sample_1",), tmp_path)["sample_1"], "left", read_card(parents["sample_1"]), FAST.tile)
    own = part_dice(out / "detections" / "parent_sample_1_mask.tif", split.label, split.held, split.crs)
    assert float(rows["sample_1"]["dice_held_parent"]) == pytest.approx(own.dice, abs=1e-4)


@pytest.mark.parametrize("change, message", [
    (dict(scenes=("sample_1",)), "two or more distinct"),
    (dict(scenes=("sample_1", "sample_9")), "two or more distinct"),
    (dict(sides=("middle",)), "Sides must be"),
    (dict(recipe=FinetuneOptions(tile=100)), "Tile size 100"),
    (dict(scenes=("north_sea_1", "north_sea_3"), parents=Path("loso")), "Arctic tiles only"),
])
def test_bad_requests_fail_before_any_work(tmp_path, small_model, change, message):
    out = tmp_path / "within"
    with pytest.raises(InputError, match=message):
        within_scene_experiment(out, WithinSceneOptions(**{"base": small_model, **change}), Progress())
    assert not out.exists()


def test_north_sea_tiles_are_staged_on_a_map_grid_split_and_scored_with_a_parent_that_never_saw_them(tmp_path, small_model, model_factory):
    """The IW/VV tiles carry no georeference: staged on their assumed grid, each splits like an Arctic tile (here into top
    and bottom: north_sea_1's slicks lie down its left edge), its labelled half goes into a label store, and the other is scored; a parent whose card names a tile among its training tiles
    is refused for it before any work."""
    out = Path(os.path.relpath(tmp_path / "within"))  # as a command line gives it
    recipe = replace(FAST, val_fraction=0.0, min_slick_pixels=100)  # the product's way: no validation tiles, a gate on slick pixels
    options = WithinSceneOptions(base=small_model, scenes=("north_sea_1", "north_sea_3"), sides=("top",), recipe=recipe)
    result = within_scene_experiment(out, options, Progress())
    rows = {r["scene"]: r for r in result["rows"]}
    assert set(rows) == {"north_sea_1", "north_sea_3"} and all(int(r["held_slick_pixels"]) > 0 for r in rows.values())
    # north_sea_1's top half holds slicks and is fine-tuned on; north_sea_3's holds none, so the parent stays.
    assert rows["north_sea_1"]["not_finetuned"] == "" and "no slick labels" in rows["north_sea_3"]["not_finetuned"]
    staged = labelled_scenes(("north_sea_1",), tmp_path / "again")["north_sea_1"]
    with rasterio.open(out / "scenes" / "north_sea_1_image.tif") as ds, rasterio.open(staged.image) as again:
        assert ds.crs == again.crs == "EPSG:32631" and ds.res == (20.0, 20.0) and (ds.read(1) == again.read(1)).all()
    split = split_scene(staged, "top", read_card(small_model), FAST.tile)
    held = part_dice(out / "detections" / "parent_north_sea_1_mask.tif", staged.labels, split.held, split.crs)
    assert float(rows["north_sea_1"]["dice_held_parent"]) == pytest.approx(held.dice, abs=1e-4) and held.label_pixels > 0
    seen = model_factory(tmp_path / "seen.safetensors", **SMALL, provenance={"data": {"north_sea_tiles": ["north_sea_3"]}})
    with pytest.raises(InputError, match="learnt from north_sea_3"):
        within_scene_experiment(tmp_path / "refused", WithinSceneOptions(base=seen, scenes=("north_sea_1", "north_sea_3"), recipe=FAST), Progress())
    assert not (tmp_path / "refused").exists()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
