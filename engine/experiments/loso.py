"""Leave one scene out: for each of the bundled real tiles, the base model is fine-tuned on the analysts'
labels of the other tiles (through a label store, the product's own path) and both models detect slicks on
the tile left out; their Dice against its label stands next to the Dice of the paper's own predictions on
that tile. Every figure comes from this run; a CSV and a JSON file keep them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

from ..atomic import write_csv, write_text
from ..data.bundled import ARCTIC_CRS, SAMPLES, SAMPLES_DIR
from ..errors import OutputError
from ..jobs.detect import DetectOptions, detect
from ..jobs.evaluate import slick_dice
from ..jobs.finetune import FinetuneOptions, finetune
from ..jobs.labels import create_store, import_mask
from ..models.registry import read_card
from ..progress import Progress


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
        report = finetune(base, store, tuned, replace(options, use_on="every"), progress)  # scored on a scene it never saw
        scene, label = SAMPLES_DIR / held / "raw_mosaic.tif", SAMPLES_DIR / held / "labels_mosaic.png"
        dice, thresholds = {}, {}
        for role, model in (("base", base), ("finetuned", tuned)):
            result = detect(scene, out / "detections", DetectOptions(model=str(model), prefix=f"{held}_{role}", threshold=threshold), progress)
            dice[role] = round(slick_dice(result.mask, label).dice, 3)
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
