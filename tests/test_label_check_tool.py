"""The label check's side-by-side table: held halves' means and the halves worse, with and without the check."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from label_check import main  # noqa: E402


def _row(scene: str, half: str, parent: float, tuned: float, labels: tuple = ("", ""), kept: bool = False) -> dict:
    """A row as ``experiment within-scene`` writes it; a refused half has no labels' Dice ("")."""
    return {"scene": scene, "labelled_half": half, "dice_held_parent": parent, "dice_held_finetuned": tuned,
            "held_change": round(tuned - parent, 4), "kept_parent_weights": kept,
            "finetune_labels_dice_before": labels[0], "finetune_labels_dice_after": labels[1]}


def _run(folder: Path, seed: int, rows: list[dict]) -> Path:
    folder.mkdir()
    meta = {"command": f"python -m engine experiment within-scene --seed {seed}", "commit": "0123456789abcdef",
            "options": {"recipe": {"seed": seed}}, "rows": rows}
    (folder / "within_scene.json").write_text(json.dumps(meta))
    return folder


def test_each_pair_is_one_row_and_the_csv_keeps_every_row_with_its_arm(tmp_path, capsys):
    refused = _row("sample_2", "left", 0.6, 0.6, kept=True)
    on = _run(tmp_path / "on", 4, [_row("sample_1", "left", 0.5, 0.5, (0.43, 0.42), kept=True), refused,
                                    _row("sample_123", "right", 0.8, 0.6, (0.1, 0.5))])
    off = _run(tmp_path / "off", 4, [_row("sample_1", "left", 0.5, 0.3), refused, _row("sample_123", "right", 0.8, 0.6)])
    table = tmp_path / "rows.csv"
    main(["--pair", str(on), str(off), "--csv", str(table)])

    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3  # header, rule, one row for the one pair
    cells = [c.strip() for c in printed[2].strip("|").split("|")]
    assert cells[:3] == ["4", "`0123456`", "0.633"]  # the parent's held mean: (0.5 + 0.6 + 0.8) / 3
    assert cells[3] == "**0.500**" and cells[4].startswith("2 (sample_1 left labelled 0.500 → 0.300; sample_123 right")
    assert cells[5] == "**0.567**" and cells[6] == "1 (sample_123 right labelled 0.800 → 0.600)"
    assert cells[7] == "sample_1 left labelled (0.430 → 0.420 on its labels)"  # the refused half is not the check's doing
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["label_check"], r["scene"]) for r in rows] == [("with", "sample_1"), ("with", "sample_2"), ("with", "sample_123"),
                                                              ("without", "sample_1"), ("without", "sample_2"), ("without", "sample_123")]
    assert {r["seed"] for r in rows} == {"4"} and rows[0]["run"].endswith("--seed 4")
