"""Leave one scene out: for each of the bundled real tiles, the base model is fine-tuned on the analysts'
labels of the other tiles (through a label store, the product's own path) and both models detect slicks on
the tile left out; their Dice against its label stands next to the Dice of the paper's own predictions on
that tile. Every figure comes from this run; a CSV, a JSON file and the report page keep them, with what made them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

from ..atomic import write_csv, write_text
from ..data.bundled import ARCTIC_CRS, SAMPLES, SAMPLES_DIR
from ..errors import OutputError
from ..jobs.detect import DetectOptions, detect
from ..jobs.evaluate import slick_dice
from ..jobs.finetune import FinetuneOptions, finetune
from ..jobs.labels import create_store, import_mask
from ..machine import file_sha256, made_by
from ..models.eager import pick_device
from ..models.registry import read_card
from ..progress import Progress


def leave_one_scene_out(base: Path, out: Path, options: FinetuneOptions, threshold: Optional[float], progress: Progress,
                        command: str = "") -> dict:
    """``threshold`` None: each model at its own (``ModelCard.threshold``), as detection uses it. Both models detect
    in PyTorch, as the benchmark scores. ``command``: what the report says remakes it."""
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty; nothing was overwritten.", "Give a new folder with --out.")
    started = time.monotonic()
    made = made_by(command, pick_device(options.device))
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
            result = detect(scene, out / "detections", DetectOptions(model=str(model), prefix=f"{held}_{role}", threshold=threshold,
                                                                                 device=options.device, runtime="torch"), progress)
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
            "val_dice_before": _rounded(report.val_dice_before),
            "val_dice_after": _rounded(report.val_dice_after),
            "labels_dice_before": _rounded(report.labels_dice_before),
            "labels_dice_after": _rounded(report.labels_dice_after),
            "best_epoch": report.best_epoch,
            "threshold_base_model": thresholds["base"],
            "threshold_finetuned": thresholds["finetuned"],
            "finetune_seconds": report.seconds,
            "train_layers": report.train_layers,
            "weights": "the parent's, kept" if report.holds_parent_weights else "fine-tuned",
        }
        rows.append(row)
        progress.log(f"{held}: Dice {row['dice_base_model']:.3f} -> {row['dice_finetuned']:.3f} fine-tuned "
                     f"(paper: base {row['dice_paper_base']:.3f}, transfer {row['dice_paper_tl']:.3f})")
    write_csv(out / "loso.csv", rows)
    summary = {
        "out": str(out),
        "made": {**made, "base_model_sha256": file_sha256(base), "seconds": round(time.monotonic() - started, 1)},
        "recipe": asdict(options),
        "base_model": read_card(base).name,
        "rows": rows,
        "mean": {key: round(sum(r[key] for r in rows) / len(rows), 3)
                 for key in ("dice_base_model", "dice_finetuned", "dice_paper_base", "dice_paper_tl")},
    }
    write_text(out / "loso.json", json.dumps(summary, indent=2, default=str))
    return summary


def _rounded(value: Optional[float]) -> Optional[float]:
    """None where the recipe measured nothing (no validation tile; no label check)."""
    return None if value is None else round(value, 3)


def page(summary: dict) -> str:
    """The report page of one run: how it was made and each left-out tile's Dice before and after fine-tuning."""
    made, recipe = summary["made"], summary["recipe"]
    validation = f"{recipe['val_fraction']:.0%} of the tiles validating" if recipe["val_fraction"] else "no validation tile"
    lines = [
        "# Fine-tuning on the labels of other scenes, scored on a scene left out",
        "",
        f"Made by `{made['command']}` at commit {made['commit']} on {made['machine']}, {made['started']}, in "
        f"{made['seconds'] / 60:.0f} min. Base model: {summary['base_model']}, sha256 `{made['base_model_sha256'][:16]}`; it never "
        f"learnt from these tiles. For each tile, the base model is fine-tuned on the analysts' labels of the other two "
        f"({recipe['train_layers']} layers, {recipe['epochs']} epochs on {recipe['tile']}-px tiles, {validation}, the product's "
        "recipe unless the command says otherwise) and both models detect the tile left out in PyTorch, each at its own threshold "
        "unless the command gives one.",
        "",
        "| left out | base model | fine-tuned | weights | paper `pred_base` | paper `pred_tl` |",
        "|---|---|---|---|---|---|",
        *(f"| {r['left_out']} | {r['dice_base_model']:.3f} ({r['threshold_base_model']:g}) | {r['dice_finetuned']:.3f} "
          f"({r['threshold_finetuned']:g}) | {r['weights']} | {r['dice_paper_base']:.3f} | {r['dice_paper_tl']:.3f} |"
          for r in summary["rows"]),
        "| mean | **{dice_base_model:.3f}** | **{dice_finetuned:.3f}** | | {dice_paper_base:.3f} | {dice_paper_tl:.3f} |".format(**summary["mean"]),
        "",
        "Slick Dice of the slicks detection keeps against the analysts' labels; the threshold each model cut at in brackets. "
        f"Per-tile training figures: `loso.csv` in `{summary['out']}`.",
        "",
    ]
    return "\n".join(lines)
