"""How much the number of labelled Arctic scenes buys: the figure behind the default model learning from all five.

``.venv/bin/python tools/training_scenes.py --out FOLDER [--seeds 0 1 2 3] [--four docs/benchmark_bcecap.csv] [--markdown PAGE]``

The bundled model's own command, with its recipe unchanged, on the two scenes of ``bundled.POOL`` (the held-out
model's) and on those two with each of the paper's three test tiles in turn, once per seed; each model detects as the
benchmark's do (PyTorch, mirror averaged) on the test tiles it did not learn from, and is scored on its mask. Beside
each tile: the leave-one-scene-out fold models of the same recipe, which learnt from four scenes (the two of the pool
and the other two test tiles), from a benchmark run's rows. Models already in ``FOLDER/models`` are reused, so a stopped
run goes on; the CSV names each one's hash.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.atomic import write_csv, write_text  # noqa: E402
from engine.cli.main import main as engine_main  # noqa: E402
from engine.data.bundled import ARCTIC, POOL, SAMPLES  # noqa: E402
from engine.experiments.benchmark import score  # noqa: E402
from engine.jobs.detect import DetectOptions, detect  # noqa: E402
from engine.machine import commit_text, describe, file_sha256  # noqa: E402
from engine.models.registry import HELD_OUT_MODEL  # noqa: E402
from engine.progress import Progress  # noqa: E402

RECIPE = ["--data", "real", "--train-tiles", "240", "--tile", "256", "--epochs", "6", "--lr", "0.0005", "--pos-weight-cap", "1",
          "--init-share", "0.5"]
"""The bundled model's command (its card's ``how``) but its scenes and seed."""
FOUR = "real_texture_bce1_init50"
"""The benchmark's name for the same recipe trained on a fold's four scenes."""


def learnt_sets() -> list[tuple[str, tuple[str, ...]]]:
    """(model name stem, Arctic scenes): the pool alone, then the pool with each test tile in turn."""
    return [("two_scenes", POOL), *((f"three_scenes_{added}", (*POOL, added)) for added in SAMPLES)]


def subset_rows(out: Path, seeds: list[int], progress: Progress) -> list[dict]:
    """Every learnt set's model at every seed, scored on each test tile it did not learn from."""
    rows = []
    for stem, scenes in learnt_sets():
        for seed in seeds:
            model = out / "models" / f"{stem}_seed{seed}.safetensors"
            if not model.exists():
                args = ["pretrain", *RECIPE, "--scenes", *scenes, "--seed", str(seed), "--device", "cpu", "--out", str(model)]
                if engine_main(args) != 0:
                    raise SystemExit(f"python -m engine {shlex.join(args)} failed")
            for scene in (s for s in ARCTIC if s.name in SAMPLES and s.name not in scenes):
                options = DetectOptions(model=str(model), prefix=f"{scene.name}_{stem}_seed{seed}", overwrite=True, runtime="torch", tta=True)
                result = detect(scene.image, out / "detections", options, progress)
                s = score(result.mask, scene, result.threshold)
                rows.append({"scene": scene.name, "scenes_learnt": len(scenes), "seed": seed, "dice": round(s.dice, 3),
                             "false_km2_per_1000km2": round(s.false_km2_per_1000, 2), "threshold": result.threshold,
                             "model": model.name, "sha256": file_sha256(model)[:16], "runtime": result.runtime})
                progress.log(f"{scene.name} {stem} seed {seed}: Dice {s.dice:.3f}")
    return rows


def four_scene_rows(benchmark_csv: Path) -> list[dict]:
    with open(benchmark_csv, newline="") as f:
        return [{"scene": r["scene"], "scenes_learnt": 4, "seed": int(r["seed"]), "dice": float(r["dice"]),
                 "false_km2_per_1000km2": float(r["false_km2_per_1000km2"]), "threshold": float(r["threshold"]),
                 "model": r["model"], "sha256": r["sha256"], "runtime": r["runtime"]}
                for r in csv.DictReader(f) if r["candidate"] == FOUR and r["scene"] in SAMPLES]


def same_weights(a: Path, b: Path) -> bool:
    """Whether two model files hold the same tensors, bit for bit (their cards, which carry a date, aside)."""
    from safetensors.numpy import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def page(rows: list[dict], command: str, commit: str, four_from: Path, held_out_seeds: list[int]) -> str:
    def mean(n: int, scene: str) -> float:
        return float(np.mean([r["dice"] for r in rows if r["scenes_learnt"] == n and r["scene"] == scene]))

    def spread(n: int, scene: str) -> str:
        values = [r["dice"] for r in rows if r["scenes_learnt"] == n and r["scene"] == scene]
        return ", ".join(f"{v:.3f}" for v in values) if n != 3 else f"{min(values):.3f}-{max(values):.3f} ({len(values)} models)"

    seeds = sorted({r["seed"] for r in rows if r["scenes_learnt"] == len(POOL)})
    lines = [
        "# How much each labelled scene buys",
        "",
        f"Made by `{command}` at commit `{commit}` on {describe()}, reusing the models already in the folder (each trained"
        " by the command line below with its scenes and seed). The four-scene rows are the leave-one-scene-out fold",
        f"models of [{four_from.name}]({four_from.name}) (candidate `{FOUR}`), the same recipe; every model here is scored",
        "on tiles it never saw, detecting as the benchmark does (PyTorch, mirror averaged), on its mask.",
        "",
        f"The bundled model's command (`python -m engine pretrain {shlex.join(RECIPE)} --scenes ... --seed S`), seeds "
        f"{', '.join(map(str, seeds))}, on {' and '.join(POOL)}; on those two and one of the test tiles (each in turn, scored on "
        "the other two); and on four scenes:",
        "",
        f"| tile | two scenes ({', '.join(POOL)}), each seed | mean | three scenes (the two and another test tile) | mean | "
        "four scenes (the two and the other two test tiles), each seed | mean |",
        "|---|---|---|---|---|---|---|",
        *(f"| {s} | {spread(2, s)} | {mean(2, s):.3f} | {spread(3, s)} | {mean(3, s):.3f} | {spread(4, s)} | {mean(4, s):.3f} |" for s in SAMPLES),
        f"| mean | | **{np.mean([mean(2, s) for s in SAMPLES]):.3f}** | | **{np.mean([mean(3, s) for s in SAMPLES]):.3f}** | "
        f"| **{np.mean([mean(4, s) for s in SAMPLES]):.3f}** |",
        "",
        "Each model's sha256 is in the CSV beside this page."
        + "".join(f" The two-scene model of seed {s} has the held-out model's weights (`{HELD_OUT_MODEL.name}`), bit for bit."
                  for s in held_out_seeds),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--four", type=Path, default=ROOT / "docs" / "benchmark_bcecap.csv")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    command = "python tools/training_scenes.py " + shlex.join(sys.argv[1:])
    commit = commit_text()
    rows = subset_rows(args.out, args.seeds, Progress(log=print)) + four_scene_rows(args.four)
    write_csv(args.out / "training_scenes.csv", rows)
    held_out = [s for s in args.seeds if same_weights(args.out / "models" / f"two_scenes_seed{s}.safetensors", HELD_OUT_MODEL)]
    published(page(rows, command, commit, args.four, held_out), rows, args.markdown)


def published(text: str, rows: list[dict], markdown: Optional[Path]) -> None:
    """Print the page; with ``markdown``, write it there and its rows beside it as CSV."""
    print(text)
    if markdown:
        write_text(markdown, text)
        write_csv(markdown.with_suffix(".csv"), rows)


if __name__ == "__main__":
    main()
