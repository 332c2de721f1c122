"""The DAKD paper's measurements at CPU scale, on the bundled real Arctic tiles: ``python -m engine experiment dakd``.

Moon et al.'s DAKD pipeline trains SAR-JointNet on labelled SAR tiles, lets it generate tiles with soft
labels, and trains the SAROSS-Net student on real and generated tiles (docs/dakd.md, docs/saross.md). This
experiment measures its parts on the split of ``experiment dakter`` (engine/experiments/split.py), each
through the product's own code path (generator training, generate, finetune, detect):

1. Generators: DAKTer and SAR-JointNet, each trained from scratch on the pool by the product's own training
   (``generator train --kind dakter|sar-jointnet``), small networks and few steps by default; and, when given,
   generators trained elsewhere (``--from-pretrained KIND=FILE``), only evaluated. Each makes N samples
   with the same seeds, N being the students' real training tiles (the paper's 100 %); SAR-JointNet makes
   as many more as the largest amount of the ablation asks for.
2. Sample quality of each generator's first N samples against the held-out real tiles
   (engine/experiments/sample_quality.py): the paper's FID with the segmentation model's encoder in place of
   Inception (the pool's real tiles give the real-against-real value), the SAR statistics, and how far the
   segmentation model and a real-only student agree with the samples' hard labels.
3. Students (engine/experiments/students.py), all of the same number of optimiser steps, several seeds,
   paired: the starting model fine-tuned on real tiles only (the product's loss, and DAKTer's eq. 6, the
   students' loss on real tiles), and with each generator's N samples.
4. Ablations (the paper's Table 5 and its supplementary Table 9): the amount of SAR-JointNet samples (0 %
   = eq. 6 on real tiles alone, then 50, 100, 200 % of the real training tiles by default), hard against
   soft labels at 100 %, and SAROSS-Net students with CAFT blocks against plain UNet++ nodes
   (engine/models/saross.py, ``caft``), both trained on the real tiles with the same recipe. The SAROSS-Net
   students take the starting model's encoder (its size and weights: ResNet-18 for the bundled model) and
   a decoder initialised once (seed 0); they are initialisations, not trained parents, so batch-norm
   statistics are learnt and the epoch with the best validation loss is kept.
5. In ``out``: generators.csv, quality.csv, students.csv, students_summary.csv, ablations.csv, dakd.json,
   dakd.md (the tables with the command, commit, machine and every model's and generator's hash) and
   dakd_samples.png; the pool's label store, the generators trained and the sample folders.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch

from ..atomic import write_csv, write_text
from ..contract import GENERATOR_KINDS
from ..data.bundled import POOL, scenes_named
from ..errors import InputError, ModelError
from ..generation import jointnet
from ..generation.generator import GeneratorOptions, check_training_options, generate, train_generator
from ..generation.samples import cpu_threads
from ..generation.joint_ddpm import KIND as DAKTER, NETS, SOLVERS, read_generator_card, unet_config
from ..jobs.finetune import FinetuneOptions
from ..machine import commit_text, describe, file_sha256, utc_now
from ..models.registry import HELD_OUT_MODEL, ModelCard, build_model, load_model, read_card, save_model, slick_index
from ..progress import Progress
from .generator_runs import add_shared_options, check_shared
from .sample_quality import TileStack, Yardstick, generator_facts, panel
from .sar_stats import DB_SPAN, ENL_WINDOW
from .split import PoolSplit, pool_split
from .students import EQ6, REAL, Arm, arm_epochs, paired_change, reference_dice, summarise, train_students
from .transfer import DEFAULT_LR, TEST

JOINTNET = jointnet.KIND
ABLATED = JOINTNET
"""The generator of the amount and label ablations: the paper's."""
FULL = 100
"""The amount every generator's students learn from, in percent of the real training tiles (the paper's 1x)."""
CAFT = "SAROSS-Net CAFT, real only"
PLAIN = "SAROSS-Net plain skips, real only"
PIXEL_TOLERANCE = 0.05


@dataclass
class DakdOptions:
    dakter: GeneratorOptions = field(default_factory=lambda: GeneratorOptions(tile=64, low_res_steps=300, steps=150))
    """DAKTer's training; its tile is also SAR-JointNet's and the students'."""
    jointnet: jointnet.JointNetOptions = field(default_factory=lambda: jointnet.JointNetOptions(tile=64, stage_steps=(150, 150, 75)))
    from_pretrained: tuple[tuple[str, ...], ...] = ()
    """(kind, generator file) pairs: generators trained elsewhere, evaluated beside the ones trained here."""
    n_samples: Optional[int] = None
    """The 100 % of the amounts; None: as many as the students' real training tiles (the paper's 1x)."""
    amounts: tuple[int, ...] = (50, FULL, 200)
    """SAR-JointNet samples of the amount ablation, in percent of ``n_samples``; 0 % (real only) is always run."""
    solver: str = "dpm++"
    solver_steps: Optional[int] = None
    seeds: tuple[int, ...] = (0, 1)
    recipe: FinetuneOptions = field(default_factory=lambda: FinetuneOptions(tile=64, epochs=2, lr=DEFAULT_LR, val_fraction=0.25,
                                                                                   parent_competes=False))
    """The students' fine-tuning; ``epochs`` is the budget of the student with the most samples (students.py)."""
    saross: bool = True
    """Also train the SAROSS-Net students of the CAFT ablation."""
    model: Path = HELD_OUT_MODEL
    """The model students start from, whose encoder gives the Fréchet features and the SAROSS-Net students'
    encoder, and the segmenter whose agreement with generated labels is measured."""
    threshold: Optional[float] = None
    """None: each model at its own (``ModelCard.threshold``), as detection uses it."""
    enl_window: int = ENL_WINDOW
    db_span: float = DB_SPAN
    threads: Optional[int] = None
    """CPU threads for the whole run (None: torch's default)."""


def dakd_experiment(out: Path, options: DakdOptions, progress: Progress, command: str = "") -> dict:
    """Run everything (see the module's docstring) and write its files into ``out``; returns what dakd.json holds."""
    started = time.monotonic()
    _check(out, options)
    out.mkdir(parents=True, exist_ok=True)
    card = read_card(options.model)
    tile = options.recipe.tile
    seconds: dict[str, float] = {}
    with cpu_threads(options.threads), tempfile.TemporaryDirectory(dir=out, prefix=".work-") as tmp:
        work = Path(tmp)
        split = pool_split(out, work, card, tile, options.recipe.val_fraction, progress)
        full = options.n_samples or split.real_tiles
        counts = {amount: max(1, round(full * amount / 100)) for amount in options.amounts}
        seconds["split"] = _lap(started)

        paths = _generators(split, out, work, card.pixel_size, options, progress)
        seconds["generators"] = _lap(started, seconds)
        generators, folders = {}, {}
        for name, path in paths.items():
            folders[name] = out / "samples" / name
            n = max(counts.values()) if name == ABLATED else full
            made = generate(path, folders[name], n, solver=options.solver, steps=options.solver_steps, seed=0,
                            device=options.dakter.device, progress=progress)
            generators[name] = {"origin": "pretrained" if name.endswith("-pretrained") else "trained here", **generator_facts(path),
                                "sha256": file_sha256(path), "samples": n, "samples_per_minute": made["samples_per_minute"]}
        seconds["samples"] = _lap(started, seconds)

        arms = _arms(folders, counts, work, options)
        runs, real_student = train_students(arms, options.seeds, options.recipe, options.model, split.store, split.real_tiles,
                                            options.threshold, work, progress)
        reference = reference_dice(options.model, work, options.threshold, options.recipe.device, progress)
        epochs = arm_epochs(options.recipe.epochs, split.real_tiles, arms)
        arm_records = [_arm_record(arm, epochs[arm.name]) for arm in arms]
        seconds["students"] = _lap(started, seconds)

        held = TileStack.from_joint(split.held)
        yardstick = Yardstick(held, options.model, {"bundled": options.model, "student": real_student}, options.threshold,
                              options.recipe.device, options.enl_window, options.db_span)
        sets = [("held-out real", held), ("pool real", TileStack.from_joint(split.pool))]
        sets += [(f"generated {name}", TileStack.from_samples(folder, full)) for name, folder in folders.items()]
        quality = [yardstick.row(label, tiles, progress) for label, tiles in sets]
        panel(out / "dakd_samples.png", sets, tile)
        seconds["quality"] = _lap(started, seconds)

    summary = summarise(runs)
    ablations = _ablations(runs, summary, options, counts)
    models = {"starting model": {"path": str(options.model), "name": card.name, "sha256": file_sha256(options.model)}}
    result = {
        "command": command, "commit": commit_text(), "machine": describe(), "finished": utc_now(), "out": str(out),
        "models": models,
        "generators": generators,
        "quality": quality,
        "students": {"arms": arm_records, "runs": runs, "summary": summary, "reference": reference},
        "ablations": ablations,
        "notes": _notes(split, full, options),
        "options": asdict(options),
        "seconds": {**seconds, "total": round(time.monotonic() - started, 1)},
    }
    write_csv(out / "generators.csv", [{"generator": name, **g} for name, g in generators.items()])
    write_csv(out / "quality.csv", quality)
    write_csv(out / "students.csv", runs)
    write_csv(out / "students_summary.csv", summary)
    write_csv(out / "ablations.csv", ablations)
    write_text(out / "dakd.md", _markdown(result))
    write_text(out / "dakd.json", json.dumps(result, indent=2, default=str))
    return result


def _lap(started: float, earlier: Optional[dict[str, float]] = None) -> float:
    """Seconds since ``started`` less the parts already timed."""
    return round(time.monotonic() - started - sum((earlier or {}).values()), 1)


def _generators(split: PoolSplit, out: Path, work: Path, pixel_size: float, options: DakdOptions, progress: Progress) -> dict[str, Path]:
    """The generators trained here on the pool, then the given ones, by name."""
    (out / "generators").mkdir()
    paths = {DAKTER: out / "generators" / f"{DAKTER}.safetensors", JOINTNET: out / "generators" / f"{JOINTNET}.safetensors"}
    train_generator(split.store, paths[DAKTER], replace(options.dakter, pixel_size=pixel_size, name="DAKD evaluation, DAKTer"), progress)
    jointnet.train_jointnet(split.store, paths[JOINTNET], replace(options.jointnet, pixel_size=pixel_size, name="DAKD evaluation, SAR-JointNet",
                                                                  checkpoints=work / f"{JOINTNET}.stages"), progress)
    for kind, path in options.from_pretrained:
        progress.log(f"{kind}: evaluating {path} (trained elsewhere)")
        paths[f"{kind}-pretrained"] = Path(path)
    return paths


def _arms(folders: dict[str, Path], counts: dict[int, int], work: Path, options: DakdOptions) -> list[Arm]:
    """Every student condition (see the module's docstring); SAROSS-Net initialisations are written to ``work``."""
    full = counts[FULL]
    arms = [Arm(REAL), Arm(EQ6, eq6=True)]
    arms += [Arm(_condition(name, FULL), folder, full) for name, folder in folders.items()]
    arms += [Arm(_condition(ABLATED, amount), folders[ABLATED], n) for amount, n in counts.items() if amount != FULL]
    arms.append(Arm(_condition(ABLATED, FULL, "hard"), folders[ABLATED], full, labels="hard"))
    if options.saross:
        for name, caft in ((CAFT, True), (PLAIN, False)):
            path = work / f"saross_{'caft' if caft else 'plain'}.safetensors"
            save_model(*saross_initialisation(options.model, caft), path)
            arms.append(Arm(name, model=path, from_parent=False))
    return arms


def _condition(generator: str, amount: int, labels: str = "soft") -> str:
    return f"{generator} {amount} % {labels}"


def saross_initialisation(model: Path, caft: bool) -> tuple[torch.nn.Module, ModelCard]:
    """A SAROSS-Net with ``model``'s timm encoder (its name, depth and weights) and decoder widths, its nested
    nodes CAFT blocks or plain UNet++ nodes, the rest initialised with seed 0."""
    parent, card = load_model(model)
    kwargs = {key: card.arch_kwargs[key] for key in ("encoder_depth", "decoder_channels") if key in card.arch_kwargs}
    child = replace(card, name=f"SAROSS-Net {'CAFT' if caft else 'plain skips'}, encoder of {card.name}", architecture="saross",
                    encoder=card.encoder.removeprefix("tu-"), arch_kwargs={**kwargs, "caft": caft}, threshold=0.5, metrics={},
                    provenance={"how": "experiment dakd: the encoder copied, the rest initialised with seed 0"},
                    lineage={"encoder_from": {"name": card.name, "sha256": file_sha256(model)}})
    torch.manual_seed(0)
    net = build_model(child)
    try:
        net.encoder.load_state_dict({key.removeprefix("model."): value for key, value in parent.encoder.state_dict().items()})
    except RuntimeError as exc:
        raise ModelError(f"The encoder of {card.name} does not fit SAROSS-Net's {child.encoder} ({exc}).",
                         "Start from a model with a timm encoder (tu-...), or leave the SAROSS-Net students out (--no-saross).") from exc
    return net, child


def _ablations(runs: list[dict], summary_rows: list[dict], options: DakdOptions, counts: dict[int, int]) -> list[dict]:
    """The ablation tables, each row a condition's mean test Dice and its paired change from the row it is compared with."""
    summary = {row["condition"]: row for row in summary_rows}
    rows = [("amount", "0 %", EQ6, None)]
    rows += [("amount", f"{amount} %", _condition(ABLATED, amount), EQ6) for amount in sorted(counts)]
    rows += [("labels", "hard", _condition(ABLATED, FULL, "hard"), EQ6), ("labels", "soft", _condition(ABLATED, FULL), _condition(ABLATED, FULL, "hard"))]
    if options.saross:
        rows += [("skips", "plain UNet++", PLAIN, None), ("skips", "CAFT", CAFT, PLAIN)]
    table = []
    for ablation, setting, condition, reference in rows:
        row = {"ablation": ablation, "setting": setting, "condition": condition, "runs": summary[condition]["runs"],
               "dice_mean": summary[condition]["dice_mean"], "dice_mean_ci": summary[condition]["dice_mean_ci"], "compared_with": reference}
        row.update(paired_change(runs, condition, reference) if reference else {"change": None, "change_ci": None, "seeds_better": None})
        table.append(row)
    return table


def _arm_record(arm: Arm, epochs: int) -> dict[str, Any]:
    loss = "eq. 6 on real, eq. 5 on generated tiles" if arm.n else "eq. 6" if arm.eq6 else "the product's fine-tuning loss"
    return {"condition": arm.name, "samples": str(arm.samples) if arm.samples else None, "n": arm.n, "labels": arm.labels if arm.n else None,
            "loss": loss, "model": str(arm.model) if arm.model else "starting model", "model_sha256": file_sha256(arm.model) if arm.model else None,
            "from_parent": arm.from_parent, "epochs": epochs}


def _notes(split: PoolSplit, full: int, options: DakdOptions) -> dict[str, str]:
    return {
        "split": f"generators and students learn from {', '.join(POOL)}; held-out tiles and test scenes: {', '.join(TEST)}",
        "tiles": f"{len(split.pool)} pool and {len(split.held)} held-out {options.recipe.tile}-px tiles; students: {split.real_tiles} real "
                 f"training tiles, 100 % = {full} samples",
        "student_budget": f"every student takes the optimiser steps of {options.recipe.epochs} epochs of the arm with the most samples; no "
                          "early stop, the best validation epoch kept; the parent does not compete",
        "losses": f"{REAL}: the transfer-learning paper's (1 - a) weighted BCE + a Dice; {EQ6}, the 0 % of the amounts, and with samples: "
                  "DAKTer's eq. 6 (slick-weighted BCE + 0.5 Dice) on real tiles and eq. 5 (0.1 KD at T = 2 + 0.5 Dice) on generated ones; "
                  "hard labels: the KD target one-hot",
        "saross": "SAROSS-Net students: the starting model's encoder and decoder widths, the decoder initialised once (seed 0); learnt batch "
                  "norm, the epoch of the best validation loss kept, the threshold calibrated on the validation tiles",
        "frechet": f"Fréchet distance to the held-out tiles on {Path(options.model).name}'s deepest encoder features, global-average-pooled; "
                   "each generator's first 100 % samples",
        "enl": f"median ENL of {options.enl_window}-pixel sea windows, stretched values read as a {options.db_span:g} dB span",
        "agreement": "slick Dice between a segmenter's prediction (probability > threshold) and the tile's label, pooled over the tiles' known "
                     "pixels; student: the real-only student of the first seed",
    }


def _markdown(result: dict) -> str:
    """dakd.md: what was run, where, and the tables."""
    model = result["models"]["starting model"]
    lines = ["# DAKD at CPU scale", "",
             f"Made by `{result['command'] or 'python -m engine experiment dakd'}` at commit {result['commit']} on {result['machine']}, "
             f"finished {result['finished']}, {result['seconds']['total'] / 60:.0f} minutes. Starting model: {model['name']} "
             f"(sha256 {model['sha256'][:16]}). Split: {result['notes']['split']}; {result['notes']['tiles']}.", "",
             "## Generators", "", "| generator | origin | sha256 | steps | train s | final loss | samples | samples/min |", "|---|---|---|---|---|---|---|---|"]
    for name, g in result["generators"].items():
        steps = g["steps"] if g["low_res_steps"] is None else f"{g['low_res_steps']} half-size + {g['steps']}"
        lines.append(f"| {name} | {g['origin']} | {g['sha256'][:16]} | {steps} | {g['train_seconds']} | {g['final_loss']} | {g['samples']} | "
                     f"{g['samples_per_minute']} |")
    lines += ["", "## Sample quality against the held-out real tiles", "",
              "| set | tiles | Fréchet | histogram W1 | ENL (ratio) | spectrum dB | tiles with slick | agreement: starting model | agreement: student |",
              "|---|---|---|---|---|---|---|---|---|"]
    for q in result["quality"]:
        lines.append(f"| {q['set']} | {q['tiles']} | {q['frechet']} | {q['histogram_w1']} | {q['enl']} ({q['enl_ratio']}) | {q['psd_db']} | "
                     f"{q['slick_tile_share']:.1%} | {q['agreement_bundled']} | {q['agreement_student']} |")
    lines += ["", "## Students: test Dice, mean over seeds [95 % t-interval]", "",
              "| condition | runs | mean | " + " | ".join(TEST) + " | change from real only | seeds better |", "|---|---|---|" + "---|" * len(TEST) + "---|---|"]
    for s in result["students"]["summary"]:
        lines.append(f"| {s['condition']} | {s['runs']} | {_interval(s['dice_mean'], s['dice_mean_ci'])} | "
                     + " | ".join(str(s[f"dice_{scene}"]) for scene in TEST)
                     + f" | {_interval(s['change_from_real'], s['change_ci'], '±')} | {'' if s['seeds_better'] is None else s['seeds_better']} |")
    ref = result["students"]["reference"]
    lines += ["", f"Starting model as it is: {ref['bundled_model']['mean']}; the paper's predictions on these scenes: "
              + ", ".join(f"{kind} {per['mean']}" for kind, per in ref["paper"].items()) + ".", "",
              "## Ablations", "", "| ablation | setting | condition | test Dice | compared with | paired change | seeds better |", "|---|---|---|---|---|---|---|"]
    for a in result["ablations"]:
        lines.append(f"| {a['ablation']} | {a['setting']} | {a['condition']} | {_interval(a['dice_mean'], a['dice_mean_ci'])} | {a['compared_with'] or ''} | "
                     f"{_interval(a['change'], a['change_ci'], '±')} | {'' if a['seeds_better'] is None else a['seeds_better']} |")
    lines += ["", "## Notes", ""] + [f"- {key}: {text}" for key, text in result["notes"].items()]
    return "\n".join(lines) + "\n"


def _interval(mean: Optional[float], half: Optional[float], style: str = "[]") -> str:
    if mean is None:
        return ""
    if half is None:
        return f"{mean:+.3f}" if style == "±" else f"{mean:.3f}"
    return f"{mean:+.3f} ± {half:.3f}" if style == "±" else f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"


def _check(out: Path, options: DakdOptions) -> None:
    """Everything that can be wrong, before the first tile is cut."""
    card = check_shared(out, options.recipe, options.seeds, options.threshold, options.db_span, options.enl_window, options.model)
    check_training_options(options.dakter)
    jointnet.check_options(options.jointnet)
    tile = options.recipe.tile
    if not options.dakter.tile == options.jointnet.tile == tile:
        raise InputError(f"The students' tile ({tile} px) differs from the generators' ({options.dakter.tile} and {options.jointnet.tile} px).",
                         "Fine-tuning with samples needs tiles of the samples' size: give one --tile.")
    unet_config(options.dakter.net, tile, 2)
    jointnet.shared_unet(options.jointnet.net, tile, 3)
    if FULL not in options.amounts or any(a < 1 for a in options.amounts) or len(set(options.amounts)) != len(options.amounts):
        raise InputError(f"The amounts must be distinct positive percentages including {FULL}; got {list(options.amounts)}.", "E.g. --amounts 50 100 200.")
    if options.n_samples is not None and options.n_samples < 2:
        raise InputError("--n-samples must be at least 2: a Fréchet distance needs two tiles a set.", "E.g. --n-samples 100.")
    if options.solver not in SOLVERS or (options.solver_steps is not None and options.solver_steps < 1):
        raise InputError(f"Unknown solver {options.solver!r} or fewer than one step.", f"Use one of: {', '.join(SOLVERS)}, with at least one step.")
    if not hasattr(build_model(card), "encoder"):
        raise InputError(f"The model {card.name} has no encoder to take features from.", "Give an encoder-decoder model with --model, e.g. the bundled one.")
    if options.saross:
        if not card.encoder.startswith("tu-"):
            raise InputError(f"SAROSS-Net students take the starting model's timm encoder; {card.name} has {card.encoder}.",
                             "Start from a model with a timm encoder (tu-...), or leave them out (--no-saross).")
        for caft in (True, False):
            saross_initialisation(options.model, caft)
    _check_pretrained(options, card.pixel_size)


def _check_pretrained(options: DakdOptions, pixel_size: float) -> None:
    """Generators trained elsewhere: one per kind, of the kind named, at this run's tile and pixel size, with a
    slick class, and never trained on a test scene (by what their cards record, a generator they started
    from included)."""
    kinds = [pair[0] for pair in options.from_pretrained]
    if any(len(pair) != 2 for pair in options.from_pretrained) or any(kind not in GENERATOR_KINDS for kind in kinds):
        raise InputError(f"--from-pretrained takes KIND=FILE, KIND one of {', '.join(GENERATOR_KINDS)}; got "
                         f"{' '.join('='.join(map(str, pair)) for pair in options.from_pretrained)}.", "E.g. --from-pretrained sar-jointnet=pretrained.safetensors.")
    if len(set(kinds)) != len(kinds):
        raise InputError(f"--from-pretrained names a kind twice ({', '.join(kinds)}).", "Give one pretrained generator of each kind.")
    for kind, path in options.from_pretrained:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"No generator file {path}.", "Give a file written by: python -m engine generator train.")
        card = read_generator_card(path)
        if card.kind != kind:
            raise InputError(f"{path.name} holds a {card.kind} generator, not {kind}.", f"Give it as {card.kind}={path}.")
        if card.tile_size != options.recipe.tile or abs(card.pixel_size / pixel_size - 1) > PIXEL_TOLERANCE or slick_index(card.classes) is None:
            raise InputError(f"{path.name} makes {card.tile_size}-px tiles at {card.pixel_size:g} m of {', '.join(card.classes)}; this run needs "
                             f"{options.recipe.tile}-px tiles at {pixel_size:g} m with a slick class.", "Give a generator trained with this --tile.")
        scenes = scenes_named(card.training)
        if not scenes or scenes & set(TEST):
            raise InputError(f"{path.name} learnt from {', '.join(sorted(scenes & set(TEST))) or 'no recorded scene'}.",
                             f"Evaluate only generators that never saw {', '.join(TEST)}: they are the test scenes here.")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    d = DakdOptions()
    g, j, r = d.dakter, d.jointnet, d.recipe
    q = subparsers.add_parser("dakd", help="the DAKD paper's measurements at CPU scale: DAKTer and SAR-JointNet samples, students, ablations")
    q.add_argument("--out", type=Path, default=Path("experiment_output/dakd"), help="empty or new folder")
    q.add_argument("--tile", type=int, default=r.tile, help=f"generator and student tile size (default {r.tile})")
    q.add_argument("--net", choices=list(NETS), default=g.net, help="both generators' network size (default small)")
    q.add_argument("--low-res-steps", type=int, default=g.low_res_steps, help=f"DAKTer's half-size steps (default {g.low_res_steps})")
    q.add_argument("--steps", type=int, default=g.steps, help=f"DAKTer's full-size steps (default {g.steps})")
    q.add_argument("--stage-steps", type=int, nargs=3, metavar=("S1", "S2", "S3"), default=list(j.stage_steps),
                   help=f"SAR-JointNet's steps of each stage (default {' '.join(map(str, j.stage_steps))})")
    q.add_argument("--gen-batch-size", type=int, default=g.batch_size, help=f"both generators' tiles per full-size step (default {g.batch_size})")
    q.add_argument("--from-pretrained", nargs="+", default=[], metavar="KIND=FILE", type=lambda text: tuple(text.split("=", 1)),
                   help=f"generators trained elsewhere to evaluate too, KIND one of {', '.join(GENERATOR_KINDS)}")
    q.add_argument("--n-samples", type=int, help="the 100 %% of the amounts (default: as many as the students' real training tiles)")
    q.add_argument("--amounts", nargs="+", type=int, default=list(d.amounts), help="SAR-JointNet samples in %% of --n-samples (default 50 100 200; 0 always)")
    q.add_argument("--solver", choices=list(SOLVERS), default=d.solver, help=f"solver of the sample sets (default {d.solver})")
    q.add_argument("--solver-steps", type=int, help="its steps (default: the solver's, 20 for dpm++)")
    q.add_argument("--seeds", nargs="+", type=int, default=list(d.seeds), help="student seeds (default: 0 1)")
    q.add_argument("--epochs", type=int, default=r.epochs, help=f"epochs of the student with the most samples; every other takes the same steps (default {r.epochs})")
    q.add_argument("--no-saross", dest="saross", action="store_false", help="leave out the SAROSS-Net students (CAFT against plain skips)")
    q.add_argument("--model", type=Path, default=d.model, help="model the students start from; its encoder gives the Fréchet features (default: the held-out model, which never saw the test scenes)")
    add_shared_options(q, r, g)
    q.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    d = DakdOptions()
    shared = {"tile": args.tile, "net": args.net, "batch_size": args.gen_batch_size, "seed": args.seed, "device": args.device}
    options = DakdOptions(
        dakter=replace(d.dakter, low_res_steps=args.low_res_steps, steps=args.steps, **shared),
        jointnet=replace(d.jointnet, stage_steps=tuple(args.stage_steps), **shared),
        from_pretrained=tuple(args.from_pretrained), n_samples=args.n_samples, amounts=tuple(args.amounts), solver=args.solver,
        solver_steps=args.solver_steps, seeds=tuple(args.seeds),
        recipe=replace(d.recipe, tile=args.tile, epochs=args.epochs, lr=args.lr, train_layers=args.train_layers, batch_size=args.batch_size,
                       device=args.device),
        saross=args.saross, model=args.model, threshold=args.threshold, db_span=args.db_span, threads=args.threads,
    )
    return dakd_experiment(args.out, options, progress, args.invocation)
