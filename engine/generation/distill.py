"""Student training on generated samples (DAKTer sec. 3.5): which samples of a folder a fine-tuning run
uses, and how they join the real tiles.

A sample folder (engine/generation/samples.py) is checked before any tile is cut: its format version, its tile size
against the fine-tuning tile, its classes against the student's, its generators' pixel size against the
student's, and that it holds enough kept samples. Discarded samples are never read.

Every fine-tunable model has one slick logit. It learns from a generator of any classes among which one is
slick (or oil): the generator's softened distribution is split into that class and all the others, the
binary partition of the same distribution, so eq. 4 keeps its meaning and look-alikes, ships or land all
teach "not slick".

Real and generated tiles make one training set. Each epoch visits all of them in a seeded random order, so
a batch holds both kinds in the proportion of the set on average (half and half at the paper's 100 %), and
each tile gets the loss of its kind (``losses.StudentLoss``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import InputError, ModelError
from ..models.losses import StudentLoss
from ..models.registry import ModelCard, slick_index
from ..models.training import TileSet
from ..progress import Progress
from . import samples

GENERATED_LABELS = ("soft", "hard")
"""Targets of the KD term on generated tiles: ``soft``, the generator's distribution softened at T (eq. 3,
the paper's), or ``hard``, its most probable class one-hot (the paper's ablation "HL")."""
PIXEL_TOLERANCE = 0.05
"""Largest relative difference between the generator's and the student's pixel size: generated tiles are
used as they are, never resampled, so slicks must have the size the student will see in scenes."""


@dataclass
class SampleFolder:
    """A sample folder checked for a student."""

    path: Path
    classes: list[str]
    slick: int
    """The generator class that is the student's slick."""
    kept: int
    loss: StudentLoss


def open_folder(folder: str | Path, card: ModelCard, tile: int, progress: Progress) -> SampleFolder:
    """Check that ``card``'s model can learn from the folder's samples at ``tile`` pixels."""
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"Sample folder not found: {path}.", "Give a folder written by: python -m engine generate.")
    index = samples.read_index(path)
    size, classes = index["tile_size"], index["classes"]
    if size != tile:
        raise InputError(
            f"The samples in {path} are {size}-pixel tiles; this fine-tuning cuts {tile}-pixel tiles.",
            f"Fine-tune at the samples' size (--tile {size}), or use samples of a generator trained with --tile {tile}.",
        )
    student = slick_index(card.classes)
    if student is None:
        raise ModelError(
            f"The model {card.name} predicts {' / '.join(card.classes)}, not slick; generated samples teach slick.",
            "Pick a water/slick model.",
        )
    slick = slick_index(classes)
    if slick is None or len(classes) < 2:
        raise InputError(
            f"The samples in {path} are of the classes {', '.join(classes)}: none of them is a slick for the model to learn.",
            "Use samples of a generator trained on slick labels.",
        )
    kept = [s for s in index["samples"] if s["kept"]]
    if not kept:
        raise InputError(
            f"{path} holds no kept sample ({len(index['samples'])} discarded).",
            "Keep some (python -m engine samples keep), or generate more.",
        )
    for key in sorted({s["generator"] for s in kept}):
        entry = index["generators"][key]
        pixel_size = entry.get("pixel_size")
        if pixel_size is None:
            progress.log(f"warning: {path.name} does not say at what pixel size {entry['name']} made its tiles; the model works at {card.pixel_size:g} m")
        elif abs(pixel_size / card.pixel_size - 1) > PIXEL_TOLERANCE:
            raise InputError(
                f"The generator {entry['name']} made its samples at {pixel_size:g} m pixels; the model {card.name} works at {card.pixel_size:g} m.",
                f"Use samples of a generator trained at {card.pixel_size:g} m (generator train --pixel-size {card.pixel_size:g}).",
            )
    if len(classes) > 2:
        others = [c for i, c in enumerate(classes) if i != slick]
        progress.log(f"generated classes {', '.join(others)} teach the model's {card.classes[1 - student]}, {classes[slick]} its {card.classes[student]}")
    return SampleFolder(path, classes, slick, len(kept), StudentLoss(temperature=float(index["temperature"])))


def sample_count(folder: SampleFolder, n: Optional[int], train_tiles: int) -> int:
    """The number of samples to train on: ``n``, or as many as real training tiles (the paper's choice)."""
    wanted = n or train_tiles
    if wanted > folder.kept:
        asked = f"{wanted} are asked for" + ("" if n else " (as many as the training tiles, the default)")
        raise InputError(
            f"{folder.path} holds {folder.kept} kept samples; {asked}.",
            f"Generate {wanted - folder.kept} more (python -m engine generate --out {folder.path} --n {wanted - folder.kept}), "
            f"or use fewer (--n-generated {folder.kept}).",
        )
    return wanted


def student_tiles(folder: SampleFolder, n: int, progress: Progress, labels: str = "soft") -> tuple[TileSet, dict[str, Any]]:
    """The first ``n`` kept samples as training tiles with their KD targets (``labels``, one of
    ``GENERATED_LABELS``), and the lineage they leave.

    The lineage names the samples used and the index they were read from (by its hash), which is what it
    takes to rebuild the set: the index records how each sample was made.
    """
    progress.update("samples", 0, 1, f"Reading {n} generated samples")
    data = samples.load_samples(folder.path, n)
    if len(data) < n:  # discarded in the plugin since the folder was checked
        raise InputError(f"{folder.path} now holds {len(data)} kept samples, fewer than the {n} to train on.", "Start the fine-tuning again.")
    raw = (folder.path / samples.INDEX).read_bytes()
    index = json.loads(raw)
    records = {s["id"]: s for s in index["samples"]}
    used = sorted({records[i]["generator"] for i in data.ids})
    hard = (data.hard_labels() == folder.slick).unsqueeze(1).float()
    soft = hard if labels == "hard" else data.soft_labels()[:, folder.slick : folder.slick + 1]
    tiles = TileSet(data.tiles, hard, (data.tiles > 0).float(), soft, torch.ones(n, dtype=torch.bool))
    progress.update("samples", 1, 1)
    lineage = {
        "folder": str(folder.path.resolve()),
        "index_sha256": hashlib.sha256(raw).hexdigest(),
        "generators": [{"name": index["generators"][k]["name"], "sha256": index["generators"][k]["sha256"]} for k in used],
        "n": n,
        "ids": data.ids,
        "classes": folder.classes,
        "slick_class": folder.classes[folder.slick],
        "labels": labels,
        "temperature": folder.loss.temperature,
        "lambda_ce": folder.loss.ce,
        "lambda_kd": folder.loss.kd,
        "lambda_dice": folder.loss.dice,
    }
    return tiles, lineage


def mixed(real: TileSet, generated: TileSet) -> TileSet:
    """One training set of both kinds; a real tile's soft target is its label."""
    return TileSet(
        torch.cat([real.x, generated.x]),
        torch.cat([real.y, generated.y]),
        torch.cat([real.valid, generated.valid]),
        torch.cat([real.y, generated.soft]),
        torch.cat([torch.zeros(len(real), dtype=torch.bool), generated.generated]),
    )
