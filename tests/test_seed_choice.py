"""Choosing a seed on the validation bands: per scene the seed whose card scored best there, ties to the lowest."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from seed_choice import choice, page  # noqa: E402

FIELDS = ["scene", "candidate", "seed", "dice", "tp", "fp", "fn", "false_km2_per_1000km2", "clear_sea_km2", "model"]


def test_each_scene_keeps_the_seed_its_bands_scored_best_and_the_page_compares_it_with_the_mean(tmp_path, model_factory):
    bands = {("a", 0): 0.5, ("a", 1): 0.7, ("b", 0): 0.6, ("b", 1): 0.6}  # scene b: a tie, to the lower seed
    held = {("a", 0): (0.8, 8, 2, 2), ("a", 1): (0.2, 2, 8, 8), ("b", 0): (0.6, 6, 4, 4), ("b", 1): (0.4, 4, 6, 6)}
    (tmp_path / "models").mkdir()
    rows = []
    for (scene, seed), validation in bands.items():
        name = f"m_{scene}_{seed}.safetensors"
        model_factory(tmp_path / "models" / name, tile_size=128, metrics={"validation_dice": validation})
        dice, tp, fp, fn = held[(scene, seed)]
        rows.append({"scene": scene, "candidate": "c", "seed": seed, "dice": dice, "tp": tp, "fp": fp, "fn": fn,
                     "false_km2_per_1000km2": 1.0 + seed, "clear_sea_km2": 100.0, "model": name})
    rows.append({**rows[0], "candidate": "other", "seed": 5})  # another candidate's row is never read
    with open(tmp_path / "benchmark.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    seeds, chosen = choice(tmp_path, "c")
    assert sorted(seeds) == ["a", "b"] and [(r["scene"], r["seed"]) for r in chosen] == [("a", "1"), ("b", "0")]
    text = page(tmp_path, "c", "python tools/seed_choice.py")
    assert "| the seed the bands choose, per fold | 0.400 | 0.400 | 1.50 |" in text  # (0.2 + 0.6) / 2; 2*8 / (2*8+12)
    assert "| mean over the 2 seeds | 0.500 | 0.500 | 1.50 |" in text
    assert pytest.approx(0.4) == sum(float(r["dice"]) for r in chosen) / 2
