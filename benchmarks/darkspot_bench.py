"""The dark-spot baseline on the bundled real Arctic tiles: leave-one-scene-out Dice, CPU cost, seams.

    .venv/bin/python benchmarks/darkspot_bench.py --loso     # about 10 min on 2 CPU cores

1 leave one scene out   for each of the five tiles, fit on the other four (``fit_darkspot``), detect on
                        the one left out with the product's ``detect`` and score it with ``slick_dice``;
                        beside it the paper's ``pred_base`` / ``pred_tl`` where the tile has them, and the
                        bundled U-Net (never trained on any of these tiles)
2 CPU cost              ``detect`` wall time per 1,000 km2 of analysis grid, dark-spot baseline vs bundled
                        U-Net, interleaved round robin over the five tiles so machine load biases both alike
3 seams                 probability of 256-pixel tiles (overlap 64) vs one whole-scene tile on sample_123

Without ``--loso`` only 2 and 3 run. Results go to bench_output/darkspot_bench.json with the commit and
the sha256 of every model file used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402

import report  # noqa: E402
from engine.data.bundled import ARCTIC, SAMPLES_DIR, LabelledScene  # noqa: E402
from engine.jobs.detect import DetectOptions, detect  # noqa: E402
from engine.jobs.evaluate import slick_dice  # noqa: E402
from engine.machine import commit_text, file_sha256  # noqa: E402
from engine.models.darkspot import fit_darkspot  # noqa: E402
from engine.models.registry import BUNDLED_DIR, DEFAULT_MODEL, read_card  # noqa: E402
from engine.progress import Progress  # noqa: E402

SCENES = tuple(scene.name for scene in ARCTIC)
BASELINE = BUNDLED_DIR / "darkspot_baseline_25m.safetensors"


def sha256(path: Path) -> str:
    return file_sha256(path)[:16]


def labelled_scene(name: str) -> LabelledScene:
    return next(scene for scene in ARCTIC if scene.name == name)


def detected_dice(model: Path, held: LabelledScene, out: Path) -> tuple[float, float]:
    """Slick Dice of ``detect`` on ``held`` and its wall time."""
    result = detect(held.image, out, DetectOptions(model=str(model), prefix=f"{held.name}_{model.stem}", min_area_km2=0.0, overwrite=True))
    return slick_dice(result.probability, held.labels, threshold=result.threshold).dice, result.seconds


def loso(work: Path, progress: Progress) -> dict:
    rows, models = [], {}
    for held in SCENES:
        train = [labelled_scene(name) for name in SCENES if name != held]
        model = fit_darkspot(train, work / f"darkspot_without_{held}.safetensors", progress)
        card = read_card(model)
        dice, _ = detected_dice(model, labelled_scene(held), work / "detections")
        unet, _ = detected_dice(DEFAULT_MODEL, labelled_scene(held), work / "detections")
        row = {"left_out": held, "darkspot": round(dice, 3), "bundled_unet": round(unet, 3),
               "train_dice_pooled": card.metrics["train_dice_pooled"], **card.arch_kwargs}
        for paper in ("pred_base", "pred_tl"):
            path = SAMPLES_DIR / held / f"{paper}.tif"
            row[f"paper_{paper}"] = round(slick_dice(path, labelled_scene(held).labels).dice, 3) if path.exists() else None
        rows.append(row)
        models[held] = sha256(model)
        print(f"{held}: dark-spot {row['darkspot']:.3f} (fitted {card.arch_kwargs}), U-Net {row['bundled_unet']:.3f}", flush=True)
    mean = lambda key, subset=SCENES: round(statistics.mean(r[key] for r in rows if r["left_out"] in subset), 3)  # noqa: E731
    paper_scenes = [r["left_out"] for r in rows if r["paper_pred_base"] is not None]
    report.print_table(
        ["left out", "dark-spot", "U-Net", "pred_base", "pred_tl", "window", "smooth", "opening", "k"],
        [[r["left_out"], f"{r['darkspot']:.3f}", f"{r['bundled_unet']:.3f}", str(r["paper_pred_base"]), str(r["paper_pred_tl"]),
          str(r["window"]), str(r["smoothing"]), str(r["opening"]), f"{r['k']:.2f}"] for r in rows],
    )
    return {
        "rows": rows,
        "mean_all_five": {"darkspot": mean("darkspot"), "bundled_unet": mean("bundled_unet")},
        "mean_on_paper_tiles": {key: mean(key, paper_scenes) for key in ("darkspot", "bundled_unet", "paper_pred_base", "paper_pred_tl")},
        "model_sha256": models,
    }


def cost(work: Path, rounds: int) -> dict:
    """Seconds of ``detect`` per 1,000 km2 of analysis grid, both models on the same tiles in turn."""
    seconds = {"darkspot": [], "bundled_unet": []}
    km2 = 0.0
    for name in SCENES:
        with rasterio.open(labelled_scene(name).image) as ds:
            km2 += ds.width * ds.height * abs(ds.transform.a * ds.transform.e) / 1e6
    for _ in range(rounds):
        for key, model in (("darkspot", BASELINE), ("bundled_unet", DEFAULT_MODEL)):
            started = time.monotonic()
            for name in SCENES:
                detected_dice(model, labelled_scene(name), work / "cost")
            seconds[key].append(time.monotonic() - started)
    per = {key: round(statistics.median(values) / km2 * 1000, 2) for key, values in seconds.items()}
    return {"km2": round(km2, 1), "rounds": rounds, "seconds_per_1000_km2": per,
            "unet_over_darkspot": round(per["bundled_unet"] / per["darkspot"], 2)}


def seams(work: Path) -> dict:
    held = labelled_scene("sample_123")
    probabilities = []
    for tile in (256, 1024):
        result = detect(held.image, work / "seams", DetectOptions(model=str(BASELINE), tile=tile, overlap=64, prefix=f"tile{tile}", overwrite=True))
        with rasterio.open(result.probability) as ds:
            probabilities.append(ds.read(1))
    small, whole = probabilities
    valid = np.isfinite(small) & np.isfinite(whole)
    threshold = read_card(BASELINE).threshold
    return {"max_abs_probability_difference": round(float(np.abs(small - whole)[valid].max()), 4),
            "mask_disagreement_fraction": float(((small > threshold) != (whole > threshold))[valid].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loso", action="store_true", help="also run leave-one-scene-out (five fits)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per model")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "darkspot_bench.json")
    args = parser.parse_args()
    results = {"machine": report.machine(), "command": " ".join(["benchmarks/darkspot_bench.py", *sys.argv[1:]]), "commit": commit_text(),
               "models": {"darkspot_baseline": sha256(BASELINE), "bundled_unet": sha256(DEFAULT_MODEL)}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.loso:
            results["loso"] = loso(work, Progress(log=print))
        results["cost"] = cost(work, args.rounds)
        print(f"\ncost: {results['cost']}")
        results["seams"] = seams(work)
        print(f"seams: {results['seams']}")
    report.finish(results, args.out)


if __name__ == "__main__":
    main()
