"""Reproducible pretraining of the bundled default model on the project's synthetic scenes.

The paper pretrains on IW/VV slicks resampled to the EW pixel size and fine-tunes on a few EW/HH ones.
Here the source domain is the synthetic generator: IW/VV-like and EW/HH-like scenes at the model's pixel
size, stretched by eq. 1 exactly as detection does. ``python -m engine pretrain`` with its defaults
re-creates ``resources/models/slick_unet_r18_25m.safetensors``; with ``--architecture`` (e.g. samlora) and
``--encoder-weights`` (e.g. SAM's checkpoint) it pretrains another network of the registry the same way.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from ..data.synth import SceneSpec, generate
from ..errors import InputError
from ..progress import Progress
from ..scenes.normalise import Stretch
from .registry import ARCHITECTURES, DEFAULT_MODEL, ModelCard, build_model, load_encoder_weights, save_model
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


def pretrain_card(architecture: Optional[str] = None, encoder: Optional[str] = None, arch_kwargs: Optional[dict] = None) -> ModelCard:
    """The default model's card, or the same recipe for another network of the registry.

    A SamLoRA's position embeddings are laid out for the card's tile size unless ``arch_kwargs`` says otherwise.
    """
    if architecture is None and encoder is None and arch_kwargs is None:
        return ModelCard(**DEFAULT_CARD)
    architecture = architecture or DEFAULT_CARD["architecture"]
    encoder = encoder or DEFAULT_CARD["encoder"]
    kwargs = dict(arch_kwargs or {})
    if architecture == "samlora":
        kwargs.setdefault("img_size", DEFAULT_CARD["tile_size"])
    return ModelCard(**{
        **DEFAULT_CARD, "name": f"Slick {architecture} {encoder} 25 m (synthetic pretraining)",
        "architecture": architecture, "encoder": encoder, "arch_kwargs": kwargs,
    })


def _is_default(card: ModelCard) -> bool:
    return (card.architecture, card.encoder, card.arch_kwargs) == tuple(DEFAULT_CARD[k] for k in ("architecture", "encoder", "arch_kwargs"))


def pretrain(
    out: Path,
    n_train: int,
    n_val: int,
    tile: int,
    config: TrainConfig,
    progress: Progress,
    card: Optional[ModelCard] = None,
    encoder_weights: Optional[Path] = None,
) -> dict:
    """Pretrain ``card``'s network (the default one when None) from random init or from ``encoder_weights``,
    a local checkpoint loaded before any tile is generated, so that a wrong file fails at once."""
    card = card or ModelCard(**DEFAULT_CARD)
    torch.manual_seed(config.seed)
    model = build_model(card)
    if encoder_weights:
        load_encoder_weights(model, encoder_weights)
    progress.log(f"generating {n_train} + {n_val} synthetic {tile}-pixel tiles")
    train_pairs = list(synthetic_tiles(n_train, tile, card.pixel_size, config.seed))
    val_pairs = list(synthetic_tiles(n_val, tile, card.pixel_size, config.seed + 1))
    train_set = TileSet.from_arrays(*zip(*train_pairs))
    val_set = TileSet.from_arrays(*zip(*val_pairs))
    report = train(model, train_set, val_set, config, progress)
    network = "" if _is_default(card) else \
        f"--architecture {card.architecture} --encoder {card.encoder} --arch-kwargs '{json.dumps(card.arch_kwargs)}' "
    weights = f"--encoder-weights {Path(encoder_weights).name} " if encoder_weights else ""
    card.provenance = {
        "how": "python -m engine pretrain " + network + weights + f"--train-tiles {n_train} --val-tiles {n_val} --tile {tile} "
        f"--epochs {config.epochs} --seed {config.seed}",
        "encoder_weights": Path(encoder_weights).name if encoder_weights else None,
        "data": "synthetic IW/VV-like and EW/HH-like scenes (engine.data.synth), eq. 1 stretch",
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
    p = subparsers.add_parser("pretrain", help="pretrain the default model (or another network) on synthetic scenes (reproducible)")
    p.add_argument("--out", type=Path, help="model file to write (default: the bundled model, for the default network only)")
    p.add_argument("--architecture", choices=sorted(ARCHITECTURES), help="another network of the registry (default: unet)")
    p.add_argument("--encoder", help="its encoder, e.g. samvit_base_patch16 or resnet50 (default: tu-resnet18)")
    p.add_argument("--arch-kwargs", help="its further arguments as JSON, e.g. '{\"lora_rank\": 16}'")
    p.add_argument("--encoder-weights", type=Path, help="local encoder checkpoint to start from, e.g. sam_vit_b_01ec64.pth")
    p.add_argument("--train-tiles", type=int, default=320)
    p.add_argument("--val-tiles", type=int, default=48)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    try:
        arch_kwargs = None if args.arch_kwargs is None else json.loads(args.arch_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(f"--arch-kwargs is not JSON ({exc}).", "Give e.g. '{\"lora_rank\": 16}'.") from None
    if arch_kwargs is not None and not isinstance(arch_kwargs, dict):
        raise InputError("--arch-kwargs must be a JSON object.", "Give e.g. '{\"lora_rank\": 16}'.")
    card = pretrain_card(args.architecture, args.encoder, arch_kwargs)
    if args.out is None and not _is_default(card):
        raise InputError("--out is needed when pretraining another network than the bundled model's.", "E.g. --out samlora_b.safetensors.")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    return pretrain(args.out or DEFAULT_MODEL, args.train_tiles, args.val_tiles, args.tile, config, progress, card, args.encoder_weights)
