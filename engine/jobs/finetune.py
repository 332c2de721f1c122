"""Few-shot fine-tuning of a model on an analyst's labels.

The model learns from the store's tiles as detection sees them (engine/jobs/finetune_data.py) and is
scored on validation sea it never saw. Everything that can be wrong with the inputs is checked before the
first training step. The parent model file is only read; the new one is written once training succeeded,
atomically, so a failed or cancelled run leaves no file.

With a sample folder (``generated``), the model is trained as DAKTer's student (engine/generation/distill.py): its
training tiles are joined by generated ones, real tiles then take eq. 6 (slick-weighted CE + Dice) and generated ones
eq. 5 (KD + Dice) in place of the transfer-learning paper's loss. Validation stays on real tiles only.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

from .. import __version__
from ..cli.args import DEVICE_HELP, add_options, number_or, options_from
from ..contract import CLOSE_PARENT_SHARE, CLOSE_PARENT_WEIGHT, PARENT_WEIGHT
from ..errors import InputError, ModelError
from ..generation.distill import GENERATED_LABELS, mixed, open_folder, sample_count, student_tiles
from ..machine import file_sha256
from ..models.eager import pick_device
from ..models.inference import Predictor
from ..models.registry import ModelCard, check_new_model_file, has_weights, load_model, read_card, save_model, scenes_learnt
from ..models.training import TRAIN_LAYERS, TileSet, TrainConfig, interpolate_weights, lr_range_test, paper_augment, train, validate
from ..progress import Progress, silent
from ..scenes.fingerprint import scene_fingerprint
from .finetune_data import check_store, collect_tiles, context_tiles, replay_tiles, split_by_area, tileset
from .labels import read_store

MIN_VAL_SLICK_PIXELS = 1000
"""Slick pixels (0.6 km2 at 25 m) below which the validation tiles cannot place a threshold, and can barely tell
a better model from luck: a single slick's edge pixels then move their Dice by several hundredths. Below it the
parent's threshold stays, and the run says so."""
MIN_LABELLED_SLICK_PIXELS = 1000
"""Slick pixels below which a fine-tuning without validation refuses (``FinetuneOptions.min_slick_pixels``):
chosen with its recipe by leave one scene out over ten real half-scenes, among 0, 1,000, 2,500 and 4,000
(docs/within_scene.md)."""
USE_ON = ("labelled", "every")
AVERAGE_SEEDS = 2
"""Fine-tuning runs averaged into the saved weights (``FinetuneOptions.average_seeds``): which held half a run makes
worse changes with its seed, and over four pairs of runs on ten real half-scenes two seeds' weights averaged left 1 half
of 40 worse (by 0.003) against 5 of 80 for the runs alone, mean held Dice 0.476 against 0.473 (docs/within_scene.md).
Twice the training time."""
PARENT_SHARE = 0.5
"""Share of the parent in the weights a fine-tuning without validation saves (``FinetuneOptions.parent_share``): chosen
by leave one scene out over ten real half-scenes, among 0, 0.25, 0.5 and 0.75, with parents made as the bundled model is
(docs/within_scene_choice.md)."""


@dataclass
class FinetuneOptions:
    """The defaults are the recipe leave one scene out chose for an analyst's few labels on real scenes
    (docs/within_scene_choice.md): the whole network at 3e-4 for 10 epochs on 128-pixel tiles, no validation
    tiles, the saved weights half way back to the parent's (``PARENT_SHARE``) unless they find the labelled slicks no
    better than the parent's (``label_check``), two such runs' weights averaged (``average_seeds``), the parent's
    threshold, and no fine-tuning at all below ``MIN_LABELLED_SLICK_PIXELS``. Validation tiles of a few labels picked epochs and
    thresholds that made the rest of a scene worse (0.56 -> 0.10 on one real half-scene); the chosen recipe took
    the held halves' mean Dice from 0.328 to 0.388 with none worse, with parents made as the bundled model was then
    (the paper's weighted BCE); chosen again for parents trained with plain BCE, it stayed
    (docs/within_scene_choice_bce1.md)."""

    tile: int = 128
    epochs: int = 10
    batch_size: Optional[int] = None
    """None: 8 on a GPU, 4 elsewhere."""
    lr: Optional[float] = 3e-4
    """None: from a learning-rate range test on the training tiles."""
    train_layers: str = "all"
    """``all`` (the paper's choice) or ``decoder`` (the encoder frozen: quicker on a CPU)."""
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.0
    """Share of the tiles kept to choose the epoch (and, with enough slick pixels, the threshold) on. 0: none; all
    ``epochs`` run on every labelled tile, the last is kept (unless ``label_check`` hands back the parent's) and the
    parent's threshold stays, for labels holding ``min_slick_pixels``."""
    min_slick_pixels: int = MIN_LABELLED_SLICK_PIXELS
    """Without validation tiles, the fewest labelled slick pixels a run trains on; experiments give 0 to measure
    every gate from one run."""
    patience: int = 5
    name: Optional[str] = None
    generated: Optional[str | Path] = None
    """A sample folder (engine generate): train as a student on generated samples too."""
    n_generated: Optional[int] = None
    """Samples of ``generated`` to use, the first kept ones; None: as many as training tiles (the paper's)."""
    generated_labels: str = "soft"
    """KD targets of the generated tiles (``distill.GENERATED_LABELS``): soft, the paper's, or hard (its ablation)."""
    from_parent: bool = True
    """False: the base model is an untrained initialisation (experiment transfer pretraining on source
    labels), which must learn its batch-norm statistics and has no weights worth keeping."""
    parent_competes: bool = True
    """False: return the best trained epoch even below the parent (experiments; ``TrainConfig``)."""
    parent_weight: float = PARENT_WEIGHT
    """L2-SP strength toward the parent's weights (``TrainConfig.parent_weight``); 0: none."""
    pos_weight_cap: Optional[float] = None
    """The most the BCE weights a labelled slick pixel over sea (``TrainConfig.pos_weight_cap``). None: the
    parent's own (``ModelCard.pos_weight_cap``), since it keeps the parent's threshold: a parent trained with plain
    BCE and fine-tuned at 100 made four of ten held half-scenes worse (docs/within_scene.md)."""
    parent_share: Optional[float] = None
    """Share of the parent in the saved weights, interpolated tensor by tensor after training (WiSE-FT, Wortsman
    et al. 2022): a model between the two keeps more of what the parent knew about the scene's unlabelled parts.
    None: ``PARENT_SHARE`` without validation tiles, 0 with them (their epoch and threshold were chosen for the
    weights as trained) or without a parent; 0: the fine-tuned weights as trained."""
    context: float = 0.0
    """Tiles of the parent's own map where nothing is labelled or reviewed, as a share of the labelled tiles
    (``finetune_data.context_tiles``); 0: none, the default, since 1 lowered the held half-scenes' mean from 0.466
    to 0.449 over two seeds (docs/within_scene.md)."""
    replay: float = 0.0
    """Crops of the bundled labelled scenes the parent learnt from, with their labels, as a share of the labelled tiles'
    number (``finetune_data.replay_tiles``); 0: none, the default, since 1 lowered the held half-scenes' mean from 0.466
    to 0.390 over two seeds (docs/within_scene.md)."""
    label_check: bool = True
    """Without validation tiles, save the trained weights only if they score above the parent on the labelled tiles
    themselves (``labels_dice_before`` and ``after``), the parent's otherwise: a run that cannot beat its parent on the
    very slicks it learnt from has gone wrong. On six pairs of within-scene runs it left 7 held halves worse against 10,
    no run's mean lower (docs/within_scene.md). False: the trained weights whatever they score."""
    average_seeds: int = AVERAGE_SEEDS
    """Without validation tiles (from a parent), how many runs with seeds ``seed``, ``seed + 1``, ... are averaged,
    tensor by tensor, into the saved weights, each after its own interpolation toward the parent and label check; 1:
    one run. With validation tiles one run, whose epoch and threshold they chose."""
    stay_close: bool = False
    """Keep closer to the parent, trading some of the gain for fewer unlabelled areas made worse, in the way measured
    for the parent's kind (``close_to_parent``): a stronger L2-SP pull for one network, more of the parent in the
    saved weights for a pairing."""
    use_on: str = "labelled"
    """Where the new model's weights detect (``USE_ON``): ``labelled``, the scenes of its labels only, its parent's
    everywhere else (``ModelCard.taught_scenes``); or ``every`` scene. Experiments that score a fine-tuned model
    on scenes it never saw ask for ``every``."""


@dataclass
class FinetuneReport:
    model: str
    parent: str
    scenes: list[str]
    train_tiles: int
    val_tiles: int
    val_slick_pixels: int
    """Slick pixels of the validation tiles, all the keep-or-fall-back decision is made on."""
    epochs_run: int
    best_epoch: int
    holds_parent_weights: bool
    """Whether the new model file holds its parent's weights unchanged: no epoch beat the parent on the validation tiles,
    or the label check kept them (``best_epoch`` 0). The dock warns and has nothing to compare; experiments say so."""
    val_dice_before: Optional[float]
    """The parent's, at its own threshold; None without validation tiles (``FinetuneOptions.val_fraction`` 0)."""
    val_dice_after: Optional[float]
    """The new model's, at ``threshold``; None without validation tiles."""
    labels_dice_before: Optional[float]
    """Without validation tiles: the parent's slick Dice on the labelled tiles (mirror-averaged, at its threshold), the
    bar the trained weights must clear (``FinetuneOptions.label_check``); None otherwise."""
    labels_dice_after: Optional[float]
    """The trained weights' on the same tiles, after the interpolation toward the parent; None without the check."""
    threshold: float
    """The new model's decision threshold on the labelled scenes: calibrated on the validation tiles when they
    hold ``MIN_VAL_SLICK_PIXELS``, the parent's otherwise (``ModelCard.scene_thresholds``)."""
    threshold_elsewhere: float
    """Its threshold on every other scene (``ModelCard.threshold``): the parent's, since a threshold calibrated on
    one scene's labels suits that scene (engine/scenes/fingerprint.py)."""
    threshold_note: str
    """Which of the two applies where, and why, in a sentence for the analyst (the dock shows it)."""
    use_note: str
    """On which scenes the new model's weights detect, in a sentence for the analyst (``FinetuneOptions.use_on``); empty
    where they are the parent's."""
    weights_note: str
    """Whose weights the new model holds and what decided it, in a sentence for the analyst (the dock shows it, and warns
    when they are the parent's); empty where nothing was checked."""
    lr: float
    train_layers: str
    parent_weight: float
    parent_share: float
    """Share of the parent in the saved weights (``FinetuneOptions.parent_share``)."""
    stay_close: bool
    """Whether the analyst asked to stay close to the parent (``FinetuneOptions.stay_close``)."""
    device: str
    seconds: float
    history: list[dict] = field(default_factory=list)
    generated: Optional[str] = None
    n_generated: int = 0
    seeds_averaged: int = 1
    """Runs averaged into the saved weights (``FinetuneOptions.average_seeds``); ``history`` is the last one's."""
    runs_kept_parent: int = 0
    """Of those runs, how many the label check handed the parent's weights (all of them: ``holds_parent_weights``)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per part of the run (checks, tiles, parent, lr_range_test, epochs, validation, label_check, saving), which
    add up to ``seconds``: where an analyst's wait goes."""

    def to_dict(self) -> dict:
        return asdict(self)


def finetune(
    base_model_path: str | Path,
    store_path: str | Path,
    out_path: str | Path,
    options: Optional[FinetuneOptions] = None,
    progress: Optional[Progress] = None,
) -> FinetuneReport:
    """Fine-tune the base model on the store's labels and write it to ``out_path`` with its lineage.

    Everything that can be wrong with the inputs is checked before the first training step.
    """
    options = options or FinetuneOptions()
    progress = progress or silent()
    started = time.monotonic()
    timings: dict[str, float] = {}
    lap = started

    def timed(part: str) -> None:
        """Adds the time since the last call to ``part``: the parts of a run averaged over seeds add up over its runs."""
        nonlocal lap
        now = time.monotonic()
        timings[part], lap = round(timings.get(part, 0.0) + now - lap, 2), now

    base_model_path, out_path = Path(base_model_path), Path(out_path)
    check_options(options)
    check_new_model_file(out_path)
    card = read_card(base_model_path)
    _check_base(card)
    options = close_to_parent(options, card)
    if not has_weights(base_model_path):
        raise ModelError(f"The model {card.name} has no weights to train: its few parameters are fitted on labelled scenes.",
                         "Fine-tune a network model, such as the bundled U-Net.")
    store = read_store(store_path)
    for note in store.repairs:
        progress.log(f"warning: {note}")
    check_store(store)
    sample_folder = open_folder(options.generated, card, options.tile, progress) if options.generated else None
    device = pick_device(options.device)
    timed("checks")
    tiles = collect_tiles(store, card, options.tile, progress)
    validating = options.val_fraction > 0
    if validating and len(tiles) < 2:
        raise InputError(
            f"The reviewed areas cover a single {options.tile}-pixel tile; fine-tuning needs at least 2, one to train on and one to validate on.",
            f"Mark a larger area as reviewed, or use smaller tiles (e.g. --tile {max(64, options.tile // 2)}).",
        )
    train_tiles, val_tiles = split_by_area(tiles, options.val_fraction, options.seed) if validating else (tiles, [])
    timed("tiles")
    val_slick_pixels = sum(t.slick_pixels for t in val_tiles)
    labelled_slick_pixels = sum(t.slick_pixels for t in tiles)
    if not validating and options.from_parent and labelled_slick_pixels < options.min_slick_pixels:
        raise InputError(
            f"The labels hold {labelled_slick_pixels} slick pixels, fewer than the {options.min_slick_pixels} fine-tuning needs: with "
            "fewer, it made the rest of a real scene worse more often than better. Keep using the parent.",
            f"Label more slicks: {options.min_slick_pixels - labelled_slick_pixels} more pixels, about "
            f"{(options.min_slick_pixels - labelled_slick_pixels) * card.pixel_size ** 2 / 1e6:.2f} km² at {card.pixel_size:g} m.",
        )
    if validating and not val_slick_pixels and options.from_parent and options.parent_competes:
        slick_tiles = sum(1 for t in tiles if t.slick_pixels)
        raise InputError(
            f"The labelled slicks lie in {slick_tiles} {options.tile}-pixel tile{'s' * (slick_tiles != 1)}, all needed for training, so no validation "
            "tile holds a slick and nothing could tell whether a fine-tuned model finds slicks better than its parent: keep using the parent.",
            f"Label slicks in more places (at least two tiles with a slick), or use smaller tiles (--tile {max(64, options.tile // 2)}).",
        )
    if validating and not val_slick_pixels:
        progress.log("warning: the validation tiles hold no slick; their Dice only tells whether the model stays quiet on sea")
    elif validating and val_slick_pixels < MIN_VAL_SLICK_PIXELS:
        progress.log(f"warning: the validation tiles hold only {val_slick_pixels} slick pixels, too few to place a threshold, so the "
                     "parent's stays, and barely enough to tell a better model from luck; label more slicks for a trustworthy choice")
    parent_sha256 = file_sha256(base_model_path)
    try:
        parent_learnt: Optional[list[str]] = sorted(scenes_learnt(base_model_path))
    except ModelError:  # the parent's own parent is lost: what it learnt stays unknown, and the child says nothing
        parent_learnt = None
    model, _ = load_model(base_model_path, device)
    context = []
    if options.context:
        parent = Predictor(model, card, device, fast=False)
        context = context_tiles(store, card, options.tile, train_tiles, options.context, options.seed,
                                lambda x: parent(x[None])[0] > card.threshold, progress)
        progress.log(f"{len(context)} tiles of the parent's own map where nothing is labelled or reviewed")
    train_set, val_set = tileset(train_tiles + context), tileset(val_tiles) if validating else None
    replayed, n_replay = [], 0
    if options.replay:
        if parent_learnt is None:
            raise ModelError(f"The card of {card.name} does not say which scenes it learnt from, so there is nothing to replay.",
                             "Leave --replay at 0 for this parent.")
        taught = [store.scene_path(scene) for scene in sorted({t.scene for t in tiles})]
        replay, replayed = replay_tiles(set(parent_learnt), taught, card.pixel_size, options.tile,
                                        max(1, round(options.replay * len(train_tiles))), options.seed, progress)
        n_replay = len(replay)
        train_set = TileSet(*(torch.cat([a, b]) for a, b in zip((train_set.x, train_set.y, train_set.valid), (replay.x, replay.y, replay.valid))))
    n_generated = 0
    if sample_folder:
        n_generated = sample_count(sample_folder, options.n_generated, len(train_tiles))
        generated, generated_lineage = student_tiles(sample_folder, n_generated, progress, options.generated_labels)
        train_set = mixed(train_set, generated)
        progress.log(f"student training: {n_generated} generated samples from {sample_folder.path.name}, "
                     + ("hard labels" if options.generated_labels == "hard" else f"soft labels at T = {sample_folder.loss.temperature:g}"))
    share = parent_share(options)
    checking = options.label_check and not validating and options.from_parent
    runs = options.average_seeds if not validating and options.from_parent else 1
    parent_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if share or checking or runs > 1 else {}
    config = train_config(card, options, device)
    config.student = sample_folder.loss if sample_folder else None
    config.calibrate = validating and (val_slick_pixels >= MIN_VAL_SLICK_PIXELS or not options.from_parent)
    config.parent_competes = config.parent_competes and validating
    dice_before = validate(model, val_set, config).dice_near(card.threshold) if val_set is not None else None
    progress.log(f"{len(train_tiles)} training and {len(val_tiles)} validation tiles; " + (
        f"parent's validation Dice {dice_before:.3f} at its threshold {card.threshold:.2f}" if dice_before is not None else
        f"no validation: all {options.epochs} epochs run and the last is kept, at the parent's threshold {card.threshold:.2f}"))
    first, *others = card.networks
    if others:  # an ensemble: see Ensemble.parameter_groups
        progress.log(f"an ensemble: {first} learns, {' and '.join(others)} {'keeps its' if len(others) == 1 else 'keep their'} weights")
    timed("parent")
    config.lr = options.lr or lr_range_test(model, train_set, config, progress)
    progress.log(f"learning rate {config.lr:.2e}" + (" from a range test" if options.lr is None else ""))
    timed("lr_range_test")
    labels_before = labels_after = None
    labelled = tileset(train_tiles) if checking else None
    members, kept_parent, trained_dice = [], 0, []
    for run in range(runs):
        if run:
            model.load_state_dict(parent_state)
            config = replace(config, seed=options.seed + run)
            progress.log(f"run {run + 1} of {runs}, seed {config.seed}")
        report = train(model, train_set, val_set, config, progress)
        if share:
            interpolate_weights(model, parent_state, share)
            progress.log(f"saved weights: {1 - share:g} fine-tuned, {share:g} parent")
        timed("epochs")
        timings["epochs"] = round(timings["epochs"] - report.val_seconds, 2)  # scoring after each epoch is its own part
        timings["validation"] = round(timings.get("validation", 0.0) + report.val_seconds, 2)
        if checking:
            labels_before, after = keep_if_better_on_labels(model, parent_state, labelled, config, card.threshold)
            trained_dice.append(after)
            progress.log(f"on the labelled tiles themselves: parent {labels_before:.3f}, fine-tuned {after:.3f}")
            if after <= labels_before:
                kept_parent += 1
                progress.log("warning: the fine-tuned weights do not find the labelled slicks better than the parent does, so "
                             + ("this run brings the parent's weights to the average" if runs > 1 else
                                "the new model keeps the parent's weights; label more slicks, or mark more reviewed sea"))
            timed("label_check")
        if runs > 1:
            members.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    if members:
        model.load_state_dict({k: torch.stack([m[k] for m in members]).mean(0) if v.is_floating_point() else v
                               for k, v in members[0].items()})
        progress.log(f"saved weights: the mean of {runs} runs' (seeds {options.seed} to {options.seed + runs - 1})")
    if checking:
        # What the saved weights find on the labels: the average's own score, unless every run handed back the parent's
        # (then the best a run's trained weights found, which the note sets against the parent's).
        if kept_parent == runs or runs == 1:
            labels_after = max(trained_dice)
        else:
            labels_after = validate(model, labelled, config, mirrored=True).dice_near(card.threshold)
            timed("label_check")
    best_epoch = 0 if checking and kept_parent == runs else report.best_epoch
    dice_after = report.val_dice_calibrated  # the kept weights' Dice on the same validation tiles, at their threshold
    elsewhere = card.threshold if options.from_parent else report.threshold
    scenes = sorted({t.scene for t in tiles})
    own = {scene_fingerprint(store.scene_path(scene)): report.threshold for scene in scenes} if report.threshold != elsewhere else {}
    if validating:
        progress.log(f"validation Dice: parent {dice_before:.3f}, fine-tuned {dice_after:.3f} at threshold {report.threshold:.2f}"
                     + (f" (on the labelled scenes; {elsewhere:.2f} elsewhere)" if own else ""))
    holds_parent = best_epoch == 0 and options.from_parent
    if report.best_epoch == 0 and options.from_parent:
        progress.log("warning: no epoch beat the parent on the validation tiles, so the new model keeps the parent's weights"
                     + (", with a threshold of its own on the labelled scenes" if own else " and threshold")
                     + "; add labels, or mark more reviewed sea")
    seconds = round(time.monotonic() - started, 1)
    lineage = {
        "parent": {"path": str(base_model_path.resolve()), "name": card.name, "sha256": parent_sha256, "lineage": card.lineage or None,
                   **({"learnt_from": parent_learnt} if parent_learnt is not None else {})},
        "labels": {"path": str(store.path.resolve()), "sha256": store.sha256},
        "scenes": scenes,
        "tile": options.tile,
        "train_tiles": len(train_tiles),
        "context_tiles": len(context),
        "replay_tiles": n_replay,
        "replayed_from": replayed,
        "val_tiles": len(val_tiles),
        "val_fraction": options.val_fraction,
        "val_slick_pixels": val_slick_pixels,
        "seed": options.seed,
        "epochs": report.epochs_run,
        "best_epoch": best_epoch,
        "val_dice_before": _rounded(dice_before),
        "val_dice_after": _rounded(dice_after),
        "labels_dice_before": _rounded(labels_before),
        "labels_dice_after": _rounded(labels_after),
        "threshold": report.threshold,
        "threshold_elsewhere": elsewhere,
        "lr": config.lr,
        "lr_from": "range test" if options.lr is None else "given",
        "train_layers": options.train_layers,
        "parent_weight": config.parent_weight,
        "parent_share": share,
        "stay_close": options.stay_close,
        "device": str(device),
        "seconds": seconds,
        "history": report.history,
        "seeds_averaged": runs,
        "runs_kept_parent": kept_parent,
    }
    if sample_folder:
        lineage["generated"] = generated_lineage
    now = datetime.now(timezone.utc)
    child = replace(
        card,
        name=options.name or f"{card.name}, fine-tuned {now:%Y-%m-%d %H:%M}",
        metrics={"val_dice": _rounded(dice_after)},
        threshold=elsewhere,
        pos_weight_cap=config.pos_weight_cap,
        scene_thresholds=own,
        taught_scenes=sorted({scene_fingerprint(store.scene_path(scene)) for scene in scenes})
        if options.from_parent and options.use_on == "labelled" else [],
        lineage=lineage,
        engine_version=__version__,
        created=now.isoformat(timespec="seconds"),
    )
    progress.update("saving", 0, 1, "Writing the model file")
    check_new_model_file(out_path)  # a file may have appeared there while training ran
    save_model(model, child, out_path)
    timed("saving")
    progress.update("done", 1, 1)
    return FinetuneReport(
        model=str(out_path),
        parent=str(base_model_path),
        scenes=scenes,
        train_tiles=len(train_tiles),
        val_tiles=len(val_tiles),
        val_slick_pixels=val_slick_pixels,
        epochs_run=report.epochs_run,
        best_epoch=best_epoch,
        holds_parent_weights=holds_parent,
        val_dice_before=dice_before,
        val_dice_after=dice_after,
        labels_dice_before=labels_before,
        labels_dice_after=labels_after,
        threshold=report.threshold,
        threshold_elsewhere=elsewhere,
        threshold_note=threshold_note(report.threshold, elsewhere, val_slick_pixels, config.calibrate) if validating else
        f"Threshold {elsewhere:.2f}, the parent's, on every scene: no tile was kept to validate on.",
        use_note="" if holds_parent else use_note(child, card.name, len(scenes), share),  # the weights note says whose they are
        weights_note=weights_note(best_epoch, validating, labels_before, labels_after, runs, kept_parent),
        lr=config.lr,
        train_layers=options.train_layers,
        parent_weight=config.parent_weight,
        parent_share=share,
        stay_close=options.stay_close,
        device=str(device),
        seconds=round(time.monotonic() - started, 1),
        history=report.history,
        generated=str(sample_folder.path) if sample_folder else None,
        n_generated=n_generated,
        seeds_averaged=runs,
        runs_kept_parent=kept_parent,
        timings=timings,
    )


def close_to_parent(options: FinetuneOptions, card: ModelCard) -> FinetuneOptions:
    """``options`` with ``stay_close`` made concrete for this parent. One pull does not serve both kinds: on ten real
    half-scenes the strong L2-SP pull left fewer of them worse with a U-Net parent but not with the bundled pairing,
    where three quarters of the parent in the saved weights did (docs/within_scene.md)."""
    if not options.stay_close:
        return options
    if len(card.networks) > 1:
        return replace(options, parent_share=CLOSE_PARENT_SHARE)
    return replace(options, parent_weight=CLOSE_PARENT_WEIGHT)


def parent_share(options: FinetuneOptions) -> float:
    if options.parent_share is not None:
        return options.parent_share
    return PARENT_SHARE if options.val_fraction == 0 and options.from_parent else 0.0


def threshold_note(threshold: float, elsewhere: float, val_slick_pixels: int, calibrated: bool) -> str:
    """Which threshold the new model uses where, and why, in a sentence for the analyst."""
    if threshold != elsewhere:
        return (f"Threshold {threshold:.2f} on the scenes you labelled (calibrated on their validation tiles) and "
                f"{elsewhere:.2f}, the parent's, on any other: a threshold fitted to one scene's labels does not carry to others.")
    if not calibrated:
        return (f"Threshold {elsewhere:.2f}, the parent's, on every scene: the validation tiles hold {val_slick_pixels} slick "
                f"pixels, fewer than the {MIN_VAL_SLICK_PIXELS} it takes to place one.")
    return f"Threshold {threshold:.2f} on every scene."


def keep_if_better_on_labels(model: torch.nn.Module, parent_state: dict[str, torch.Tensor], labelled: TileSet, config: TrainConfig,
                             threshold: float) -> tuple[float, float]:
    """The parent's and the trained weights' slick Dice on the tiles they were taught on, as detection cuts them
    (mirror-averaged, at ``threshold``), leaving ``model`` with the trained weights only if theirs is higher. Without
    validation tiles this is the one check a few labels allow: it cannot tell whether the rest of the scene gains,
    only catch a run that lost the very slicks it was shown."""
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    after = validate(model, labelled, config, mirrored=True).dice_near(threshold)
    model.load_state_dict(parent_state)
    before = validate(model, labelled, config, mirrored=True).dice_near(threshold)
    if after > before:
        model.load_state_dict(trained)
    return before, after


def _rounded(dice: Optional[float]) -> Optional[float]:
    return None if dice is None else round(dice, 4)


def weights_note(best_epoch: int, validating: bool, labels_before: Optional[float], labels_after: Optional[float],
                 runs: int = 1, kept_parent: int = 0) -> str:
    """Whose weights the new model holds, in a sentence for the analyst: a model file that holds its parent's weights
    looks like a new model in the list, so the run must say so."""
    if labels_before is not None and labels_after is not None:
        if best_epoch == 0:
            return (f"It keeps the parent's weights: on the labelled tiles themselves the fine-tuned ones found the slicks no better "
                    f"(Dice {labels_after:.2f} against the parent's {labels_before:.2f}). Label more slicks, or mark more reviewed sea.")
        averaged = "" if runs == 1 else (f" Its weights are the mean of {runs} runs with different seeds" + (
            f", {kept_parent} of which found the slicks no better and brought the parent's." if kept_parent else "."))
        return (f"On the labelled tiles themselves it finds the slicks better than the parent (Dice {labels_after:.2f} against "
                f"{labels_before:.2f}).{averaged}")
    if validating and best_epoch == 0:
        return "It keeps the parent's weights: no epoch beat the parent on the validation tiles. Label more slicks, or mark more reviewed sea."
    return ""


def use_note(child: ModelCard, parent_name: str, scenes: int, share: float) -> str:
    """On which scenes the new weights detect, and how far to trust them on the labelled scenes' unlabelled parts:
    labelling half of each real Arctic scene and scoring the other half left 2 or 3 halves of 10 worse than the
    parent with one run, and still 1 of 40 with two runs averaged (the default; docs/within_scene.md), so the analyst
    is told to compare rather than promised better."""
    back = (f"Its weights were moved {share:.0%} of the way back to the parent's, which kept the unlabelled rest of real scenes "
            "better than the weights as trained. ") if share else ""
    if not child.taught_scenes:
        return back + "Its weights detect on every scene."
    return back + (f"Its weights detect on the {scenes} labelled scene{'s' * (scenes != 1)} only; every other scene keeps the parent's "
            f"({parent_name}): a few labels make a model better on their own scene and often worse on others. Where you did not "
            "label, it is usually better, not always: compare its map with the parent's there before relying on it.")


def train_config(card: ModelCard, options: FinetuneOptions, device: torch.device) -> TrainConfig:
    """The fine-tuning recipe (paper augmentation, the card's input scale, early stopping; from a trained parent:
    its batch-norm statistics kept, epochs judged on validation Dice with the parent competing, L2-SP toward
    it), shared with the experiments so that what they measure is how the product fine-tunes."""
    return TrainConfig(
        epochs=options.epochs,
        batch_size=options.batch_size or (8 if device.type == "cuda" else 4),
        patience=options.patience,
        seed=options.seed,
        input_scale=float(card.normalisation.get("input_scale", 1 / 255)),
        augment=paper_augment,
        train_layers=options.train_layers,
        device=str(device),
        threshold=card.threshold,
        select_on_dice=options.from_parent,
        frozen_statistics=options.from_parent,
        parent_competes=options.from_parent and options.parent_competes,
        parent_weight=options.parent_weight if options.from_parent else 0.0,
        pos_weight_cap=card.pos_weight_cap if options.pos_weight_cap is None else options.pos_weight_cap,
    )


def check_options(options: FinetuneOptions) -> None:
    if options.tile % 32 or not 64 <= options.tile <= 2048:
        raise InputError(f"Tile size {options.tile} is not usable.", "Use a multiple of 32 between 64 and 2048, e.g. 256.")
    if options.epochs < 1 or (options.batch_size is not None and options.batch_size < 1):
        raise InputError("Epochs and batch size must be at least 1.", "E.g. --epochs 20.")
    if not 0 <= options.val_fraction <= 0.5:
        raise InputError(f"Validation fraction {options.val_fraction} is outside [0, 0.5].", "Use e.g. 0.25, or 0 for none.")
    if options.train_layers not in TRAIN_LAYERS:
        raise InputError(f"Unknown --train-layers {options.train_layers!r}.", f"Use one of: {', '.join(TRAIN_LAYERS)}.")
    if options.average_seeds < 1:
        raise InputError(f"--average-seeds {options.average_seeds} is below 1.", "Give 1 (one run) or more, e.g. 2.")
    if not options.parent_weight >= 0:
        raise InputError(f"--parent-weight {options.parent_weight} is negative.", "Give 0 (no pull toward the parent) or more, e.g. 0.01.")
    if not 0 <= options.context <= 4 or (options.context and not options.from_parent):
        raise InputError(f"--context {options.context:g} needs a trained parent and a share between 0 and 4.",
                         "Give e.g. --context 1 (as many tiles of the parent's map as labelled tiles), or 0 for none.")
    if not 0 <= options.replay <= 4 or (options.replay and not options.from_parent):
        raise InputError(f"--replay {options.replay:g} needs a trained parent and a share between 0 and 4.",
                         "Give e.g. --replay 1 (as many crops of the parent's own labelled scenes as labelled tiles), or 0 for none.")
    if options.lr is not None and not options.lr > 0:
        raise InputError(f"Learning rate {options.lr} must be positive.", "Give e.g. 1e-4, or auto for a range test.")
    if options.n_generated is not None and (options.generated is None or options.n_generated < 1):
        raise InputError(f"--n-generated {options.n_generated} needs a sample folder and at least one sample.", "Give --generated DIR, and N of 1 or more.")
    if options.parent_share is not None and not 0 <= options.parent_share < 1:
        raise InputError(f"--parent-share {options.parent_share} is outside [0, 1).", "Give 0 (the fine-tuned weights) to e.g. 0.5 (halfway back to the parent).")
    if options.parent_share and options.val_fraction > 0:
        raise InputError(f"--parent-share {options.parent_share:g} with validation tiles: their epoch and threshold are chosen for the weights as "
                         "trained, which the share would move.", "Give --val-fraction 0, or leave --parent-share out.")
    if options.parent_share and not options.from_parent:
        raise InputError("--parent-share needs a parent: an untrained initialisation has no weights worth keeping.", "Leave --parent-share out.")
    if options.stay_close and (options.parent_share is not None or options.parent_weight != PARENT_WEIGHT or options.val_fraction > 0
                               or not options.from_parent):
        raise InputError("--stay-close sets how close to the parent the new weights stay: it takes no --parent-share, "
                         "--parent-weight or --val-fraction, and needs a parent.",
                         "Give --stay-close alone, or those options without it.")
    if options.use_on not in USE_ON:
        raise InputError(f"--use-on {options.use_on} is not one of {', '.join(USE_ON)}.", "Give labelled (the default) or every.")
    if options.generated_labels not in GENERATED_LABELS or (options.generated_labels != "soft" and options.generated is None):
        raise InputError(f"--generated-labels {options.generated_labels} needs a sample folder and is one of {', '.join(GENERATED_LABELS)}.",
                         "Give --generated DIR with --generated-labels hard, or leave it out (soft).")


def _check_base(card: ModelCard) -> None:
    if card.in_channels != 1:
        raise ModelError(
            f"The model {card.name} takes {card.in_channels} bands; fine-tuning feeds it one SAR band, as detection does.",
            "Pick a single-band model.",
        )
    if card.out_channels != 1:
        raise ModelError(
            f"The model {card.name} predicts {len(card.classes)} classes; labels say slick or not.",
            "Pick a binary (water/slick) model.",
        )


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune")
    p.add_argument("--base", required=True, help="model to start from (.safetensors); never modified")
    p.add_argument("--labels", required=True, help="label store (.gpkg)")
    p.add_argument("--out", required=True, type=Path, help="new model file (.safetensors); never overwritten")
    add_options(p, FinetuneOptions, {
        "tile": "tile size in pixels",
        "epochs": "most epochs; stops earlier when validation stops improving",
        "batch_size": "tiles per step (default 8 on a GPU, 4 elsewhere)",
        "train_layers": "all or decoder (the encoder frozen)",
        "lr": "learning rate, or auto for a range test",
        "device": DEVICE_HELP,
        "seed": "seed of the tile split, the augmentation and the initialisation",
        "average_seeds": "without validation tiles, runs with seeds SEED, SEED+1, ... averaged into the saved weights; 1: one run",
        "val_fraction": "share of tiles kept for validation; 0: none, every epoch runs and the last is kept",
        "min_slick_pixels": "with --val-fraction 0, the fewest labelled slick pixels to train on",
        "parent_weight": "L2-SP: pull of the weights toward the parent's, 0 for none (--stay-close picks the measured one for the parent)",
        "parent_share": f"share of the parent in the saved weights, interpolated after training; 0 for none (default {PARENT_SHARE:g} "
                        "without validation tiles, 0 with them)",
        "stay_close": "stay closer to the parent (fewer unlabelled areas made worse, a smaller gain): a stronger pull for one "
                      "network, three quarters of the parent's weights for a pairing",
        "name": "the new model's name (default: the parent's, fine-tuned DATE)",
        "generated": "sample folder (engine generate): train as a student on its kept samples too (DAKTer eqs. 5-6)",
        "n_generated": "generated samples to use, the first kept ones (default: as many as training tiles)",
        "generated_labels": "KD targets of the generated samples: soft (softmax(logits / T), the paper's) or hard (one-hot)",
        "use_on": "scenes the new model's weights detect on: labelled (its labels' scenes only, the parent's weights on every "
                  "other) or every",
        "context": "also train on tiles of the parent's own map where nothing is labelled or reviewed, this share of the labelled "
                   "tiles' number (0: none)",
        "replay": "also train on crops of the bundled labelled scenes the parent learnt from, this share of the labelled tiles' "
                  "number (0: none)",
        "label_check": "with --val-fraction 0, keep the parent's weights unless the trained ones find the labelled slicks better",
    }, use_on={"choices": USE_ON}, train_layers={"choices": TRAIN_LAYERS}, lr={"type": number_or("auto")},
       generated={"type": Path, "metavar": "DIR"}, n_generated={"metavar": "N"}, generated_labels={"choices": GENERATED_LABELS})
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    return finetune(args.base, args.labels, args.out, options_from(args, FinetuneOptions), progress).to_dict()
