"""The benchmark's scoring: Dice and false slick area on slick-free sea, on a real scene's label grid."""

from __future__ import annotations

import csv

import fiona
import numpy as np
import pytest
import rasterio
import torch
from rasterio.warp import transform_bounds
from scipy.ndimage import distance_transform_edt
from shapely.geometry import box, mapping

from engine.contract import DEFAULT_MIN_AREA_KM2, DEFAULT_OVERLAP
from engine.data.bundled import ARCTIC
from engine.jobs.evaluate import read_label_mask
from engine.cli.main import parse_args
from engine.errors import InputError
from engine.experiments import benchmark
from engine.experiments.benchmark import CLEAR_M, background_logit, candidates, run_benchmark, score, shifted_threshold
from engine.machine import describe
from engine.models.eager import fast_dtype
from engine.models.registry import SYNTHETIC_MODEL, load_model, read_card, save_model
from engine.progress import silent
from engine.scenes import landmask as landmask_module

from conftest import SMALL_MODEL


def _write(path, values, transform, crs):
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1, dtype="float32",
                      transform=transform, crs=crs) as ds:
        ds.write(values.astype(np.float32), 1)
    return path


def test_the_label_itself_scores_one_and_far_slicks_count_as_false(tmp_path):
    scene = ARCTIC[1]
    label, transform, crs = read_label_mask(scene.labels)
    perfect = score(_write(tmp_path / "p.tif", label.astype(np.float32), transform, crs), scene, 0.5)
    assert perfect.dice == 1.0 and perfect.false_pixels == 0
    far = distance_transform_edt(~label) * abs(transform.a) > CLEAR_M + 100
    blob = np.zeros_like(label)
    r, c = np.argwhere(far)[len(np.argwhere(far)) // 2]
    blob[r - 5 : r + 5, c - 5 : c + 5] = True
    assert far[blob].all()
    noisy = score(_write(tmp_path / "q.tif", (label | blob).astype(np.float32), transform, crs), scene, 0.5)
    assert noisy.false_pixels == 100 and noisy.fp == 100
    assert noisy.false_km2_per_1000 == 1000 * 100 / noisy.clear_pixels
    assert noisy.dice < 1.0
    # A detection's slick mask: its no data (255) is not slick, wherever it lies.
    coded = np.where(label | blob, 1, 0).astype(np.uint8)
    half = int(np.median(np.nonzero(label.any(axis=1))[0]))  # half the labelled rows under no data
    coded[:half] = 255
    mask = tmp_path / "mask.tif"
    with rasterio.open(mask, "w", driver="GTiff", width=label.shape[1], height=label.shape[0], count=1, dtype="uint8",
                       nodata=255, transform=transform, crs=crs) as ds:
        ds.write(coded, 1)
    cut = label.copy()
    cut[:half] = False
    expected = score(_write(tmp_path / "cut.tif", (cut | (blob & (np.arange(label.shape[0]) >= half)[:, None])).astype(np.float32),
                            transform, crs), scene, 0.5)
    assert score(mask, scene, 0.5) == expected and 0 < expected.tp < noisy.tp


def test_clear_sea_is_the_scene_s_valid_pixels_whatever_the_sign_of_its_values(tmp_path):
    """A scene in dB is negative everywhere it holds data: its clear sea is as large as its 8-bit image's."""
    scene = ARCTIC[1]
    label, transform, crs = read_label_mask(scene.labels)
    with rasterio.open(scene.image) as ds:
        grey = ds.read(1).astype(np.float32)
        profile = {**ds.profile, "dtype": "float32", "nodata": 0.0}
    grey[:40] = 0  # a no-data border
    db = tmp_path / "db.tif"
    with rasterio.open(db, "w", **profile) as ds:
        ds.write(np.where(grey > 0, grey - 256, 0).astype(np.float32), 1)
    as_grey = tmp_path / "grey.tif"
    with rasterio.open(as_grey, "w", **{**profile, "dtype": "uint8", "nodata": None}) as ds:
        ds.write(grey.astype(np.uint8), 1)
    prediction = _write(tmp_path / "p.tif", label.astype(np.float32), transform, crs)
    in_db = score(prediction, type(scene)(scene.name, db, scene.labels, scene.region), 0.5)
    in_grey = score(prediction, type(scene)(scene.name, as_grey, scene.labels, scene.region), 0.5)
    assert in_db == in_grey and 0 < in_db.clear_pixels < score(prediction, scene, 0.5).clear_pixels


def test_only_narrows_the_candidates_and_refuses_an_unknown_one():
    every = candidates(parse_args(["experiment", "benchmark", "--networks", "deeplabv3_r50", "--device", "cpu"]), 0)
    synthetic = ["synthetic_2x", "synthetic_short", "synthetic_seed1", "synthetic_r50", "synthetic_dlv3r18", "synthetic_dlv3r18seed1",
                 "synthetic_mnv4s", "synthetic_lookalikes"]
    assert list(every) == ["darkspot", "synthetic_only", "real_texture", "real_texture_swa", "real_texture_512", "real_texture_labelled",
                           "real_texture_masked", "real_texture_l2sp", "real_texture_init25", "real_texture_init50", "real_texture_init75",
                           "real_texture_init50_mirrorcal", "real_texture_init50_bandmean", "real_texture_soup_init50", "real_texture_lr1e-3_init50",
                           "real_texture_composite_init50", "real_texture_2xtiles_init50", "real_texture_bce10", "real_texture_bce1",
                           "real_texture_bce10_init25", "real_texture_bce10_init50", "real_texture_bce10_init75",
                           "real_texture_bce1_init25", "real_texture_bce1_init50", "real_texture_bce1_init75", "real_texture_bce1_512_init50",
                           "real_texture_bce1_composite_init50", "real_texture_bce1_labelled_init50", "real_texture_bce1_decoder_init50",
                           "real_texture_bce1_last_init50", "real_texture_bce1_frozenbn_init50", "real_texture_bce1_dice25_init50",
                           "real_texture_bce1_arctic_init50", "real_texture_bce1_transplant_init50", "real_texture_bce1_lookalikes_init50",
                           "real_texture_bce1_skeleton_init50", "real_texture_bce1_thin_init50", "real_texture_bce1_thin_dice25_init50", "real_texture_bce1_faint_init50",
                           "real_texture_bce1_fronts_init50",
                           "real_texture_bce1_init50_ens2", "real_texture_bce1_init50_with_synthdlv3r18",
                           "real_texture_bce1_init50_with_synthdlv3r18seed1", "real_texture_bce1_init50_with_synthr50",
                           "real_texture_bce1_init50_and_synthdlv3r18", "real_texture_bce1_init50_and_synthdlv3r18seed1",
                           "real_texture_bce1_init50_and_synthr50", "real_texture_bce1_kdsynthr50_init50",
                           "real_texture_bce1_init50_with_bce1synthdlv3r18",
                           "real_texture_bce1_refit_init50", "real_texture_bce1_dice25_refit_init50",
                           "real_texture_contrast_init50",
                           *synthetic, "synthetic_only_scenecal", *(f"{name}_scenecal" for name in synthetic),
                           "real_texture_synth2x_init50", "real_texture_synthshort_init50",
                           "real_texture_synthseed1_init50", "real_texture_synthr50_init50", "real_texture_synthdlv3r18_init50",
                           "real_texture_synthdlv3r18seed1_init50", "real_texture_synthmnv4s_init50", "real_texture_synthlookalikes_init50",
                           *(f"real_texture_bce1_synth{key}_init{share}" for key in ("r50", "dlv3r18", "dlv3r18seed1", "mnv4s", "lookalikes")
                             for share in (25, 50, 75)),
                           "deeplabv3_r50"]
    narrowed = candidates(parse_args(["experiment", "benchmark", "--networks", "deeplabv3_r50", "--only", "deeplabv3_r50", "--device", "cpu"]), 0)
    assert list(narrowed) == ["deeplabv3_r50"]
    with pytest.raises(InputError, match="unet_r18"):
        candidates(parse_args(["experiment", "benchmark", "--only", "unet_r18", "--device", "cpu"]), 0)


def test_the_scene_shift_moves_the_cut_by_the_scene_s_median_logit(tmp_path, model_factory):
    """A model's background is its median logit over the validation bands its card names: raising its output bias
    by 2 raises it by 2. A scene whose median logit sits 1 above the background moves the cut 1 up in logit."""
    bands = {"data": {"arctic_scenes": {"sample_0": "all but the edge band"}}}
    plain = model_factory(tmp_path / "plain.safetensors", **SMALL_MODEL, provenance=bands)
    model, card = load_model(plain)
    with torch.no_grad():
        model.segmentation_head[0].bias += 2.0
    raised = save_model(model, card, tmp_path / "raised.safetensors")
    background = background_logit(plain)
    assert background_logit(raised) == pytest.approx(background + 2.0, abs=1e-3)
    assert background_logit(model_factory(tmp_path / "elsewhere.safetensors", **SMALL_MODEL)) is None

    label, transform, crs = read_label_mask(ARCTIC[1].labels)
    logits = np.random.default_rng(0).normal(background + 1.0, 0.5, label.shape)
    logits[:10] = np.nan  # no data, as detection leaves it
    logits[10:400] = -np.inf  # land and the no-data border: probability 0, never predicted
    probability = _write(tmp_path / "p.tif", 1 / (1 + np.exp(-logits)), transform, crs)
    cut = shifted_threshold(0.9, background, probability)
    assert np.log(cut / (1 - cut)) == pytest.approx(np.log(9) + 1.0, abs=0.01)
    assert shifted_threshold(0.9, background + 1.0, probability) == pytest.approx(0.9, abs=1e-3)


def test_several_seeds_train_every_candidate_once_each_and_report_their_mean_and_range(tmp_path, pool_model, monkeypatch):
    """Each seed's model is its own file; a candidate whose model does not depend on the seed is scored once;
    the summary holds each seed's figures' mean and range, and the table shows both."""
    monkeypatch.setattr(benchmark.bundled, "ARCTIC", ARCTIC[1:3])
    trained: list[tuple[int, str]] = []

    def candidates_of(seed: int) -> dict:
        def trainer(scenes, out, progress):
            model, card = load_model(pool_model)
            with torch.no_grad():
                model.segmentation_head[0].bias += seed  # seed 1 marks more slick than seed 0
            trained.append((seed, out.name))
            return save_model(model, card, out)
        return {"model": trainer, "synthetic_only": benchmark.fixed(pool_model)}

    result = run_benchmark(tmp_path, candidates_of, [0, 1], silent(), "test")
    assert sorted(trained) == [(0, "model_without_sample_1.safetensors"), (0, "model_without_sample_2.safetensors"),
                               (1, "model_seed1_without_sample_1.safetensors"), (1, "model_seed1_without_sample_2.safetensors")]
    rows = list(csv.DictReader((tmp_path / "benchmark.csv").open()))
    assert sorted((r["candidate"], r["seed"]) for r in rows if r["candidate"] in ("model", "synthetic_only")) == [
        ("model", "0"), ("model", "0"), ("model", "1"), ("model", "1"), ("synthetic_only", "0"), ("synthetic_only", "0")]
    summary = result["summary"]
    per_seed = [np.mean([float(r["dice"]) for r in rows if r["candidate"] == "model" and r["seed"] == seed]) for seed in "01"]
    assert summary["model"]["seeds"] == 2 and summary["model"]["mean_dice"] == pytest.approx(np.mean(per_seed), abs=1e-3)
    assert summary["model"]["mean_dice_range"] == pytest.approx([min(per_seed), max(per_seed)], abs=1e-3)
    assert summary["synthetic_only"]["seeds"] == 1 and "mean_dice_range" not in summary["synthetic_only"]
    low, high = summary["model"]["mean_dice_range"]
    page = (tmp_path / "benchmark.md").read_text()
    assert f"**{summary['model']['mean_dice']:.3f} ({low:.3f}-{high:.3f})**" in page
    # What ran the model is PyTorch's choice on this machine, recorded per row and named on the page.
    ran = "torch bf16" if fast_dtype("cpu") else "torch fp32"
    assert {r["runtime"] for r in rows if r["candidate"] in ("model", "synthetic_only")} == {ran} and f"the model run by {ran};" in page
    assert all(r["runtime"] == "" for r in rows if r["candidate"].startswith("paper_"))


def test_another_synthetic_model_is_pretrained_once_per_run_for_every_fold(tmp_path, pool_model, monkeypatch):
    """It sees no real scene, so every fold and seed starts from the one file in the run's model folder, made
    there by the synthetic pretraining with its own budget, seed and network only when the folder has none."""
    made: list[tuple] = []

    def fake_pretrain(out, n_train, n_val, tile, config, progress, card=None, more_lookalikes=False):
        made.append((out, n_train, config.epochs, config.seed, card and (card.architecture, card.encoder), more_lookalikes))
        save_model(*load_model(pool_model), out)

    monkeypatch.setattr(benchmark, "pretrain", fake_pretrain)
    models = tmp_path / "models"
    models.mkdir()
    trainer = benchmark.fixed_at(benchmark.other_synthetic("seed1", "cpu"))
    first = trainer(ARCTIC[1:], models / "synthetic_seed1_without_sample_0.safetensors", silent())
    second = trainer(ARCTIC[:1], models / "synthetic_seed1_without_sample_1.safetensors", silent())
    assert first == second == models / "synthetic_seed1.safetensors" and first.exists()
    assert made == [(first, 320, 6, 1, None, False)]
    # The paper's network gets the bundled synthetic budget and seed: only the network differs.
    r50 = benchmark.fixed_at(benchmark.other_synthetic("r50", "cpu"))(ARCTIC[1:], models / "x.safetensors", silent())
    assert made[1:] == [(r50, 320, 6, 0, ("deeplabv3", "resnet50"), False)] and r50.name == "synthetic_r50.safetensors"
    light = benchmark.fixed_at(benchmark.other_synthetic("mnv4s", "cpu"))(ARCTIC[1:], models / "x.safetensors", silent())
    assert made[2:] == [(light, 320, 6, 0, ("unet", "tu-mobilenetv4_conv_small"), False)]
    # The bundled network and budget on scenes with the look-alikes the bundled generator lacks.
    more = benchmark.fixed_at(benchmark.other_synthetic("lookalikes", "cpu"))(ARCTIC[1:], models / "x.safetensors", silent())
    assert made[3:] == [(more, 320, 6, 0, None, True)]


def test_the_bce_cap_candidates_train_the_recipe_with_their_cap(tmp_path, monkeypatch):
    """Only the cap differs from the recipe's training, and each share candidate moves its own cap's trained model
    back by its share (one training serves every share)."""
    trained: list[tuple[str, float]] = []
    moved: list[tuple[str, str, float]] = []
    monkeypatch.setattr(benchmark, "pretrain_real", lambda out, recipe, config, progress, card: trained.append((out.name, config.pos_weight_cap)))
    monkeypatch.setattr(benchmark, "toward_init", lambda start, out, recipe, *args: moved.append((start.name, out.name, recipe.init_share)))
    every = candidates(parse_args(["experiment", "benchmark", "--device", "cpu"]), 0)
    for name in ("real_texture", "real_texture_bce10_init50", "real_texture_bce1", "real_texture_bce1_init25"):
        every[name](ARCTIC[1:], tmp_path / f"{name}_without_sample_0.safetensors", silent())
    assert trained == [("real_texture_without_sample_0.safetensors", 100.0), ("real_texture_bce10_without_sample_0.safetensors", 10.0),
                       ("real_texture_bce1_without_sample_0.safetensors", 1.0), ("real_texture_bce1_without_sample_0.safetensors", 1.0)]
    assert moved == [("real_texture_bce10_without_sample_0.safetensors", "real_texture_bce10_init50_without_sample_0.safetensors", 0.5),
                     ("real_texture_bce1_without_sample_0.safetensors", "real_texture_bce1_init25_without_sample_0.safetensors", 0.25)]


def test_the_contrast_candidate_trains_and_moves_back_toward_the_synthetic_model_made_a_contrast_unet(tmp_path, monkeypatch):
    """The bundled recipe (plain BCE, half way back) on the U-Net that also reads the local darkness."""
    starts: list[tuple[str, object, float]] = []
    monkeypatch.setattr(benchmark, "pretrain_real", lambda out, recipe, config, progress, card: starts.append(("trained", recipe.init, config.pos_weight_cap)))
    monkeypatch.setattr(benchmark, "toward_init", lambda trained, out, recipe, *args: starts.append(("moved back", recipe.init, recipe.init_share)))
    trainer = candidates(parse_args(["experiment", "benchmark", "--device", "cpu"]), 0)["real_texture_contrast_init50"]
    for held in ARCTIC[:2]:
        trainer([s for s in ARCTIC if s is not held], tmp_path / f"real_texture_contrast_init50_without_{held.name}.safetensors", silent())
    start = tmp_path / "synthetic_contrast.safetensors"
    assert starts == [("trained", start, 1.0), ("moved back", start, 0.5)] * 2
    assert read_card(start).architecture == "unet_contrast" and read_card(start).lineage["initialised_from"]["file"] == SYNTHETIC_MODEL.name


def test_the_models_run_in_the_runtime_asked_for_and_the_page_names_it(tmp_path, pool_model, monkeypatch):
    """Every compared figure runs the models in PyTorch; ``--runtime`` scores them as another runtime would run them (the
    product's own choice among them), and the rows and the page say which ran."""
    monkeypatch.setattr(benchmark.bundled, "ARCTIC", ARCTIC[:1])
    monkeypatch.setenv("SLICK_MAPPER_MODELS", str(tmp_path / "models"))  # the export goes beside the user's models
    run_benchmark(tmp_path / "run", lambda seed: {"model": benchmark.fixed(pool_model)}, [0], silent(), "test", runtime="onnxruntime")
    rows = [r for r in csv.DictReader((tmp_path / "run" / "benchmark.csv").open()) if r["candidate"] == "model"]
    assert [r["runtime"] for r in rows] == ["onnxruntime fp32"]
    assert "the model run by onnxruntime fp32" in (tmp_path / "run" / "benchmark.md").read_text()


def test_each_tiling_minimum_area_and_half_turn_asked_for_is_scored_as_a_view_of_the_same_model(tmp_path, pool_model, monkeypatch):
    """``--tiling 512:64 --min-area 1 --half-turn``: the same fold model detects the scene again with those tiles, again
    keeping only slicks of at least 1 km², and again averaging each tile with its half turn only, each scored as its own
    column."""
    monkeypatch.setattr(benchmark.bundled, "ARCTIC", ARCTIC[:1])
    detected = []
    real_detect = benchmark.detect

    def recording(scene, out, options, progress=None):
        result = real_detect(scene, out, options, progress)
        detected.append((options.tile, options.overlap, result.min_area_km2, result.tiles, result.n_slicks, result.half_turn))
        return result

    monkeypatch.setattr(benchmark, "detect", recording)
    args = parse_args(["experiment", "benchmark", "--tiling", "512:64", "--min-area", "1", "--half-turn", "--out", str(tmp_path)])
    run_benchmark(tmp_path, lambda seed: {"model": benchmark.fixed(pool_model)}, [0], silent(), "test", tilings=args.tiling,
                  min_areas=args.min_area, half_turn=args.half_turn)
    rows = [r for r in csv.DictReader((tmp_path / "benchmark.csv").open()) if r["candidate"].startswith("model")]
    assert [r["candidate"] for r in rows] == ["model", "model+halfturn", "model+tiles512_64", "model+min1"]
    assert len({r["sha256"] for r in rows}) == 1
    default, turned, tiled, large = detected
    assert turned[5] and not any(d[5] for d in (default, tiled, large))
    assert default[:3] == (None, DEFAULT_OVERLAP, DEFAULT_MIN_AREA_KM2) and tiled[:3] == (512, 64, DEFAULT_MIN_AREA_KM2)
    assert tiled[3] < default[3] and large[2] == 1.0 and large[4] < default[4]  # fewer tiles; fewer slicks kept
    assert "`+tilesT_O`" in (tmp_path / "benchmark.md").read_text()
    with pytest.raises(SystemExit):
        parse_args(["experiment", "benchmark", "--tiling", "512"])


def test_the_paper_s_tiles_get_their_own_mean_and_a_page_is_remade_from_its_rows_alone(tmp_path, pool_model, monkeypatch):
    """Only the scenes the paper predicted are set beside its models (sample_0 has no paper prediction), and an earlier
    run's CSV renders the same summary and rows again without a model: the figure a page adds later is remade for a run
    whose models are gone."""
    monkeypatch.setattr(benchmark.bundled, "ARCTIC", ARCTIC[:2])
    result = run_benchmark(tmp_path / "run", lambda seed: {"model": benchmark.fixed(pool_model)}, [0], silent(), "test")
    rows = list(csv.DictReader((tmp_path / "run" / "benchmark.csv").open()))
    assert {r["scene"] for r in rows if r["candidate"].startswith("paper_")} == {"sample_1"}
    on_paper_tile = next(float(r["dice"]) for r in rows if r["candidate"] == "model" and r["scene"] == "sample_1")
    summary = result["summary"]
    assert summary["model"]["paper_tiles_dice"] == pytest.approx(on_paper_tile, abs=1e-3) != summary["model"]["mean_dice"]
    assert summary["paper_pred_base"]["paper_tiles_dice"] == summary["paper_pred_base"]["mean_dice"]
    assert f"| mean Dice on the paper's tile (sample_1) | {on_paper_tile:.3f} |" in (tmp_path / "run" / "benchmark.md").read_text()

    again = benchmark.rerender(tmp_path / "run" / "benchmark.csv", tmp_path / "again", "again")
    assert again["summary"] == summary
    assert (tmp_path / "again" / "benchmark.csv").read_text() == (tmp_path / "run" / "benchmark.csv").read_text()
    assert "rendered again, training and detecting nothing, by `again`" in (tmp_path / "again" / "benchmark.md").read_text()
    assert not (tmp_path / "again" / "models").exists()
    older = tmp_path / "older.csv"  # rows written before they named their runtime
    with older.open("w", newline="") as f:
        writer = csv.DictWriter(f, [k for k in rows[0] if k != "runtime"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert benchmark.rerender(older, tmp_path / "older", "older")["summary"] == summary
    with pytest.raises(InputError, match="no benchmark rows"):
        benchmark.rerender(tmp_path / "run" / "benchmark.md", tmp_path / "bad", "bad")


def test_the_land_mask_given_is_the_one_the_detections_leave_out(tmp_path, pool_model, monkeypatch):
    """With land drawn over the whole scene nothing is predicted, so nothing is slick; the page says which mask and commit ran."""
    monkeypatch.setattr(benchmark.bundled, "ARCTIC", ARCTIC[1:2])
    model, card = load_model(pool_model)
    with torch.no_grad():
        model.segmentation_head[0].bias += 10.0  # slick everywhere it looks
    everywhere = save_model(model, card, tmp_path / "everywhere.safetensors")
    with rasterio.open(ARCTIC[1].image) as ds:
        west, south, east, north = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    land = tmp_path / "land.gpkg"
    with fiona.open(land, "w", driver="GPKG", crs="EPSG:4326", schema={"geometry": "Polygon", "properties": {}}) as dst:
        dst.write({"geometry": mapping(box(west - 1, south - 1, east + 1, north + 1)), "properties": {}})
    found = {}
    for name, mask in (("coast", landmask_module.DEFAULT), ("all_land", str(land))):
        run_benchmark(tmp_path / name, lambda seed: {"model": benchmark.fixed(everywhere)}, [0], silent(), "test", land_mask=mask,
                      commit="abc1234")  # a tree without git (a GPU machine's copy) is told its commit
        found[name] = next(r for r in csv.DictReader((tmp_path / name / "benchmark.csv").open()) if r["candidate"] == "model")
    assert int(found["coast"]["tp"]) > 0 and int(found["coast"]["fp"]) > 0
    assert int(found["all_land"]["tp"]) == int(found["all_land"]["fp"]) == 0
    page = (tmp_path / "all_land" / "benchmark.md").read_text()
    assert f"at commit abc1234 on {describe()}. Land mask `{land}` instead of the default coastline." in page
    assert "the default land mask unless the line above names another" in page  # the page's own account never contradicts it
    assert "Land mask" not in (tmp_path / "coast" / "benchmark.md").read_text()


def test_two_runs_of_one_candidate_keep_their_fold_checkpoints_apart(tmp_path):
    """A run stopped mid-fold resumes from its own checkpoint, never from another run's training of the same fold."""
    first = benchmark.fold_checkpoint(tmp_path / "run_a" / "models" / "real_texture_without_sample_0.safetensors")
    assert first == benchmark.fold_checkpoint(tmp_path / "run_a" / "models" / "real_texture_without_sample_0.safetensors")
    assert first != benchmark.fold_checkpoint(tmp_path / "run_b" / "models" / "real_texture_without_sample_0.safetensors")
    assert first.parent == benchmark.CHECKPOINTS and first.name.startswith("benchmark-real_texture_without_sample_0-")


def test_each_variant_of_the_bundled_recipe_changes_its_one_thing_and_keeps_plain_bce(tmp_path, monkeypatch):
    """512-px tiles, the composite-heavy and the labelled-heavy mix, the encoder kept, the last epoch kept, the batch-norm
    statistics kept: each trains at cap 1 with its own tile, mix, trained layers, epoch choice or statistics (the same
    pixels per step: a quarter of the tiles at 512 px) and is moved half way back to the synthetic model."""
    trained: dict[str, tuple] = {}
    moved: list[tuple[str, float]] = []
    monkeypatch.setattr(benchmark, "pretrain_real", lambda out, recipe, config, progress, card:
                        trained.setdefault(out.name, (recipe.tile, recipe.train_tiles, recipe.mix, config.batch_size, config.pos_weight_cap,
                                                      config.train_layers, config.keep_last, config.frozen_statistics)))
    monkeypatch.setattr(benchmark, "toward_init", lambda start, out, recipe, *args: moved.append((start.name, recipe.init_share)))
    every = candidates(parse_args(["experiment", "benchmark", "--device", "cpu"]), 0)
    variants = ("real_texture_bce1_512_init50", "real_texture_bce1_composite_init50", "real_texture_bce1_labelled_init50",
                "real_texture_bce1_decoder_init50", "real_texture_bce1_last_init50", "real_texture_bce1_frozenbn_init50")
    for name in ("real_texture_bce1_init50", *variants):
        every[name](ARCTIC[1:], tmp_path / f"{name}_without_sample_0.safetensors", silent())
    base = trained["real_texture_bce1_without_sample_0.safetensors"]
    assert trained["real_texture_bce1_512_without_sample_0.safetensors"] == (512, base[1] // 4, base[2], base[3] // 4, 1.0, "all", False, False)
    assert trained["real_texture_bce1_composite_without_sample_0.safetensors"] == (base[0], base[1], benchmark.COMPOSITE_MIX, base[3], 1.0, "all", False, False)
    assert trained["real_texture_bce1_labelled_without_sample_0.safetensors"] == (base[0], base[1], benchmark.LABELLED_MIX, base[3], 1.0, "all", False, False)
    assert trained["real_texture_bce1_decoder_without_sample_0.safetensors"] == (*base[:5], "decoder", False, False)
    assert trained["real_texture_bce1_last_without_sample_0.safetensors"] == (*base[:6], True, False)
    assert trained["real_texture_bce1_frozenbn_without_sample_0.safetensors"] == (*base[:7], True)
    assert base[4:] == (1.0, "all", False, False) and base[2] not in (benchmark.COMPOSITE_MIX, benchmark.LABELLED_MIX)
    assert [share for _, share in moved] == [0.5] * 7 and len({start for start, _ in moved}) == 7


def test_the_taught_candidate_learns_from_the_fold_s_resnet50_pairing_made_before_it(tmp_path, monkeypatch):
    """The fold's pairing (its bundled-recipe U-Net beside the synthetic ResNet-50) is made where the run has none, and the
    taught candidate's U-Net learns by the bundled recipe with that file as its teacher; the recipe's own U-Net has none."""
    trained: dict = {}

    def pretrained(out, recipe, config, progress, card):
        trained[out.name] = (recipe, config.pos_weight_cap)
        out.touch()

    def paired(members, out, *args):
        made.append((out.name, [m.name for m in members]))
        out.touch()

    made: list = []
    monkeypatch.setattr(benchmark, "pretrain_real", pretrained)
    monkeypatch.setattr(benchmark, "toward_init", lambda start, out, recipe, *args: out.touch())
    monkeypatch.setattr(benchmark, "other_synthetic", lambda key, device: lambda folder, progress: folder / f"synthetic_{key}.safetensors")
    monkeypatch.setattr(benchmark, "ensemble_models", paired)
    every = candidates(parse_args(["experiment", "benchmark", "--device", "cpu"]), 0)
    every["real_texture_bce1_kdsynthr50_init50"](ARCTIC[1:], tmp_path / "real_texture_bce1_kdsynthr50_init50_without_sample_0.safetensors", silent())
    pairing = tmp_path / "real_texture_bce1_init50_with_synthr50_without_sample_0.safetensors"
    assert made == [(pairing.name, ["real_texture_bce1_init50_without_sample_0.safetensors", "synthetic_r50.safetensors"])]
    taught, cap = trained["real_texture_bce1_kdsynthr50_without_sample_0.safetensors"]
    own, own_cap = trained["real_texture_bce1_without_sample_0.safetensors"]
    assert taught.teacher == pairing and own.teacher is None and cap == own_cap == 1.0
    assert taught.scenes == own.scenes == tuple(s.name for s in ARCTIC[1:])
