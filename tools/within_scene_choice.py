"""Chooses a within-scene fine-tuning recipe by leave one scene out, from within-scene runs, and writes the page.

``.venv/bin/python tools/within_scene_choice.py RUN_DIR [RUN_DIR ...] --markdown docs/within_scene_choice.md``

Every run is ``python -m engine experiment within-scene --parents DIR --sides left right ...`` over the same
leave-one-scene-out parents, so that every labelled half is scored by a parent that never saw its tile. The
candidates are: keep the parent; each run's recipe, as the mean over its seeds (runs that differ only in
``--seed``); and each recipe without validation tiles gated at ``GATES`` labelled slick pixels (below the gate
the parent stays). For each tile, the candidate with the largest mean change of held-half Dice over the other
tiles' halves is chosen (ties: the parent, then the higher gate) and scored on that tile's own two halves, which
its choice never saw. Nothing is trained here: the runs hold every figure, and the labelled halves' slick
pixels are counted from their label stores as fine-tuning counts them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.atomic import write_text  # noqa: E402
from engine.jobs.finetune_data import collect_tiles  # noqa: E402
from engine.jobs.labels import read_store  # noqa: E402
from engine.machine import commit_text  # noqa: E402
from engine.models.registry import read_card  # noqa: E402
from engine.progress import silent  # noqa: E402

GATES = (0, 1000, 2500, 4000)
"""Labelled slick pixels below which a recipe without validation keeps the parent: fixed before any run."""
RECIPE_KEYS = ("train_layers", "lr", "epochs", "val_fraction", "parent_weight", "tile", "parent_share")
RECIPE_DEFAULTS = {"parent_share": 0.0}
"""What a run made before a recipe key existed trained with."""

Half = tuple[str, str]


def recipe_name(recipe: dict, layers: str) -> str:
    """``layers``: what the runs trained (an older recipe left the choice to the device)."""
    if recipe["val_fraction"] == 0:
        share = recipe.get("parent_share", 0.0)
        return (f"{layers} layers, lr {recipe['lr']:g}, {recipe['epochs']} epochs, no validation"
                + (f", {share:g} parent in the weights" if share else ""))
    return (f"validated: {layers} layers, lr {'range test' if recipe['lr'] is None else format(recipe['lr'], 'g')}, "
            f"at most {recipe['epochs']} epochs, validation {recipe['val_fraction']:g}")


def load(runs: list[Path]) -> tuple[dict, dict, dict, list[dict]]:
    """(held-half Dice per recipe and half over seeds, the parents' held-half Dice, labelled slick pixels, runs)."""
    results: dict[tuple, dict[Half, list[float]]] = {}
    parent: dict[Half, float] = {}
    pixels: dict[Half, int] = {}
    loaded = []
    parents = None
    for run in runs:
        data = json.loads((run / "within_scene.json").read_text())
        if parents is None:
            parents = data["parents"]
        if data.get("parents") != parents:
            raise SystemExit(f"{run} was made with other parents than {runs[0]}: its figures cannot be compared.")
        recipe = data["options"]["recipe"]
        key = tuple(recipe.get(k, RECIPE_DEFAULTS.get(k)) for k in RECIPE_KEYS)
        layers = next((r["finetune_train_layers"] for r in data["rows"] if r["finetune_train_layers"]), recipe["train_layers"])
        loaded.append({**data, "dir": str(run), "key": key, "name": recipe_name(recipe, layers)})
        for row in data["rows"]:
            half = (row["scene"], row["labelled_half"])
            if abs(parent.setdefault(half, row["dice_held_parent"]) - row["dice_held_parent"]) > 1e-4:
                raise SystemExit(f"{run}: the parent's Dice on {half} differs from another run's.")
            results.setdefault(key, {}).setdefault(half, []).append(row["dice_held_finetuned"])
            if half not in pixels:
                card = read_card(parents[row["scene"]]["path"])
                tiles = collect_tiles(read_store(run / "labels" / f"{row['scene']}_{row['labelled_half']}.gpkg"), card, recipe["tile"], silent())
                pixels[half] = sum(t.slick_pixels for t in tiles)
    return {k: {h: float(np.mean(v)) for h, v in by.items()} for k, by in results.items()}, parent, pixels, loaded


def candidates(results: dict, runs: list[dict]) -> list[tuple[str, tuple | None, int]]:
    names = {r["key"]: r["name"] for r in runs}
    found: list[tuple[str, tuple | None, int]] = [("keep the parent", None, 0)]
    for key in results:
        gates = GATES if key[RECIPE_KEYS.index("val_fraction")] == 0 else (0,)
        found += [(names[key] + (f", at least {g:,} labelled slick pixels" if g else ""), key, g) for g in gates]
    return found


def value(candidate: tuple, half: Half, results: dict, parent: dict, pixels: dict) -> float:
    _, key, gate = candidate
    return parent[half] if key is None or pixels[half] < gate else results[key][half]


def choose(results: dict, parent: dict, pixels: dict, runs: list[dict]) -> dict[str, tuple]:
    """Per tile, the candidate best on the other tiles' halves."""
    every = candidates(results, runs)
    chosen = {}
    for scene in sorted({h[0] for h in parent}):
        others = [h for h in parent if h[0] != scene]

        def merit(c: tuple) -> tuple:
            return (round(sum(value(c, h, results, parent, pixels) - parent[h] for h in others), 6), c[1] is None, c[2])

        chosen[scene] = max(every, key=merit)
    return chosen


def page(results: dict, parent: dict, pixels: dict, runs: list[dict], chosen: dict, command: str) -> str:
    halves = sorted(parent, key=lambda h: (h[0], h[1]))
    keys = list(results)
    names = {r["key"]: r["name"] for r in runs}
    seeds = {k: sorted({r["options"]["recipe"]["seed"] for r in runs if r["key"] == k}) for k in keys}
    lines = ["# Within-scene fine-tuning: a recipe chosen by leave one scene out", "",
             f"Made by `{command}` at commit `{commit_text()}`, from these runs (each names its own commit):", ""]
    lines += [f"- `{r['command']}` at `{r['commit'][:7]}` ({r['machine']['cpu']}, {r['seconds']:.0f} s)" for r in runs]
    parents = runs[0]["parents"]
    lines += ["", "Parents (each tile's never saw it: the bundled model's recipe trained on the other four tiles; how they were made: "
              "within_scene.md): "
              + ", ".join(f"{s} `{p['sha256'][:16]}`" for s, p in parents.items()) + ".", "",
              "## Held-half Dice of every run", "",
              "One half of a tile labelled, the other scored; seeds averaged (their number in brackets). "
              "Labelled slick pixels: the labelled half's, as fine-tuning counts them.", "",
              "| tile, half labelled | labelled slick pixels | parent | " + " | ".join(f"{names[k]} ({len(seeds[k])})" for k in keys) + " |",
              "|---|---|---|" + "---|" * len(keys)]
    for h in halves:
        lines.append(f"| {h[0]}, {h[1]} | {pixels[h]:,} | {parent[h]:.3f} | " + " | ".join(f"{results[k][h]:.3f}" for k in keys) + " |")
    lines.append("| mean | | " + f"{np.mean([parent[h] for h in halves]):.3f} | "
                 + " | ".join(f"{np.mean([results[k][h] for h in halves]):.3f}" for k in keys) + " |")
    lines += ["", "## The choice, tile by tile", "",
              "Each tile's recipe is the candidate (keep the parent; a run's recipe; a recipe without validation gated at "
              + ", ".join(f"{g:,}" for g in GATES) + " labelled slick pixels) with the largest mean change over the other tiles' "
              "halves; its own halves are then scored with it.", "",
              "| tile | chosen on the other four tiles | half labelled | parent | chosen | change |", "|---|---|---|---|---|---|"]
    scored = []
    for h in halves:
        c = chosen[h[0]]
        v = value(c, h, results, parent, pixels)
        scored.append((parent[h], v))
        lines.append(f"| {h[0]} | {c[0]} | {h[1]} | {parent[h]:.3f} | {v:.3f} | {v - parent[h]:+.3f} |")
    before, after = np.mean([p for p, _ in scored]), np.mean([v for _, v in scored])
    better, worse = sum(v > p + 1e-9 for p, v in scored), sum(v < p - 1e-9 for p, v in scored)
    lines += ["", f"Held halves: mean {before:.3f} → {after:.3f}; {better} better, {worse} worse, {len(scored) - better - worse} unchanged.", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="within-scene output folders made with the same --parents")
    p.add_argument("--markdown", type=Path, required=True)
    args = p.parse_args()
    results, parent, pixels, runs = load(args.runs)
    chosen = choose(results, parent, pixels, runs)
    command = "python tools/within_scene_choice.py " + " ".join(sys.argv[1:])
    write_text(args.markdown, page(results, parent, pixels, runs, chosen, command))
    for scene, c in chosen.items():
        print(f"{scene}: {c[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
