"""The slick filter's measurement: each detected slick described, and the false ones learnt from other scenes dropped."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy.ndimage import distance_transform_edt

from engine.data.bundled import ARCTIC
from engine.jobs.evaluate import align_to_grid, read_label_mask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from slick_filter import _weights, filtered, slicks  # noqa: E402


def test_a_dark_strand_is_described_by_its_darkness_width_and_probability():
    rng = np.random.default_rng(0)
    image = rng.normal(120, 10, (80, 200)).clip(1, 255).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[30:35, 20:180] = True
    image[mask] -= 40
    probability = np.where(mask, 0.8, 0.1).astype(np.float32)
    (found,) = slicks(mask, probability, image, label=mask)
    assert found["true"] and found["area"] == 5 * 160
    assert found["contrast_sd"] == pytest.approx(4.0, rel=0.2)  # 40 levels darker than a sea whose spread is 10
    assert found["width_px"] == pytest.approx(5, rel=0.15)
    assert found["mean_prob"] == pytest.approx(0.8) and found["max_prob"] == pytest.approx(0.8)


def _write(path: Path, values: np.ndarray, transform, crs, nodata) -> None:
    with rasterio.open(path, "w", driver="GTiff", height=values.shape[0], width=values.shape[1], count=1,
                       dtype=values.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(values, 1)


@pytest.mark.parametrize(("stage", "seed"), [("regression-by-area", 0), ("regression-by-scene", 1), ("mean-cut", 0)])
def test_false_slicks_unlike_the_true_ones_of_other_scenes_are_dropped(tmp_path, stage, seed):
    """Every scene's 'detection' is its labels (confident, dark) plus two squares of open sea far from them (hesitant,
    no darker than the sea): learnt on the other scenes, the squares go and the labels stay."""
    (tmp_path / "detections").mkdir()
    rows = []
    for scene in ARCTIC:
        label, transform, crs = read_label_mask(scene.labels)
        label = label > 0
        with rasterio.open(scene.image) as ds:
            data = align_to_grid((ds.read(1) > 0).astype(np.uint8), transform, crs, label.shape,
                                 src_transform=ds.transform, src_crs=ds.crs) > 0
        inside = distance_transform_edt(np.pad(data, 1))[1:-1, 1:-1] > 20  # away from no data and the tile's edges
        far = distance_transform_edt(~label) * inside
        mask = label.copy()
        for _ in range(2):
            r, c = np.unravel_index(np.argmax(far), far.shape)
            mask[r - 6 : r + 6, c - 6 : c + 6] = True
            far[max(0, r - 60) : r + 60, max(0, c - 60) : c + 60] = 0
        probability = np.where(label, 0.95, np.where(mask, 0.55, 0.05)).astype(np.float32)
        named = f"{scene.name}_c{'_seed1' if seed else ''}"  # the benchmark's names for a seed's detections
        _write(tmp_path / "detections" / f"{named}_mask.tif", mask.astype(np.uint8), transform, crs, 255)
        _write(tmp_path / "detections" / f"{named}_probability.tif", probability, transform, crs, None)
        rows.append({"scene": scene.name, "candidate": "c", "seed": seed, "sha256": "0" * 16})
    with open(tmp_path / "benchmark.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, ["scene", "candidate", "seed", "sha256"])
        writer.writeheader()
        writer.writerows(rows)
    found = filtered(tmp_path, "c", stage)
    assert [r["scene"] for r in found] == [scene.name for scene in ARCTIC]
    for r in found:
        assert r["false_slicks"] == 2 and r["dropped"] == 2 and r["dropped_true"] == 0
        assert r["as_detected"].dice < 1 and r["kept"].dice == r["only_true"].dice == pytest.approx(1.0)
        assert r["as_detected"].false_km2_per_1000 > 0 and r["kept"].false_km2_per_1000 == 0
        if stage == "mean-cut":  # 0.60 to 0.75 drop the squares alike on the other scenes: the lowest is taken
            assert r["how"] == "mean probability >= 0.60"


def test_weighed_by_scene_every_scene_counts_alike_whatever_its_number_of_slicks():
    many = [{"area": 100}] * 40
    few = [{"area": 50}, {"area": 150}]
    by_area, by_scene = _weights([many, few], "area"), _weights([many, few], "scene")
    assert by_area[:40].sum() == 20 * by_area[40:].sum()
    assert by_scene[:40].sum() == pytest.approx(by_scene[40:].sum()) and by_scene[41] == 3 * by_scene[40]
