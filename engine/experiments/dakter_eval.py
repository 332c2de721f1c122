"""DAKTer, evaluated on the bundled real Arctic tiles: ``python -m engine experiment dakter``.

The data split is the transfer experiment's (engine/experiments/split.py): generators and students learn from the
target pool (sample_0, sample_70); the test scenes (sample_1, sample_2, sample_123) are never trained on,
their tiles are the held-out real tiles generated ones are judged against, and the scenes are scored whole.

What it measures, each through the project's own code path (train_generator, generate, finetune, detect):

1. b (eq. 16) on the pool's tiles, beside the paper's values for its datasets.
2. One generator per b (0.1, the computed one, 1 by default), same seed and steps; N samples from each,
   with the same seeds. Per set: distances to the held-out real tiles (grey-level histogram, speckle ENL,
   power spectrum, Fréchet distance on the model's encoder features; engine/experiments/sample_quality.py),
   and how far a segmenter agrees with the generated hard label
   (slick Dice between the two). The pool's real tiles give the same figures as the reference for "good",
   and the held-out tiles with their analysts' labels the reference for the agreement.
3. Students (engine/experiments/students.py): the model fine-tuned with the same seeds and the same number of
   optimiser steps, on the real pool labels alone and with the samples of a generator (``finetune
   --generated``), the parent not competing. Test Dice per scene, the mean over seeds with its 95 %
   t-interval, and the paired change.
4. Speed: samples per minute of DDIM (200 steps) and DPM-Solver++ (20 steps) at several tile sizes with
   the computed-b generator's network, and for the trained size the quality figures of both solvers'
   samples from the same seeds.
5. quality.csv, students.csv, students_summary.csv, speed.csv, dakter.json and dakter_samples.png, a panel
   of real and generated tiles with their labels.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

from ..atomic import write_csv, write_text
from ..cli.args import number_or
from ..data.bundled import POOL, scenes_named
from ..errors import InputError
from ..generation.generator import GeneratorOptions, generate, train_generator
from ..generation.samples import cpu_threads
from ..generation.joint_ddpm import NETS, SOLVERS, balancing_factor, load_generator, read_generator_card, sample, unet_config
from ..jobs.finetune import FinetuneOptions
from ..models.eager import pick_device
from ..models.registry import HELD_OUT_MODEL, read_card
from ..progress import Progress
from .generator_runs import add_shared_options, check_shared
from .sample_quality import TileStack, Yardstick, generator_facts, panel
from .sar_stats import DB_SPAN, ENL_WINDOW
from .split import pool_split
from .students import EQ6, REAL, Arm, arm_epochs, reference_dice, summarise, train_students
from .transfer import DEFAULT_LR, TEST

AUTO = "auto"
"""b computed from the pool's tiles (eq. 16)."""
PAPER_B = {"OSD": 0.5089, "SOS-ALOS": 0.4370, "SOS-Sentinel": 0.4655}
"""b the paper computed for its datasets (sec. 3.3.1)."""

B = Union[float, str]


@dataclass
class DakterOptions:
    generator: GeneratorOptions = field(default_factory=lambda: GeneratorOptions(tile=64))
    """Generator settings shared by every b; its tile is also the students' (``finetune --generated``
    needs samples of the fine-tuning tile size) and its pixel size is the model's."""
    b_values: tuple[B, ...] = (0.1, AUTO, 1.0)
    generators: Optional[Path] = None
    """A folder of generators this experiment wrote before (generator_b_<b>.safetensors) to evaluate instead
    of training new ones; each must match the b and tile asked for and have learnt from the pool alone."""
    n_samples: Optional[int] = None
    """Samples per generator, all of which a student trains on; None: as many as the students' real
    training tiles (the paper's 100 %)."""
    solver: str = "dpm++"
    solver_steps: Optional[int] = None
    student_b: tuple[B, ...] = (AUTO,)
    """Generators whose samples train students."""
    eq6_control: bool = True
    """Also train real-only students with the student's loss (eqs. 5-6 use it on real tiles)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    recipe: FinetuneOptions = field(default_factory=lambda: FinetuneOptions(tile=64, epochs=10, lr=DEFAULT_LR, val_fraction=0.25,
                                                                                   parent_competes=False))
    """The students' fine-tuning; ``epochs`` is the budget of a student with samples (see the module's docstring)."""
    model: Path = HELD_OUT_MODEL
    """The model students start from, and the segmenter whose agreement with generated labels is measured."""
    quality_samples: int = 32
    """Samples of the computed-b generator made with DDIM as well, to compare the two solvers' quality."""
    speed_sizes: tuple[int, ...] = (64, 128, 256)
    speed_samples: tuple[int, ...] = (8, 4, 2)
    threshold: Optional[float] = None
    """None: each model at its own (``ModelCard.threshold``), as detection uses it."""
    enl_window: int = ENL_WINDOW
    db_span: float = DB_SPAN
    threads: Optional[int] = None
    """CPU threads for the whole run (None: torch's default)."""


def dakter_experiment(out: Path, options: DakterOptions, progress: Progress) -> dict:
    """Run everything (see the module's docstring) and write its files into ``out``; returns what dakter.json holds."""
    started = time.monotonic()
    _check(out, options)
    out.mkdir(parents=True, exist_ok=True)
    card = read_card(options.model)
    tile = options.generator.tile
    generator_options = replace(options.generator, pixel_size=card.pixel_size)
    with cpu_threads(options.threads), tempfile.TemporaryDirectory(dir=out, prefix=".work-") as tmp:
        work = Path(tmp)
        split = pool_split(out, work, card, tile, options.recipe.val_fraction, progress)
        pool, held = TileStack.from_joint(split.pool), TileStack.from_joint(split.held)
        b = {"pool": balancing_factor(split.pool), "held_out": balancing_factor(split.held), "paper": PAPER_B}
        progress.log(f"b = {b['pool']:.4f} on the {len(pool)} pool tiles ({b['held_out']:.4f} on the {len(held)} held-out tiles); "
                     f"the paper's: {', '.join(f'{k} {v}' for k, v in PAPER_B.items())}")
        student_tiles = split.real_tiles
        n = options.n_samples or student_tiles

        generators, folders = {}, {}
        for value in options.b_values:
            name = _b_name(value)
            if options.generators:
                path = options.generators / f"generator_{name}.safetensors"
                progress.log(f"{name}: evaluating {path} (not trained again)")
            else:
                path = out / "generators" / f"generator_{name}.safetensors"
                path.parent.mkdir(exist_ok=True)
                given = None if value == AUTO else float(value)
                train_generator(split.store, path, replace(generator_options, b=given, name=f"DAKTer evaluation, {name}"), progress)
            folders[name] = out / "samples" / name
            made = generate(path, folders[name], n, solver=options.solver, steps=options.solver_steps, seed=0,
                            device=options.generator.device, progress=progress)
            generators[name] = {**generator_facts(path), "samples": n, "samples_per_minute": made["samples_per_minute"]}
        auto = _b_name(AUTO)
        ddim_folder = out / "samples" / f"{auto}_ddim"
        m = min(options.quality_samples, n)
        generate(generators[auto]["path"], ddim_folder, m, solver="ddim", seed=0, device=options.generator.device, progress=progress)

        arms = [Arm(REAL), *([Arm(EQ6, eq6=True)] if options.eq6_control else []),
                *(Arm(_b_name(value), folders[_b_name(value)], n) for value in options.student_b)]
        runs, reference_student = train_students(arms, options.seeds, options.recipe, options.model, split.store, student_tiles,
                                                 options.threshold, work, progress)
        reference = reference_dice(options.model, work, options.threshold, options.recipe.device, progress)
        yardstick = Yardstick(held, options.model, {"bundled": options.model, "student": reference_student}, options.threshold,
                              options.recipe.device, options.enl_window, options.db_span)
        sets = [("held-out real", held, True), ("pool real", pool, True)]
        sets += [(f"generated {name}", TileStack.from_samples(folder), True) for name, folder in folders.items()]
        sets += [(f"generated {auto}, {options.solver}, first {m}", TileStack.from_samples(folders[auto], m), False),
                 (f"generated {auto}, ddim, first {m}", TileStack.from_samples(ddim_folder), True)]
        quality = [yardstick.row(label, tiles, progress) for label, tiles, _ in sets]
        speed = _speed(Path(generators[auto]["path"]), options, progress)

    summary = summarise(runs)
    write_csv(out / "quality.csv", quality)
    write_csv(out / "students.csv", runs)
    write_csv(out / "students_summary.csv", summary)
    write_csv(out / "speed.csv", speed)
    panel(out / "dakter_samples.png", [(label, tiles) for label, tiles, shown in sets if shown], tile)
    result = {
        "out": str(out),
        "b": {**b, "pool": round(b["pool"], 4), "held_out": round(b["held_out"], 4)},
        "generators": generators,
        "quality": quality,
        "students": {"runs": runs, "summary": summary, "reference": reference},
        "speed": speed,
        "notes": {
            "split": f"generators and students learn from {', '.join(POOL)}; held-out tiles and test scenes: {', '.join(TEST)}",
            "budget": _budget_note(generators),
            "student_budget": f"with samples: {options.recipe.epochs} epochs of {student_tiles} real + {n} generated tiles; real only: "
                              f"{arm_epochs(options.recipe.epochs, student_tiles, arms)[REAL]} epochs of {student_tiles} tiles; no early stop, "
                              "the epoch with the best validation Dice at its calibrated threshold kept"
                              + ("; the parent competes, as in the product" if options.recipe.parent_competes else "; the parent does not compete"),
            "losses": f"{REAL}: the transfer-learning paper's (1 - a) weighted BCE + a Dice; {EQ6} and with samples: DAKTer's "
                      "eq. 6 (slick-weighted BCE + 0.5 Dice) on real tiles and eq. 5 (0.1 KD at T = 2 + 0.5 Dice) on generated ones",
            "enl": f"median ENL of {options.enl_window}-pixel sea windows, stretched values read as a {options.db_span:g} dB span",
            "frechet": f"Fréchet distance to the held-out tiles on {Path(options.model).name}'s deepest encoder features, "
                       "global-average-pooled (engine/experiments/sample_quality.py)",
            "agreement": "slick Dice between a segmenter's prediction (probability > threshold) and the tile's label, pooled over the tiles' known pixels",
            "segmenters": {"bundled": str(options.model), "student": "the real-only student of the first seed"},
        },
        "options": asdict(options),
        "seconds": round(time.monotonic() - started, 1),
    }
    write_text(out / "dakter.json", json.dumps(result, indent=2, default=str))
    return result


def _speed(generator: Path, options: DakterOptions, progress: Progress) -> list[dict]:
    """Samples per minute of each solver at each size, in the CPU batches of ``generate`` (4); the
    network is the trained one run at other sizes, which changes its cost, not what a sample costs to
    make (quality is only meaningful at the trained size, and measured there from the sample sets)."""
    net, card = load_generator(generator, pick_device(options.generator.device))
    rows = []
    for size, count in zip(options.speed_sizes, options.speed_samples):
        sized = replace(card, tile_size=size, unet={**card.unet, "sample_size": size})
        for solver, (_, steps, _) in SOLVERS.items():
            started = time.monotonic()
            for first in range(0, count, 4):
                seeds = list(range(first, min(first + 4, count)))
                sample(net, sized, seeds, solver, callback=lambda step, total: progress.update("speed", step, total, f"{size} px, {solver}"))
            seconds = time.monotonic() - started
            rows.append({"tile": size, "solver": solver, "steps": steps, "samples": count, "seconds": round(seconds, 1),
                         "samples_per_minute": round(60 * count / seconds, 2), "trained_size": size == card.tile_size})
    return rows


def _budget_note(generators: dict[str, dict]) -> str:
    g = next(iter(generators.values()))
    seconds = ", ".join(f"{name} {v['train_seconds']:.0f} s" for name, v in generators.items())
    return (f"generators: {g['net']} net, {g['low_res_steps']} steps of {4 * g['batch_size']} half-size tiles, then {g['steps']} of "
            f"{g['batch_size']} full-size tiles, on a CPU ({seconds}); the paper: 300k + 100k steps of 64 and 16 tiles at 128 and 256 px on a GPU")


def _b_name(value: B) -> str:
    return "b_auto" if value == AUTO else f"b_{float(value):g}"


def _check(out: Path, options: DakterOptions) -> None:
    """Everything that can be wrong, before the first tile is cut."""
    card = check_shared(out, options.recipe, options.seeds, options.threshold, options.db_span, options.enl_window, options.model)
    g = options.generator
    if options.recipe.tile != g.tile:
        raise InputError(f"The students' tile ({options.recipe.tile} px) differs from the generators' ({g.tile} px).",
                         "Fine-tuning with samples needs tiles of the samples' size: give one --tile.")
    unet_config(g.net, g.tile, 2)
    for size in options.speed_sizes:
        unet_config(g.net, size, 2)
    if len(options.speed_sizes) != len(options.speed_samples) or any(n < 1 for n in options.speed_samples):
        raise InputError("--speed-samples needs one count of at least 1 per --speed-sizes entry.", "E.g. --speed-sizes 64 128 256 --speed-samples 8 4 2.")
    if AUTO not in options.b_values:
        raise InputError("The b values must include auto (computed from the tiles).", "E.g. --b 0.1 auto 1.")
    if any(b != AUTO and not float(b) > 0 for b in options.b_values):
        raise InputError(f"Balancing factors must be positive or auto; got {list(options.b_values)}.", "E.g. --b 0.1 auto 1.")
    if len({_b_name(b) for b in options.b_values}) != len(options.b_values):
        raise InputError(f"A b value is given twice: {list(options.b_values)}.", "Give each once.")
    missing = [b for b in options.student_b if _b_name(b) not in {_b_name(v) for v in options.b_values}]
    if missing:
        raise InputError(f"Students are to learn from generators of b = {missing}, which are not trained.", "Add them to --b.")
    if (options.n_samples is not None and options.n_samples < 1) or options.quality_samples < 1:
        raise InputError("--n-samples and --quality-samples must be at least 1.", "E.g. --quality-samples 32.")
    if options.solver not in SOLVERS:
        raise InputError(f"Unknown solver {options.solver!r}.", f"Use one of: {', '.join(SOLVERS)}.")
    if options.generators:
        _check_generators(options, card.pixel_size)


def _check_generators(options: DakterOptions, pixel_size: float) -> None:
    """Generators to evaluate again must be the ones asked for, and must never have seen a test scene.

    Scenes are compared by their sample folder's name (``bundled.scenes_named``)."""
    pool = set(POOL)
    for value in options.b_values:
        path = options.generators / f"generator_{_b_name(value)}.safetensors"
        if not path.is_file():
            raise InputError(f"No generator {path.name} in {options.generators}.", "Give a generators folder an earlier run of this experiment wrote.")
        card = read_generator_card(path)
        b_ok = card.training.get("b_from") == "tiles" if value == AUTO else math.isclose(card.b, float(value), rel_tol=1e-6)
        if not b_ok or card.tile_size != options.generator.tile or abs(card.pixel_size / pixel_size - 1) > 0.05:
            raise InputError(f"{path.name} was trained with b = {card.b:g} ({card.training.get('b_from')}) on {card.tile_size}-px tiles at "
                             f"{card.pixel_size:g} m; this run asks for b = {value} on {options.generator.tile}-px tiles at {pixel_size:g} m.",
                             "Give the generators of a run with the same --b and --tile.")
        scenes = scenes_named(card.training)
        if not scenes or not scenes <= pool:
            raise InputError(f"{path.name} learnt from scenes other than the pool ({', '.join(sorted(scenes - pool)) or 'none recorded'}).",
                             f"Evaluate only generators trained on {', '.join(POOL)}: the others are test scenes here.")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    d = DakterOptions()
    g, r = d.generator, d.recipe
    q = subparsers.add_parser("dakter", help="DAKTer generators and students evaluated on the real Arctic tiles (b, quality, student Dice, speed)")
    q.add_argument("--out", type=Path, default=Path("experiment_output/dakter"), help="empty or new folder")
    q.add_argument("--tile", type=int, default=g.tile, help=f"generator and student tile size (default {g.tile})")
    q.add_argument("--net", choices=list(NETS), default=g.net, help="generator network size (default small)")
    q.add_argument("--steps", type=int, default=g.steps, help=f"generator full-size steps (default {g.steps})")
    q.add_argument("--low-res-steps", type=int, default=g.low_res_steps, help=f"generator half-size steps (default {g.low_res_steps})")
    q.add_argument("--gen-batch-size", type=int, default=g.batch_size, help=f"generator tiles per full-size step (default {g.batch_size})")
    q.add_argument("--gen-lr", type=float, default=g.lr, help=f"generator learning rate (default {g.lr:g})")
    q.add_argument("--slick-share", type=number_or("uniform"), default=g.slick_share,
                   help=f"share of generator batches from tiles with a slick, or uniform (default {g.slick_share})")
    q.add_argument("--b", nargs="+", type=number_or(AUTO, AUTO), default=list(d.b_values), help="balancing factors to compare, numbers or auto (default: 0.1 auto 1)")
    q.add_argument("--generators", type=Path, help="evaluate the generators an earlier run wrote (its generators/ folder) instead of training")
    q.add_argument("--n-samples", type=int, help="samples per generator (default: as many as the students' real training tiles)")
    q.add_argument("--solver", choices=list(SOLVERS), default=d.solver, help=f"solver of the sample sets (default {d.solver})")
    q.add_argument("--solver-steps", type=int, help="its steps (default: the solver's, 20 for dpm++)")
    q.add_argument("--student-b", nargs="*", type=number_or(AUTO, AUTO), default=list(d.student_b), help="generators whose samples train students (default: auto)")
    q.add_argument("--no-eq6-control", dest="eq6_control", action="store_false", help="skip the real-only students trained with eq. 6")
    q.add_argument("--seeds", nargs="+", type=int, default=list(d.seeds), help="student seeds (default: 0 1 2)")
    q.add_argument("--epochs", type=int, default=r.epochs, help=f"student epochs with samples; real only gets the same steps (default {r.epochs})")
    q.add_argument("--model", type=Path, default=d.model, help="model the students start from, and the segmenter of the agreement (default: the held-out model, which never saw the test scenes)")
    q.add_argument("--quality-samples", type=int, default=d.quality_samples, help=f"samples made with DDIM too, to compare the solvers (default {d.quality_samples})")
    q.add_argument("--speed-sizes", nargs="+", type=int, default=list(d.speed_sizes), help="tile sizes timed (default 64 128 256)")
    q.add_argument("--speed-samples", nargs="+", type=int, default=list(d.speed_samples), help="samples timed per size (default 8 4 2)")
    add_shared_options(q, r, g)
    q.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    d = DakterOptions()
    generator = replace(d.generator, tile=args.tile, net=args.net, steps=args.steps, low_res_steps=args.low_res_steps, batch_size=args.gen_batch_size,
                        lr=args.gen_lr, slick_share=args.slick_share, seed=args.seed, device=args.device)
    recipe = replace(d.recipe, tile=args.tile, epochs=args.epochs, lr=args.lr, train_layers=args.train_layers, batch_size=args.batch_size,
                     device=args.device)
    options = DakterOptions(generator=generator, b_values=tuple(args.b), generators=args.generators, eq6_control=args.eq6_control, n_samples=args.n_samples, solver=args.solver, solver_steps=args.solver_steps,
                            student_b=tuple(args.student_b), seeds=tuple(args.seeds), recipe=recipe, model=args.model,
                            quality_samples=args.quality_samples, speed_sizes=tuple(args.speed_sizes), speed_samples=tuple(args.speed_samples),
                            threshold=args.threshold, db_span=args.db_span, threads=args.threads)
    return dakter_experiment(args.out, options, progress)
