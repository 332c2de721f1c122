"""What fine-tuning changed on a scene: the slicks the fine-tuned model finds that its parent did not, and those
it no longer finds.

A few labels make a model better on the part of a scene they cover and sometimes worse on the rest: on the real
Arctic tiles one held half in four seeds' runs lost up to 0.18 slick Dice (docs/within_scene.md). An analyst
cannot see that from the new map alone, so ``changes`` detects with both models on the same extent, at each
model's own threshold for the scene, and writes the difference slick by slick: a slick of the fine-tuned map
that shares no area with any of the parent's is ``new``, a slick of the parent's map that shares none with the
fine-tuned map's is ``gone``. Slicks both found (perhaps reshaped) are counted, not drawn again. All files are
staged together and moved in only when both detections and the comparison succeeded.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import fiona
import shapely
from shapely.geometry import mapping, shape

from ..atomic import move_in
from ..contract import OUTPUT_SUFFIXES, PARENT_TAG, SLICKS_LAYER, detection_files
from ..errors import InputError
from ..models.registry import parent_file, read_card, weights_for
from ..progress import Progress, silent
from .detect import DetectOptions, DetectResult, detect
from .outputs import OutputSet, write_slicks

CHANGE_FIELDS = {"change": "str"}


def detect_changes(scene: str | Path, out_dir: str | Path, options: DetectOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Detect with the fine-tuned ``options.model`` and with its parent on the same extent; write both detections
    and ``<prefix>_changes.gpkg``. Refused for a model that was not fine-tuned, whose parent is gone, or that hands
    this scene to its parent anyway (nothing would differ)."""
    progress = progress or silent()
    started = time.monotonic()
    scene = Path(scene)
    if not options.model:
        raise InputError("Changes need a fine-tuned model, and none was given.", "Pass --model with a model made by finetune.")
    child = Path(options.model)
    card = read_card(child)
    recorded = card.lineage.get("parent") or {}
    if not recorded:
        raise InputError(f"{card.name} was not fine-tuned from another model, so there is no parent to compare it with.",
                         "Choose a model made by Fine-tune (finetune).")
    parent = parent_file(child)
    if parent is None:
        raise InputError(f"The parent of {card.name}, {recorded.get('name', '')}, is no longer at {recorded.get('path', '')} "
                         "nor beside the model, unchanged.", "Put the parent's file back beside the fine-tuned model.")
    used, _ = weights_for(child, scene)
    if used != child:
        raise InputError(f"On {scene.name} {card.name} detects with its parent's weights (it learnt from labels of other "
                         "scenes), so its map is the parent's and nothing would differ.",
                         "Compare on a scene whose labels it was fine-tuned on, or fine-tune it for every scene.")
    prefix = options.prefix or scene.stem
    names = detection_files(prefix, against_parent=True)
    with OutputSet(out_dir, names, options.overwrite) as outputs:
        runs = {}
        for tag, model in (("", child), (PARENT_TAG, parent)):
            progress.log(f"Detecting with {read_card(model).name}")
            folder = outputs.stage / (tag or "child")
            runs[tag] = detect(scene, folder, dataclasses.replace(options, model=str(model), prefix=prefix + tag, overwrite=False), progress)
            move_in(folder, outputs.stage, [names[f"{kind}{tag}"] for kind in OUTPUT_SUFFIXES])
        progress.update("changes", 0, 1, "Comparing the two maps")
        mine, theirs = (read_slicks(outputs.stage / Path(runs[tag].slicks).name) for tag in ("", PARENT_TAG))
        new, gone, kept = compare_slicks(mine, theirs)
        write_slicks(outputs.path("changes"), _crs(outputs.stage / Path(runs[""].slicks).name),
                     [{**s, "geometry": mapping(s["geometry"]), "change": "new"} for s in new]
                     + [{**s, "geometry": mapping(s["geometry"]), "change": "gone"} for s in gone],
                     scene.name, f"{card.name} against {read_card(parent).name}", CHANGE_FIELDS)
        paths = outputs.commit()
    progress.update("changes", 1, 1)
    result = _moved(runs[""], paths, "").to_dict()
    result.update(
        parent=_moved(runs[PARENT_TAG], paths, PARENT_TAG).to_dict(), changes=paths["changes"],
        new_slicks=len(new), new_area_km2=round(sum(s["area_km2"] for s in new), 4),
        gone_slicks=len(gone), gone_area_km2=round(sum(s["area_km2"] for s in gone), 4), both_slicks=kept,
        seconds=round(time.monotonic() - started, 2))
    return result


def read_slicks(path: Path) -> list[dict]:
    """A detection's slicks: their attributes, and their outline as a shapely ``geometry``."""
    with fiona.open(path, layer=SLICKS_LAYER) as src:
        return [{**dict(feature["properties"]), "geometry": shape(feature["geometry"])} for feature in src]


def _crs(path: Path) -> Any:
    with fiona.open(path, layer=SLICKS_LAYER) as src:
        return src.crs


def compare_slicks(mine: list[dict], theirs: list[dict]) -> tuple[list[dict], list[dict], int]:
    """(``mine`` that share no area with any of ``theirs``: new; ``theirs`` sharing none with ``mine``: gone; how many
    of ``mine`` share some). Outlines that only touch share none: two maps traced on one pixel grid meet along
    pixel edges."""
    new = _alone(mine, theirs)
    return new, _alone(theirs, mine), len(mine) - len(new)


def _alone(slicks: list[dict], others: list[dict]) -> list[dict]:
    tree = shapely.STRtree([other["geometry"] for other in others])
    return [slick for slick in slicks
            if not any(slick["geometry"].intersection(others[i]["geometry"]).area > 0
                       for i in tree.query(slick["geometry"], predicate="intersects"))]


def _moved(result: DetectResult, paths: dict[str, str], tag: str) -> DetectResult:
    """``result`` with its file paths where the files ended up."""
    return dataclasses.replace(result, **{kind: paths[f"{kind}{tag}"] for kind in OUTPUT_SUFFIXES})
