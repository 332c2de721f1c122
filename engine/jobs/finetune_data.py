"""The tiles a model is fine-tuned on, cut from a label store's scenes exactly as detection will later see them.

Tiles lie on the scene's UTM analysis grid at the model's pixel size, stretched by eq. 1 from the whole
scene's statistics. Only known pixels count in the loss (inside reviewed areas or labels, and not no data).
Validation tiles are whole tiles of the same lattice as the training tiles, and training tiles give up a
band of pixels along every side they share with one, so the Dice reported before and after is measured on
sea the model never saw and slicks straddling the border do not leak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import shapely
import torch
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import shape

from ..data import bundled
from ..data.real_scenes import load_labelled
from ..data.real_texture import REAL_CROPS, training_tiles
from ..errors import InputError
from ..models.registry import ModelCard
from ..models.training import TileSet
from ..progress import Progress
from ..scenes.analysis import open_for_analysis
from ..scenes.fingerprint import scene_fingerprint
from ..scenes.grid import Grid
from ..scenes.read_errors import check_unchanged, stamp
from .labels import LabelStore, rasterise, to_crs

GAP = 16
"""Pixels a training tile leaves out of the loss along each side it shares with a validation tile."""
MIN_KNOWN = 0.01
"""Tiles with a smaller known fraction hold too few labelled pixels to be worth a training step."""


@dataclass
class Tile:
    """One training or validation tile, placed on its scene's analysis grid."""

    scene: str
    row: int
    col: int
    x: np.ndarray
    """Stretched values 0..255 (float32), 0 = no data."""
    target: np.ndarray
    valid: np.ndarray
    """Known and not no data (uint8 0/1): the pixels the loss and the Dice count."""

    @property
    def size(self) -> int:
        return self.x.shape[0]

    @property
    def slick_pixels(self) -> int:
        return int(np.count_nonzero((self.target == 1) & self.valid))


def collect_tiles(store: LabelStore, card: ModelCard, tile: int, progress: Progress, classes: Sequence[str] = ("slick",)) -> list[Tile]:
    """Tiles of ``tile`` pixels holding known pixels, from every scene of the store, as detection reads them.

    Tiles lie on a lattice anchored at each scene grid's origin, so two tiles never share a pixel. Targets
    hold 1 + the index in ``classes`` of a pixel's label class, 0 elsewhere (``labels.rasterise``).
    """
    tiles: list[Tile] = []
    outside: list[str] = []
    for scene in store.scenes:
        path = store.scene_path(scene)
        before = stamp(path)
        with open_for_analysis(path, card, progress=progress) as opened:
            for warning in opened.info.warnings:
                progress.log(f"warning: {path.name}: {warning}")
            grid, reader = opened.grid, opened.reader
            span = _labelled_span(store, scene, grid, tile)
            if span is None:
                outside.append(scene)
                continue
            stretch = opened.stretch
            rows, cols = span
            found = len(tiles)
            for i, row in enumerate(rows):
                progress.update("tiles", i, len(rows), f"Cutting labelled tiles from {path.name}")
                strip = Grid(grid.crs, grid.transform @ Affine.translation(cols.start, row), len(cols) * tile, tile)
                target, known = rasterise(store, scene, strip, classes)
                if not known.any():
                    continue
                x = stretch.apply(reader.read(Window(cols.start, row, strip.width, tile)))
                for j, col in enumerate(cols):
                    part = slice(j * tile, (j + 1) * tile)
                    valid = known[:, part] & (x[:, part] > 0)
                    if valid.mean() >= MIN_KNOWN:
                        tiles.append(Tile(scene, row, col, x[:, part].copy(), target[:, part].copy(), valid.astype(np.uint8)))
            check_unchanged(path, before)
            if len(tiles) == found:
                outside.append(scene)
    if not tiles:
        raise InputError(
            f"No reviewed area or label lies on valid pixels of its scene ({', '.join(outside)}).",
            "Check that the labels were drawn on these scenes (the store's scene field) and in the store's CRS.",
        )
    for scene in outside:
        progress.log(f"warning: no labelled pixels on the scene {scene}; it is left out")
    return tiles


def context_tiles(store: LabelStore, card: ModelCard, tile: int, labelled: list[Tile], share: float, seed: int,
                  parent_map: Callable[[np.ndarray], np.ndarray], progress: Progress) -> list[Tile]:
    """Tiles of the labelled scenes that hold no reviewed or labelled pixel, ``share`` of the labelled tiles' number,
    each scene in proportion to its labelled tiles, drawn (seeded) from the same lattice; their target is the parent's
    own slick map there (``parent_map``: stretched tile -> 0/1). A few labels teach the model their part of a scene
    and, unanchored, change it everywhere else: most slicks fine-tuning added on real held half-scenes lay on no
    analyst's slick (docs/within_scene.md). Here the part nobody looked at keeps what the parent said about it."""
    rng = np.random.default_rng(seed)
    found: list[Tile] = []
    for scene in sorted({t.scene for t in labelled}):
        wanted = math.ceil(share * sum(t.scene == scene for t in labelled))
        path = store.scene_path(scene)
        before = stamp(path)
        with open_for_analysis(path, card, progress=progress) as opened:
            grid, reader, stretch = opened.grid, opened.reader, opened.stretch
            cells = [(row, col) for row in range(0, grid.height - tile + 1, tile) for col in range(0, grid.width - tile + 1, tile)]
            taken = 0
            for k in rng.permutation(len(cells)):
                if taken == wanted:
                    break
                row, col = cells[k]
                cell = Grid(grid.crs, grid.transform @ Affine.translation(col, row), tile, tile)
                if rasterise(store, scene, cell)[1].any():
                    continue
                x = stretch.apply(reader.read(Window(col, row, tile, tile)))
                valid = x > 0
                if valid.mean() < 0.5:
                    continue
                progress.update("context", taken, wanted, f"The parent's map around the labels of {path.name}")
                found.append(Tile(scene, row, col, x, parent_map(x).astype(np.float32), valid.astype(np.uint8)))
                taken += 1
            check_unchanged(path, before)
    return found


def replay_tiles(learnt: set[str], taught: Sequence[Path], pixel_size: float, tile: int, n: int, seed: int,
                 progress: Progress) -> tuple[TileSet, list[str]]:
    """``n`` crops of the bundled labelled scenes the parent learnt from (``learnt``, names), none of the ``taught``
    scene files, with their analysts' labels, drawn (seeded) as the real-texture recipe draws its labelled crops, and
    those scenes' names. Fine-tuned on one scene's labels alone, a model forgets the others: with the bundled parent
    its other tiles' Dice fell from 0.54 to 0.40 (docs/within_scene.md). Rehearsing what the parent learnt from kept
    them higher (0.45 and 0.43) but drowned what the labels taught the rest of their own scene, hence off by default."""
    prints = {scene_fingerprint(path) for path in taught}
    scenes = [s for s in bundled.ARCTIC + bundled.NORTH_SEA if s.name in learnt and scene_fingerprint(s.image) not in prints]
    if not scenes:
        raise InputError("Replay needs a bundled labelled scene the parent learnt from, other than the labelled ones; this parent's "
                         f"card names {', '.join(sorted(learnt)) or 'none'}.", "Leave --replay at 0 for this parent.")
    progress.log(f"replaying {n} crops of {', '.join(s.name for s in scenes)}, which the parent learnt from")
    arrays = [load_labelled(s, pixel_size) for s in scenes]
    try:
        drawn = training_tiles(arrays, None, n, tile, seed, REAL_CROPS)
    except ValueError as error:  # the scenes hold too few crops of this size
        raise InputError(f"Replay could not cut {n} crops of {tile} px from {', '.join(s.name for s in scenes)}: {error}.",
                         f"Use smaller tiles (e.g. --tile {max(64, tile // 2)}), or leave --replay at 0.") from error

    def stack(parts: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(parts).astype(np.float32)).unsqueeze(1)

    return TileSet(stack(drawn.x), stack(drawn.y), stack(drawn.valid)), [s.name for s in scenes]


def split_by_area(tiles: list[Tile], val_fraction: float, seed: int, gap: int = GAP) -> tuple[list[Tile], list[Tile]]:
    """(training, validation) tiles: a seeded draw of whole tiles, slick and sea-only tiles drawn
    separately so that validation holds slicks whenever two tiles do; training tiles lose ``gap`` pixels
    along each side or corner they share with a validation tile."""
    rng = np.random.default_rng(seed)
    slick = [i for i, t in enumerate(tiles) if t.slick_pixels]
    sea = [i for i, t in enumerate(tiles) if not t.slick_pixels]
    n_slick = min(len(slick) - 1, max(1, round(val_fraction * len(slick)))) if len(slick) >= 2 else 0
    n_sea = round(val_fraction * len(sea))
    chosen = {int(i) for i in rng.permutation(slick)[:n_slick]} | {int(i) for i in rng.permutation(sea)[:n_sea]}
    if not chosen:  # e.g. one slick tile and one sea tile: validate on sea rather than lose the only slick
        chosen = {int(rng.choice(sea or slick))}
    val = [tiles[i] for i in sorted(chosen)]
    cells = {(t.scene, t.row, t.col) for t in val}
    training = []
    for i, t in enumerate(tiles):
        if i in chosen:
            continue
        valid = t.valid.copy()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if (dr or dc) and (t.scene, t.row + dr * t.size, t.col + dc * t.size) in cells:
                    valid[_edge(dr, t.size, gap), _edge(dc, t.size, gap)] = 0
        training.append(replace(t, valid=valid))
    return training, val


def _edge(direction: int, size: int, gap: int) -> slice:
    return slice(0, gap) if direction < 0 else slice(size - gap, size) if direction > 0 else slice(None)


def _labelled_span(store: LabelStore, scene: str, grid: Grid, tile: int) -> Optional[tuple[range, range]]:
    """Tile rows and columns (pixel offsets on the lattice) covering the scene's labels and reviewed
    areas inside the grid; None when they all lie outside it."""
    entry = store.scenes[scene]
    geometries = [r.geometry for r in entry.reviewed] + [label.geometry for label in entry.labels]
    union = shapely.union_all([shape(g) for g in to_crs(geometries, store.crs, grid.crs)])
    minx, miny, maxx, maxy = union.bounds
    left, top, size = grid.transform.c, grid.transform.f, grid.pixel_size
    col0, col1 = max(0, math.floor((minx - left) / size)), min(grid.width, math.ceil((maxx - left) / size))
    row0, row1 = max(0, math.floor((top - maxy) / size)), min(grid.height, math.ceil((top - miny) / size))
    if col1 <= col0 or row1 <= row0:
        return None
    return range(row0 // tile * tile, row1, tile), range(col0 // tile * tile, col1, tile)


def tileset(tiles: list[Tile]) -> TileSet:
    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(t, name) for t in tiles]).astype(np.float32)).unsqueeze(1)

    return TileSet(stack("x"), stack("target"), stack("valid"))


def check_store(store: LabelStore) -> None:
    name = store.path.name
    if not any(entry.count("slick") for entry in store.scenes.values()):
        raise InputError(f"The label store {name} holds no slick labels.", "Draw or accept a few slicks, then mark the areas you checked as reviewed.")
    if not any(entry.reviewed for entry in store.scenes.values()):
        raise InputError(
            f"The label store {name} has labels but no reviewed areas, so nothing says which sea is clean.",
            "Mark the areas you checked as reviewed (every slick in them labelled).",
        )
    missing = [scene for scene in store.scenes if not store.scene_path(scene).is_file()]
    if missing:
        raise InputError(
            f"Scene file(s) moved or deleted since they were labelled: {', '.join(missing)}.",
            "Put them back, or correct the scene field of their labels in the store.",
        )
