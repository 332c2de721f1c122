"""The generators' command line: ``generator train|info|pretrain`` and ``generate``.

Apart from the jobs it runs, so that they build on one another without importing their command line
(``samples`` keeps its own, which needs no PyTorch).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..cli.args import DEVICE_HELP, Given, add_options, given, number_or, options_from
from ..contract import GENERATOR_KINDS
from ..errors import InputError
from ..progress import Progress
from . import jointnet
from .generator import GeneratorOptions, generate, train_generator
from .joint_ddpm import KIND, NETS, SOLVERS, read_generator_card
from .parent import Parent
from .pretrain import PretrainOptions, pretrain_generator


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``generator train|info|pretrain`` and ``generate``; ``samples`` is registered by its own module, which
    imports no PyTorch."""
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
    _add_pretrain(sub)

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


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    """Register ``generator pretrain`` (``sub``: the ``generator`` command's actions)."""
    p = sub.add_parser("pretrain", help="pretrain a generator on real SAR texture, for generator train --init")
    p.add_argument("--out", required=True, type=Path, help="new generator file (.safetensors); never overwritten")
    add_options(p, PretrainOptions, {
        "kind": "dakter or sar-jointnet",
        "steps": "training steps of all stages together",
        "tiles": "real-texture tiles to cut",
        "tile": "tile size in pixels",
        "net": "network size: small (CPU) or ddpm (the paper's, GPU)",
        "batch_size": "tiles per full-size step",
        "seed": "seed of the tiles, initial weights, batches and noise",
        "device": DEVICE_HELP,
    }, kind={"choices": list(GENERATOR_KINDS)}, net={"choices": list(NETS)})
    p.add_argument("--checkpoints", type=Path,
                   help="the stages' checkpoint folder, from which the same command goes on (default: checkpoints/<out name>-<key>)")
    p.set_defaults(func=_pretrain_cli)


def _pretrain_cli(args: argparse.Namespace, progress: Progress) -> dict:
    return pretrain_generator(args.out, options_from(args, PretrainOptions), progress, args.checkpoints)
