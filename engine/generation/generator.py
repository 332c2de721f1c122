"""The generator's jobs: train one on a label store, generate samples, look after a sample folder.

Training tiles are cut by ``finetune_data.collect_tiles``, so a generator learns from exactly what detection
and fine-tuning see: the scene's UTM analysis grid at the target pixel size and the eq. 1 stretch. The
generator file is written once training succeeded, atomically, so a failed or cancelled run leaves no
file; generation keeps every sample finished before a cancel (engine/generation/samples.py).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from ..cli.args import DEVICE_HELP, Given, add_options, given, number_or, options_from
from ..contract import GENERATOR_KINDS, GENERATOR_LOW_RES_STEPS, GENERATOR_STEPS
from ..errors import Cancelled, InputError, ModelError
from ..jobs.finetune import check_out
from ..jobs.finetune_data import check_store, collect_tiles
from ..jobs.labels import LabelStore, read_store
from ..machine import file_sha256
from ..models.eager import pick_device
from ..models.registry import BINARY_CLASSES, DEFAULT_MODEL, ModelCard, read_card
from ..progress import Progress, silent
from . import jointnet, samples
from .parent import Parent
from .joint_ddpm import (
    KIND,
    NETS,
    SOLVERS,
    GeneratorCard,
    GeneratorTraining,
    JointSet,
    balancing_factor,
    net_name,
    read_generator_card,
    sample,
    save_generator,
    to_uint8,
    train,
    unet_config,
)

MIN_TILES = 16
"""Fewest usable tiles a generator is trained on. Far from enough for varied samples (the paper had
thousands); below it a generator can do little but copy its tiles."""
FEW_TILES = 200
"""Below this many tiles, training says that samples will stay close to the labelled tiles."""
MIN_KNOWN = 0.5
"""Least known fraction of a training tile: a mostly unknown label would teach the label channels that
'no answer' is a normal output."""


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


def training_tiles(
    store: LabelStore, tile: int, pixel_size: float, progress: Progress, classes: Sequence[str] = ("slick",)
) -> tuple[JointSet, int, list[str]]:
    """(tiles as the generator learns them, tiles left out, scenes used), of ``1 + len(classes)`` classes: the
    unlabelled known pixels, then the store's label ``classes``.

    A tile is used when every pixel holds data (a generated tile never has no data, so the generator must
    not learn to make any) and at least ``MIN_KNOWN`` of it is labelled or reviewed.
    """
    # collect_tiles reads the pixel size and band count a segmentation model's card would give.
    grid = ModelCard(name="sample generator", architecture="joint_ddpm", encoder="none", tile_size=tile, pixel_size=pixel_size)
    tiles = collect_tiles(store, grid, tile, progress, classes)
    usable = [t for t in tiles if t.x.min() > 0 and t.valid.mean() >= MIN_KNOWN]
    if len(usable) < MIN_TILES:
        raise InputError(
            f"Only {len(usable)} of the {len(tiles)} labelled {tile}-pixel tiles are at least {MIN_KNOWN:.0%} reviewed and free of "
            f"no data; a generator needs at least {MIN_TILES} (and a few hundred to vary).",
            "Mark more checked sea as reviewed (with every slick in it labelled), add scenes, or use smaller tiles (e.g. --tile 32).",
        )
    if len(usable) < FEW_TILES:
        progress.log(f"warning: {len(usable)} training tiles; generated samples will stay close to them")
    data = JointSet.from_arrays(
        np.stack([t.x for t in usable]), np.stack([t.target for t in usable]), np.stack([t.valid for t in usable]), 1 + len(classes)
    )
    return data, len(tiles) - len(usable), sorted({t.scene for t in usable})


def store_tiles(
    store_path: str | Path, tile: int, pixel_size: Optional[float], progress: Progress, classes: Sequence[str] = ("slick",)
) -> tuple[LabelStore, float, tuple[JointSet, int, list[str]]]:
    """(the label store, read and checked; the pixel size, None meaning the bundled model's; ``training_tiles``)."""
    store = read_store(store_path)
    for note in store.repairs:
        progress.log(f"warning: {note}")
    check_store(store)
    pixel_size = pixel_size or read_card(DEFAULT_MODEL).pixel_size
    return store, pixel_size, training_tiles(store, tile, pixel_size, progress, classes)


def store_record(store: LabelStore, scenes: list[str], skipped: int) -> dict[str, Any]:
    """What a generator card's ``training`` says of the label store tiles it learnt from."""
    return {"labels": {"path": str(store.path.resolve()), "sha256": store.sha256}, "scenes": scenes, "skipped_tiles": skipped}


def balancing(data: JointSet, given: Optional[float], parent: Optional[Parent]) -> tuple[float, str]:
    """(b, where it came from): ``given``, else the parent's (its label channels learnt at that scale), else
    from the tiles (eq. 16)."""
    if given is not None:
        return given, "given"
    if parent is not None:
        return parent.card.b, "parent"
    return balancing_factor(data), "tiles"


def training_record(
    card: GeneratorCard, source: dict[str, Any], b_from: str, config: Any, seconds: dict[int, float], history: list[dict],
    parent: Optional[Parent],
) -> dict[str, Any]:
    """A generator card's ``training``: what ``source`` says of the tiles, b's origin, the network, the settings
    (``config``, a dataclass), the seconds of training over every run that went into it, the loss history and
    the generator it started from."""
    return {
        **source,
        "b_from": b_from,
        "net": net_name(card.unet),
        **asdict(config),
        "seconds": round(sum(seconds.values()), 1),
        "history": history,
        **({"initialised_from": parent.record()} if parent is not None else {}),
    }


def write_generator(net: torch.nn.Module, card: GeneratorCard, out_path: Path, progress: Progress) -> None:
    """Written once training succeeded, whole (``save_model``), never over a file."""
    progress.update("saving", 0, 1, "Writing the generator file")
    check_out(out_path)  # a file may have appeared there while training ran
    save_generator(net, card, out_path)


def train_generator(
    store_path: str | Path, out_path: str | Path, options: Optional[GeneratorOptions] = None, progress: Optional[Progress] = None
) -> dict[str, Any]:
    """Train a generator on a label store's tiles, from ``options.init`` when given, and write it to
    ``out_path`` (never replaced)."""
    options = options or GeneratorOptions()
    progress = progress or silent()
    out_path = Path(out_path)
    check_training_options(options)
    check_out(out_path)
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


def regenerate(
    folder: str | Path,
    ids: Optional[list[str]] = None,
    *,
    generator_path: Optional[str | Path] = None,
    device: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> dict[str, Any]:
    """Make samples again from their records: files that were lost are restored, files that exist are
    compared bit for bit and never replaced.

    ``ids`` None: every sample whose tile file is missing. Each sample's batch is rerun on the device and
    with the CPU threads it was made with (unless ``device`` is given), with the generator named in the index (or
    ``generator_path``, which must be the same file by its hash).
    """
    progress = progress or silent()
    folder = Path(folder)
    index = samples.read_index(folder)
    by_id = {s["id"]: s for s in index["samples"]}
    if ids:
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise InputError(f"No sample {', '.join(unknown)} in {folder}.", "See the ids with: python -m engine samples summary.")
        wanted = [by_id[i] for i in ids]
    else:
        wanted = [s for s in index["samples"] if not (folder / "tiles" / f"{s['id']}.npz").exists()]
    groups: dict[tuple, list[dict]] = {}
    for record in wanted:
        key = (record["generator"], tuple(record["batch_seeds"]), record["solver"], record["steps"], record["device"], record["threads"])
        groups.setdefault(key, []).append(record)
    identical, different, restored = [], [], []
    loaded: dict[tuple[str, str], tuple[Any, GeneratorCard]] = {}
    for done, ((key, batch, solver, steps, made_on, threads), records) in enumerate(groups.items()):
        progress.update("regenerating", done, len(groups), f"batch of seeds {batch[0]}-{batch[-1]}")
        entry = index["generators"][key]
        torch_device = pick_device(device or made_on)
        if (key, str(torch_device)) not in loaded:
            path = Path(generator_path or entry["path"])
            if _generator_sha256(path) != entry["sha256"]:
                raise ModelError(f"{path} is not the generator that made these samples (its hash differs).", "Give the original file with --generator.")
            loaded[(key, str(torch_device))] = jointnet.load_any(path, torch_device)
        net, card = loaded[(key, str(torch_device))]
        with cpu_threads(threads if torch_device.type == "cpu" else None):
            x, logits = sample(net, card, list(batch), solver, steps, lambda *_: progress.check())
        tiles = to_uint8(x[:, 0])
        for record in records:
            i = batch.index(record["seed"])
            tile, new_logits = tiles[i], logits[i].numpy()
            if (folder / "tiles" / f"{record['id']}.npz").exists():
                old_tile, old_logits = samples.read_sample(folder, record["id"])
                same = np.array_equal(old_tile, tile) and np.array_equal(old_logits, new_logits.astype(np.float16).astype(np.float32))
                (identical if same else different).append(record["id"])
            else:
                samples.restore(folder, record["id"], tile, new_logits)
                restored.append(record["id"])
    progress.update("done", 1, 1)
    return {"folder": str(folder), "checked": [r["id"] for r in wanted], "identical": identical, "different": different, "restored": restored}


@contextmanager
def cpu_threads(n: Optional[int]) -> Iterator[None]:
    """Run with ``n`` CPU threads (None: as is), as the sample was made."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generator_entry(path: Path, card: GeneratorCard) -> dict[str, Any]:
    return {
        "path": str(path.resolve()),
        "name": card.name,
        "kind": card.kind,
        "sha256": _generator_sha256(path),
        "tile_size": card.tile_size,
        "classes": card.classes,
        "pixel_size": card.pixel_size,
        "b": card.b,
    }


def _generator_sha256(path: Path) -> str:
    if not path.is_file():
        raise ModelError(f"Generator file not found: {path}.", "Give its path with --generator.")
    return file_sha256(path)


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


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``generator train|info|pretrain`` and ``generate``; ``samples`` is registered by its own module."""
    parser = subparsers.add_parser("generator")
    sub = parser.add_subparsers(dest="generator_command", required=True, metavar="ACTION")

    p = sub.add_parser("train", help="train a generator of SAR tiles and their labels on a label store")
    p.add_argument("--labels", required=True, help="label store (.gpkg) with reviewed areas")
    p.add_argument("--out", required=True, type=Path, help="new generator file (.safetensors); never overwritten")
    p.add_argument("--kind", choices=list(GENERATOR_KINDS), default=KIND,
                   help=f"{KIND} (one joint U-Net, default) or {jointnet.KIND} (SAR-Net and Label-Net joined, three stages)")
    tracked = {"action": Given}
    add_options(p, GeneratorOptions, {
        "tile": "tile size in pixels",
        "net": "network size: small (CPU) or ddpm (the paper's, GPU)",
        "steps": f"{KIND}: full-size training steps",
        "low_res_steps": f"{KIND}: steps on half-size tiles first, 4x the batch (0 skips)",
        "batch_size": f"tiles per full-size step; {jointnet.KIND}: its preset's unless given",
        "lr": f"first-stage learning rate, halved for the second; {jointnet.KIND}: its preset's unless given, for stages 1-2 "
              "and a tenth for stage 3",
        "b": "SNR balancing factor: auto (from the tiles, default) or a number",
        "slick_share": "share of each batch from tiles with a slick, or uniform",
        "seed": "seed of the initial weights, batches and noise",
        "device": DEVICE_HELP,
        "pixel_size": "metres per pixel of the tiles (default: the bundled model's)",
        "name": "the generator's name",
        "init": "a generator of this kind to fine-tune (e.g. a pretrained one): its tile, network and pixel size, "
                f"and fewer steps at a lower rate unless given ({KIND}: {_fine_tune_help(KIND)}; {jointnet.KIND}: stage 3 only, "
                f"{_fine_tune_help(jointnet.KIND)} at its preset's stage 3 rate)",
    }, net={"choices": list(NETS), **tracked}, b={"type": number_or("auto")}, slick_share={"type": number_or("uniform")},
        tile=tracked, steps=tracked, low_res_steps=tracked, batch_size=tracked, lr=tracked)
    add_options(p, jointnet.JointNetOptions, {
        "preset": f"{jointnet.KIND}: cpu (minutes with the small net) or paper (50k, 250k and 100k steps, batch 32: a GPU)",
        "stage_steps": f"{jointnet.KIND}: steps of each stage (default: the preset's)",
        "stage": f"{jointnet.KIND}: run this stage alone, from the one before it (default: all three in turn)",
        "synthetic": f"{jointnet.KIND}: also learn from N synthetic scenes, which add the ship and land classes",
        "checkpoints": f"{jointnet.KIND}: the stages' checkpoint folder, from which a second run goes on (default: beside --out, "
                       "its name + .stages)",
    }, preset={"choices": list(jointnet.PRESETS), **tracked}, stage={"choices": jointnet.STAGES, **tracked},
        stage_steps={"type": int, "nargs": 3, "metavar": ("S1", "S2", "S3"), **tracked}, synthetic=tracked, checkpoints=tracked)
    p.set_defaults(func=_train_cli)

    p = sub.add_parser("info", help="what a generator file says about itself")
    p.add_argument("generator", help="generator file (.safetensors)")
    p.set_defaults(func=_info_cli)
    from . import pretrain  # which builds on this module

    pretrain.add_cli(sub)

    p = subparsers.add_parser("generate")
    p.add_argument("--generator", required=True, help="generator file (.safetensors)")
    p.add_argument("--out", required=True, help="sample folder: created, or appended to")
    p.add_argument("--n", type=int, required=True, help="number of samples to add")
    p.add_argument("--solver", choices=list(SOLVERS), default="ddim",
                   help="ddim (the paper's, 200 steps) or dpm++ (about 10x faster, 20 steps) (default ddim)")
    p.add_argument("--steps", type=int, help="solver steps (default 200 for ddim, 20 for dpm++)")
    p.add_argument("--seed", type=int, help="first seed (default: one past the folder's largest)")
    p.add_argument("--batch-size", type=int, help="samples per batch (default 16 on a GPU, 4 elsewhere)")
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default auto)")
    p.add_argument("--mix-generators", action="store_true", help="allow adding to a folder made by another generator")
    p.set_defaults(func=_generate_cli)


KIND_OPTIONS = {KIND: ("steps", "low_res_steps"), jointnet.KIND: ("preset", "stage_steps", "stage", "synthetic", "checkpoints")}
"""The ``generator train`` options that only one kind of generator takes."""
FINE_TUNE: dict[str, dict[str, Any]] = {
    KIND: {"steps": 150, "low_res_steps": 0, "lr": 1e-4},
    jointnet.KIND: {"stage_steps": (0, 0, 150)},
}
"""``generator train --init``'s defaults. DAKTer: no half-size stage (the parent has learnt the coarse
structure) and half the full-size steps, at 5e-5 (half the first stage's rate of ``lr``, half a new
generator's). SAR-JointNet: stage 3 alone, every layer at the preset's stage 3 rate (a tenth of stages 1
and 2), for half again its steps. Either way minutes on a CPU with the small network."""


def _fine_tune_help(kind: str) -> str:
    values = FINE_TUNE[kind]
    if kind == KIND:
        return f"{values['steps']} full-size steps at {values['lr'] / 2:g}, no half-size ones"
    return f"{values['stage_steps'][2]} steps"


def train_options(args: argparse.Namespace) -> GeneratorOptions | jointnet.JointNetOptions:
    """The options of the kind of generator asked for: another kind's options are refused, SAR-JointNet
    takes its preset's batch size and learning rate unless they are given, and a fine-tune (``--init``)
    the parent's tile and network and ``FINE_TUNE``'s steps and rate unless they are given."""
    wrong = [f"--{name.replace('_', '-')}" for kind, names in KIND_OPTIONS.items() if kind != args.kind for name in names
             if name in given(args)]
    if wrong:
        raise InputError(f"{', '.join(wrong)}: not options of a {args.kind} generator.", "Leave them out, or choose the other --kind.")
    defaults = {**Parent.read(args.init, args.kind).options(), **FINE_TUNE[args.kind]} if args.init else {}
    if args.kind == jointnet.KIND:
        defaults = {"batch_size": None, "lr": None, **defaults}
    unset = {name: value for name, value in defaults.items() if name not in given(args)}
    return options_from(args, jointnet.JointNetOptions if args.kind == jointnet.KIND else GeneratorOptions, **unset)


def _train_cli(args: argparse.Namespace, progress: Progress) -> dict:
    options = train_options(args)
    train_kind = jointnet.train_jointnet if isinstance(options, jointnet.JointNetOptions) else train_generator
    return train_kind(args.labels, args.out, options, progress)


def _info_cli(args: argparse.Namespace, progress: Progress) -> dict:
    card = read_generator_card(args.generator)
    info = asdict(card)
    info["training"] = {k: v for k, v in card.training.items() if k != "history"}
    return {"generator": args.generator, **info}


def _generate_cli(args: argparse.Namespace, progress: Progress) -> dict:
    return generate(
        args.generator, args.out, args.n, solver=args.solver, steps=args.steps, seed=args.seed, batch_size=args.batch_size,
        device=args.device, mix_generators=args.mix_generators, progress=progress,
    )
