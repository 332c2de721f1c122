"""DAKTer, evaluated on the bundled real Arctic tiles: ``python -m engine experiment dakter``.

The data split is the transfer experiment's (engine/experiments/transfer.py): generators and students learn from the
target pool (sample_0, sample_70) through a label store made by the product's own import; the test
scenes (sample_1, sample_2, sample_123) are never trained on. Their tiles, cut the same way, are the
held-out real tiles generated ones are judged against, and the scenes are scored whole by detection and
slick Dice, as the transfer experiment scores them.

What it measures, each through the project's own code path (train_generator, generate, finetune, detect):

1. b (eq. 16) on the pool's tiles, beside the paper's values for its datasets.
2. One generator per b (0.1, the computed one, 1 by default), same seed and steps; N samples from each,
   with the same seeds. Per set: distances to the held-out real tiles (grey-level histogram, speckle ENL,
   power spectrum; engine/experiments/sar_stats.py), and how far a segmenter agrees with the generated hard label
   (slick Dice between the two). The pool's real tiles give the same figures as the reference for "good",
   and the held-out tiles with their analysts' labels the reference for the agreement.
3. Students: the model fine-tuned with the same seeds and the same number of optimiser steps, on the real
   pool labels alone and with the samples of a generator (``finetune --generated``). Both runs of a seed
   share the validation split, and the real-only run gets as many more epochs as the generated samples add
   to an epoch, with no early stop, so the two take the same steps and keep their best-validation epoch.
   Unlike the product's fine-tuning, the parent does not compete for "best": the question is what training
   with and without samples teaches, and a run that handed back the parent would answer nothing (the
   bundled model's own Dice stands beside them as the reference).
   Test Dice per scene, the mean over seeds with its 95 % t-interval, and the paired change.
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
from typing import Any, Optional, Union

import numpy as np

from ..atomic import staged, write_csv, write_text
from ..cli.args import number_or
from ..errors import InputError, OutputError
from ..generation.generator import GeneratorOptions, cpu_threads, generate, train_generator, training_tiles
from ..generation.joint_ddpm import NETS, SOLVERS, JointSet, balancing_factor, load_generator, read_generator_card, sample, unet_config
from ..generation.samples import TEMPERATURE, load_samples
from ..jobs.evaluate import dice_from_counts
from ..jobs.finetune import FinetuneOptions, check_options, finetune, train_config
from ..jobs.finetune_data import collect_tiles, split_by_area, tileset
from ..jobs.labels import read_store
from ..models.inference import Predictor, pick_device
from ..models.losses import StudentLoss
from ..models.registry import DEFAULT_MODEL, load_model, read_card, save_model, slick_index
from ..models.training import lr_range_test, train
from ..progress import Progress
from .sar_stats import DB_SPAN, ENL_WINDOW, enl, histogram_distance, psd_distance
from .transfer import DEFAULT_LR, POOL, TEST, label_store, paper_test_dice, score_test_scenes, t_interval

AUTO = "auto"
"""b computed from the pool's tiles (eq. 16)."""
PAPER_B = {"OSD": 0.5089, "SOS-ALOS": 0.4370, "SOS-Sentinel": 0.4655}
"""b the paper computed for its datasets (sec. 3.3.1)."""
REAL = "real only"
EQ6 = "real only, eq. 6"
"""The control: real tiles alone with the student's loss, so that the samples' effect is told from the loss's."""
PANEL_COLUMNS = 8

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
    recipe: FinetuneOptions = field(default_factory=lambda: FinetuneOptions(tile=64, epochs=10, lr=DEFAULT_LR, train_layers="all",
                                                                                   parent_competes=False))
    """The students' fine-tuning; ``epochs`` is the budget of a student with samples (see the module's docstring)."""
    model: Path = DEFAULT_MODEL
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


@dataclass
class TileStack:
    """Tiles as statistics read them: stretched values, slick and known pixels, all (N, H, W)."""

    x: np.ndarray
    slick: np.ndarray
    known: np.ndarray

    @classmethod
    def from_joint(cls, data: JointSet) -> "TileStack":
        return cls(((data.x0[:, 0] + 1) * 127.5).numpy(), data.target[:, 1].numpy() > 0.5, data.known[:, 0].numpy() > 0)

    @classmethod
    def from_samples(cls, folder: Path, n: Optional[int] = None) -> "TileStack":
        data = load_samples(folder, n)
        slick = (data.hard_labels() == slick_index(data.classes)).numpy()
        return cls(data.tiles[:, 0].numpy(), slick, np.ones_like(slick))

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: Any) -> "TileStack":
        return TileStack(self.x[idx], self.slick[idx], self.known[idx])


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
        pool_store = label_store(out / "pool_labels.gpkg", POOL)
        pool_joint, _, _ = training_tiles(read_store(pool_store), tile, card.pixel_size, progress)
        held_joint, _, _ = training_tiles(read_store(label_store(work / "heldout_labels.gpkg", TEST)), tile, card.pixel_size, progress)
        pool, held = TileStack.from_joint(pool_joint), TileStack.from_joint(held_joint)
        b = {"pool": balancing_factor(pool_joint), "held_out": balancing_factor(held_joint), "paper": PAPER_B}
        progress.log(f"b = {b['pool']:.4f} on the {len(pool)} pool tiles ({b['held_out']:.4f} on the {len(held)} held-out tiles); "
                     f"the paper's: {', '.join(f'{k} {v}' for k, v in PAPER_B.items())}")
        student_tiles = len(split_by_area(collect_tiles(read_store(pool_store), card, tile, progress), options.recipe.val_fraction, 0)[0])
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
                train_generator(pool_store, path, replace(generator_options, b=given, name=f"DAKTer evaluation, {name}"), progress)
            folders[name] = out / "samples" / name
            made = generate(path, folders[name], n, solver=options.solver, steps=options.solver_steps, seed=0,
                            device=options.generator.device, progress=progress)
            generators[name] = {**_generator_facts(path), "samples": n, "samples_per_minute": made["samples_per_minute"]}
        auto = _b_name(AUTO)
        ddim_folder = out / "samples" / f"{auto}_ddim"
        m = min(options.quality_samples, n)
        generate(generators[auto]["path"], ddim_folder, m, solver="ddim", seed=0, device=options.generator.device, progress=progress)

        runs, reference_student = _students(options, pool_store, folders, student_tiles, n, work, progress)
        reference = {"bundled_model": _rounded(score_test_scenes(options.model, work / "detections", options.threshold, options.recipe.device, progress)),
                     "paper": {kind: _rounded(per) for kind, per in paper_test_dice().items()}}
        segmenters = {"bundled": options.model, "student": reference_student}
        sets = [("held-out real", held, True), ("pool real", pool, True)]
        sets += [(f"generated {name}", TileStack.from_samples(folder), True) for name, folder in folders.items()]
        sets += [(f"generated {auto}, {options.solver}, first {m}", TileStack.from_samples(folders[auto], m), False),
                 (f"generated {auto}, ddim, first {m}", TileStack.from_samples(ddim_folder), True)]
        quality = [_quality(label, tiles, held, segmenters, options, progress) for label, tiles, _ in sets]
        speed = _speed(Path(generators[auto]["path"]), options, progress)

    summary = _summarise(runs)
    write_csv(out / "quality.csv", quality)
    write_csv(out / "students.csv", runs)
    write_csv(out / "students_summary.csv", summary)
    write_csv(out / "speed.csv", speed)
    _panel(out / "dakter_samples.png", [(label, tiles) for label, tiles, shown in sets if shown], tile)
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
                              f"{_real_epochs(options.recipe.epochs, student_tiles, n)} epochs of {student_tiles} tiles; no early stop, "
                              "the epoch with the best validation Dice at its calibrated threshold kept"
                              + ("; the parent competes, as in the product" if options.recipe.parent_competes else "; the parent does not compete"),
            "losses": f"{REAL}: the transfer-learning paper's (1 - a) weighted BCE + a Dice; {EQ6} and with samples: DAKTer's "
                      "eq. 6 (slick-weighted BCE + 0.5 Dice) on real tiles and eq. 5 (0.1 KD at T = 2 + 0.5 Dice) on generated ones",
            "enl": f"median ENL of {options.enl_window}-pixel sea windows, stretched values read as a {options.db_span:g} dB span",
            "agreement": "slick Dice between a segmenter's prediction (probability > threshold) and the tile's label, pooled over the tiles' known pixels",
            "segmenters": {"bundled": str(options.model), "student": "the real-only student of the first seed"},
        },
        "options": asdict(options),
        "seconds": round(time.monotonic() - started, 1),
    }
    write_text(out / "dakter.json", json.dumps(result, indent=2, default=str))
    return result


def _students(options: DakterOptions, pool_store: Path, folders: dict[str, Path], real_tiles: int, n: int, work: Path,
              progress: Progress) -> tuple[list[dict], Path]:
    """Fine-tune and score every (seed, condition); returns the rows and the real-only model of the first seed.

    The split by area depends on the seed but its size does not (it draws fixed shares of the slick and
    sea tiles), so every real-only run has ``real_tiles`` training tiles.
    """
    runs: list[dict] = []
    keep: Optional[Path] = None
    conditions = [REAL, *([EQ6] if options.eq6_control else []), *(_b_name(b) for b in options.student_b)]
    batch = options.recipe.batch_size or (8 if pick_device(options.recipe.device).type == "cuda" else 4)
    real_epochs = _real_epochs(options.recipe.epochs, real_tiles, n)
    for i, seed in enumerate(options.seeds):
        for j, condition in enumerate(conditions):
            progress.update("students", i * len(conditions) + j, len(options.seeds) * len(conditions), f"seed {seed}, {condition}")
            path = work / f"student_{j}_{seed}.safetensors"
            if condition == EQ6:
                facts = _eq6_student(options, pool_store, replace(options.recipe, seed=seed, epochs=real_epochs, patience=real_epochs), path, progress)
            else:
                if condition == REAL:
                    recipe = replace(options.recipe, seed=seed, epochs=real_epochs, patience=real_epochs)
                else:
                    recipe = replace(options.recipe, seed=seed, patience=options.recipe.epochs, generated=folders[condition], n_generated=n)
                report = finetune(options.model, pool_store, path, recipe, progress)
                facts = {"generated": report.n_generated, "train_tiles": report.train_tiles, "val_tiles": report.val_tiles,
                         "epochs": report.epochs_run, "best_epoch": report.best_epoch, "val_dice": report.val_dice_after, "seconds": report.seconds}
            dice = score_test_scenes(path, work / "detections", options.threshold, options.recipe.device, progress)
            runs.append({
                "seed": seed, "condition": condition, "generated": facts["generated"],
                **{f"dice_{scene}": round(d, 4) for scene, d in dice.items()},
                "dice_mean": round(float(np.mean(list(dice.values()))), 4),
                "train_tiles": facts["train_tiles"], "val_tiles": facts["val_tiles"], "epochs": facts["epochs"],
                "steps": facts["epochs"] * max(1, (facts["train_tiles"] + facts["generated"]) // batch),
                "best_epoch": facts["best_epoch"], "val_dice": round(facts["val_dice"], 4), "seconds": facts["seconds"],
            })
            progress.log(f"seed {seed}, {condition}: test Dice {runs[-1]['dice_mean']:.3f} ({', '.join(f'{d:.3f}' for d in dice.values())})")
            if keep is None and condition == REAL:
                keep = path
            else:
                path.unlink()
    assert keep is not None
    return runs, keep


def _eq6_student(options: DakterOptions, pool_store: Path, recipe: FinetuneOptions, path: Path, progress: Progress) -> dict[str, Any]:
    """The real-only run with the student's loss: finetune's tiles, split, recipe and budget, its loss swapped
    for eq. 6 (finetune takes that loss only together with samples)."""
    started = time.monotonic()
    card = read_card(options.model)
    device = pick_device(recipe.device)
    tiles = collect_tiles(read_store(pool_store), card, recipe.tile, progress)
    train_tiles, val_tiles = split_by_area(tiles, recipe.val_fraction, recipe.seed)
    train_set, val_set = tileset(train_tiles), tileset(val_tiles)
    model, _ = load_model(options.model, device)
    layers = recipe.train_layers or ("all" if device.type == "cuda" else "decoder")
    config = replace(train_config(card, recipe, device, layers), student=StudentLoss(temperature=TEMPERATURE))
    config.lr = recipe.lr or lr_range_test(model, train_set, config, progress)
    report = train(model, train_set, val_set, config, progress)
    save_model(model, replace(card, name=f"{card.name}, {EQ6} control", threshold=report.threshold), path)
    return {"generated": 0, "train_tiles": len(train_tiles), "val_tiles": len(val_tiles), "epochs": report.epochs_run,
            "best_epoch": report.best_epoch, "val_dice": report.val_dice, "seconds": round(time.monotonic() - started, 1)}


def _real_epochs(epochs: int, real: int, generated: int) -> int:
    """Epochs of real tiles alone that take as many optimiser steps as ``epochs`` with the samples added."""
    return max(1, round(epochs * (real + generated) / real))


def _summarise(runs: list[dict]) -> list[dict]:
    """Mean test Dice and 95 % t-interval over seeds per condition, and each condition's paired change from real only."""
    rows = []
    by = {c: {r["seed"]: r for r in runs if r["condition"] == c} for c in dict.fromkeys(r["condition"] for r in runs)}
    for condition, seeds in by.items():
        keys = ["dice_mean", *(f"dice_{s}" for s in TEST)]
        row: dict[str, Any] = {"condition": condition, "runs": len(seeds)}
        for key in keys:
            mean, half = t_interval([r[key] for r in seeds.values()])
            row[key] = round(mean, 4)
            row[f"{key}_ci"] = None if math.isnan(half) else round(half, 4)
        row.update(change_from_real=None, change_ci=None, seeds_better=None)
        if condition != REAL:
            change = [seeds[s]["dice_mean"] - by[REAL][s]["dice_mean"] for s in seeds if s in by[REAL]]
            mean, half = t_interval(change)
            row.update(change_from_real=round(mean, 4), change_ci=None if math.isnan(half) else round(half, 4),
                       seeds_better=sum(1 for d in change if d > 0))
        rows.append(row)
    return rows


def _quality(label: str, tiles: TileStack, held: TileStack, segmenters: dict[str, Path], options: DakterOptions, progress: Progress) -> dict:
    progress.update("quality", 0, 1, label)
    sea_only = tiles.slick | ~tiles.known
    value = enl(tiles.x, sea_only, options.enl_window, options.db_span)
    reference = enl(held.x, held.slick | ~held.known, options.enl_window, options.db_span)
    row = {
        "set": label, "tiles": len(tiles),
        "histogram_w1": round(histogram_distance(tiles.x, held.x), 3),
        "enl": round(value, 2), "enl_ratio": round(value / reference, 3),
        "psd_db": round(psd_distance(tiles.x, held.x), 3),
        "mean": round(float(tiles.x.mean()), 2), "std": round(float(tiles.x.std()), 2),
        "slick_tile_share": round(float(tiles.slick.any(axis=(1, 2)).mean()), 4),
        "slick_pixel_share": round(float(tiles.slick[tiles.known].mean()), 5),
    }
    for name, model in segmenters.items():
        row[f"agreement_{name}"] = round(agreement(model, tiles, options.threshold, options.recipe.device), 4)
    return row


def agreement(model: Path, tiles: TileStack, threshold: Optional[float], device: str) -> float:
    """Slick Dice between ``model``'s prediction on each tile and the tile's label, pooled over known pixels
    (``threshold`` None: the model's own)."""
    torch_device = pick_device(device)
    net, card = load_model(model, torch_device)
    predictor = Predictor(net, card, torch_device)
    threshold = card.threshold if threshold is None else threshold
    tp = fp = fn = 0
    for i in range(0, len(tiles), 16):
        part = tiles.take(slice(i, i + 16))
        predicted = predictor(part.x) > threshold
        tp += int((predicted & part.slick & part.known).sum())
        fp += int((predicted & ~part.slick & part.known).sum())
        fn += int((~predicted & part.slick & part.known).sum())
    return dice_from_counts(tp, fp, fn)


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


def _panel(path: Path, rows: list[tuple[str, TileStack]], tile: int) -> None:
    """One row per set: its first four tiles holding a slick, then its first four tiles of any kind (real
    tiles in a seeded random order, samples in seed order), each with its slick label outlined in red."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(PANEL_COLUMNS * 1.2 + 1.6, len(rows) * 1.25 + 0.4), dpi=150)
    axes = figure.subplots(len(rows), PANEL_COLUMNS, squeeze=False)
    for r, (label, tiles) in enumerate(rows):
        order = np.random.default_rng(0).permutation(len(tiles)) if label.endswith("real") else np.arange(len(tiles))
        with_slick = [int(i) for i in order if tiles.slick[i].any()][: PANEL_COLUMNS // 2]
        rest = [int(i) for i in order if int(i) not in with_slick]
        chosen = (with_slick + rest)[:PANEL_COLUMNS]
        for c in range(PANEL_COLUMNS):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(chosen):
                ax.axis("off")
                continue
            i = chosen[c]
            ax.imshow(tiles.x[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if tiles.slick[i].any():
                ax.contour(tiles.slick[i].astype(float), levels=[0.5], colors="red", linewidths=0.7)
        axes[r, 0].set_ylabel(label.replace("generated ", "generated\n"), fontsize=7)
    figure.suptitle(f"Real and generated {tile}-px tiles, slick labels in red (generated: hard label)", fontsize=9)
    figure.tight_layout()
    with staged(path) as tmp:
        figure.savefig(tmp, format="png")


def _generator_facts(path: Path) -> dict[str, Any]:
    """What a generator's card says about its training, for the results."""
    card = read_generator_card(path)
    t = card.training
    history = t.get("history") or [{}]
    return {"path": str(path), "b": round(card.b, 4), "b_from": t.get("b_from"), "net": t.get("net"), "train_tiles": t.get("train_tiles"),
            "low_res_steps": t.get("low_res_steps"), "steps": t.get("steps"), "batch_size": t.get("batch_size"), "lr": t.get("lr"),
            "seed": t.get("seed"), "train_seconds": t.get("seconds"), "final_loss": history[-1].get("loss"),
            "final_l2": history[-1].get("l2"), "final_ce": history[-1].get("ce")}


def _budget_note(generators: dict[str, dict]) -> str:
    g = next(iter(generators.values()))
    seconds = ", ".join(f"{name} {v['train_seconds']:.0f} s" for name, v in generators.items())
    return (f"generators: {g['net']} net, {g['low_res_steps']} steps of {4 * g['batch_size']} half-size tiles, then {g['steps']} of "
            f"{g['batch_size']} full-size tiles, on a CPU ({seconds}); the paper: 300k + 100k steps of 64 and 16 tiles at 128 and 256 px on a GPU")


def _b_name(value: B) -> str:
    return "b_auto" if value == AUTO else f"b_{float(value):g}"


def _rounded(per: dict[str, float]) -> dict[str, float]:
    return {**{k: round(v, 4) for k, v in per.items()}, "mean": round(float(np.mean(list(per.values()))), 4)}


def _check(out: Path, options: DakterOptions) -> None:
    """Everything that can be wrong, before the first tile is cut."""
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty; nothing was overwritten.", "Give a new folder with --out.")
    check_options(options.recipe)
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
    if not options.seeds or len(set(options.seeds)) != len(options.seeds):
        raise InputError(f"The students' seeds must be distinct and at least one; got {list(options.seeds)}.", "E.g. --seeds 0 1 2.")
    if (options.n_samples is not None and options.n_samples < 1) or options.quality_samples < 1:
        raise InputError("--n-samples and --quality-samples must be at least 1.", "E.g. --quality-samples 32.")
    if options.solver not in SOLVERS:
        raise InputError(f"Unknown solver {options.solver!r}.", f"Use one of: {', '.join(SOLVERS)}.")
    if (options.threshold is not None and not 0 < options.threshold < 1) or options.db_span <= 0 or options.enl_window < 2:
        raise InputError("Threshold must lie in (0, 1), --db-span be positive and --enl-window at least 2.", "E.g. --threshold 0.5.")
    card = read_card(options.model)
    if card.out_channels != 1:
        raise InputError(f"The model {card.name} is not a water/slick model.", "Give a binary model with --model.")
    if options.generators:
        _check_generators(options, card.pixel_size)


def _check_generators(options: DakterOptions, pixel_size: float) -> None:
    """Generators to evaluate again must be the ones asked for, and must never have seen a test scene.

    Scenes are compared by their sample folder's name, so a run in another checkout of the project counts."""
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
        scenes = {Path(s).parent.name for s in card.training.get("scenes", [])}
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
    q.add_argument("--lr", type=float, default=r.lr, help=f"student learning rate (default {r.lr:g})")
    q.add_argument("--train-layers", choices=("all", "decoder"), default=r.train_layers, help="student layers trained (default all)")
    q.add_argument("--batch-size", type=int, help="student tiles per step (default 4 on a CPU)")
    q.add_argument("--model", type=Path, default=d.model, help="model the students start from, and the segmenter of the agreement (default: bundled)")
    q.add_argument("--quality-samples", type=int, default=d.quality_samples, help=f"samples made with DDIM too, to compare the solvers (default {d.quality_samples})")
    q.add_argument("--speed-sizes", nargs="+", type=int, default=list(d.speed_sizes), help="tile sizes timed (default 64 128 256)")
    q.add_argument("--speed-samples", nargs="+", type=int, default=list(d.speed_samples), help="samples timed per size (default 8 4 2)")
    q.add_argument("--threshold", type=float, help="default: each model's own")
    q.add_argument("--db-span", type=float, default=d.db_span, help=f"assumed dB span of the stretch, for ENL (default {d.db_span:g})")
    q.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    q.add_argument("--device", default=g.device)
    q.add_argument("--seed", type=int, default=g.seed, help=f"generator seed (default {g.seed})")
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
