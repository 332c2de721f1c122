"""Reproducible pretraining of the bundled default model on the project's synthetic scenes.

The paper pretrains on IW/VV slicks resampled to the EW pixel size and fine-tunes on a few EW/HH ones.
Here the source domain is the synthetic generator: IW/VV-like and EW/HH-like scenes at the model's pixel
size, stretched by eq. 1 exactly as detection does. ``python -m engine pretrain`` with its defaults
re-creates ``resources/models/slick_unet_r18_25m.safetensors``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .models import DEFAULT_MODEL, ModelCard, build_model, save_model
from .normalise import Stretch
from .progress import Progress
from .synth import SceneSpec, generate
from .training import TileSet, TrainConfig, train

DEFAULT_CARD = dict(
    name="Slick U-Net R18 25 m (synthetic pretraining)",
    architecture="unet",
    encoder="tu-resnet18",
    arch_kwargs={"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]},
    tile_size=512,
    pixel_size=25.0,
    polarisation="HH",
    mode="EW",
)


def synthetic_tiles(n: int, tile: int, pixel_size: float, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(stretched tile, slick mask) pairs from small seeded scenes, alternating IW/VV-like and EW/HH-like;
    a quarter hold no seep, because most of a real scene is clean sea and look-alikes."""
    for i in range(n):
        spec = SceneSpec(
            height=tile, width=tile, mode=("IW_VV", "EW_HH")[i % 2], pixel_size=pixel_size,
            seed=seed * 100_003 + i, n_seeps=(i // 2) % 4, n_ships=i % 4, n_lookalikes=1 + i % 3, land=i % 7 == 0,
            nodata_border=i % 5 == 0,
        )
        sigma0, classes = generate(spec)
        values = np.where(sigma0 > 0, sigma0, np.nan).astype(np.float32)
        stretch = Stretch.fit("float32_linear", [values])
        yield stretch.apply(values), (classes == 1)


def pretrain(out: Path, n_train: int, n_val: int, tile: int, config: TrainConfig, progress: Progress) -> dict:
    card = ModelCard(**DEFAULT_CARD)
    torch.manual_seed(config.seed)
    model = build_model(card)
    progress.log(f"generating {n_train} + {n_val} synthetic {tile}-pixel tiles")
    train_pairs = list(synthetic_tiles(n_train, tile, card.pixel_size, config.seed))
    val_pairs = list(synthetic_tiles(n_val, tile, card.pixel_size, config.seed + 1))
    train_set = TileSet.from_arrays(*zip(*train_pairs))
    val_set = TileSet.from_arrays(*zip(*val_pairs))
    report = train(model, train_set, val_set, config, progress)
    card.provenance = {
        "how": "python -m engine pretrain " + f"--train-tiles {n_train} --val-tiles {n_val} --tile {tile} "
        f"--epochs {config.epochs} --seed {config.seed}",
        "data": "synthetic IW/VV-like and EW/HH-like scenes (engine.synth), eq. 1 stretch",
        "train_tiles": n_train,
        "val_tiles": n_val,
        "epochs_run": report.epochs_run,
        "best_epoch": report.best_epoch,
        "seconds": report.seconds,
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
    }
    card.metrics = {"synthetic_val_dice": round(report.val_dice, 4)}
    save_model(model, card, out, half=True)
    return {"model": str(out), "val_dice": report.val_dice, "epochs_run": report.epochs_run,
            "seconds": report.seconds, "tiles_per_second": report.tiles_per_second}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain the default model on synthetic scenes (reproducible)")
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="model file to write")
    p.add_argument("--train-tiles", type=int, default=320)
    p.add_argument("--val-tiles", type=int, default=48)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    return pretrain(args.out, args.train_tiles, args.val_tiles, args.tile, config, progress)
