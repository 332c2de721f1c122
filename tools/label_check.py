"""Within-scene runs with and without fine-tuning's check on the labelled tiles, side by side.

``.venv/bin/python tools/label_check.py --pair ON_DIR OFF_DIR [--pair ...] --csv docs/within_scene_label_check.csv``

Each pair is one ``python -m engine experiment within-scene`` command run twice, with ``--label-check`` and without,
same parents and seed: training draws the same numbers either way, so the two runs differ only on the halves where
the check handed back the parent's weights. Prints one markdown row per pair (held halves' mean and the
halves worse than the parent, with and without the check; where it kept the parent) and writes every row of every run, with its arm, to the CSV.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.atomic import write_text  # noqa: E402


def _run(folder: Path) -> tuple[dict, list[dict]]:
    result = json.loads((folder / "within_scene.json").read_text())
    return result, result["rows"]


def _half(row: dict) -> str:
    return f"{row['scene']} {row['labelled_half']} labelled"


def _worse(rows: list[dict]) -> str:
    worse = [f"{_half(r)} {r['dice_held_parent']:.3f} → {r['dice_held_finetuned']:.3f}" for r in rows if r["held_change"] < 0]
    return f"{len(worse)}" + (f" ({'; '.join(worse)})" if worse else "")


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def _line(on: tuple[dict, list[dict]], off: tuple[dict, list[dict]]) -> str:
    (meta, rows_on), (_, rows_off) = on, off
    kept = [_half(r) + f" ({r['finetune_labels_dice_before']:.3f} → {r['finetune_labels_dice_after']:.3f} on its labels)"
            for r in rows_on if r["finetune_labels_dice_before"] != "" and r["kept_parent_weights"]]
    return (f"| {meta['options']['recipe']['seed']} | `{meta['commit'][:7]}` | {_mean(rows_on, 'dice_held_parent'):.3f} | "
            f"**{_mean(rows_off, 'dice_held_finetuned'):.3f}** | {_worse(rows_off)} | **{_mean(rows_on, 'dice_held_finetuned'):.3f}** | "
            f"{_worse(rows_on)} | {'; '.join(kept) or 'none'} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", nargs=2, action="append", type=Path, required=True, metavar=("ON", "OFF"))
    parser.add_argument("--csv", type=Path, required=True)
    args = parser.parse_args(argv)
    print("| seed | commit | parent | without the check | worse | with the check | worse | parent kept by the check |")
    print("|---|---|---|---|---|---|---|---|")
    table = []
    for on_dir, off_dir in args.pair:
        on, off = _run(on_dir), _run(off_dir)
        print(_line(on, off))
        for arm, (meta, rows) in (("with", on), ("without", off)):
            table += [{"label_check": arm, "run": meta["command"], "commit": meta["commit"], "seed": meta["options"]["recipe"]["seed"], **r}
                      for r in rows]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in table for k in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    write_text(args.csv, out.getvalue())


if __name__ == "__main__":
    main()
