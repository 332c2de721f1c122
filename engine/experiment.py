"""Experiments of the transfer-learning paper, run on the bundled real Arctic tiles.

``python -m engine experiment loso``: leave one scene out. For each of the three demo tiles, the base model is
fine-tuned on the analysts' labels of the other tiles (through a label store, the product's own path)
and both models detect slicks on the tile left out; their Dice against its label stands next to the
Dice of the paper's own predictions on that tile. Every figure comes from this run; a CSV and a JSON
file keep them.

``python -m engine experiment transfer``: base vs fine-tuned-from-source models for N target tiles, the
paper's Fig. 2 and Table II (``engine/transfer.py``).

``python -m engine experiment dakter``: DAKTer's generators and students on the same split
(``engine/dakter_eval.py``).

``python -m engine experiment within-scene``: label half of each tile, fine-tune, score the other half and the
other tiles (``engine/experiments/within_scene.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from . import dakter_eval, transfer
from .experiments import within_scene
from .atomic import write_csv, write_text
from .demo import SAMPLES, SAMPLES_DIR
from .detect import DetectOptions, detect
from .errors import OutputError
from .evaluate import slick_dice
from .finetune import DEFAULT_TILE, FinetuneOptions, finetune
from .labels import create_store, import_mask
from .models import DEFAULT_MODEL, read_card
from .progress import Progress
from .training import TRAIN_LAYERS

ARCTIC_CRS = "EPSG:32636"


def leave_one_scene_out(base: Path, out: Path, options: FinetuneOptions, threshold: Optional[float], progress: Progress) -> dict:
    """``threshold`` None: each model at its own (``ModelCard.threshold``), as detection uses it."""
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty; nothing was overwritten.", "Give a new folder with --out.")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for held in SAMPLES:
        progress.log(f"leaving out {held}: fine-tuning on {', '.join(s for s in SAMPLES if s != held)}")
        store = create_store(out / f"labels_without_{held}.gpkg", ARCTIC_CRS)
        for sample in SAMPLES:
            if sample != held:
                import_mask(store, SAMPLES_DIR / sample / "raw_mosaic.tif", SAMPLES_DIR / sample / "labels_mosaic.png")
        tuned = out / f"model_without_{held}.safetensors"
        report = finetune(base, store, tuned, options, progress)
        scene, label = SAMPLES_DIR / held / "raw_mosaic.tif", SAMPLES_DIR / held / "labels_mosaic.png"
        dice, thresholds = {}, {}
        for role, model in (("base", base), ("finetuned", tuned)):
            result = detect(scene, out / "detections", DetectOptions(model=str(model), prefix=f"{held}_{role}", threshold=threshold), progress)
            dice[role] = round(slick_dice(result.probability, label, threshold=result.threshold).dice, 3)
            thresholds[role] = result.threshold
        row = {
            "left_out": held,
            "dice_base_model": dice["base"],
            "dice_finetuned": dice["finetuned"],
            "dice_paper_base": round(slick_dice(SAMPLES_DIR / held / "pred_base.tif", label).dice, 3),
            "dice_paper_tl": round(slick_dice(SAMPLES_DIR / held / "pred_tl.tif", label).dice, 3),
            "train_tiles": report.train_tiles,
            "val_tiles": report.val_tiles,
            "epochs_run": report.epochs_run,
            "val_dice_before": round(report.val_dice_before, 3),
            "val_dice_after": round(report.val_dice_after, 3),
            "best_epoch": report.best_epoch,
            "threshold_base_model": thresholds["base"],
            "threshold_finetuned": thresholds["finetuned"],
            "finetune_seconds": report.seconds,
            "train_layers": report.train_layers,
        }
        rows.append(row)
        progress.log(f"{held}: Dice {row['dice_base_model']:.3f} -> {row['dice_finetuned']:.3f} fine-tuned "
                     f"(paper: base {row['dice_paper_base']:.3f}, transfer {row['dice_paper_tl']:.3f})")
    write_csv(out / "loso.csv", rows)
    summary = {
        "base_model": read_card(base).name,
        "rows": rows,
        "mean": {key: round(sum(r[key] for r in rows) / len(rows), 3)
                 for key in ("dice_base_model", "dice_finetuned", "dice_paper_base", "dice_paper_tl")},
    }
    write_text(out / "loso.json", json.dumps(summary, indent=2))
    return summary


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("experiment", help="the transfer-learning paper's experiments on the bundled tiles")
    sub = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    q = sub.add_parser("loso", help="leave one scene out: fine-tune on the others' labels, score on the one left out")
    q.add_argument("--out", type=Path, default=Path("experiment_output/loso"), help="empty or new folder")
    q.add_argument("--base", type=Path, default=DEFAULT_MODEL, help="model to fine-tune (default: bundled)")
    q.add_argument("--tile", type=int, default=DEFAULT_TILE)
    q.add_argument("--epochs", type=int, default=20)
    q.add_argument("--train-layers", choices=TRAIN_LAYERS, help="all or decoder (default: decoder on a CPU)")
    q.add_argument("--threshold", type=float, help="default: each model's own")
    q.add_argument("--device", default="auto")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_run_loso)
    transfer.add_cli(sub)
    dakter_eval.add_cli(sub)
    within_scene.add_cli(sub)


def _run_loso(args: argparse.Namespace, progress: Progress) -> dict:
    options = FinetuneOptions(tile=args.tile, epochs=args.epochs, train_layers=args.train_layers, device=args.device, seed=args.seed)
    return leave_one_scene_out(args.base, args.out, options, args.threshold, progress)
