"""The transfer-learning paper's main experiment (its Fig. 2 and Table II), on the bundled real Arctic tiles.

``python -m engine experiment transfer`` trains two initialisations of one architecture on N labelled
target-domain (EW/HH) tiles and scores both on a fixed test split:

* ``base``: the paper's "default backbone weights". Nothing can be downloaded here, so that is a random
  initialisation unless the analyst gives a local encoder weights file (e.g. ImageNet ResNet weights).
* ``finetuned``: the source-domain model, all layers unfrozen as in the paper: the bundled model
  (pretrained on synthetic IW/VV- and EW/HH-like scenes), another model file, or one pretrained here, from
  the base initialisation, on a label store of source-domain data.

Target pool: every labelled tile of sample_0 and sample_70. A fixed share of it, drawn once, validates
(early stopping) and never trains. Test split: the whole scenes sample_1, sample_2 and sample_123, scored
by the product's own detection and slick Dice, so the paper's own predictions on the same scenes stand
beside ours. No test-scene pixel can enter training: the pool is cut from the pool scenes' files only, and
a source label store that holds a test or pool scene is refused.

For each N, ``bootstraps`` training sets are drawn from the pool, seeded and without replacement: N counts
distinct training images in the paper, which did not bootstrap when N was its whole training split (a draw
with replacement would still have varied there). Slick-holding and sea-only tiles are drawn in the pool's
proportions with at least one slick tile, because most pool tiles are clean sea and a set without a slick
pixel teaches nothing about slicks (each of the paper's training images held labelled slicks). N = all
uses the whole pool once. Both initialisations train on the same set with the same seed and the same
recipe (``arm_config``), so their difference is paired and is the initialisation's alone. Every epoch
shows the model at least ``epoch_tiles`` augmented tiles (the set repeated): otherwise N = 2 would take
one optimiser step per epoch and the epoch cap and early-stopping patience would mean something
different for every N.

Intervals: 95 % t-interval of the mean over the training sets of one N, ``mean +- t(0.975, B - 1) s / sqrt(B)``,
and the same on the paired differences (the analogue of Table II's change). Runs of different N are never
pooled into one interval: their means differ by design, so a pooled spread would measure N, not chance.
The paper cites Burkov's book [42] for its interval; its published per-model tables reproduce Table II's
ranges with neither a t-interval nor 1.96 standard deviations, so we do not claim to follow it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..atomic import staged, write_csv, write_text
from ..cli.args import DEVICE_HELP, add_options, number_or, options_from
from ..data.bundled import POOL, SAMPLES, SAMPLES_DIR
from ..errors import InputError, OutputError
from ..jobs.detect import DetectOptions, detect
from ..jobs.evaluate import slick_dice
from ..jobs.finetune import FinetuneOptions, check_options, finetune, train_config
from ..jobs.finetune_data import Tile, collect_tiles, split_by_area, tileset
from ..jobs.labels import create_store, import_mask, read_store
from ..machine import file_sha256, made_by
from ..models.eager import pick_device
from ..models.registry import SYNTHETIC_MODEL, ModelCard, build_model, load_encoder_weights, load_model, read_card, save_model
from ..models.training import TileSet, TrainConfig, lr_range_test, train
from ..progress import Progress

TEST = SAMPLES
"""Target-domain scenes scored whole; never cut into training tiles."""
INITS = ("base", "finetuned")
ALL = "all"
CHANGE = "finetuned - base"
DEFAULT_LR = 1e-3
"""One rate for both initialisations: the range test on this pool gave 1.4e-3 (bundled model) and
8.5e-4 (random init) with 256-pixel tiles, and one test per run would cost more than training at N = 2."""

Size = Union[int, str]


@dataclass
class TransferOptions:
    ns: tuple[Size, ...] = (2, 8, ALL)
    bootstraps: int = 8
    epoch_tiles: int = 32
    model: Path = SYNTHETIC_MODEL
    """Source-domain model the fine-tuned runs start from; its card gives both runs' architecture."""
    source: Optional[Path] = None
    """Label store of source-domain data: pretrain on it (from the base initialisation) instead of using ``model``'s weights."""
    encoder_weights: Optional[Path] = None
    threshold: Optional[float] = None
    """None: each model at its own (``ModelCard.threshold``), as detection uses it."""
    recipe: FinetuneOptions = field(default_factory=lambda: FinetuneOptions(tile=256, epochs=20, lr=DEFAULT_LR, val_fraction=0.25))


def transfer_experiment(out: Path, options: TransferOptions, progress: Progress, command: str = "") -> dict:
    """Run every (N, training set, initialisation), then write runs.csv, summary.csv, transfer.json and
    transfer.png into ``out``. runs.csv is rewritten whole after each run, so a stopped experiment keeps
    the runs it finished; a bad N or source leaves the folder empty. ``command``: what the report says remakes it."""
    started = time.monotonic()
    _check(out, options)
    device = pick_device(options.recipe.device)
    made = made_by(command, device)
    card = read_card(options.model)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(dir=out, prefix=".work-") as tmp:
        work = Path(tmp)
        store = label_store(work / "target_labels.gpkg", POOL)
        tiles = collect_tiles(read_store(store), card, options.recipe.tile, progress)
        pool, val = split_by_area(tiles, options.recipe.val_fraction, options.recipe.seed)
        sizes = _sizes(options.ns, len(pool))
        progress.log(f"target pool: {len(pool)} training tiles ({sum(1 for t in pool if t.slick_pixels)} with slicks), "
                     f"{len(val)} validation tiles ({sum(1 for t in val if t.slick_pixels)} with slicks); N = {', '.join(map(str, sizes))}")
        paper = paper_test_dice()
        source = _pretrain_on_source(card, options, work, out, progress) if options.source else options.model
        untrained = score_test_scenes(source, work / "detections", options.threshold, options.recipe.device, progress)
        progress.log(f"source model before any target training: test Dice {np.mean(list(untrained.values())):.3f}")
        val_set = tileset(val)
        plan = [(n, b) for b in range(options.bootstraps) for n in sizes if b == 0 or n < len(pool)]
        for i, (n, b) in enumerate(plan):
            seed = int(np.random.SeedSequence([options.recipe.seed, n, b]).generate_state(1)[0])
            chosen = draw_set(pool, n, np.random.default_rng(seed))
            for init in INITS:
                done = 2 * i + INITS.index(init)
                progress.update("runs", done, 2 * len(plan), f"N = {n}, set {b}, {init}")
                runs.append(_run(init, n, b, seed, chosen, val_set, card, source, options, device, work, progress))
                write_csv(out / "runs.csv", runs)
            if b == 0 and n == sizes[-1] and options.bootstraps > 1:
                left = (options.bootstraps - 1) * sum(r["seconds"] for r in runs if r["n"] < len(pool))
                progress.log(f"first training set of every N done; the other sets take about {left / 60:.0f} min more at this pace")
        os.replace(store, out / "target_labels.gpkg")
    summary = summarise(runs)
    write_csv(out / "summary.csv", summary)
    base_init = f"encoder weights from {options.encoder_weights}" if options.encoder_weights else "random (no pretrained weights can be downloaded)"
    references = {**paper, "source": untrained}
    _plot(summary, runs, references, out / "transfer.png", options.recipe.tile, len(pool), "encoder weights" if options.encoder_weights else "random init")
    result = {
        "out": str(out),
        "made": {**made, "source_model_sha256": file_sha256(source), "seconds": round(time.monotonic() - started, 1)},
        "notes": {
            "base_init": base_init,
            "finetuned_init": f"{Path(source).name} ({read_card(source).name})",
            "sampling": "without replacement, slick and sea tiles in the pool's proportions, at least one slick tile; N = all once",
            "interval": "95 % t-interval of the mean over the training sets of one N; the change is paired (same set, same seed)",
            "recipe": "both initialisations alike: epochs picked on validation Dice at a calibrated threshold (stored), "
                      "batch-norm statistics learnt, no starting weights competing, no pull toward them",
            "test_scenes": list(TEST),
        },
        "pool": {"scenes": list(POOL), "train_tiles": len(pool), "train_slick_tiles": sum(1 for t in pool if t.slick_pixels),
                 "val_tiles": len(val), "val_slick_tiles": sum(1 for t in val if t.slick_pixels), "val_ids": [_tile_id(t) for t in val]},
        "options": {**asdict(options), "recipe": asdict(options.recipe)},
        "reference_dice": {kind: {**{s: round(d, 3) for s, d in per.items()}, "mean": round(float(np.mean(list(per.values()))), 3)}
                           for kind, per in references.items()},
        "summary": summary,
    }
    write_text(out / "transfer.json", json.dumps(result, indent=2, default=str))
    return result


def page(result: dict) -> str:
    """The report page of one run: how it was made, the table of test Dice per N against the paper's, and
    the files beside it."""
    made, pool = result["made"], result["pool"]
    rows = {(r["init"], r["n"]): r for r in result["summary"]}
    sizes = sorted({n for _, n in rows})

    def cell(init: str, n: int) -> str:
        r = rows.get((init, n))
        if r is None:
            return ""
        interval = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_half_width"] is not None else ""
        sign = "+" if init == CHANGE and r["mean_dice"] >= 0 else ""
        return f"{sign}{r['mean_dice']:.3f}{interval}"

    reference = result["reference_dice"]
    lines = [
        "# Transfer learning between modes (the paper's Fig. 2 and Table II)",
        "",
        f"Made by `{made['command']}` at commit {made['commit']} on {made['machine']}, {made['started']}, "
        f"in {made['seconds'] / 60:.0f} min. Source model: {result['notes']['finetuned_init']}, sha256 `{made['source_model_sha256'][:16]}`.",
        "",
        f"Both initialisations train on the same N tiles of the pool scenes ({', '.join(pool['scenes'])}: {pool['train_tiles']} training "
        f"tiles, {pool['train_slick_tiles']} with slicks; {pool['val_tiles']} fixed validation tiles, {pool['val_slick_tiles']} with slicks) "
        f"with one recipe ({result['notes']['recipe']}), and are scored on the whole test scenes ({', '.join(result['notes']['test_scenes'])}) "
        f"by the product's detection. Base: {result['notes']['base_init']}. Intervals: {result['notes']['interval']}.",
        "",
        "| N target tiles | runs | base | fine-tuned from the source model | change (paired) |",
        "|---|---|---|---|---|",
        *(f"| {n}{' = all' if n == pool['train_tiles'] else ''} | {rows[('base', n)]['runs']} | {cell('base', n)} | "
          f"{cell('finetuned', n)} | {cell(CHANGE, n)} |" for n in sizes),
        f"| source model, no target training | | | {reference['source']['mean']:.3f} | |",
        f"| paper's own predictions on these scenes | | `pred_base` {reference['pred_base']['mean']:.3f} | `pred_tl` {reference['pred_tl']['mean']:.3f} | |",
        "",
        "Per scene, before any target training: " + "; ".join(
            f"{kind} " + ", ".join(f"{s} {d:.3f}" for s, d in per.items() if s != "mean") for kind, per in reference.items()) + ".",
        "",
        f"Per-run figures and the plot: `runs.csv`, `summary.csv` and `transfer.png` in `{result['out']}`.",
        "",
    ]
    return "\n".join(lines)


def label_store(path: Path, scenes: tuple[str, ...]) -> Path:
    """A new label store holding bundled Arctic scenes with their analysts' labels, through the product's own
    import: each label's footprint becomes a reviewed area, the rest of it known sea."""
    store = create_store(path, "EPSG:32636")
    for sample in scenes:
        import_mask(store, SAMPLES_DIR / sample / "raw_mosaic.tif", SAMPLES_DIR / sample / "labels_mosaic.png")
    return store


def score_test_scenes(model: Path, folder: Path, threshold: Optional[float], device: str, progress: Progress) -> dict[str, float]:
    """Slick Dice of ``model`` on each whole test scene: the product's detection (outputs in ``folder``, replaced
    scene by scene), scored against the analyst's label at the threshold detection cut at (``None``: the model's own).

    PyTorch runs the model, as the benchmark scores: ``auto`` would export and time every new model file (ONNX files
    in the user's models folder, about half a minute a model on a 2-core CPU) to pick a runtime whose masks agree
    with PyTorch's anyway."""
    dice = {}
    for scene in TEST:
        options = DetectOptions(model=str(model), prefix=scene, threshold=threshold, device=device, runtime="torch", overwrite=True)
        result = detect(SAMPLES_DIR / scene / "raw_mosaic.tif", folder, options, progress)
        dice[scene] = slick_dice(result.mask, SAMPLES_DIR / scene / "labels_mosaic.png").dice
    return dice


def paper_test_dice() -> dict[str, dict[str, float]]:
    """Slick Dice of the paper's own predictions (``pred_base``: Arctic only, ``pred_tl``: transfer) per test scene."""
    return {kind: {s: slick_dice(SAMPLES_DIR / s / f"{kind}.tif", SAMPLES_DIR / s / "labels_mosaic.png").dice for s in TEST}
            for kind in ("pred_base", "pred_tl")}


def draw_set(pool: list[Tile], n: int, rng: np.random.Generator) -> list[Tile]:
    """``n`` distinct pool tiles, slick-holding and sea-only ones in the pool's proportions, at least one
    holding a slick (see the module's docstring for why)."""
    slick = [t for t in pool if t.slick_pixels]
    sea = [t for t in pool if not t.slick_pixels]
    n_slick = max(min(len(slick), n, max(1, round(n * len(slick) / len(pool)))), n - len(sea))
    picked = [slick[i] for i in rng.choice(len(slick), n_slick, replace=False)]
    return picked + [sea[i] for i in rng.choice(len(sea), n - n_slick, replace=False)]


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half width of its ``level`` t-interval); the half width is NaN for fewer than two values."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan
    return mean, t_quantile(0.5 + level / 2, len(values) - 1) * float(np.std(values, ddof=1)) / math.sqrt(len(values))


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile for ``p`` in (0.5, 1), by bisection on the integrated density: scipy is not
    among the engine's dependencies for one number."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 20001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid**2 / df))
        return 0.5 + float(np.sum((density[1:] + density[:-1]) / 2) * (grid[1] - grid[0]))

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, 2 * high
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < p else (low, middle)
    return (low + high) / 2


def summarise(runs: list[dict]) -> list[dict]:
    """Mean test Dice and 95 % interval per (initialisation, N) and of the paired change, one N at a time."""
    rows = []
    for n in sorted({r["n"] for r in runs}):
        dice = {init: {r["bootstrap"]: r["dice_mean"] for r in runs if r["init"] == init and r["n"] == n} for init in INITS}
        paired = [dice["finetuned"][key] - dice["base"][key] for key in dice["base"] if key in dice["finetuned"]]
        for init, values in [*((init, list(dice[init].values())) for init in INITS), (CHANGE, paired)]:
            if not values:
                continue
            mean, half = t_interval(values)
            rows.append({
                "init": init, "n": n, "runs": len(values), "mean_dice": round(mean, 4),
                "ci_low": _round(mean - half), "ci_high": _round(mean + half), "ci_half_width": _round(half),
            })
    return rows


def _run(init: str, n: int, bootstrap: int, seed: int, chosen: list[Tile], val_set: TileSet, card: ModelCard, source: Path,
         options: TransferOptions, device: torch.device, work: Path, progress: Progress) -> dict:
    """Train one initialisation on one training set, detect on the test scenes, score them."""
    started = time.monotonic()
    if init == "base":
        model = _base_model(card, options.encoder_weights, seed)
    else:
        model, _ = load_model(source, device)
    config = arm_config(card, replace(options.recipe, seed=seed), device)
    repeats = math.ceil(options.epoch_tiles / len(chosen))
    train_set = tileset(chosen * repeats)
    config.lr = options.recipe.lr or lr_range_test(model, train_set, config, progress)
    report = train(model, train_set, val_set, config, progress)
    path = save_model(model, replace(card, name=f"transfer {init} N={n} set {bootstrap}", threshold=report.threshold),
                      work / f"{init}_{n}_{bootstrap}.safetensors")
    dice = score_test_scenes(path, work / "detections", options.threshold, options.recipe.device, progress)
    path.unlink()
    row = {
        "n": n, "bootstrap": bootstrap, "init": init, "seed": seed,
        **{f"dice_{scene}": round(d, 4) for scene, d in dice.items()},
        "dice_mean": round(float(np.mean(list(dice.values()))), 4),
        "train_tiles": len(chosen), "slick_tiles": sum(1 for t in chosen if t.slick_pixels),
        "epochs_run": report.epochs_run, "best_epoch": report.best_epoch, "val_dice": round(report.val_dice_calibrated, 4),
        "threshold": report.threshold,
        "lr": config.lr, "train_seconds": report.seconds, "seconds": round(time.monotonic() - started, 1), "train_tile_ids": " ".join(_tile_id(t) for t in chosen),
    }
    progress.log(f"N = {n}, set {bootstrap}, {init}: test Dice {row['dice_mean']:.3f} "
                 f"({', '.join(f'{d:.3f}' for d in dice.values())}), {report.epochs_run} epochs, {report.seconds:.0f} s")
    return row


def arm_config(card: ModelCard, recipe: FinetuneOptions, device: torch.device) -> TrainConfig:
    """The one training recipe of both initialisations, so that their difference is the initialisation's alone.

    Epochs are judged on validation Dice at a threshold calibrated there, which the saved model keeps (as
    the product fine-tunes); batch-norm statistics are learnt from the target batches, since a random
    initialisation has none worth keeping; neither starting point competes as epoch 0 nor pulls the
    weights toward itself, since the experiment asks what training from each start learns."""
    config = train_config(card, replace(recipe, from_parent=False), device)
    return replace(config, select_on_dice=True)


def _base_model(card: ModelCard, encoder_weights: Optional[Path], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(card)
    if encoder_weights:
        load_encoder_weights(model, encoder_weights)
    return model


def _pretrain_on_source(card: ModelCard, options: TransferOptions, work: Path, out: Path, progress: Progress) -> Path:
    """A source-domain model trained with the product's fine-tuning path, from the base initialisation."""
    progress.log(f"pretraining on the source labels {options.source}")
    start = save_model(_base_model(card, options.encoder_weights, options.recipe.seed),
                       replace(card, name=f"{card.name} (initialisation)", metrics={}, lineage={}), work / "source_init.safetensors")
    recipe = replace(options.recipe, name=f"{card.name}, pretrained on {options.source.name}", from_parent=False)
    return Path(finetune(start, options.source, out / "source_model.safetensors", recipe, progress).model)


def _sizes(ns: tuple[Size, ...], pool: int) -> list[int]:
    too_many = [n for n in ns if n != ALL and n > pool]
    if too_many:
        raise InputError(
            f"N = {', '.join(map(str, too_many))} is more than the {pool} training tiles of the target pool.",
            "Use smaller N or all, or smaller tiles (--tile 128 gives about four times as many).",
        )
    return sorted({pool if n == ALL else int(n) for n in ns})


def _check(out: Path, options: TransferOptions) -> None:
    """Everything that can be wrong, before the first tile is cut."""
    check_options(options.recipe)
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty; nothing was overwritten.", "Give a new folder with --out.")
    if options.bootstraps < 1 or options.epoch_tiles < 1:
        raise InputError("--bootstraps and --epoch-tiles must be at least 1.", "E.g. --bootstraps 8 --epoch-tiles 32.")
    if not options.ns or any(n != ALL and (not isinstance(n, int) or n < 1) for n in options.ns):
        raise InputError(f"N must be positive whole numbers or {ALL}; got {list(options.ns)}.", "E.g. --n 2 8 all.")
    if options.threshold is not None and not 0 < options.threshold < 1:
        raise InputError(f"Threshold {options.threshold} is outside (0, 1).", "Use a probability such as 0.5.")
    read_card(options.model)
    if options.encoder_weights and not Path(options.encoder_weights).is_file():
        raise InputError(f"Encoder weights file not found: {options.encoder_weights}.", "Give a local .safetensors or .pth file.")
    if options.source:
        target = {(SAMPLES_DIR / s / "raw_mosaic.tif").resolve(): s for s in (*POOL, *TEST)}
        store = read_store(options.source)
        clash = sorted({target[p] for p in (store.scene_path(s).resolve() for s in store.scenes) if p in target})
        if clash:
            raise InputError(
                f"The source labels {options.source.name} hold target-domain scenes of this experiment ({', '.join(clash)}).",
                "Pretrain on other data: a test scene there would be scored after training on it.",
            )


def _tile_id(tile: Tile) -> str:
    return f"{Path(tile.scene).parent.name}:{tile.row}:{tile.col}"


def _round(value: float) -> Optional[float]:
    return None if math.isnan(value) else round(value, 4)


def _plot(summary: list[dict], runs: list[dict], references: dict, path: Path, tile: int, pool_size: int, base_label: str) -> None:
    """Mean test Dice against N for both initialisations with their 95 % bands and every run as a dot,
    like the paper's Fig. 2; reference lines: the source model before any target training and the
    paper's own predictions on the same scenes.
    matplotlib's object API draws without pyplot, so no GUI backend (Qt) is ever loaded."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), dpi=150)
    ax = figure.add_subplot()
    sizes = sorted({r["n"] for r in runs})
    jitter = np.random.default_rng(0)
    for init, colour, label in (("base", "#d95f02", f"base ({base_label})"), ("finetuned", "#1b9e77", "fine-tuned from the source model")):
        rows = [r for r in summary if r["init"] == init]
        ax.plot([r["n"] for r in rows], [r["mean_dice"] for r in rows], marker="o", color=colour, label=label)
        banded = [r for r in rows if r["ci_half_width"] is not None]
        ax.fill_between([r["n"] for r in banded], [r["ci_low"] for r in banded], [r["ci_high"] for r in banded], color=colour, alpha=0.2, linewidth=0)
        dots = [r for r in runs if r["init"] == init]
        ax.scatter([r["n"] * 2 ** jitter.uniform(-0.06, 0.06) for r in dots], [r["dice_mean"] for r in dots], s=9, color=colour, alpha=0.5)
    for kind, colour, style, label in (("source", "#1b9e77", "-.", "source model, no target training"),
                                       ("pred_base", "0.4", ":", "paper, Arctic only (pred_base)"), ("pred_tl", "0.4", "--", "paper, transfer (pred_tl)")):
        ax.axhline(float(np.mean(list(references[kind].values()))), color=colour, linestyle=style, linewidth=1, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes[:-1]] + [f"{sizes[-1]} (all)" if pool_size == sizes[-1] else str(sizes[-1])])
    ax.minorticks_off()
    ax.set_xlim(min(sizes) / 1.4, max(sizes) * 1.4)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"N, target-domain training tiles ({tile} px, 25 m)")
    ax.set_ylabel(f"mean test Dice ({', '.join(TEST)})")
    ax.set_title("Test Dice with 95 % t-interval over training sets", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    with staged(path) as tmp:
        figure.savefig(tmp, format="png")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    defaults = TransferOptions()
    q = subparsers.add_parser("transfer", help="base vs fine-tuned-from-source models for N target tiles (the paper's Fig. 2)")
    q.add_argument("--out", type=Path, default=Path("experiment_output/transfer"), help="empty or new folder")
    q.add_argument("--n", nargs="+", type=number_or(ALL, ALL, int), default=list(defaults.ns), metavar="N", help="training-set sizes, whole numbers or all (default: 2 8 all)")
    add_options(q, defaults, {
        "bootstraps": "training sets drawn per N",
        "model": "source-domain model to fine-tune: the bundled synthetic-only one",
        "source": "label store of source-domain data: pretrain on it instead of using --model's weights",
        "encoder_weights": "local encoder weights for the base runs (default: random init)",
        "epoch_tiles": "augmented tiles per epoch at least, the set repeated",
        "threshold": "default: each model's own",
    })
    add_options(q, defaults.recipe, {
        "tile": "tile size in pixels",
        "epochs": "most epochs per run; early stopping on the validation Dice",
        "batch_size": "tiles per step (default 8 on a GPU, 4 elsewhere)",
        "patience": "epochs without a better validation Dice before stopping",
        "lr": "learning rate for both inits, or auto for a range test per run",
        "val_fraction": "share of the pool's tiles kept for validation",
        "device": DEVICE_HELP,
        "seed": "seed of the training sets, the tile split and training",
    }, lr={"type": number_or("auto")})
    q.add_argument("--markdown", type=Path, help="also write the report page here (e.g. docs/transfer.md)")
    q.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    defaults = TransferOptions()
    options = options_from(args, defaults, ns=tuple(args.n), recipe=options_from(args, defaults.recipe))
    result = transfer_experiment(args.out, options, progress, args.invocation)
    if args.markdown:
        write_text(args.markdown, page(result))
    return result
