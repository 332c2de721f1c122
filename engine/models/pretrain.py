"""Reproducible pretraining of the bundled models: on synthetic scenes, then on real SAR texture.

``--data synthetic`` trains on the seeded synthetic generator alone (IW/VV- and EW/HH-like scenes at the
model's pixel size, stretched by eq. 1 as detection does): the source-domain model of the transfer
experiment, ``resources/models/slick_unet_r18_25m_synthetic.safetensors``. A model trained this way learnt
"thin dark line with bright edges" and marked coastlines, wind streaks and no-data borders on real scenes.

``--data real`` (the default) starts from that model and trains on tiles whose pixels are mostly real SAR
(``engine.data.real_texture``): real labelled Arctic scenes, the same real sea with composited seep slicks,
the North Sea tiles, the real IW scene, and some synthetic scenes. The epoch and the decision threshold are
chosen on a band held apart along one edge of each Arctic training scene. By default it trains on all
five labelled Arctic scenes, the bundled U-Net (``registry.LIGHT_MODEL``); ``--scenes sample_0 sample_70`` makes the
held-out U-Net, which never saw the demo's and the paper's test tiles (``registry.HELD_OUT_MODEL``). A run checkpoints
itself after every epoch (``checkpoints/``) and resumes when started again with the same arguments, so a long run can
be stopped and go on later. The product's model is that U-Net beside a DeepLabV3-R18 pretrained here on synthetic
scenes, joined by ``ensemble_models`` (``python -m engine ensemble``, README).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from ..contract import TRAIN_LAYERS
from ..data import bundled, real_scenes
from ..data.real_scenes import SceneArrays
from ..data.real_texture import Mix, Tiles, scene_tiles, split_scene, training_tiles
from ..data.synth import OIL, SceneSpec, generate
from ..errors import InputError, ModelError
from ..machine import describe, file_sha256
from ..progress import Progress
from ..scenes.normalise import Stretch
from .eager import autocast, pick_device
from .ensemble import FUSIONS, member_spec
from .losses import TeacherLoss
from .registry import (ARCHITECTURES, LIGHT_MODEL, POS_WEIGHT_CAP, SYNTHETIC_MODEL, ModelCard, build_model, load_encoder_weights, load_model,
                       read_card, save_model, user_models_dir)
from .selfsupervised import MaskedRecipe, masked_pretrain
from .training import TileSet, TrainConfig, Validation, interpolate_weights, paper_augment, train, training_dtype, validate

DEFAULT_TRAIN_SCENES = tuple(scene.name for scene in bundled.ARCTIC)
"""The Arctic scenes the bundled U-Net (the product's model's first member) learns from: all five labelled ones. With the recipe unchanged, models
that learnt from two of them (``bundled.POOL``) scored 0.500 on the paper's three test tiles over four seeds, models that learnt
from four 0.563 (docs/training_scenes.md): the product's model learns from every labelled scene, and the figures on
those tiles come from held-out models (``registry.HELD_OUT_MODEL``, ``registry.DEMO_MODEL``), made the same way from ``bundled.POOL`` alone."""
CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
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


def synthetic_tiles(n: int, tile: int, pixel_size: float, seed: int, more_lookalikes: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(stretched tile, slick mask) pairs of ``synthetic_scenes``."""
    for x, classes in synthetic_scenes(n, tile, pixel_size, seed, more_lookalikes):
        yield x, classes == OIL


def synthetic_scenes(n: int, tile: int, pixel_size: float, seed: int, more_lookalikes: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(stretched tile, class mask of ``synth.CLASS_NAMES``) pairs from small seeded scenes, alternating
    IW/VV-like and EW/HH-like; a quarter hold no seep, because most of a real scene is clean sea and
    look-alikes; with ``more_lookalikes``, rain cells, sea-ice edges and sub-swath noise bands as well."""
    for i in range(n):
        spec = SceneSpec(
            height=tile, width=tile, mode=("IW_VV", "EW_HH")[i % 2], pixel_size=pixel_size,
            seed=seed * 100_003 + i, n_seeps=(i // 2) % 4, n_ships=i % 4, n_lookalikes=1 + i % 3, land=i % 7 == 0,
            nodata_border=i % 5 == 0, more_lookalikes=more_lookalikes,
        )
        sigma0, classes = generate(spec)
        values = np.where(sigma0 > 0, sigma0, np.nan).astype(np.float32)
        stretch = Stretch.fit("float32_linear", [values])
        yield stretch.apply(values), classes


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


def _network_args(card: ModelCard) -> str:
    """The command-line words that make ``card``'s network, empty for the default one."""
    return "" if _is_default(card) else \
        f"--architecture {card.architecture} --encoder {card.encoder} --arch-kwargs '{json.dumps(card.arch_kwargs)}' "


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
    more_lookalikes: bool = False,
) -> dict:
    """Pretrain ``card``'s network (the default one when None) from random init or from ``encoder_weights``,
    a local checkpoint loaded before any tile is generated, so that a wrong file fails at once; on scenes with
    rain cells, sea-ice edges and sub-swath noise bands too with ``more_lookalikes``."""
    card = card or ModelCard(**DEFAULT_CARD)
    torch.manual_seed(config.seed)
    model = build_model(card)
    if encoder_weights:
        load_encoder_weights(model, encoder_weights)
    progress.log(f"generating {n_train} + {n_val} synthetic {tile}-pixel tiles")
    train_pairs = list(synthetic_tiles(n_train, tile, card.pixel_size, config.seed, more_lookalikes))
    val_pairs = list(synthetic_tiles(n_val, tile, card.pixel_size, config.seed + 1, more_lookalikes))
    train_set = TileSet.from_arrays(*zip(*train_pairs))
    val_set = TileSet.from_arrays(*zip(*val_pairs))
    report = train(model, train_set, val_set, config, progress)
    network = _network_args(card)
    weights = f"--encoder-weights {Path(encoder_weights).name} " if encoder_weights else ""
    weights += "--more-lookalikes " if more_lookalikes else ""
    card.provenance = {
        "how": "python -m engine pretrain --data synthetic " + network + weights + f"--train-tiles {n_train} --val-tiles {n_val} --tile {tile} "
        f"--epochs {config.epochs} --seed {config.seed}",
        "encoder_weights": Path(encoder_weights).name if encoder_weights else None,
        "data": "synthetic IW/VV-like and EW/HH-like scenes (engine.data.synth)" + (", with rain cells, sea-ice edges and sub-swath noise bands"
                                                                                   if more_lookalikes else "") + ", eq. 1 stretch",
        "train_tiles": n_train,
        "val_tiles": n_val,
        "epochs_run": report.epochs_run,
        "best_epoch": report.best_epoch,
        "seconds": report.seconds,
        "machine": describe(torch.device(config.device)),
    }
    card.metrics = {"synthetic_val_dice": round(report.val_dice, 4)}
    card.pos_weight_cap = config.pos_weight_cap
    save_model(model, card, out, half=True)
    return {"model": str(out), "val_dice": report.val_dice, "epochs_run": report.epochs_run,
            "seconds": report.seconds, "tiles_per_second": report.tiles_per_second}


@dataclass(frozen=True)
class RealRecipe:
    """What a real-texture pretraining run learns from; every field goes into the model card."""

    scenes: tuple[str, ...] = DEFAULT_TRAIN_SCENES
    train_tiles: int = 240
    tile: int = 256
    val_fraction: float = 0.3
    mix: Mix = Mix()
    init: Optional[Path] = SYNTHETIC_MODEL
    """The model to start from (the synthetic one by default); None: random initialisation of the default network."""
    masked_epochs: int = 0
    """Epochs of masked-image pretraining of ``init``'s encoder on the recipe's real pixels, without labels
    (``engine.models.selfsupervised``), before the labelled training; 0: none."""
    init_share: float = 0.0
    """Share of ``init``'s weights in the saved model (``toward_init``); 0: the trained weights."""
    refit: bool = False
    """Once the bands have chosen the epoch and the threshold, train again from ``init`` on every labelled pixel,
    bands included, for those epochs, and keep that threshold (``refit``). Off: leave one scene out measured 0.470
    against 0.465 but a pooled Dice of 0.403 against 0.436 (docs/benchmark_refit_bce1.md)."""
    north_sea: tuple[str, ...] = tuple(scene.name for scene in bundled.NORTH_SEA)
    """The North Sea tiles (IW/VV) it learns from besides the Arctic scenes; those left out can score it on a sea, sensor
    mode and polarisation the Arctic scenes do not hold (``tools/north_sea.py``)."""
    north_sea_as_is: bool = False
    """Learn the North Sea tiles as their 8-bit levels are, as detection shows such a tile to the model, instead of
    re-stretched by eq. 1 (their authors' stretch is far narrower: docs/narrow_8bit.md)."""
    teacher: Optional[Path] = None
    """A model whose slick probability every training tile is taught besides its labels (``TeacherLoss``); None: none."""


def _tileset(tiles: Tiles) -> TileSet:
    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays)).unsqueeze(1)

    return TileSet(stack(tiles.x), stack(tiles.y), stack(tiles.valid))


def validation_split(name: str, pixel_size: float, recipe: RealRecipe = RealRecipe()) -> tuple[SceneArrays, SceneArrays]:
    """(training part, validation band) of the bundled Arctic scene ``name``, as ``recipe`` cuts it: the band
    chooses the epoch and threshold and is never trained on."""
    by_name = {scene.name: scene for scene in bundled.ARCTIC}
    if name not in by_name:
        raise InputError(f"Unknown training scene: {name}.", f"Choose among {', '.join(by_name)}.")
    return split_scene(real_scenes.load_labelled(by_name[name], pixel_size), recipe.val_fraction, gap=recipe.tile // 8)


def unlabelled_parts(recipe: RealRecipe, pixel_size: float) -> list[SceneArrays]:
    """The real pixels masked-image pretraining may learn from: the recipe's Arctic scenes without their
    validation bands (as ``--data real`` cuts them, so that the bands stay unseen) and its North Sea tiles."""
    return [validation_split(name, pixel_size)[0] for name in recipe.scenes] + _north_sea(recipe, pixel_size)


def _north_sea(recipe: RealRecipe, pixel_size: float) -> list[SceneArrays]:
    unknown = set(recipe.north_sea) - {scene.name for scene in bundled.NORTH_SEA}
    if unknown:
        raise InputError(f"Unknown North Sea tile: {', '.join(sorted(unknown))}.", f"Choose among {', '.join(s.name for s in bundled.NORTH_SEA)}.")
    return [real_scenes.load_labelled(scene, pixel_size, restretch=not recipe.north_sea_as_is)
            for scene in bundled.NORTH_SEA if scene.name in recipe.north_sea]


def real_sets(recipe: RealRecipe, pixel_size: float, seed: int) -> tuple[TileSet, TileSet, dict]:
    """(training tiles, validation tiles, what they were made of) for ``recipe``."""
    if not recipe.scenes:
        raise InputError("No training scenes were given.", f"Choose among {', '.join(s.name for s in bundled.ARCTIC)}.")
    splits = [validation_split(name, pixel_size, recipe) for name in recipe.scenes]
    train_parts = [part for part, _ in splits]
    val_tiles = _band_tiles([band for _, band in splits], recipe.tile)
    train_parts += _north_sea(recipe, pixel_size)
    tiles = training_tiles(train_parts, real_scenes.load_grd(), recipe.train_tiles, recipe.tile, seed, recipe.mix)
    data = {
        "arctic_scenes": {name: f"all but the edge band holding {recipe.val_fraction:.0%} of its slick pixels (validation)" for name in recipe.scenes},
        "north_sea_tiles": [scene.name for scene in bundled.NORTH_SEA if scene.name in recipe.north_sea],
        **({"north_sea_levels": "their 8-bit levels as they are"} if recipe.north_sea_as_is else {}),
        "unlabelled_scene": bundled.GRD_SCENE.name + " (S1A IW GRDH VV, 2020-07-29, Cape Hatteras; ~200 m, upsampled with speckle)",
        "tile_kinds": {kind: tiles.kind.count(kind) for kind in sorted(set(tiles.kind))},
        "validation_tiles": len(val_tiles),
        "mix": asdict(recipe.mix),
    }
    return _tileset(tiles), _tileset(val_tiles), data


def validation_tiles(recipe: RealRecipe, pixel_size: float) -> Tiles:
    """The validation bands of the recipe's Arctic scenes, as tiles."""
    return _band_tiles([validation_split(name, pixel_size, recipe)[1] for name in recipe.scenes], recipe.tile)


def _band_tiles(bands: list[SceneArrays], tile: int) -> Tiles:
    found = Tiles()
    for band in bands:
        for x, y, v in zip(*(getattr(scene_tiles(band, tile), f) for f in ("x", "y", "valid"))):
            found.add(x, y, v, "validation")
    return found


def band_mean_validation(model: torch.nn.Module, recipe: RealRecipe, pixel_size: float, config: TrainConfig) -> Validation:
    """The validation bands' own Dice curves averaged, each scene with slicks in its band one vote, as the benchmark
    averages scenes; pooled, the band with the most slick pixels places the threshold."""
    found = [validate(model, _tileset(_band_tiles([validation_split(name, pixel_size, recipe)[1]], recipe.tile)), config)
             for name in recipe.scenes]
    voting = [v for v in found if v.slick_pixels]
    if not voting:
        return found[0]
    return Validation(float(np.mean([v.loss for v in found])), float(np.mean([v.dice for v in voting])),
                      np.mean([v.dice_at for v in voting], axis=0), sum(v.slick_pixels for v in voting))


def toward_init(trained: Path, out: Path, recipe: RealRecipe, device: str, progress: Progress, mirrored: bool = False,
                per_scene: bool = False) -> dict:
    """``trained`` moved ``recipe.init_share`` of the way back to ``recipe.init`` (``interpolate_weights``), its
    threshold placed again on the same validation bands, which neither model learnt from (``mirrored``: on
    the mirror-averaged probability, see ``validate``; ``per_scene``: on the mean of the bands' own Dice,
    ``band_mean_validation``)."""
    model, card = load_model(trained, torch.device(device))
    if recipe.init is None or card.lineage.get("initialised_from", {}).get("sha256") != file_sha256(Path(recipe.init)):
        raise ModelError(f"{trained.name} was not trained from {Path(recipe.init).name if recipe.init else 'a model'}: there is no way back to move toward.",
                         "Give the model it was initialised from (its card's lineage names it), or leave out --init-share.")
    start, _ = load_model(recipe.init, torch.device(device))
    interpolate_weights(model, start.state_dict(), recipe.init_share)
    config = TrainConfig(device=device, input_scale=card.normalisation.get("input_scale", TrainConfig.input_scale))
    validation = band_mean_validation(model, recipe, card.pixel_size, config) if per_scene else \
        validate(model, _tileset(validation_tiles(recipe, card.pixel_size)), config, mirrored=mirrored)
    threshold, dice = validation.calibrated(config.threshold)
    trained_dice, trained_threshold = card.metrics.get("validation_dice"), card.threshold
    progress.log(f"moved {recipe.init_share:g} of the way back to {Path(recipe.init).name}: validation Dice {dice:.3f} at {threshold:.2f} "
                 f"(trained: {trained_dice} at {card.threshold:.2f})")
    card.threshold = threshold
    card.metrics = {"validation_dice": round(dice, 4), "validation_threshold": threshold}
    card.provenance = {**card.provenance, "how": card.provenance["how"] + f" --init-share {recipe.init_share:g}",
                       "init_share": {"share": recipe.init_share, "init_sha256": file_sha256(Path(recipe.init)),
                                      "trained_sha256": file_sha256(trained), "trained_validation_dice": trained_dice,
                                      "trained_threshold": trained_threshold},
                       "selection": card.provenance["selection"] + f"; then {recipe.init_share:g} of the way back to the initialisation, "
                                                                    "threshold by slick Dice on the validation bands"
                                                                    + (" (mirror averaged)" if mirrored else "")
                                                                    + (" (the mean of each band's Dice)" if per_scene else "")}
    save_model(model, card, out, half=True)
    return {"model": str(out), "val_dice": dice, "threshold": threshold}


def average_models(members: list[Path], out: Path) -> Path:
    """The uniform average of ``members``' weights and batch-norm statistics (a model soup, Wortsman et al.
    2022), saved to ``out``: models trained from the same start with different seeds tend to lie in one basin,
    where their average predicts like their ensemble at one model's cost. Members from different starts are
    refused, since their units need not correspond. The soup has no threshold of its own yet: ``toward_init``
    places one on the validation bands."""
    cards = [read_card(m) for m in members]
    starts = {c.lineage.get("initialised_from", {}).get("sha256") for c in cards}
    if len(members) < 2 or len(starts) != 1 or None in starts:
        raise ModelError(f"{', '.join(m.name for m in members)} do not share the model they were trained from.",
                         "Average two or more models trained from the same initialisation with different seeds.")
    model, card = load_model(members[0], torch.device("cpu"))
    for i, member in enumerate(members[1:], start=2):
        interpolate_weights(model, load_model(member, torch.device("cpu"))[0].state_dict(), 1 / i)  # running mean
    card.metrics = {}
    card.provenance = {**card.provenance, "soup": [{"file": m.name, "sha256": file_sha256(m), "how": c.provenance["how"],
                                 "validation_dice": c.metrics.get("validation_dice")} for m, c in zip(members, cards)]}
    save_model(model, card, out, half=True)
    return out


def _learnt_scenes(card: ModelCard) -> tuple[str, ...]:
    """The labelled Arctic scenes a model learnt from (none for one that learnt synthetic scenes only)."""
    data = card.provenance.get("data")
    return tuple(sorted(data.get("arctic_scenes") or ())) if isinstance(data, dict) else ()


def ensemble_models(members: list[Path], out: Path, device: str, progress: Progress, fusion: str = "mean",
                    name: Optional[str] = None, min_area_km2: Optional[float] = None) -> dict:
    """``members`` as one ``Ensemble`` (their mean logit, or their minimum: ``fusion``), its threshold placed on the validation bands of the Arctic
    scenes they learnt from, which none of them learnt, saved to ``out``. Members may be different networks, but those
    that learnt real scenes (``pretrain --data real``) must have learnt the same ones, and every member must read
    tiles alike (pixel size, stretch, classes); members that learnt synthetic scenes only join any of them. The card
    is the first member's, with every member's file, training and data in its provenance, and ``min_area_km2`` as its
    smallest slick when given (measured for that pairing, not placed here)."""
    cards = [read_card(m) for m in members]
    learnt = {_learnt_scenes(c) for c in cards} - {()}
    reading = {(c.pixel_size, json.dumps(c.normalisation, sort_keys=True), tuple(c.classes), c.in_channels) for c in cards}
    if len(members) < 2 or len(learnt) != 1 or len(reading) != 1:
        raise ModelError(f"{', '.join(m.name for m in members)} are not models that learnt the same Arctic scenes and read tiles alike.",
                         "Combine two or more models trained on the same scenes (pretrain --data real), with synthetic-only models if any.")
    first = cards[0]
    card = ModelCard.from_json(first.to_json())
    card.architecture = "ensemble"
    card.arch_kwargs = {"members": [member_spec(c.architecture, c.encoder, c.arch_kwargs) for c in cards], **({"fusion": fusion} if fusion != "mean" else {})}
    card.name = name or (f"{first.name}, {fusion} of {len(members)} seeds" if len({c.name for c in cards}) == 1 else
                         f"{fusion} of " + " and ".join(c.name for c in cards))
    model = build_model(card)
    for member, path in zip(model.members, members):
        member.load_state_dict(load_model(path, torch.device("cpu"))[0].state_dict())
    model.to(torch.device(device))
    config = TrainConfig(device=device, input_scale=card.normalisation.get("input_scale", TrainConfig.input_scale))
    bands = validation_tiles(RealRecipe(scenes=next(iter(learnt))), card.pixel_size)
    threshold, dice = validate(model, _tileset(bands), config).calibrated(config.threshold)
    progress.log(f"{fusion} of {len(members)} members: validation Dice {dice:.3f} at {threshold:.2f} "
                 f"(members: {', '.join(str(c.metrics.get('validation_dice')) for c in cards)})")
    card.threshold = threshold
    if min_area_km2 is not None:
        card.min_area_km2 = min_area_km2
    card.metrics = {"validation_dice": round(dice, 4), "validation_threshold": threshold}
    # Each member's training facts (epochs, seconds, machine) stay with it under ``members``; the real scenes they learnt
    # go on top as well, since the ensemble learnt them too and scoring must keep them out (``_learnt_scenes``).
    card.created = ModelCard.__dataclass_fields__["created"].default_factory()
    real = next((c for c in cards if _learnt_scenes(c)), first)
    card.provenance = {"data": real.provenance.get("data"), "machine": describe(torch.device(device)),
                       "how": " + ".join(c.provenance.get("how", c.name) for c in cards),
                       "members": [{"file": m.name, "sha256": file_sha256(m), "name": c.name, "data": c.provenance.get("data"),
                                    "validation_dice": c.metrics.get("validation_dice"), "threshold": c.threshold, "created": c.created,
                                    "machine": c.provenance.get("machine")}
                                   for m, c in zip(members, cards)],
                       "selection": f"each member's as its card said; then their {fusion} logit, threshold by slick Dice on the validation bands"}
    save_model(model, card, out, half=True)
    return {"model": str(out), "val_dice": dice, "threshold": threshold}


def calibrated_on_scenes(model_path: Path, scenes: tuple[str, ...], out: Path, device: str, progress: Progress) -> dict:
    """A model that learnt no real scene, its threshold placed by slick Dice on every tile of the labelled Arctic
    ``scenes``, saved to ``out``: none of their pixels taught it anything, so all of them may choose its cut, where a
    model that learnt them has only their validation bands. Refused for a model that learnt one of them."""
    model, card = load_model(model_path, torch.device(device))
    learnt = set(_learnt_scenes(card)) & set(scenes)
    if learnt:
        raise ModelError(f"{model_path.name} learnt {', '.join(sorted(learnt))}: a threshold placed there would be scored on its own training pixels.",
                         "Place its threshold on scenes it did not learn, or on its validation bands (pretrain --data real does).")
    by_name = {scene.name: scene for scene in bundled.ARCTIC}
    whole = [real_scenes.load_labelled(by_name[name], card.pixel_size) for name in scenes]
    config = TrainConfig(device=device, input_scale=card.normalisation.get("input_scale", TrainConfig.input_scale))
    threshold, dice = validate(model, _tileset(_band_tiles(whole, RealRecipe.tile)), config).calibrated(config.threshold)
    progress.log(f"{model_path.name}: slick Dice {dice:.3f} at {threshold:.2f} on every tile of {', '.join(scenes)} (shipped at {card.threshold:.2f})")
    card.provenance = {**card.provenance, "threshold_scenes": {"scenes": list(scenes), "shipped_threshold": card.threshold,
                                                               "model_sha256": file_sha256(model_path)},
                       "selection": card.provenance.get("selection", "") + f"; threshold by slick Dice on every tile of {', '.join(scenes)}"}
    card.threshold = threshold
    card.metrics = {**card.metrics, "scenes_dice": round(dice, 4), "scenes_threshold": threshold}
    save_model(model, card, out, half=True)
    return {"model": str(out), "scenes_dice": dice, "threshold": threshold}


def pretrain_real(out: Path, recipe: RealRecipe, config: TrainConfig, progress: Progress, card: Optional[ModelCard] = None,
                  encoder_weights: Optional[Path] = None) -> dict:
    """Train on real texture (see the module's docstring); resumes from ``config.checkpoint`` when it exists.

    From ``recipe.init`` when set; otherwise ``card``'s network (the default one when None) from random
    initialisation or ``encoder_weights``, so that other networks are compared under the same recipe."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    masked: Optional[dict] = None
    if recipe.masked_epochs and recipe.init is None:
        raise InputError("Masked-image pretraining starts from a trained model's encoder.", "Leave out --init none, or --masked-epochs.")
    if recipe.init is not None:
        start = recipe.init
        if recipe.masked_epochs:
            start = _masked_encoder(out, recipe, config, progress)
            masked = read_card(start).provenance
        model, _ = load_model(start, torch.device("cpu"))
        parent = read_card(recipe.init)
        card = ModelCard.from_json(parent.to_json())
        card.lineage = {"initialised_from": {"name": parent.name, "file": Path(recipe.init).name, "sha256": file_sha256(Path(recipe.init))}}
    else:
        card = card or ModelCard(**DEFAULT_CARD)
        model = build_model(card)
        if encoder_weights:
            load_encoder_weights(model, encoder_weights)
    teacher = None if recipe.teacher is None else teacher_card(recipe, card)
    progress.log(f"cutting {recipe.train_tiles} training tiles of {recipe.tile} px from real and synthetic scenes")
    train_set, val_set, data = real_sets(recipe, card.pixel_size, config.seed)
    if teacher is not None:
        config = replace(config, student=TeacherLoss(alpha=config.dice_weight, cap=config.pos_weight_cap))
        train_set, data["teacher"] = taught(train_set, Path(recipe.teacher), teacher, config, progress)
    report = train(model, train_set, val_set, config, progress)
    card.name = (f"Slick U-Net R18 25 m (real SAR texture: {', '.join(recipe.scenes)})" if _is_default(card)
                 else f"Slick {card.architecture} {card.encoder} 25 m (real SAR texture: {', '.join(recipe.scenes)})")
    card.threshold, card.pos_weight_cap = report.threshold, config.pos_weight_cap
    card.created = ModelCard.__dataclass_fields__["created"].default_factory()
    card.provenance = {
        "how": "python -m engine pretrain --data real " + ("" if recipe.init else _network_args(card)) + "--scenes " + " ".join(recipe.scenes)
        + f" --train-tiles {recipe.train_tiles} --tile {recipe.tile} --epochs {config.epochs} --lr {config.lr} --seed {config.seed}"
        + ("" if recipe.init == SYNTHETIC_MODEL or not (recipe.init or _is_default(card)) else f" --init {recipe.init or 'none'}")
        + ("" if config.average_from is None else f" --average-from {config.average_from}")
        + ("" if not config.parent_weight else f" --parent-weight {config.parent_weight}")
        + ("" if not recipe.masked_epochs else f" --masked-epochs {recipe.masked_epochs}")
        + ("" if config.pos_weight_cap == POS_WEIGHT_CAP else f" --pos-weight-cap {config.pos_weight_cap:g}")
        + ("" if config.dice_weight == TrainConfig.dice_weight else f" --dice-weight {config.dice_weight:g}")
        + ("" if not config.skeleton_weight else f" --skeleton-weight {config.skeleton_weight:g}")
        + ("" if config.train_layers == "all" else f" --train-layers {config.train_layers}")
        + (" --keep-last" if config.keep_last else "")
        + (" --frozen-statistics" if config.frozen_statistics else "")
        + (" --more-lookalikes" if recipe.mix.synthetic_lookalikes else "")
        + ("" if recipe.mix.strand_width == Mix.strand_width else f" --strand-width {recipe.mix.strand_width:g}")
        + ("" if recipe.mix.faintest == Mix.faintest else f" --faintest-ratio {recipe.mix.faintest:g}")
        + ("" if recipe.mix.front == Mix.front else f" --fronts {recipe.mix.front:g}")
        + ("" if recipe.north_sea == RealRecipe.north_sea else " --north-sea" + "".join(f" {name}" for name in recipe.north_sea))
        + (" --north-sea-as-is" if recipe.north_sea_as_is else "")
        + ("" if recipe.teacher is None else f" --teacher {recipe.teacher}"),
        "data": data,
        **({} if masked is None else {"masked_image_pretraining": masked}),
        "selection": (f"the average of epochs {config.average_from}-{report.epochs_run}; threshold" if config.average_from is not None else
                      f"the last epoch ({report.epochs_run}); threshold" if config.keep_last else "epoch and threshold")
        + " by slick Dice on the validation bands",
        "epochs_run": report.epochs_run,
        "best_epoch": report.best_epoch,
        "seconds": report.seconds,
        "machine": describe(device),
    }
    card.metrics = {"validation_dice": round(report.val_dice_calibrated, 4), "validation_threshold": report.threshold}
    trained = CHECKPOINTS / f"{out.stem}-trained.safetensors" if recipe.init_share else out
    save_model(model, card, trained, half=True)
    if recipe.masked_epochs:
        _masked_path(out, recipe, config).unlink(missing_ok=True)
    if recipe.init_share:
        found = toward_init(trained, out, recipe, config.device, progress)
        trained.unlink()
        found.update(epochs_run=report.epochs_run, best_epoch=report.best_epoch, seconds=report.seconds, data=data)
    else:
        found = {"model": str(out), "val_dice": report.val_dice_calibrated, "threshold": report.threshold,
                 "epochs_run": report.epochs_run, "best_epoch": report.best_epoch, "seconds": report.seconds,
                 "tiles_per_second": report.tiles_per_second, "data": data}
    if recipe.refit:
        found["refit"] = refit(out, recipe, config, progress)
    return found


def teacher_card(recipe: RealRecipe, card: ModelCard) -> ModelCard:
    """The card of ``recipe``'s teacher, checked before any tile is cut: one that reads tiles otherwise than the model it
    would teach cannot teach it."""
    teacher = Path(recipe.teacher)
    if recipe.refit:
        raise InputError("A refit learns from the labels alone, without a teacher.", "Leave out --teacher or --refit.")
    if not teacher.is_file():
        raise InputError(f"No teacher model at {teacher}.", "Give a .safetensors model file (python -m engine models lists them).")
    found = read_card(teacher)
    if (found.pixel_size, found.normalisation, found.in_channels) != (card.pixel_size, card.normalisation, card.in_channels):
        raise InputError(f"{teacher.name} reads tiles otherwise than the model it would teach (pixel size, normalisation or bands).",
                         f"Give a teacher made for the same {card.pixel_size:g} m stretched tiles.")
    return found


def taught(tiles: TileSet, teacher: Path, card: ModelCard, config: TrainConfig, progress: Progress) -> tuple[TileSet, dict]:
    """``tiles`` with ``teacher``'s (whose card is ``card``) slick probability of each pixel, softened at the temperature of ``config.student`` (a
    ``TeacherLoss``), as the soft label augmentation moves with the tile; and what the card says of the teacher. Computed
    once, on the tiles as cut: a teacher pass a batch would cost a DeepLabV3-R50 teacher more than the training itself."""
    device = torch.device(config.device)
    model, _ = load_model(teacher, device)
    model.eval()
    scale = float(card.normalisation.get("input_scale", config.input_scale))
    temperature, kd = config.student.temperature, config.student.kd
    soft = []
    with torch.inference_mode(), autocast(device, training_dtype(device)):
        for i in range(0, len(tiles), config.batch_size):
            progress.update("teacher", i, len(tiles), f"The teacher's probabilities of {len(tiles)} training tiles")
            logits = model(tiles.x[i : i + config.batch_size].to(device) * scale).float()
            soft.append(torch.sigmoid(logits / temperature).cpu())
    return (TileSet(tiles.x, tiles.y, tiles.valid, torch.cat(soft) * tiles.valid),
            {"file": teacher.name, "sha256": file_sha256(teacher), "name": card.name, "temperature": temperature, "kd": kd})


def refit(validated: Path, recipe: RealRecipe, config: TrainConfig, progress: Progress) -> dict:
    """Replace ``validated`` (a run's model, whose validation bands chose its epoch and threshold) by the same recipe
    trained again from ``recipe.init`` on every labelled pixel, bands included, for the epochs the run kept (the
    schedule laid out as before), moved back toward ``init`` by the same share; it keeps the validated threshold.
    A band holds 30 % of its scene's slick pixels, and the real labelled ones are the scarcest data there is; the
    price is a threshold placed on another model's probabilities."""
    if recipe.init is None or recipe.masked_epochs:
        raise InputError("A refit starts again from the model the run started from.", "Give --init (the default) without --masked-epochs.")
    card = read_card(validated)
    kept = int(card.provenance["best_epoch"])
    model, _ = load_model(recipe.init, torch.device("cpu"))
    parts = [real_scenes.load_labelled(scene, card.pixel_size) for scene in bundled.ARCTIC if scene.name in recipe.scenes]
    parts += [real_scenes.load_labelled(scene, card.pixel_size) for scene in bundled.NORTH_SEA]
    progress.log(f"refit: {recipe.train_tiles} tiles from every labelled pixel, {kept} epochs, threshold {card.threshold:.2f} kept")
    tiles = training_tiles(parts, real_scenes.load_grd(), recipe.train_tiles, recipe.tile, config.seed, recipe.mix)
    checkpoint = config.checkpoint.with_name(config.checkpoint.stem + "-refit.pt") if config.checkpoint else None
    report = train(model, _tileset(tiles), None, replace(config, stop_after=kept, checkpoint=checkpoint), progress)
    if recipe.init_share:
        start, _ = load_model(recipe.init, torch.device("cpu"))
        interpolate_weights(model, start.state_dict(), recipe.init_share)
    what = {"validated_sha256": file_sha256(validated), "epochs": report.epochs_run, "seconds": report.seconds,
            "data": "the same recipe on every labelled pixel, the validation bands included"}
    card.provenance = {**card.provenance, "how": card.provenance["how"] + " --refit", "refit": what,
                       "selection": card.provenance["selection"] + f"; then trained again on every labelled pixel for {report.epochs_run} "
                                                                   "epochs, keeping that threshold"}
    # The bands are training pixels now: their Dice was the validated model's, which the dock must not show as this one's.
    card.metrics = {"validated_model_dice": card.metrics.get("validation_dice"), "validation_threshold": card.threshold}
    save_model(model, card, validated, half=True)
    return what


def _masked_path(out: Path, recipe: RealRecipe, config: TrainConfig) -> Path:
    key = hashlib.sha256(json.dumps([str(out), asdict(recipe), config.seed], sort_keys=True, default=str).encode()).hexdigest()[:12]
    return CHECKPOINTS / f"{out.stem}-encoder-{key}.safetensors"


def _masked_encoder(out: Path, recipe: RealRecipe, config: TrainConfig, progress: Progress) -> Path:
    """``recipe.init`` with its encoder pretrained on the recipe's unlabelled real pixels: a file under
    ``CHECKPOINTS`` that a resumed run finds again, removed once the model is written."""
    path = _masked_path(out, recipe, config)
    if not path.exists():
        stage = MaskedRecipe(tile=recipe.tile, epochs=recipe.masked_epochs, seed=config.seed)
        masked_pretrain(path, recipe.init, unlabelled_parts(recipe, read_card(recipe.init).pixel_size), stage, config.device, progress,
                        path.with_suffix(".pt"))
    return path


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain")
    p.add_argument("--data", choices=("real", "synthetic"), default="real",
                   help="real: real scenes with composited slicks, from the synthetic model (default); synthetic: synthetic scenes only")
    p.add_argument("--out", type=Path, help="model file to write (default: the bundled model of --data, for the default network only)")
    p.add_argument("--scenes", nargs="+", default=list(DEFAULT_TRAIN_SCENES), help="--data real: the Arctic scenes to learn from")
    p.add_argument("--init", help="--data real: model to start from, or 'none' (default: the bundled synthetic model)")
    p.add_argument("--architecture", choices=sorted(set(ARCHITECTURES) - {"darkspot"}), help="--data synthetic: another network of the registry (default: unet)")
    p.add_argument("--encoder", help="its encoder, e.g. samvit_base_patch16 or resnet50 (default: tu-resnet18)")
    p.add_argument("--arch-kwargs", help="its further arguments as JSON, e.g. '{\"lora_rank\": 16}'")
    p.add_argument("--encoder-weights", type=Path, help="local encoder checkpoint to start from, e.g. sam_vit_b_01ec64.pth")
    p.add_argument("--more-lookalikes", action="store_true",
                   help="scenes with rain cells, sea-ice edges and sub-swath noise bands too (--data real: its synthetic tiles)")
    p.add_argument("--strand-width", type=float, default=Mix.strand_width,
                   help="--data real: width of the composited seep strands relative to the generator's 100-350 m (default 1)")
    p.add_argument("--faintest-ratio", type=float, default=Mix.faintest,
                   help="--data real: the faintest composited oil's damping ratio, sigma0 multiplied by 0.2 up to this (default 0.5, -3 dB)")
    p.add_argument("--fronts", type=float, default=Mix.front,
                   help="--data real: share of tiles of real sea with one side of a line darkened (a wind front, a mosaic seam), "
                        "beside the mix's shares, which sum to 1 (default 0)")
    p.add_argument("--train-tiles", type=int, help="default: 240 (real), 320 (synthetic)")
    p.add_argument("--val-tiles", type=int, default=48, help="--data synthetic: validation tiles")
    p.add_argument("--tile", type=int, default=RealRecipe.tile)
    p.add_argument("--epochs", type=int, help="default: 6")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, help="default: 5e-4 (real, from a trained model), 2e-3 (synthetic)")
    p.add_argument("--average-from", type=int, help="--data real: return the average of the weights from this epoch on (SWA), not the best epoch")
    p.add_argument("--masked-epochs", type=int, default=0,
                   help="--data real: first pretrain the encoder for this many epochs by masked-image modelling on the real pixels, without labels")
    p.add_argument("--parent-weight", type=float, default=0.0,
                   help="--data real: L2-SP pull of the weights toward those it starts from (0: none)")
    p.add_argument("--pos-weight-cap", type=float, default=POS_WEIGHT_CAP,
                   help=f"--data real: the most the BCE weights a slick pixel over a sea pixel (default {POS_WEIGHT_CAP:g}; 1: plain BCE)")
    p.add_argument("--train-layers", choices=TRAIN_LAYERS, default="all",
                   help="--data real: decoder keeps the encoder it starts from, weights and batch-norm statistics (default: all)")
    p.add_argument("--keep-last", action="store_true",
                   help="--data real: run every epoch and keep the last; the validation bands only place the threshold")
    p.add_argument("--frozen-statistics", action="store_true",
                   help="--data real: every batch norm keeps the running statistics it starts with while the weights train")
    p.add_argument("--dice-weight", type=float, default=TrainConfig.dice_weight,
                   help=f"--data real: a of the loss (1 - a) BCE + a Dice (default {TrainConfig.dice_weight:g}, the paper's)")
    p.add_argument("--skeleton-weight", type=float, default=0.0,
                   help="--data real: weight of a loss term on the recall of the labels' centre lines, which counts a thin strand "
                        "by its length rather than its pixels (default 0: none)")
    p.add_argument("--refit", action="store_true",
                   help="--data real: once the validation bands have chosen epoch and threshold, train again on every labelled pixel, "
                        "bands included, for those epochs, keeping that threshold")
    p.add_argument("--north-sea", nargs="*", default=list(RealRecipe.north_sea),
                   help="--data real: the North Sea tiles (IW/VV) to learn from (default: all four; none given: none), so that those left out can score the model")
    p.add_argument("--north-sea-as-is", action="store_true",
                   help="--data real: learn the North Sea tiles as their 8-bit levels are, not re-stretched by eq. 1")
    p.add_argument("--teacher", type=Path,
                   help="--data real: a model (e.g. python -m engine ensemble's) whose probability every training tile is also taught")
    p.add_argument("--init-share", type=float, default=0.0,
                   help="--data real: move the trained weights this share of the way back to --init's, and place the threshold again (0: none)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    device = str(pick_device(args.device))
    try:
        arch_kwargs = None if args.arch_kwargs is None else json.loads(args.arch_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(f"--arch-kwargs is not JSON ({exc}).", "Give e.g. '{\"lora_rank\": 16}'.") from None
    if arch_kwargs is not None and not isinstance(arch_kwargs, dict):
        raise InputError("--arch-kwargs must be a JSON object.", "Give e.g. '{\"lora_rank\": 16}'.")
    card = pretrain_card(args.architecture, args.encoder, arch_kwargs)
    if args.out is None and not _is_default(card):
        raise InputError("--out is needed when pretraining another network than the bundled model's.", "E.g. --out samlora_b.safetensors.")
    if args.more_lookalikes and args.out is None:
        raise InputError("--more-lookalikes would replace a bundled model, which was made without them.", "Give --out for the new model.")
    if ((args.strand_width, args.faintest_ratio, args.fronts) != (Mix.strand_width, Mix.faintest, Mix.front) or args.north_sea_as_is) and args.out is None:
        raise InputError("--strand-width, --faintest-ratio, --fronts or --north-sea-as-is would replace the bundled model, which was made "
                         "without them.",
                         "Give --out for the new model.")
    out = args.out or (LIGHT_MODEL if args.data == "real" else SYNTHETIC_MODEL)
    checkpoint = CHECKPOINTS / f"{out.stem}-{run_key(vars(args))}.pt"  # the same command goes on where it stopped
    if args.data == "real":
        if args.init and not _is_default(card):
            raise InputError("--init starts from a trained model, whose network is its own.", "Give --init or --architecture/--encoder, not both.")
        starts_fresh = args.init == "none" or not _is_default(card) or args.encoder_weights
        init = None if starts_fresh else Path(args.init) if args.init else SYNTHETIC_MODEL
        recipe = RealRecipe(scenes=tuple(args.scenes), train_tiles=args.train_tiles or RealRecipe.train_tiles, tile=args.tile, init=init,
                            masked_epochs=args.masked_epochs, init_share=args.init_share, refit=args.refit,
                            north_sea=tuple(args.north_sea), north_sea_as_is=args.north_sea_as_is, teacher=args.teacher,
                            mix=Mix(synthetic_lookalikes=args.more_lookalikes, strand_width=args.strand_width, faintest=args.faintest_ratio,
                                    front=args.fronts))
        if args.init_share and (init is None or not 0 < args.init_share < 1):
            raise InputError(f"--init-share {args.init_share:g} needs a model to start from and a share between 0 and 1.",
                             "Give e.g. --init-share 0.5 without --init none.")
        if not 0.2 < args.faintest_ratio < 1:
            raise InputError(f"--faintest-ratio {args.faintest_ratio:g} is outside 0.2-1, the damping ratios drawn run from 0.2 (sigma0 "
                             "a fifth of the sea's) to 1 (no damping).",
                             "Give e.g. 0.7 (-1.5 dB) for fainter slicks, or 0.5 (the default).")
        if not 0 <= args.fronts <= 1:
            raise InputError(f"--fronts {args.fronts:g} is outside 0-1, beside the mix's shares, which sum to 1.",
                             "Give e.g. 0.1 for one tile in eleven, or 0 (the default).")
        if not 0.2 <= args.strand_width <= 3:
            raise InputError(f"--strand-width {args.strand_width:g} is outside 0.2-3 times the generator's strand width.",
                             "Give e.g. 0.6 for thinner strands, or 1 (the default).")
        if args.skeleton_weight < 0:
            raise InputError(f"--skeleton-weight {args.skeleton_weight:g} would reward missing the slicks' centre lines.",
                             "Give 0 (none) or more, e.g. 0.5.")
        if args.pos_weight_cap < 1:
            raise InputError(f"--pos-weight-cap {args.pos_weight_cap:g} would weigh a slick pixel below a sea pixel.",
                             "Give 1 (plain BCE) or more.")
        config = TrainConfig(epochs=args.epochs or 6, batch_size=args.batch_size, lr=args.lr or 5e-4, seed=args.seed, device=device,
                             augment=paper_augment, select_on_dice=True, patience=3, average_from=args.average_from, parent_weight=args.parent_weight,
                             pos_weight_cap=args.pos_weight_cap, train_layers=args.train_layers, keep_last=args.keep_last,
                             frozen_statistics=args.frozen_statistics, dice_weight=args.dice_weight,
                             skeleton_weight=args.skeleton_weight, checkpoint=checkpoint)
        return pretrain_real(out, recipe, config, progress, card, args.encoder_weights)
    config = TrainConfig(epochs=args.epochs or 6, batch_size=args.batch_size, lr=args.lr or 2e-3, seed=args.seed, device=device,
                         checkpoint=checkpoint)
    return pretrain(out, args.train_tiles or 320, args.val_tiles, args.tile, config, progress, card, args.encoder_weights,
                    args.more_lookalikes)


def add_ensemble_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ensemble")
    p.add_argument("members", nargs="+", type=Path,
                   help="model files: those that learnt real scenes must have learnt the same ones; synthetic-only models join any")
    p.add_argument("--out", type=Path, help="model file to write (default: <first>_with_<others>.safetensors in your models folder, "
                                            "where the dock lists it)")
    p.add_argument("--fusion", choices=FUSIONS, default="mean", help="mean logit (default) or minimum logit (slick only where every member says so)")
    p.add_argument("--name", help="the name the dock lists it by (default: the members' names joined)")
    p.add_argument("--min-area-km2", type=float, help="the smallest slick its detections keep by default, as measured for "
                                                      "this combination (default: the first member's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_run_ensemble_cli)


def _run_ensemble_cli(args: argparse.Namespace, progress: Progress) -> dict:
    missing = [str(m) for m in args.members if not m.is_file()]
    if missing:
        raise InputError(f"No model file at {', '.join(missing)}.", "Give the .safetensors files to combine (python -m engine models lists them).")
    out = args.out or user_models_dir() / f"{'_with_'.join(m.stem for m in args.members)}.safetensors"
    if out.resolve() in {m.resolve() for m in args.members}:
        raise InputError(f"--out {out} is one of the members.", "Write the ensemble to a new file.")
    if args.min_area_km2 is not None and args.min_area_km2 < 0:
        raise InputError(f"--min-area-km2 {args.min_area_km2} is negative.", "Give 0 to keep every patch, or an area such as 0.1.")
    return ensemble_models(args.members, out, str(pick_device(args.device)), progress, args.fusion, args.name, args.min_area_km2)


def run_key(chosen: dict) -> str:
    """The same arguments resume the same run; any other argument starts a new one."""
    chosen = {k: v for k, v in chosen.items() if k not in ("func", "jsonl", "command")}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:12]
