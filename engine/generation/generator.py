"""DAKTer's jobs: train a generator on a label store and generate samples from it (either kind) into a folder.

The generator file is written once training succeeded, atomically, so a failed or cancelled run leaves no
file (``training_set``); generation keeps every sample finished before a cancel (engine/generation/samples.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from ..contract import GENERATOR_LOW_RES_STEPS, GENERATOR_STEPS
from ..errors import Cancelled, InputError
from ..models.eager import pick_device
from ..models.registry import BINARY_CLASSES, check_new_model_file, slick_index
from ..progress import Progress, silent
from . import jointnet, samples, stages
from .joint_ddpm import (
    KIND,
    SOLVERS,
    GeneratorCard,
    GeneratorTraining,
    JointSet,
    build_unet,
    joint_loss,
    noise_schedule,
    sample,
    to_uint8,
    unet_config,
)
from .parent import Parent
from .training_set import balancing, store_record, store_tiles, training_record, write_generator

if TYPE_CHECKING:
    from diffusers import UNet2DModel


@dataclass
class GeneratorOptions:
    tile: int = 64
    net: str | dict[str, Any] = "small"
    """A size from ``joint_ddpm.NETS`` or explicit ``UNet2DModel`` arguments."""
    steps: int = GENERATOR_STEPS
    low_res_steps: int = GENERATOR_LOW_RES_STEPS
    batch_size: int = 8
    lr: float = 2e-4
    b: Optional[float] = None
    """None: from the training tiles (eq. 16); a number for the paper's ablation (0.1, 1, 2)."""
    slick_share: Optional[float] = GeneratorTraining.slick_share
    """Share of each batch from tiles with a slick (``GeneratorTraining.slick_share``); None: uniform."""
    seed: int = 0
    device: str = "auto"
    pixel_size: Optional[float] = None
    """None: the bundled model's (or the parent's), so samples match the model students start from."""
    name: Optional[str] = None
    init: Optional[Path] = None
    """A generator of this kind to start from (``parent.Parent``): tile, network and pixel size are its own, and
    so is b unless given. None: freshly initialised. ``FINE_TUNE`` holds the command line's defaults for it."""


def train(
    card: GeneratorCard,
    data: JointSet,
    config: GeneratorTraining,
    progress: Optional[Progress] = None,
    folder: Optional[Path] = None,
    init: Optional[Parent] = None,
) -> tuple[UNet2DModel, list[dict], dict[int, float]]:
    """A generator trained on ``data`` from ``init``'s weights (None: freshly initialised); (network, loss
    history, seconds of each stage over all the runs that went into it).

    Progress reports every step (and Cancel stops at the next one); the history keeps the mean losses of
    about twenty windows per stage, which are also logged. With a checkpoint ``folder`` each stage saves
    itself there and a run with the same settings and tiles goes on where an earlier one stopped.
    """
    progress = progress or silent()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    net = build_unet(card)
    if init is not None:
        net.load_state_dict(init.weights())
    net.to(torch.device(config.device)).train()
    noise = noise_schedule(card)
    digest = stages.data_sha256(data)
    history: list[dict] = []
    seconds: dict[int, float] = {}
    weights = config.tile_weights(data, slick_index(card.classes))
    for number, name, tiles, steps, batch_size, lr in config.stages(data):
        trained_with = stages.trained_with(
            card, digest, init, steps=[config.low_res_steps, config.steps][:number], lr=[config.lr, config.lr / 2][:number],
            batch_size=config.batch_size, weight_decay=config.weight_decay, slick_share=config.slick_share, seed=config.seed,
        )
        stage = stages.Stage(number, name, steps, batch_size, trained_with, folder)
        optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=config.weight_decay)
        done, seconds[number] = stages.run(stage, net, list(net.parameters()), optimiser, gen,
                                           lambda batch: joint_loss(net, noise, batch, card.b, gen), tiles, weights, progress, stage.checkpoint())
        history += done
    return net.eval(), history, seconds


def train_generator(
    store_path: str | Path, out_path: str | Path, options: Optional[GeneratorOptions] = None, progress: Optional[Progress] = None
) -> dict[str, Any]:
    """Train a generator on a label store's tiles, from ``options.init`` when given, and write it to
    ``out_path`` (never replaced)."""
    options = options or GeneratorOptions()
    progress = progress or silent()
    out_path = Path(out_path)
    check_training_options(options)
    check_new_model_file(out_path)
    unet = unet_config(options.net, options.tile, len(BINARY_CLASSES))
    parent = Parent.read(options.init, KIND) if options.init else None
    if parent is not None:
        parent.check(options.tile, unet, BINARY_CLASSES, options.pixel_size)
    pixel_size = options.pixel_size or (parent.card.pixel_size if parent else None)
    store, pixel_size, (data, skipped, scenes) = store_tiles(store_path, options.tile, pixel_size, progress)
    name = options.name or f"Generator {options.tile} px, {store.path.stem}"
    return fit_generator(data, out_path, options, pixel_size, name, store_record(store, scenes, skipped), progress, parent=parent)


def fit_generator(
    data: JointSet, out_path: Path, options: GeneratorOptions, pixel_size: float, name: str, source: dict[str, Any], progress: Progress,
    folder: Optional[Path] = None, parent: Optional[Parent] = None,
) -> dict[str, Any]:
    """Train DAKTer on ``data`` (from ``parent``'s weights when given) and write it: what training on a label
    store and pretraining share. ``source`` is what the card says of the tiles (``skipped_tiles`` among it);
    with a checkpoint ``folder`` a stopped run goes on where it stopped."""
    device = pick_device(options.device)
    b, b_from = balancing(data, options.b, parent)
    progress.log(f"{len(data)} training tiles ({source['skipped_tiles']} left out); b = {b:.4f} ({b_from})")
    config = GeneratorTraining(
        steps=options.steps,
        low_res_steps=options.low_res_steps,
        batch_size=options.batch_size,
        lr=options.lr,
        slick_share=options.slick_share,
        seed=options.seed,
        device=str(device),
    )
    card = GeneratorCard(
        name=name,
        classes=list(BINARY_CLASSES),
        tile_size=options.tile,
        pixel_size=pixel_size,
        b=b,
        unet=unet_config(options.net, options.tile, len(BINARY_CLASSES)),
    )
    net, history, seconds = train(card, data, config, progress, folder, parent)
    card.training = {**training_record(card, source, b_from, config, seconds, history, parent), "train_tiles": len(data)}
    write_generator(net, card, out_path, progress)
    progress.update("done", 1, 1)
    return {
        "generator": str(out_path),
        "kind": KIND,
        "b": b,
        "b_from": b_from,
        "train_tiles": len(data),
        "skipped_tiles": source["skipped_tiles"],
        "tile": options.tile,
        "steps": options.steps,
        "low_res_steps": options.low_res_steps,
        "final_loss": history[-1]["loss"] if history else None,
        "device": str(device),
        "seconds": card.training["seconds"],
        "initialised_from": card.training.get("initialised_from"),
        "history": history,
    }


def generate(
    generator_path: str | Path,
    folder: str | Path,
    n: int,
    *,
    solver: str = "ddim",
    steps: Optional[int] = None,
    seed: Optional[int] = None,
    batch_size: Optional[int] = None,
    device: str = "auto",
    mix_generators: bool = False,
    progress: Optional[Progress] = None,
) -> dict[str, Any]:
    """Generate ``n`` samples into ``folder`` (created, or appended to), a batch at a time.

    Seeds run from ``seed`` (default: one past the folder's largest), one per sample. Cancel stops within
    a solver step; the samples of the batches finished before stay in the folder.
    """
    progress = progress or silent()
    started = time.monotonic()
    generator_path, folder = Path(generator_path), Path(folder)
    if n < 1:
        raise InputError(f"--n {n}: nothing to generate.", "Ask for at least one sample.")
    if solver not in SOLVERS:
        raise InputError(f"Unknown solver {solver!r}.", f"Use one of: {', '.join(SOLVERS)}.")
    steps = steps or SOLVERS[solver][1]
    if steps < 1 or (batch_size is not None and batch_size < 1):
        raise InputError("Steps and batch size must be at least 1.", f"E.g. --steps {SOLVERS[solver][1]}.")
    torch_device = pick_device(device)
    net, card = jointnet.load_any(generator_path, torch_device)
    key = samples.prepare(folder, _generator_entry(generator_path, card), allow_other_generator=mix_generators)
    index = samples.read_index(folder)
    seed = seed if seed is not None else max((s["seed"] for s in index["samples"]), default=-1) + 1
    seeds = list(range(seed, seed + n))
    taken = {s["seed"] for s in index["samples"] if (s["generator"], s["solver"], s["steps"]) == (key, solver, steps)}
    clash = sorted(taken.intersection(seeds))
    if clash:
        raise InputError(
            f"{folder} already holds samples of seeds {', '.join(map(str, clash[:5]))}{'...' if len(clash) > 5 else ''} "
            f"from this generator with {solver} in {steps} steps.",
            "Leave --seed out to continue after the folder's seeds, or give another seed.",
        )
    batch_size = batch_size or (16 if torch_device.type == "cuda" else 4)
    threads = torch.get_num_threads() if torch_device.type == "cpu" else None
    ids: list[str] = []
    for first in range(0, n, batch_size):
        batch = seeds[first : first + batch_size]

        def report(step: int, total: int) -> None:
            progress.update(
                "generating", first * steps + step * len(batch), n * steps,
                f"samples {first + 1}-{first + len(batch)} of {n}: step {step}/{total}",
            )

        try:
            x, logits = sample(net, card, batch, solver, steps, report)
        except Cancelled:
            progress.log(f"cancelled: the {len(ids)} samples finished before are kept in {folder}")
            raise
        tiles = to_uint8(x[:, 0])
        made = [samples.NewSample(tiles[i], logits[i].numpy(), s, batch, solver, steps, str(torch_device), threads) for i, s in enumerate(batch)]
        ids += samples.add(folder, key, made)
    seconds = time.monotonic() - started
    result = samples.summary(folder)
    progress.update("done", 1, 1)
    return {
        "folder": str(folder),
        "generated": len(ids),
        "ids": ids,
        "total": result["total"],
        "kept": result["kept"],
        "solver": solver,
        "steps": steps,
        "device": str(torch_device),
        "seconds": round(seconds, 1),
        "samples_per_minute": round(60 * len(ids) / seconds, 2),
    }


def _generator_entry(path: Path, card: GeneratorCard) -> dict[str, Any]:
    return {
        "path": str(path.resolve()),
        "name": card.name,
        "kind": card.kind,
        "sha256": samples.generator_sha256(path),
        "tile_size": card.tile_size,
        "classes": card.classes,
        "pixel_size": card.pixel_size,
        "b": card.b,
    }


def check_training_options(options: GeneratorOptions) -> None:
    if options.steps < 0 or options.low_res_steps < 0 or options.steps + options.low_res_steps == 0:
        raise InputError("Training needs some steps.", "E.g. --low-res-steps 600 --steps 300.")
    if options.batch_size < 1:
        raise InputError("Batch size must be at least 1.", "E.g. --batch-size 8.")
    if not options.lr > 0:
        raise InputError(f"Learning rate {options.lr} must be positive.", "E.g. --lr 2e-4.")
    if options.b is not None and not options.b > 0:
        raise InputError(f"Balancing factor b = {options.b} must be positive.", "Give e.g. --b 0.5, or --b auto.")
    if options.slick_share is not None and not 0 < options.slick_share < 1:
        raise InputError(f"Slick share {options.slick_share} must lie between 0 and 1.", "Give e.g. --slick-share 0.5, or --slick-share uniform.")
