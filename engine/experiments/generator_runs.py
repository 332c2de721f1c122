"""What the generator experiments (``experiment dakter``, ``experiment dakd``) take alike: the command-line
options of their students and quality figures, and the checks of those before anything is trained."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..errors import InputError, OutputError
from ..generation.generator import GeneratorOptions
from ..jobs.finetune import FinetuneOptions, check_options
from ..models.registry import ModelCard, read_card
from .sar_stats import DB_SPAN


def add_shared_options(parser: argparse.ArgumentParser, recipe: FinetuneOptions, generator: GeneratorOptions) -> None:
    """--lr, --train-layers, --batch-size, --threshold, --db-span, --threads, --device and --seed, with the
    experiment's defaults."""
    parser.add_argument("--lr", type=float, default=recipe.lr, help=f"student learning rate (default {recipe.lr:g})")
    parser.add_argument("--train-layers", choices=("all", "decoder"), default=recipe.train_layers, help="student layers trained (default all)")
    parser.add_argument("--batch-size", type=int, help="student tiles per step (default 4 on a CPU)")
    parser.add_argument("--threshold", type=float, help="default: each model's own")
    parser.add_argument("--db-span", type=float, default=DB_SPAN, help=f"assumed dB span of the stretch, for ENL (default {DB_SPAN:g})")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--device", default=generator.device)
    parser.add_argument("--seed", type=int, default=generator.seed, help=f"generator seed (default {generator.seed})")


def check_shared(out: Path, recipe: FinetuneOptions, seeds: tuple[int, ...], threshold: Optional[float], db_span: float, enl_window: int,
                 model: Path) -> ModelCard:
    """The output folder, the students' recipe and seeds, the quality figures' settings and the starting model;
    returns its card."""
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty; nothing was overwritten.", "Give a new folder with --out.")
    check_options(recipe)
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"The students' seeds must be distinct and at least one; got {list(seeds)}.", "E.g. --seeds 0 1 2.")
    if (threshold is not None and not 0 < threshold < 1) or db_span <= 0 or enl_window < 2:
        raise InputError("Threshold must lie in (0, 1), --db-span be positive and --enl-window at least 2.", "E.g. --threshold 0.5.")
    card = read_card(model)
    if card.out_channels != 1:
        raise InputError(f"The model {card.name} is not a water/slick model.", "Give a binary model with --model.")
    return card
