"""Whether the validation bands can tell a good seed from a bad one: each fold's seeds ranked by their bands' Dice.

``.venv/bin/python tools/seed_choice.py RUN_DIR --candidate NAME [--markdown PAGE]``

``RUN_DIR`` is a ``python -m engine experiment benchmark`` run with several ``--seed`` values (its ``benchmark.csv`` and
``models/``). For every held-out scene, the seed whose fold model scored highest on its own validation bands (the card's
``validation_dice``, which also chose its epoch and threshold; ties to the lowest seed) is compared with the mean over
the seeds: what "train several seeds and keep the best on the bands" would score, on scenes none of them saw.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.atomic import write_text  # noqa: E402
from engine.experiments.benchmark import seed_scores  # noqa: E402
from engine.machine import commit_text  # noqa: E402
from engine.models.registry import read_card  # noqa: E402


def figures(rows: list[dict]) -> tuple[float, float, float]:
    """(mean Dice over scenes, pooled Dice, false slick area per 1,000 km² of all their clear sea), as the benchmark's table."""
    typed = [{**r, **{k: int(r[k]) for k in ("tp", "fp", "fn")}, **{k: float(r[k]) for k in ("dice", "false_km2_per_1000km2", "clear_sea_km2")}}
             for r in rows]
    s = seed_scores(typed)
    return s["mean_dice"], s["pooled_dice"], s["false_km2_per_1000km2"]


def choice(run: Path, candidate: str) -> tuple[dict[str, list[tuple[int, float, dict]]], list[dict]]:
    """Per scene, (seed, validation Dice, row) for every seed, and the chosen row of each scene."""
    with open(run / "benchmark.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["candidate"] == candidate]
    if len({r["seed"] for r in rows}) < 2:
        raise SystemExit(f"{run / 'benchmark.csv'} holds fewer than two seeds of {candidate}.")
    seeds: dict[str, list[tuple[int, float, dict]]] = {}
    for r in rows:
        seeds.setdefault(r["scene"], []).append((int(r["seed"]), read_card(run / "models" / r["model"]).metrics["validation_dice"], r))
    chosen = [max(sorted(items, key=lambda t: t[0]), key=lambda t: t[1])[2] for items in seeds.values()]
    return seeds, chosen


def page(run: Path, candidate: str, command: str) -> str:
    seeds, chosen = choice(run, candidate)
    numbers = sorted({s for items in seeds.values() for s, _, _ in items})
    per_seed = [figures([r for items in seeds.values() for s, _, r in items if s == n]) for n in numbers]
    mean = tuple(float(np.mean([p[i] for p in per_seed])) for i in range(3))
    best = figures(chosen)
    lines = [
        f"# Choosing a seed on the validation bands (`{candidate}`)",
        "",
        f"Made by `{command}` at commit `{commit_text()}`, from the run in `{run}` (its models and `benchmark.csv`).",
        "",
        "Per held-out scene: each seed's validation-band Dice (the fold model's card) and its Dice on the scene it never saw.",
        "",
        "| scene | " + " | ".join(f"seed {n}: bands / held-out" for n in numbers) + " | seed the bands choose |",
        "|---|" + "---|" * len(numbers) + "---|",
        *(f"| {scene} | " + " | ".join(f"{v:.3f} / {float(r['dice']):.3f}" for _, v, r in sorted(items, key=lambda t: t[0]))
          + f" | {next(r['seed'] for r in chosen if r['scene'] == scene)} |" for scene, items in seeds.items()),
        "",
        "| | mean Dice | pooled Dice | false slicks, km² per 1,000 km² |",
        "|---|---|---|---|",
        f"| the seed the bands choose, per fold | {best[0]:.3f} | {best[1]:.3f} | {best[2]:.2f} |",
        f"| mean over the {len(numbers)} seeds | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.2f} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    text = page(args.run, args.candidate, "python tools/seed_choice.py " + " ".join(sys.argv[1:]))
    print(text)
    if args.markdown:
        write_text(args.markdown, text)


if __name__ == "__main__":
    main()
