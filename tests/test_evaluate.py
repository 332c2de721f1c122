"""Slick Dice: the paper's published numbers on its own data, and hand-counted cases on unlike grids."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from engine.errors import InputError
from engine.jobs.evaluate import add_cli, align_to_grid, dice_from_counts, read_label_mask, slick_dice
from engine.progress import silent

SAMPLES = Path(__file__).resolve().parents[1] / "resources" / "samples" / "arctic_s1"
UTM36 = CRS.from_epsg(32636)
LABEL_TRANSFORM = Affine(25.0, 0.0, 1000.0, 0.0, -25.0, 2000.0)  # 8x8 pixels: x 1000..1200, y 1800..2000


def write_raster(
    path: Path, array: np.ndarray, transform: Affine | None, crs: CRS | None, nodata: float | None = None
) -> Path:
    profile = dict(driver="GTiff", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype)
    if transform is not None:
        profile["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", crs=crs, nodata=nodata, **profile) as dataset:
            dataset.write(array, 1)
    return path


@pytest.mark.parametrize(
    "sample, prediction, published",
    [
        ("sample_1", "pred_base", 0.578),
        ("sample_1", "pred_tl", 0.607),
        ("sample_2", "pred_base", 0.447),
        ("sample_2", "pred_tl", 0.594),
        ("sample_123", "pred_base", 0.637),
        ("sample_123", "pred_tl", 0.793),
    ],
)
def test_reproduces_published_dice(sample: str, prediction: str, published: float) -> None:
    folder = SAMPLES / sample
    result = slick_dice(folder / f"{prediction}.tif", folder / "labels_mosaic.png")
    assert result.dice == pytest.approx(published, abs=0.005)
    assert result.tp + result.fp == result.predicted_pixels
    assert result.tp + result.fn == result.label_pixels
    assert result.grid.endswith("@ 25.0 m EPSG:32636")


def test_label_png_with_world_file_and_aux_xml() -> None:
    mask, transform, crs = read_label_mask(SAMPLES / "sample_123" / "labels_mosaic.png")
    assert mask.dtype == bool and mask.shape == (768, 1024)
    assert crs == UTM36
    assert transform.a == pytest.approx(25.0) and transform.c == pytest.approx(441836.42, abs=0.01)
    assert mask.sum() == 9101


def hand_made_case(tmp_path: Path, prediction_crs: CRS | None) -> tuple[Path, Path]:
    """Label at 25 m (8x8); prediction at 50 m (4x4) whose origin is 2 label pixels right and 2 up.

    Prediction pixel (r, c) covers label rows 2r-2, 2r-1 and columns 2c+2, 2c+3, so prediction row 0
    and column 3 lie outside the label, and label rows 6-7 and columns 0-1 are not covered.
    """
    label = np.zeros((8, 8), np.uint8)
    label[0, 2] = label[0, 3] = label[1, 2] = 1  # inside prediction pixel (1, 0): 3 TP, 1 FP
    label[2, 4] = 1  # inside prediction pixel (2, 1): 1 TP, 3 FP
    label[7, 0] = 1  # not covered by the prediction: FN
    label[5, 7] = 1  # covered by prediction pixel (3, 2), which is water: FN
    prediction = np.zeros((4, 4), np.uint8)
    prediction[1, 0] = prediction[2, 1] = 255
    prediction[0, 0] = prediction[3, 3] = 255  # outside the label grid: must not count
    prediction_transform = Affine(50.0, 0.0, 1050.0, 0.0, -50.0, 2050.0)
    return (
        write_raster(tmp_path / "pred.tif", prediction, prediction_transform, prediction_crs),
        write_raster(tmp_path / "label.tif", label, LABEL_TRANSFORM, UTM36),
    )


def test_exact_dice_on_different_grids(tmp_path: Path) -> None:
    prediction, label = hand_made_case(tmp_path, UTM36)
    result = slick_dice(prediction, label)
    assert (result.tp, result.fp, result.fn) == (4, 4, 2)
    assert (result.label_pixels, result.predicted_pixels) == (6, 8)
    assert result.dice == pytest.approx(8 / 14)
    assert result.grid == "8x8 @ 25.0 m EPSG:32636"


def test_align_to_grid_reads_a_file_and_fills_what_it_does_not_cover(tmp_path: Path) -> None:
    prediction, _ = hand_made_case(tmp_path, UTM36)
    aligned = align_to_grid(prediction, LABEL_TRANSFORM, UTM36, (8, 8), fill=7)
    expected = np.full((8, 8), 7, np.uint8)
    expected[:6, 2:] = 0
    expected[0:2, 2:4] = expected[2:4, 4:6] = 255
    np.testing.assert_array_equal(aligned, expected)


def test_prediction_without_crs_takes_the_labels_with_a_warning(tmp_path: Path) -> None:
    prediction, label = hand_made_case(tmp_path, None)
    with pytest.warns(UserWarning, match="no CRS; assuming the label's"):
        result = slick_dice(prediction, label)
    assert (result.tp, result.fp, result.fn) == (4, 4, 2)


def test_float_probabilities_use_the_threshold(tmp_path: Path) -> None:
    label = np.zeros((8, 8), np.uint8)
    label[0, :4] = 1
    probability = np.zeros((8, 8), np.float32)
    probability[0, :2] = 0.9
    probability[0, 2:6] = 0.4
    probability[1, 0] = np.nan
    pred_path = write_raster(tmp_path / "prob.tif", probability, LABEL_TRANSFORM, UTM36)
    label_path = write_raster(tmp_path / "label.tif", label, LABEL_TRANSFORM, UTM36)
    strict = slick_dice(pred_path, label_path, threshold=0.5)
    assert (strict.tp, strict.fp, strict.fn) == (2, 0, 2)
    loose = slick_dice(pred_path, label_path, threshold=0.3)
    assert (loose.tp, loose.fp, loose.fn) == (4, 2, 0)


def test_empty_label_and_empty_prediction_is_perfect(tmp_path: Path) -> None:
    empty = np.zeros((8, 8), np.uint8)
    pred_path = write_raster(tmp_path / "pred.tif", empty, LABEL_TRANSFORM, UTM36, nodata=0)
    label_path = write_raster(tmp_path / "label.tif", empty, LABEL_TRANSFORM, UTM36)
    result = slick_dice(pred_path, label_path)
    assert result.dice == 1.0
    assert (result.tp, result.fp, result.fn, result.label_pixels, result.predicted_pixels) == (0, 0, 0, 0, 0)


def test_dice_from_counts() -> None:
    assert dice_from_counts(4, 4, 2) == pytest.approx(8 / 14)
    assert dice_from_counts(0, 0, 0) == 1.0
    assert dice_from_counts(0, 3, 0) == 0.0


def test_no_overlap_names_both_extents(tmp_path: Path) -> None:
    far = Affine(25.0, 0.0, 500000.0, 0.0, -25.0, 2000.0)
    pred_path = write_raster(tmp_path / "pred.tif", np.ones((8, 8), np.uint8), far, UTM36)
    label_path = write_raster(tmp_path / "label.tif", np.ones((8, 8), np.uint8), LABEL_TRANSFORM, UTM36)
    with pytest.raises(InputError, match="does not overlap") as error:
        slick_dice(pred_path, label_path)
    message = str(error.value)
    assert "x 500000..500200" in message and "x 1000..1200" in message
    assert message.count("EPSG:32636") == 2


@pytest.mark.parametrize("missing", ["prediction", "label"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    existing = write_raster(tmp_path / "x.tif", np.ones((8, 8), np.uint8), LABEL_TRANSFORM, UTM36)
    paths = {"prediction": existing, "label": existing, missing: tmp_path / "nowhere.tif"}
    with pytest.raises(InputError, match=f"The {missing} file .*nowhere.tif does not exist"):
        slick_dice(paths["prediction"], paths["label"])


def test_unreadable_file(tmp_path: Path) -> None:
    label = write_raster(tmp_path / "label.tif", np.ones((8, 8), np.uint8), LABEL_TRANSFORM, UTM36)
    (tmp_path / "pred.tif").write_text("not a raster")
    with pytest.raises(InputError, match="cannot be read as a raster"):
        slick_dice(tmp_path / "pred.tif", label)


def test_prediction_without_any_georeference(tmp_path: Path) -> None:
    label = write_raster(tmp_path / "label.tif", np.ones((8, 8), np.uint8), LABEL_TRANSFORM, UTM36)
    pred = write_raster(tmp_path / "pred.tif", np.ones((8, 8), np.uint8), None, None)
    with pytest.raises(InputError, match="no georeference") as error:
        slick_dice(pred, label)
    assert "world file" in str(error.value) and "CRS" in str(error.value)


def test_cli_returns_the_counts() -> None:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    folder = SAMPLES / "sample_2"
    args = parser.parse_args(
        ["evaluate", str(folder / "pred_tl.tif"), "--labels", str(folder / "labels_mosaic.png")]
    )
    result = args.func(args, silent())
    assert set(result) == {"dice", "tp", "fp", "fn", "label_pixels", "predicted_pixels", "grid"}
    assert result["dice"] == pytest.approx(0.594, abs=0.005)
