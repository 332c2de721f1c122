"""Two within-scene fine-tunings of the same half averaged into one model (a soup of two seeds): a probe.

``.venv/bin/python tools/within_scene_soup.py RUN_A RUN_B --out DIR [--csv FILE]``

``RUN_A`` and ``RUN_B`` are ``python -m engine experiment within-scene`` outputs with the same parents and options but
another ``--seed``. Where both fine-tuned a half, their saved weights are averaged (each already half the parent's, so
the soup is the parent's half plus a quarter of each run's training) under RUN_A's card, detected on the tile by
PyTorch as the experiment detects, and scored on the held half. Where the label check kept the parent's weights in a
run, that run brings the parent's weights to the soup. It measured, from runs already made, what fine-tuning now does
itself (``finetune --average-seeds 2``, the same average of runs each checked on its own).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import run_page  # noqa: F401  beside this file: puts the project on the path

from engine.atomic import write_csv  # noqa: E402
from engine.experiments.within_scene import Scored, WithinSceneOptions, labelled_scenes, split_scene  # noqa: E402
from engine.jobs.finetune import FinetuneOptions  # noqa: E402
from engine.models.registry import load_model, read_card, save_model  # noqa: E402
from engine.progress import silent  # noqa: E402


def rows_of(run: Path) -> dict[tuple[str, str], dict]:
    with open(run / "within_scene.csv", newline="") as rows:
        return {(r["scene"], r["labelled_half"]): r for r in csv.DictReader(rows)}


def soup(a: Path, b: Path, out: Path) -> None:
    """The mean of two model files' weights, under ``a``'s card."""
    model, card = load_model(a)
    other, _ = load_model(b)
    theirs = other.state_dict()
    model.load_state_dict({k: (v + theirs[k]) / 2 if v.is_floating_point() else v for k, v in model.state_dict().items()})
    save_model(model, card, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--csv", type=Path)
    args = p.parse_args()
    first, second = args.runs
    options = json.loads((first / "within_scene.json").read_text())["options"]
    a_rows, b_rows = rows_of(first), rows_of(second)
    tiles = labelled_scenes(tuple(options["scenes"]), args.out / "scenes")
    found = []
    for (scene, side), row in a_rows.items():
        a, b = first / "models" / f"{scene}_{side}.safetensors", second / "models" / f"{scene}_{side}.safetensors"
        if not (a.is_file() and b.is_file()):
            continue  # not fine-tuned (too few labelled slick pixels): the parent stays, as in both runs
        souped = args.out / "models" / f"{scene}_{side}.safetensors"
        soup(a, b, souped)
        split = split_scene(tiles[scene], side, read_card(a), int(options["recipe"]["tile"]))
        detection = WithinSceneOptions(threshold=options["threshold"], recipe=FinetuneOptions(device=options["recipe"]["device"]))
        scored = Scored(souped, detection, args.out / "detections",
                         f"soup_{scene}_{side}", silent(), tiles, scenes=[scene])
        found.append({"scene": scene, "labelled_half": side, "dice_held_parent": float(row["dice_held_parent"]),
                      "dice_held_a": float(row["dice_held_finetuned"]), "dice_held_b": float(b_rows[(scene, side)]["dice_held_finetuned"]),
                      "dice_held_soup": round(scored.held(split).dice, 4),
                      "a_kept_parent": row["kept_parent_weights"], "b_kept_parent": b_rows[(scene, side)]["kept_parent_weights"]})
        print(found[-1])
    if args.csv:
        write_csv(args.csv, found)


if __name__ == "__main__":
    main()
