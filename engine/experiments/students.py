"""Students of generated samples, trained and scored the same way by the generator experiments
(``experiment dakter``, ``experiment dakd``).

A student is the product's fine-tuning (``finetune``, ``finetune --generated``) of a model on the pool's
real tiles, with or without a generator's samples, scored whole on the test scenes by detection and slick
Dice (engine/experiments/split.py). Each arm runs once per seed, and the arms of one seed share the
validation split, so their differences are paired. Every arm takes the same number of optimiser steps: the
arm with the most samples trains ``epochs`` epochs, and every other arm as many more epochs as its smaller
set needs, with no early stop, each keeping its best-validation epoch. Unlike the product's fine-tuning, the
parent does not compete for "best": the question is what training with and without samples teaches, and a
run that handed back the parent would answer nothing (the starting model's own Dice stands beside them).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..generation.samples import TEMPERATURE
from ..jobs.finetune import FinetuneOptions, finetune, train_config
from ..jobs.finetune_data import collect_tiles, split_by_area, tileset
from ..jobs.labels import read_store
from ..models.eager import pick_device
from ..models.losses import StudentLoss
from ..models.registry import load_model, read_card, save_model
from ..models.training import lr_range_test, train
from ..progress import Progress
from .transfer import TEST, paper_test_dice, score_test_scenes, t_interval

REAL = "real only"
EQ6 = "real only, eq. 6"
"""The control: real tiles alone with the student's loss, so that the samples' effect is told from the loss's."""


@dataclass(frozen=True)
class Arm:
    """One student condition."""

    name: str
    samples: Optional[Path] = None
    """A sample folder; None: real tiles only."""
    n: int = 0
    """Samples learnt from: the folder's first kept ones."""
    labels: str = "soft"
    """KD targets of the samples (``FinetuneOptions.generated_labels``)."""
    eq6: bool = False
    """Real tiles only, with the student's loss (DAKTer's eq. 6) in place of the product's."""
    model: Optional[Path] = None
    """The model the student starts from; None: the experiment's."""
    from_parent: bool = True
    """False: ``model`` is an initialisation, not a trained parent (``FinetuneOptions.from_parent``)."""


def arm_epochs(epochs: int, real_tiles: int, arms: list[Arm]) -> dict[str, int]:
    """Epochs of each arm that take as many optimiser steps as ``epochs`` of the arm with the most samples."""
    budget = real_tiles + max(arm.n for arm in arms)
    return {arm.name: max(1, round(epochs * budget / (real_tiles + arm.n))) for arm in arms}


def train_students(arms: list[Arm], seeds: tuple[int, ...], recipe: FinetuneOptions, model: Path, store: Path, real_tiles: int,
                   threshold: Optional[float], work: Path, progress: Progress) -> tuple[list[dict], Path]:
    """Fine-tune and score every (seed, arm); returns the rows and the real-only (``REAL``) model of the first seed."""
    runs: list[dict] = []
    keep: Optional[Path] = None
    batch = recipe.batch_size or (8 if pick_device(recipe.device).type == "cuda" else 4)
    epochs = arm_epochs(recipe.epochs, real_tiles, arms)
    for i, seed in enumerate(seeds):
        for j, arm in enumerate(arms):
            progress.update("students", i * len(arms) + j, len(seeds) * len(arms), f"seed {seed}, {arm.name}")
            path = work / f"student_{j}_{seed}.safetensors"
            # use_on every: students are scored on test scenes they never saw
            options = replace(recipe, seed=seed, epochs=epochs[arm.name], patience=epochs[arm.name], from_parent=arm.from_parent, use_on="every")
            if arm.samples is not None:
                options = replace(options, generated=arm.samples, n_generated=arm.n, generated_labels=arm.labels)
            if arm.eq6:
                facts = eq6_student(arm.model or model, store, options, path, progress)
            else:
                report = finetune(arm.model or model, store, path, options, progress)
                facts = {"generated": report.n_generated, "train_tiles": report.train_tiles, "val_tiles": report.val_tiles,
                         "epochs": report.epochs_run, "best_epoch": report.best_epoch, "val_dice": report.val_dice_after, "seconds": report.seconds}
            dice = score_test_scenes(path, work / "detections", threshold, recipe.device, progress)
            runs.append({
                "seed": seed, "condition": arm.name, "generated": facts["generated"],
                **{f"dice_{scene}": round(d, 4) for scene, d in dice.items()},
                "dice_mean": round(float(np.mean(list(dice.values()))), 4),
                "train_tiles": facts["train_tiles"], "val_tiles": facts["val_tiles"], "epochs": facts["epochs"],
                "steps": facts["epochs"] * max(1, (facts["train_tiles"] + facts["generated"]) // batch),
                "best_epoch": facts["best_epoch"], "val_dice": round(facts["val_dice"], 4), "seconds": facts["seconds"],
            })
            progress.log(f"seed {seed}, {arm.name}: test Dice {runs[-1]['dice_mean']:.3f} ({', '.join(f'{d:.3f}' for d in dice.values())})")
            if keep is None and arm.name == REAL:
                keep = path
            else:
                path.unlink()
    assert keep is not None, "every experiment has a real-only arm"
    return runs, keep


def eq6_student(model: Path, store: Path, recipe: FinetuneOptions, path: Path, progress: Progress) -> dict[str, Any]:
    """The real-only run with the student's loss: finetune's tiles, split, recipe and budget, its loss swapped
    for eq. 6 (finetune takes that loss only together with samples)."""
    started = time.monotonic()
    card = read_card(model)
    device = pick_device(recipe.device)
    tiles = collect_tiles(read_store(store), card, recipe.tile, progress)
    train_tiles, val_tiles = split_by_area(tiles, recipe.val_fraction, recipe.seed)
    train_set, val_set = tileset(train_tiles), tileset(val_tiles)
    net, _ = load_model(model, device)
    config = replace(train_config(card, recipe, device), student=StudentLoss(temperature=TEMPERATURE))
    config.lr = recipe.lr or lr_range_test(net, train_set, config, progress)
    report = train(net, train_set, val_set, config, progress)
    save_model(net, replace(card, name=f"{card.name}, {EQ6} control", threshold=report.threshold), path)
    return {"generated": 0, "train_tiles": len(train_tiles), "val_tiles": len(val_tiles), "epochs": report.epochs_run,
            "best_epoch": report.best_epoch, "val_dice": report.val_dice, "seconds": round(time.monotonic() - started, 1)}


def paired_change(runs: list[dict], condition: str, reference: str) -> dict[str, Any]:
    """Mean test Dice of ``condition`` minus ``reference``'s over the seeds both ran, with its 95 % t-interval
    (None for one seed) and how many seeds it was better in."""
    by = {c: {r["seed"]: r["dice_mean"] for r in runs if r["condition"] == c} for c in (condition, reference)}
    change = [by[condition][s] - by[reference][s] for s in by[condition] if s in by[reference]]
    mean, half = t_interval(change)
    return {"change": round(mean, 4), "change_ci": None if math.isnan(half) else round(half, 4), "seeds_better": sum(1 for d in change if d > 0)}


def summarise(runs: list[dict]) -> list[dict]:
    """Mean test Dice and 95 % t-interval over seeds per condition, and each condition's paired change from real only."""
    rows = []
    by = {c: [r for r in runs if r["condition"] == c] for c in dict.fromkeys(r["condition"] for r in runs)}
    for condition, seeds in by.items():
        row: dict[str, Any] = {"condition": condition, "runs": len(seeds)}
        for key in ["dice_mean", *(f"dice_{s}" for s in TEST)]:
            mean, half = t_interval([r[key] for r in seeds])
            row[key] = round(mean, 4)
            row[f"{key}_ci"] = None if math.isnan(half) else round(half, 4)
        row.update(change_from_real=None, change_ci=None, seeds_better=None)
        if condition != REAL:
            change = paired_change(runs, condition, REAL)
            row.update(change_from_real=change["change"], change_ci=change["change_ci"], seeds_better=change["seeds_better"])
        rows.append(row)
    return rows


def reference_dice(model: Path, work: Path, threshold: Optional[float], device: str, progress: Progress) -> dict[str, Any]:
    """What the students stand beside: the starting model's test Dice as it is, and the paper's predictions'."""
    return {"bundled_model": _with_mean(score_test_scenes(model, work / "detections", threshold, device, progress)),
            "paper": {kind: _with_mean(per) for kind, per in paper_test_dice().items()}}


def _with_mean(per: dict[str, float]) -> dict[str, float]:
    return {**{k: round(v, 4) for k, v in per.items()}, "mean": round(float(np.mean(list(per.values()))), 4)}
