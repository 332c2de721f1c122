"""The analyst's case on the bundled real tiles: label part of a scene, fine-tune, map the rest of it.

``python -m engine experiment within-scene``: for each labelled tile, the analyst's slicks inside one half of
its labelled area go into a new label store, with that half marked reviewed (its slick-free pixels are known
sea), exactly as an analyst would label in the dock. The parent is fine-tuned on that store by the product's
own fine-tuning (with validation tiles, if the recipe keeps any, from the labelled half too). Parent and
fine-tuned model then detect slicks on the whole scene, as an analyst would run them, and are scored on the
other half only: pixels of the labelled half never count. Both are also scored on the other tiles, whole, as
detection runs them there: an analyst's labels on one scene must not make the map of another worse (the
product's default hands other scenes to the parent's weights; ``--use-on every`` measures the new ones there).

The halves meet on the fine-tuning tile lattice, so that no training or validation tile holds a pixel of the
scored half, not even as unlabelled context; with the default 128-pixel tiles the bundled 768-pixel tiles
split exactly in two. ``--sides left right`` swaps the halves as a second split. A slick that crosses the line
is labelled on one side and scored on the other, as it would be in an analyst's scene.

The four North Sea tiles (IW/VV, another sea) can be named too, staged on a map grid (``data.north_sea``): the
analyst's case on a sea and mode the Arctic tiles do not show. A parent that learnt from a tile is refused for it.

Every figure lands in ``within_scene.csv`` (one row per scene and side) and ``within_scene.json`` with the
command, the commit, the engine version, the machine and the sha256 of every model. Where fine-tuning
refuses to run (the labelled half holds too few slicks to learn from and validate on) the analyst keeps the
parent, so the "fine-tuned" figures of that row are the parent's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import shapely
from rasterio.features import rasterize, shapes
from rasterio.transform import array_bounds
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from .. import __version__
from ..atomic import write_csv, write_text
from ..cli.args import DEVICE_HELP, add_options, number_or, options_from
from ..data import bundled
from ..data.bundled import LabelledScene
from ..data.north_sea import georeferenced
from ..errors import InputError, OutputError
from ..jobs.changes import compare_slicks, read_slicks
from ..jobs.detect import DetectOptions, detect
from ..jobs.evaluate import DiceResult, align_to_grid, describe_grid, read_label_mask, slick_dice_arrays
from ..jobs.finetune import USE_ON, FinetuneOptions, FinetuneReport, check_options, finetune
from ..jobs.labels import add_labels, add_reviewed, create_store, to_crs
from ..machine import commit, cpu_name, file_sha256, uncommitted_changes, utc_now
from ..models.eager import pick_device
from ..models.pretrain import RealRecipe
from ..models.registry import HELD_OUT_MODEL, ModelCard, read_card
from ..models.training import TRAIN_LAYERS
from ..progress import Progress
from ..scenes.grid import Grid, analysis_grid
from ..scenes.raster import inspect, open_raster
from .benchmark import real_texture_trainer

SCENES = tuple(s.name for s in bundled.ARCTIC)
"""Every bundled real Arctic tile with an analyst's label (the default)."""
NORTH_SEA_SCENES = tuple(s.name for s in bundled.NORTH_SEA)
"""The North Sea tiles, IW/VV: one of them holds no slick, so neither of its halves is fine-tuned on."""
SIDES = ("left", "right", "top", "bottom")
"""The half of a tile's labelled area the analyst labels; the other half is scored. Top and bottom for a tile whose
slicks lie side by side down it (north_sea_1)."""
DEFAULT_TILE = 128
AUTHOR = "analyst (within-scene experiment)"


@dataclass
class WithinSceneOptions:
    base: Path = HELD_OUT_MODEL
    """The parent; never modified."""
    scenes: tuple[str, ...] = SCENES
    sides: tuple[str, ...] = ("left",)
    recipe: FinetuneOptions = field(default_factory=lambda: FinetuneOptions(tile=DEFAULT_TILE, epochs=10))
    threshold: Optional[float] = None
    """None: each model at its own (``ModelCard.threshold``), as detection uses it."""
    parents: Optional[Path] = None
    """A folder of leave-one-scene-out parents, in place of ``base``: each tile's parent is the bundled model's
    recipe trained on the other four labelled tiles (``models/real_texture_without_<tile>.safetensors``, as
    ``experiment benchmark`` names and trains them; trained there when missing). Every tile is then one its
    parent never saw, the two the held-out model learnt from included; the other tiles are not scored, since
    each parent learnt from them."""


@dataclass(frozen=True)
class Split:
    """One tile's labelled area cut in two on the fine-tuning lattice of its analysis grid (``crs``)."""

    sample: str
    side: str
    crs: str
    scene: Path
    label: Path
    line: int
    """The analysis-grid column (``left``, ``right``) or row (``top``, ``bottom``) where the halves meet, a multiple of the
    tile size."""
    labelled: BaseGeometry
    held: BaseGeometry

    @property
    def labelled_share(self) -> float:
        return self.labelled.area / (self.labelled.area + self.held.area)


def split_scene(scene: LabelledScene, side: str, card: ModelCard, tile: int) -> Split:
    """The labelled area of a georeferenced tile cut at the lattice line nearest its middle, ``side`` labelled: a column
    for ``left`` and ``right``, a row for ``top`` and ``bottom``."""
    grid = _grid(scene.image, card)
    mask, transform, crs = read_label_mask(scene.labels)
    footprint = shape(to_crs([box(*array_bounds(*mask.shape, transform))], crs.to_wkt(), grid.crs)[0])
    minx, miny, maxx, maxy = footprint.bounds
    size, across = grid.pixel_size, side in ("left", "right")
    # Lattice units from the grid's first column (x grows with it) or first row (y falls along it).
    low, high = ((minx - grid.transform.c) / size, (maxx - grid.transform.c) / size) if across else \
        ((grid.transform.f - maxy) / size, (grid.transform.f - miny) / size)
    first, last = math.ceil(low / tile) + 1, math.floor(high / tile) - 1
    if first > last:
        raise InputError(f"The labelled area of {scene.name} is too {'narrow' if across else 'short'} to cut into two parts of at least "
                         f"one {tile}-pixel tile.", f"Use smaller tiles, e.g. --tile {max(64, tile // 2)}.")
    line = tile * min(max(round((low + high) / 2 / tile), first), last)
    if across:
        at = grid.transform.c + line * size
        first_half, second_half = box(minx, miny, at, maxy), box(at, miny, maxx, maxy)
    else:
        at = grid.transform.f - line * size
        first_half, second_half = box(minx, at, maxx, maxy), box(minx, miny, maxx, at)
    labelled, held = (first_half, second_half) if side in ("left", "top") else (second_half, first_half)
    return Split(scene.name, side, grid.crs, scene.image, scene.labels, line, labelled, held)


def label_polygons(split: Split) -> list[BaseGeometry]:
    """The analyst's slicks on the tile, as polygons in the split's CRS."""
    mask, transform, crs = read_label_mask(split.label)
    return [shape(g) for g in to_crs([shape(g) for g, _ in shapes(mask.astype(np.uint8), mask=mask, transform=transform)],
                                     crs.to_wkt(), split.crs)]


def split_store(path: Path, split: Split) -> Path:
    """A new label store as the analyst leaves it: the slicks of the labelled half (cut at the line where a
    slick crosses it) and that half marked reviewed."""
    inside = [part for p in label_polygons(split) for part in _polygons(p.intersection(split.labelled))]
    create_store(path, split.crs)
    if inside:
        add_labels(path, split.scene, inside, "slick", crs=split.crs, author=AUTHOR, origin="drawn")
    add_reviewed(path, split.scene, [split.labelled], crs=split.crs, author=AUTHOR)
    return path


def part_dice(slicks: Path, label: Path, part: Optional[BaseGeometry] = None, part_crs: Optional[str] = None) -> DiceResult:
    """Slick Dice of a detection's slick mask (1 = slick) against an analyst's label over the label pixels whose
    centre lies in ``part`` (``part_crs``), or over the whole label as ``evaluate.slick_dice`` counts it."""
    mask, transform, crs = read_label_mask(label)
    predicted = align_to_grid(slicks, transform, crs, mask.shape, fill=0) == 1
    grid = describe_grid(transform, crs, mask.shape)
    if part is None:
        return slick_dice_arrays(predicted, mask, grid)
    counted = rasterize([(to_crs([part], part_crs, crs.to_wkt())[0], 1)], out_shape=mask.shape, transform=transform, dtype="uint8") > 0
    return slick_dice_arrays(predicted[counted], mask[counted], f"{grid}, {int(counted.sum())} pixels of it")


def within_scene_experiment(out: Path, options: WithinSceneOptions, progress: Progress, command: str = "") -> dict:
    """Run every (scene, side), writing within_scene.csv after each, then within_scene.json."""
    started, provenance = time.monotonic(), _provenance()  # the code that runs is the checkout's now, not at the end
    _check(out, options)
    parents = fold_parents(options.parents, options.scenes, options.recipe, progress) if options.parents else \
        dict.fromkeys(options.scenes, Path(options.base))
    cards = {s: read_card(path) for s, path in parents.items()}
    _check_unseen(options.scenes, parents, cards)
    out.mkdir(parents=True, exist_ok=True)
    for folder in ("labels", "models", "detections"):
        (out / folder).mkdir(exist_ok=True)
    tiles = labelled_scenes(options.scenes, out / "scenes")
    splits = [split_scene(tiles[s], side, cards[s], options.recipe.tile) for side in options.sides for s in options.scenes]
    scored = {path: Scored(path, options, out / "detections", "parent", progress, tiles,
                            scenes=[s for s in options.scenes if parents[s] == path] if options.parents else None)
              for path in dict.fromkeys(parents.values())}
    rows: list[dict] = []
    models: dict[str, str] = {_parent_key(options, s): file_sha256(path) for s, path in parents.items()}
    for i, split in enumerate(splits):
        progress.update("runs", i, len(splits), f"{split.sample}, {split.side} half labelled")
        run = f"{split.sample}_{split.side}"
        store = split_store(out / "labels" / f"{run}.gpkg", split)
        tuned_path = out / "models" / f"{run}.safetensors"
        others = [] if options.parents else [s for s in options.scenes if s != split.sample]
        parent, card = scored[parents[split.sample]], cards[split.sample]
        parent_held = parent.held(split)
        try:
            recipe = replace(options.recipe, name=f"{card.name}, fine-tuned on the {split.side} half of {split.sample}")
            report = finetune(parents[split.sample], store, tuned_path, recipe, progress)
        except InputError as exc:  # too few slicks to learn from or to validate on: the analyst keeps the parent
            progress.log(f"{run}: not fine-tuned, the parent stays ({exc})")
            report, tuned, fallback = None, parent, exc.message
        else:
            models[run] = file_sha256(tuned_path)
            tuned, fallback = Scored(tuned_path, options, out / "detections", run, progress, tiles, scenes=[split.sample, *others]), ""
        row = {
            "scene": split.sample, "labelled_half": split.side, "split_line": split.line, "labelled_share": round(split.labelled_share, 3),
            "held_slick_pixels": parent_held.label_pixels,
            "dice_held_parent": round(parent_held.dice, 4),
            "dice_held_finetuned": round(tuned.held(split).dice, 4),
            "dice_others_parent": round(float(np.mean([parent.whole(s) for s in others])), 4) if others else "",
            "dice_others_finetuned": round(float(np.mean([tuned.whole(s) for s in others])), 4) if others else "",
            "worst_other_change": round(min(tuned.whole(s) - parent.whole(s) for s in others), 4) if others else "",
            "not_finetuned": fallback,
            "kept_parent_weights": report is None or report.holds_parent_weights,
            "threshold_parent": parent.results[split.sample].threshold,
            "threshold_finetuned": tuned.results[split.sample].threshold,
            **_report_columns(report),
            **{f"dice_{s}_{role}": round(model.whole(s), 4) if s in others else "" for s in options.scenes
               for role, model in (("parent", parent), ("finetuned", tuned))},
            "model_sha256": models.get(run, ""),
            **held_changes(Path(tuned.results[split.sample].slicks), Path(parent.results[split.sample].slicks), split),
        }
        row["held_change"] = round(row["dice_held_finetuned"] - row["dice_held_parent"], 4)
        rows.append(row)
        write_csv(out / "within_scene.csv", rows)
        progress.log(f"{run}: held-half Dice {row['dice_held_parent']:.3f} -> {row['dice_held_finetuned']:.3f}" + (
            f"; other tiles {row['dice_others_parent']:.3f} -> {row['dice_others_finetuned']:.3f} (worst change {row['worst_other_change']:+.3f})"
            if others else ""))
    progress.update("runs", len(splits), len(splits))
    result = {
        "command": command,
        **provenance,
        "finished": utc_now(),
        "parents": {s: {"path": str(path), "name": cards[s].name, "sha256": models[_parent_key(options, s)]} for s, path in parents.items()},
        "models_sha256": models,
        "options": {**asdict(options), "recipe": asdict(options.recipe)},
        "summary": summarise(rows),
        "rows": rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_text(out / "within_scene.json", json.dumps(result, indent=2, default=str))
    return result


def held_changes(tuned: Path, parent: Path, split: Split) -> dict:
    """What the dock's changes layer (``engine changes``) shows on the held half, and how much of it an analyst's
    label confirms: slicks new after fine-tuning, and the parent's slicks gone, counted where they reach into the
    held half, and of each how many share area there with a labelled slick. A new slick on a label is a find; a
    gone one on a label is a loss."""
    truth = shapely.union_all(label_polygons(split)).intersection(split.held)
    new, gone, _ = compare_slicks(read_slicks(tuned), read_slicks(parent))
    counts = {}
    for kind, slicks in (("new", new), ("gone", gone)):
        held = [s["geometry"].intersection(split.held) for s in slicks]
        held = [g for g in held if g.area > 0]
        counts[f"held_{kind}_slicks"] = len(held)
        counts[f"held_{kind}_on_label"] = sum(g.intersection(truth).area > 0 for g in held)
    return counts


def _report_columns(report: Optional[FinetuneReport]) -> dict:
    """The fine-tuning's own figures (all on the labelled half), blank where it refused to run."""
    names = ("train_tiles", "val_tiles", "val_slick_pixels", "val_dice_before", "val_dice_after", "labels_dice_before",
             "labels_dice_after", "best_epoch", "epochs_run",
             "lr", "train_layers", "parent_weight", "parent_share", "seeds_averaged", "runs_kept_parent", "seconds")
    if report is None:
        return {f"finetune_{name}": "" for name in names}
    return {f"finetune_{name}": float(f"{v:.4g}") if isinstance(v := getattr(report, name), float) else v for name in names}


def summarise(rows: list[dict]) -> dict:
    """What the analyst's case asks: better on the held half wherever the parent is not already perfect, and
    never worse on another tile."""
    if not rows:
        return {"runs": 0}
    improvable = [r for r in rows if r["dice_held_parent"] < 1]
    scored_others = [r for r in rows if r["dice_others_parent"] != ""]
    others = {
        "mean_dice_others_parent": round(float(np.mean([r["dice_others_parent"] for r in scored_others])), 4),
        "mean_dice_others_finetuned": round(float(np.mean([r["dice_others_finetuned"] for r in scored_others])), 4),
        "runs_worse_on_another_tile": sum(r["worst_other_change"] < 0 for r in scored_others),
        "worst_other_change": min(r["worst_other_change"] for r in scored_others),
    } if scored_others else {}
    return {
        "runs": len(rows),
        "finetuned": sum(not r["not_finetuned"] for r in rows),
        "mean_dice_held_parent": round(float(np.mean([r["dice_held_parent"] for r in rows])), 4),
        "mean_dice_held_finetuned": round(float(np.mean([r["dice_held_finetuned"] for r in rows])), 4),
        "held_better": sum(r["held_change"] > 0 for r in improvable),
        "held_worse": sum(r["held_change"] < 0 for r in improvable),
        "held_improvable": len(improvable),
        **others,
        "kept_parent_weights": sum(bool(r["kept_parent_weights"]) for r in rows),
        **{column: sum(r[column] for r in rows) for column in ("held_new_slicks", "held_new_on_label", "held_gone_slicks",
                                                                "held_gone_on_label")},
    }


class Scored:
    """One model's detections on whole tiles, made once each and scored on demand: by PyTorch itself, as the
    benchmark scores, since choosing the fastest runtime for every fine-tuned model (exports, an int8 check)
    costs more than its few detections, and each runtime moves a mask's edge pixels a little."""

    def __init__(self, model: Path, options: WithinSceneOptions, folder: Path, name: str, progress: Progress,
                 tiles: dict[str, LabelledScene], scenes: Optional[list[str]] = None) -> None:
        self.results = {}
        self.tiles = tiles
        for sample in scenes or options.scenes:
            detect_options = DetectOptions(model=str(model), prefix=f"{name}_{sample}", threshold=options.threshold,
                                           device=options.recipe.device, runtime="torch", overwrite=True)
            self.results[sample] = detect(tiles[sample].image, folder, detect_options, progress)

    def whole(self, sample: str) -> float:
        result = self.results[sample]
        return part_dice(Path(result.mask), self.tiles[sample].labels).dice

    def held(self, split: Split) -> DiceResult:
        result = self.results[split.sample]
        return part_dice(Path(result.mask), split.label, split.held, split.crs)


def fold_parents(folder: Path, scenes: tuple[str, ...], recipe: FinetuneOptions, progress: Progress) -> dict[str, Path]:
    """Each tile's leave-one-scene-out parent in ``folder``, trained by the benchmark's own trainer (the bundled
    model's recipe and budget, on the other four tiles) where it is missing."""
    paths = {s: folder / "models" / f"real_texture_without_{s}.safetensors" for s in scenes}
    trainer = real_texture_trainer(6, RealRecipe.train_tiles, str(pick_device(recipe.device)), seed=0)  # the benchmark's seed-0 models
    for scene, path in paths.items():
        if not path.exists():
            progress.log(f"training the parent that never saw {scene}")
            trainer([s for s in bundled.ARCTIC if s.name != scene], path, progress)
    return paths


def labelled_scenes(names: tuple[str, ...], folder: Path) -> dict[str, LabelledScene]:
    """Each named tile as a georeferenced scene and label: the Arctic tiles as they ship, the North Sea tiles staged
    in ``folder`` on their assumed grid (a label store and detection need one)."""
    arctic = {s.name: s for s in bundled.ARCTIC}
    north_sea = {s.name: s for s in bundled.NORTH_SEA}
    # Absolute: a label store keeps its scenes' paths as given, and reads a relative one from its own folder.
    return {name: arctic[name] if name in arctic else georeferenced(north_sea[name], folder.resolve()) for name in names}


def _check_unseen(scenes: tuple[str, ...], parents: dict[str, Path], cards: dict[str, ModelCard]) -> None:
    """A North Sea tile is scored only with a parent whose card says it never learnt from it (the bundled model learnt
    from all four): a real-texture pretraining records the North Sea tiles it learnt from in ``data.north_sea_tiles``."""

    def learnt(card: ModelCard) -> list[str]:
        data = card.provenance.get("data")
        return list(data.get("north_sea_tiles", [])) if isinstance(data, dict) else []

    seen = [s for s in scenes if s in NORTH_SEA_SCENES and s in learnt(cards[s])]
    if seen:
        raise InputError(f"The parent {parents[seen[0]].name} learnt from {', '.join(seen)}: their held halves would score pixels it was "
                         "trained on.", "Give a --base trained without them, e.g. `python -m engine pretrain --data real --north-sea` "
                                        "(no North Sea tile).")


def _parent_key(options: WithinSceneOptions, scene: str) -> str:
    return f"parent_{scene}" if options.parents else "parent"


def _grid(scene: Path, card: ModelCard) -> Grid:
    info = inspect(scene)
    with open_raster(scene) as ds:
        return analysis_grid(ds, info.utm_crs, card.pixel_size)


def _polygons(geometry: BaseGeometry) -> list[BaseGeometry]:
    if geometry.geom_type == "Polygon":
        return [geometry] if not geometry.is_empty else []
    return [g for g in getattr(geometry, "geoms", []) if g.geom_type == "Polygon" and not g.is_empty]


def _provenance() -> dict:
    """The commit (with whether the checkout had uncommitted changes), engine version and machine."""
    return {
        "commit": commit(),
        "uncommitted_changes": uncommitted_changes(),
        "engine_version": __version__,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
    }


def _check(out: Path, options: WithinSceneOptions) -> None:
    """Everything that can be wrong, before the first detection."""
    check_options(options.recipe)
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty; nothing was overwritten.", "Give a new folder with --out.")
    unknown = [s for s in options.scenes if s not in SCENES + NORTH_SEA_SCENES]
    if unknown or len(options.scenes) < 2 or len(set(options.scenes)) < len(options.scenes):
        raise InputError(f"Scenes must be two or more distinct labelled tiles of {', '.join(SCENES + NORTH_SEA_SCENES)}; "
                         f"got {', '.join(options.scenes)}.", "E.g. --scenes sample_1 sample_2.")
    if options.parents is not None and set(options.scenes) & set(NORTH_SEA_SCENES):
        raise InputError("--parents holds leave-one-scene-out parents of the Arctic tiles only.",
                         "Score the North Sea tiles with a --base that learnt from none of them.")
    if not options.sides or any(s not in SIDES for s in options.sides):
        raise InputError(f"Sides must be {' or '.join(SIDES)}; got {', '.join(options.sides) or 'none'}.", "E.g. --sides left right.")
    if options.threshold is not None and not 0 < options.threshold < 1:
        raise InputError(f"Threshold {options.threshold} is outside (0, 1).", "Use a probability such as 0.5.")
    if options.parents is None:
        read_card(options.base)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    defaults = WithinSceneOptions()
    q = subparsers.add_parser("within-scene", help="label half of each real tile, fine-tune, score the other half and the other tiles")
    q.add_argument("--out", type=Path, default=Path("experiment_output/within_scene"), help="empty or new folder")
    q.add_argument("--scenes", nargs="+", default=list(defaults.scenes), choices=SCENES + NORTH_SEA_SCENES, metavar="SCENE",
                   help="labelled tiles (default: the five Arctic ones; the North Sea ones, IW/VV, by name)")
    q.add_argument("--sides", nargs="+", default=list(defaults.sides), choices=SIDES,
                   help="half the analyst labels (top and bottom cut across rows); several: a split each")
    add_options(q, defaults, {"base": "parent model: the held-out one, which learnt from sample_0 and sample_70 only", "threshold": "default: each model's own",
                              "parents": "folder of leave-one-scene-out parents (an experiment benchmark --out), used in place of "
                                         "--base and trained there when missing: every tile is one its parent never saw"})
    add_options(q, defaults.recipe, {
        "tile": "fine-tuning tile and split lattice in pixels",
        "epochs": "epochs per run (at most, where validation tiles may stop it earlier)",
        "lr": "learning rate, or auto for a range test per run",
        "train_layers": "all or decoder",
        "parent_weight": "L2-SP pull toward the parent",
        "pos_weight_cap": "the most the BCE weights a slick pixel over a sea pixel (default: the parent's, from its card)",
        "parent_share": "share of the parent in the saved weights, interpolated after training (default: fine-tuning's)",
        "stay_close": "fine-tune as the dock's Stay close to the parent's weights does (the pull measured for the parent's kind)",
        "val_fraction": "share of the labelled half's tiles kept for validation; 0: none, the last epoch kept",
        "min_slick_pixels": "with --val-fraction 0, the fewest labelled slick pixels a half must hold to be fine-tuned",
        "use_on": "scenes the fine-tuned weights detect on: labelled (the other tiles get the parent's) or every",
        "context": "tiles of the parent's own map outside the labelled half (the held half included, without labels), as a share "
                   "of the labelled tiles",
        "replay": "crops of the bundled labelled scenes the parent learnt from (never the tile itself), as a share of the "
                  "labelled tiles",
        "label_check": "with --val-fraction 0, keep the parent's weights unless the trained ones find the labelled half's slicks "
                       "better",
        "average_seeds": "with --val-fraction 0, runs with seeds SEED, SEED+1, ... averaged into the saved weights; 1: one run",
        "device": DEVICE_HELP,
        "seed": "seed of the tile split and training",
    }, train_layers={"choices": TRAIN_LAYERS}, lr={"type": number_or("auto")}, use_on={"choices": USE_ON})
    q.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    defaults = WithinSceneOptions()
    options = options_from(args, defaults, scenes=tuple(args.scenes), sides=tuple(args.sides), recipe=options_from(args, defaults.recipe))
    result = within_scene_experiment(args.out, options, progress, args.invocation)
    return {"out": str(args.out), "summary": result["summary"]}
