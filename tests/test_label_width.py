"""The label-width bound measures labels and masks by their width and finds the widening that matches a scene's labels."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy.ndimage import binary_erosion

from engine.data.bundled import ARCTIC
from engine.jobs.evaluate import read_label_mask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from label_width import mean_width, widths  # noqa: E402


def test_mean_width_is_a_strand_s_width_whatever_its_length():
    for width in (3, 6, 10):
        for length in (100, 300):
            strand = np.zeros((40, 400), bool)
            strand[10 : 10 + width, 50 : 50 + length] = True
            assert mean_width(strand) == pytest.approx(width, rel=0.12)


def test_a_mask_thinner_than_its_labels_scores_best_once_widened_back(tmp_path):
    scene = ARCTIC[3]  # sample_123: its labelled strands are several pixels wide
    label, transform, crs = read_label_mask(scene.labels)
    thinned = binary_erosion(label, iterations=2)
    (tmp_path / "detections").mkdir()
    profile = {"driver": "GTiff", "height": label.shape[0], "width": label.shape[1], "count": 1, "dtype": "uint8",
               "crs": crs, "transform": transform, "nodata": 255}
    with rasterio.open(tmp_path / "detections" / f"{scene.name}_thin_mask.tif", "w", **profile) as dst:
        dst.write(thinned.astype(np.uint8), 1)
    with open(tmp_path / "benchmark.csv", "w", newline="") as rows:
        writer = csv.DictWriter(rows, ["scene", "candidate", "threshold"])
        writer.writeheader()
        writer.writerow({"scene": scene.name, "candidate": "thin", "threshold": 0.5})
    (found,) = widths(tmp_path, "thin")
    assert found["mask_width"] < found["label_width"] - 2
    assert found["dice"] < 0.9 and found["best_dice"] > found["dice"] + 0.05
    assert 1 <= found["best_widening"] <= 3
