"""The dark-spot baseline: what it flags, that fitting helps, that it is a model like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from scipy import ndimage

from engine.cli.main import main
from engine.data.bundled import LabelledScene
from engine.errors import InputError, ModelError
from engine.jobs.detect import DetectOptions, detect
from engine.jobs.evaluate import dice_from_counts, slick_dice
from engine.jobs.finetune import finetune
from engine.models.darkspot import DEFAULT_PARAMETERS, DarkSpot, darkspot_card, fit_darkspot
from engine.models.registry import BUNDLED_DIR, list_models, load_model, read_card, save_model
from engine.progress import silent
from engine.scenes.normalise import Stretch

SIZE = 256


def speckle_db(seed: int, size: int = SIZE) -> np.ndarray:
    """Four-look speckle correlated over about 3 pixels, in dB around -20 dB, as real EW sea."""
    rng = np.random.default_rng(seed)
    intensity = ndimage.uniform_filter(rng.gamma(4.0, 0.25, (size, size)), 3)
    return (-20.0 + 10 * np.log10(intensity)).astype(np.float32)


def strand(seed: int, size: int = SIZE, width: int = 7) -> np.ndarray:
    """A long curved strand, as a seep slick drifting from its source."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(15, 30)
    centre = size / 2 + amplitude * np.sin(cols / 40 + phase)
    return (np.abs(rows - centre) < width / 2) & (cols > size // 8) & (cols < size - size // 8)


def stretched(db: np.ndarray) -> torch.Tensor:
    """Model input as detection feeds it: eq. 1 stretch, scaled to 0..1."""
    values = Stretch.fit("float32_db", [db]).apply(db)
    return torch.from_numpy(values / 255.0).float()[None, None]


def write_pair(folder: Path, seed: int, drop_db: float = 4.0) -> LabelledScene:
    """A georeferenced dB scene at 25 m with a dark strand, and its label raster on the same grid."""
    slick = strand(seed)
    db = speckle_db(seed) - drop_db * slick
    transform = from_origin(650000.0 + 10000 * seed, 8360000.0, 25.0, 25.0)
    profile = dict(driver="GTiff", height=SIZE, width=SIZE, count=1, crs="EPSG:32636", transform=transform)
    image, labels = folder / f"scene_{seed}.tif", folder / f"labels_{seed}.tif"
    with rasterio.open(image, "w", dtype="float32", **profile) as ds:
        ds.write(db, 1)
    with rasterio.open(labels, "w", dtype="uint8", **profile) as ds:
        ds.write(slick.astype(np.uint8), 1)
    return LabelledScene(f"scene_{seed}", image, labels, "synthetic")


def pooled_detect_dice(model: Path, scenes: list[LabelledScene], out: Path) -> float:
    tp = fp = fn = 0
    for scene in scenes:
        result = detect(scene.image, out, DetectOptions(model=str(model), prefix=f"{scene.name}_{model.stem}", min_area_km2=0.0))
        dice = slick_dice(result.probability, scene.labels, threshold=result.threshold)
        tp, fp, fn = tp + dice.tp, fp + dice.fp, fn + dice.fn
    return dice_from_counts(tp, fp, fn)


def test_flags_a_dark_strand_in_speckle_but_not_flat_speckle():
    module = DarkSpot(window=31, smoothing=3, opening=3, k=1.2).eval()
    slick = strand(1)
    with torch.inference_mode():
        on_strand = torch.sigmoid(module(stretched(speckle_db(1) - 5.0 * slick)))[0, 0].numpy() > 0.5
        on_sea = torch.sigmoid(module(stretched(speckle_db(2))))[0, 0].numpy() > 0.5
    assert on_strand[slick].mean() > 0.6
    assert on_strand[~ndimage.binary_dilation(slick, iterations=4)].mean() < 0.01
    assert on_sea.mean() < 0.01


def test_darker_means_more_likely_slick():
    module = DarkSpot(window=21, smoothing=1, opening=1, k=1.0).eval()
    tile = torch.full((1, 1, 64, 64), 0.5) + 0.05 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    logits = []
    for value in (0.45, 0.35, 0.2):
        x = tile.clone()
        x[..., 32, 32] = value
        with torch.inference_mode():
            logits.append(float(module(x)[0, 0, 32, 32]))
    assert logits[0] < logits[1] < logits[2]


def test_fitting_beats_default_parameters_and_equals_detection(tmp_path):
    scenes = [write_pair(tmp_path, seed) for seed in (3, 4)]
    fitted = fit_darkspot(scenes, tmp_path / "fitted.safetensors", silent())
    default = save_model(DarkSpot(**DEFAULT_PARAMETERS), darkspot_card(DEFAULT_PARAMETERS), tmp_path / "default.safetensors")
    card = read_card(fitted)
    assert card.provenance["fitted_on"] == ["scene_3", "scene_4"]
    fitted_dice = pooled_detect_dice(fitted, scenes, tmp_path / "out")
    assert fitted_dice == pytest.approx(card.metrics["train_dice_pooled"], abs=1e-4)  # the fit scores as detection does
    assert fitted_dice > pooled_detect_dice(default, scenes, tmp_path / "out") + 0.1


def test_model_file_round_trips_and_engine_detect_runs_with_it(tmp_path, sample_scene):
    path = fit_darkspot([write_pair(tmp_path, 5)], tmp_path / "model.safetensors", silent())
    model, card = load_model(path)
    assert isinstance(model, DarkSpot) and not list(model.parameters())
    assert {k: getattr(model, k) for k in ("window", "smoothing", "opening", "k")} == card.arch_kwargs
    assert main(["detect", str(sample_scene), "--out", str(tmp_path / "out"), "--model", str(path)]) == 0
    with rasterio.open(tmp_path / "out" / "raw_mosaic_probability.tif") as ds:
        probability = ds.read(1)
    assert np.isfinite(probability).all() and 0 < (probability > card.threshold).mean() < 0.2


def test_bundled_baseline_is_listed_with_the_scenes_it_was_fitted_on():
    listed = {card.name: (path, card) for path, card in list_models()}
    path, card = listed["Dark-spot baseline"]
    assert path == (BUNDLED_DIR / "darkspot_baseline_25m.safetensors").resolve()
    assert card.architecture == "darkspot"
    assert sorted(card.provenance["fitted_on"]) == ["sample_0", "sample_1", "sample_123", "sample_2", "sample_70"]


def test_fit_refuses_an_empty_training_list(tmp_path):
    with pytest.raises(InputError, match="No training scenes"):
        fit_darkspot([], tmp_path / "model.safetensors", silent())
    assert not (tmp_path / "model.safetensors").exists()


def test_fine_tuning_refuses_a_model_without_weights(tmp_path):
    with pytest.raises(ModelError, match="no weights to train"):
        finetune(BUNDLED_DIR / "darkspot_baseline_25m.safetensors", tmp_path / "labels.gpkg", tmp_path / "tuned.safetensors")


def test_exports_to_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    module = DarkSpot(window=21, smoothing=3, opening=3, k=1.0).eval()
    torch.onnx.export(module, (torch.rand(1, 1, 64, 64),), str(tmp_path / "darkspot.onnx"), dynamo=False)
    onnx.checker.check_model(onnx.load(str(tmp_path / "darkspot.onnx")))


def test_small_tiles_blend_without_seams(tmp_path, sample_scene):
    """256-pixel tiles with the default overlap give the map of one whole-scene tile, near enough that
    almost no pixel changes side of the threshold."""
    model = BUNDLED_DIR / "darkspot_baseline_25m.safetensors"
    maps = []
    for tile in (256, 768):
        result = detect(sample_scene, tmp_path, DetectOptions(model=str(model), tile=tile, prefix=f"tile{tile}", min_area_km2=0.0))
        with rasterio.open(result.probability) as ds:
            maps.append(ds.read(1) > result.threshold)
    tiled, whole = maps
    assert whole.any()
    assert (tiled != whole).mean() < 0.001


def test_the_baseline_is_mirror_symmetric_so_detection_does_not_average_its_mirrors(tmp_path):
    """Mirror averaging would cost the baseline four passes for the same answer: its windows are square and
    centred, so a mirrored tile gives the mirrored logits, and detection runs it once."""
    path = BUNDLED_DIR / "darkspot_baseline_25m.safetensors"
    model, card = load_model(path)
    x = stretched(speckle_db(3) - 4.0 * strand(3))
    with torch.no_grad():
        logits = model(x)
        for dims in ((-1,), (-2,), (-2, -1)):
            torch.testing.assert_close(model(x.flip(dims)).flip(dims), logits, atol=1e-4, rtol=0)
    assert card.mirror_symmetric and not read_card(BUNDLED_DIR / "slick_unet_r18_25m.safetensors").mirror_symmetric
    pair = write_pair(tmp_path, 3)
    result = detect(pair.image, tmp_path / "out", DetectOptions(model=str(path), land_mask="none"))
    assert result.mirrored is False
