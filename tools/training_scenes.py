"""How much the number of labelled Arctic scenes buys: the figure behind the default model learning from all five.

``.venv/bin/python tools/training_scenes.py --out FOLDER [--seeds 0 1 2 3] [--four docs/benchmark_bcecap.csv] [--markdown PAGE]``

The bundled model's own command, with its recipe unchanged, on the two scenes of ``bundled.POOL`` (the held-out
model's), once per seed; each model detects as the benchmark's do (PyTorch, mirror averaged) on the paper's three
test tiles, which none of them saw, and is scored on its mask. Beside each tile: the leave-one-scene-out fold models of
the same recipe, which learnt from four scenes (the two of the pool and the other two test tiles), from a benchmark
run's rows. Models already in ``FOLDER/models`` are reused, so a stopped run goes on; the page names each one's hash.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path

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


def two_scene_rows(out: Path, seeds: list[int], progress: Progress) -> list[dict]:
    rows = []
    for seed in seeds:
        model = out / "models" / f"two_scenes_seed{seed}.safetensors"
        if not model.exists():
            args = ["pretrain", *RECIPE, "--scenes", *POOL, "--seed", str(seed), "--device", "cpu", "--out", str(model)]
            if engine_main(args) != 0:
                raise SystemExit(f"python -m engine {shlex.join(args)} failed")
        for scene in (s for s in ARCTIC if s.name in SAMPLES):
            options = DetectOptions(model=str(model), prefix=f"{scene.name}_seed{seed}", overwrite=True, runtime="torch", tta=True)
            result = detect(scene.image, out / "detections", options, progress)
            s = score(result.mask, scene, result.threshold)
            rows.append({"scene": scene.name, "scenes_learnt": len(POOL), "seed": seed, "dice": round(s.dice, 3),
                         "false_km2_per_1000km2": round(s.false_km2_per_1000, 2), "threshold": result.threshold,
                         "model": model.name, "sha256": file_sha256(model)[:16], "runtime": result.runtime})
            progress.log(f"{scene.name} seed {seed}: Dice {s.dice:.3f}")
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
    def mean(n: int, scene: str | None = None) -> float:
        picked = [r["dice"] for r in rows if r["scenes_learnt"] == n and (scene is None or r["scene"] == scene)]
        return float(np.mean(picked))

    def spread(n: int, scene: str) -> str:
        return ", ".join(f"{r['dice']:.3f}" for r in rows if r["scenes_learnt"] == n and r["scene"] == scene)

    seeds = sorted({r["seed"] for r in rows if r["scenes_learnt"] == len(POOL)})
    lines = [
        "# How much each labelled scene buys",
        "",
        f"Made by `{command}` at commit `{commit}` on {describe()}, reusing the two-scene models already in the folder"
        " (trained by the same command line, a seed each). The four-scene rows are the leave-one-scene-out fold",
        f"models of [{four_from.name}]({four_from.name}) (candidate `{FOUR}`), the same recipe; every model here is scored",
        "on tiles it never saw, detecting as the benchmark does (PyTorch, mirror averaged), on its mask.",
        "",
        f"The bundled model's command (`python -m engine pretrain {shlex.join(RECIPE)}`) on {' and '.join(POOL)} only, seeds "
        f"{', '.join(map(str, seeds))}, against the same command on four scenes:",
        "",
        f"| tile | two scenes ({', '.join(POOL)}), each seed | mean | four scenes (the pool and the other two tiles), each seed | mean |",
        "|---|---|---|---|---|",
        *(f"| {s} | {spread(len(POOL), s)} | {mean(len(POOL), s):.3f} | {spread(4, s)} | {mean(4, s):.3f} |" for s in SAMPLES),
        f"| mean | | **{mean(len(POOL)):.3f}** | | **{mean(4):.3f}** |",
        "",
        "Two-scene models: " + ", ".join(f"seed {r['seed']} `{r['sha256']}`" for r in rows
                                          if r["scenes_learnt"] == len(POOL) and r["scene"] == SAMPLES[0]) + "."
        + "".join(f" Seed {s}'s weights are the held-out model's (`{HELD_OUT_MODEL.name}`), bit for bit." for s in held_out_seeds),
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
    rows = two_scene_rows(args.out, args.seeds, Progress(log=print)) + four_scene_rows(args.four)
    write_csv(args.out / "training_scenes.csv", rows)
    held_out = [s for s in args.seeds if same_weights(args.out / "models" / f"two_scenes_seed{s}.safetensors", HELD_OUT_MODEL)]
    text = page(rows, command, commit, args.four, held_out)
    print(text)
    if args.markdown:
        write_text(args.markdown, text)
        write_csv(args.markdown.with_suffix(".csv"), rows)


if __name__ == "__main__":
    main()
