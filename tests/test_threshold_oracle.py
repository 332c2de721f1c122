"""The threshold oracle scores each held-out probability at its fold's threshold and at the best one for its labels."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from engine.data.bundled import ARCTIC
from engine.jobs.evaluate import read_label_mask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from threshold_oracle import oracle  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1])
def test_a_probability_right_only_below_its_fold_threshold_is_found_by_the_oracle_alone(tmp_path, seed):
    """On a later seed's rows too, read from the files the benchmark names for that seed."""
    scene = ARCTIC[1]
    label, transform, crs = read_label_mask(scene.labels)
    (tmp_path / "detections").mkdir()
    probability = np.where(label, 0.3, 0.05).astype(np.float32)  # every slick pixel, but under the fold's 0.5
    profile = {"driver": "GTiff", "height": label.shape[0], "width": label.shape[1], "count": 1, "dtype": "float32",
               "crs": crs, "transform": transform}
    with rasterio.open(tmp_path / "detections" / f"{scene.name}_calibrated{'_seed1' if seed else ''}_probability.tif", "w", **profile) as dst:
        dst.write(probability, 1)
    with open(tmp_path / "benchmark.csv", "w", newline="") as rows:
        writer = csv.DictWriter(rows, ["scene", "candidate", "seed", "threshold"])
        writer.writeheader()
        writer.writerow({"scene": scene.name, "candidate": "calibrated", "seed": seed, "threshold": 0.5})
        writer.writerow({"scene": scene.name, "candidate": "another", "seed": seed, "threshold": 0.5})
    (found,) = oracle(tmp_path, "calibrated")
    assert found["fold_dice"] == 0.0
    assert found["best_dice"] == pytest.approx(1.0) and 0.05 <= found["best_threshold"] < 0.3
