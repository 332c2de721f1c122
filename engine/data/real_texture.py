"""Training tiles whose pixels are mostly real SAR: real scenes, and real sea with seep slicks composited in.

A model trained on synthetic scenes alone learnt "thin dark line with bright edges" and traced coastlines,
wind streaks and speckle on real scenes. Here most of what the model sees is real Sentinel-1 backscatter:

* ``labelled``: crops of the real labelled scenes as they are: real slicks, and the real look-alikes (low
  wind, natural films, ice, coast) that the analysts did not label, which the model must learn to reject;
* ``composite``: crops of the same real sea with synthetic seep slicks added by a physical model, so that
  the few real slicks are not all the model knows of slick shape and contrast;
* ``grd``: crops of a real IW scene's ~200 m grid (wind structure, coast, swath border) upsampled to the
  model's pixels, with EW-like speckle and composited slicks;
* ``synthetic``: fully synthetic scenes (``engine.synth``), for ships, land and eddies the real set lacks.
* ``transplant`` (none in the bundled mix): a real labelled slick moved onto another crop's real sea, with its real
  shape and contrast (``transplant_slick``).

The slick model (``composite_seep``): strands drift from a point source (``synth.seep_strands``: several
per seep, thin near the source, widening and breaking up downstream). Oil damps the short Bragg waves, so
the sea's backscatter sigma0 is multiplied by a damping ratio r (0.2-0.5, -7 to -3 dB). The measured
intensity is (sigma0 + NESZ) x speckle, so the composited pixel is the real one times
((r sigma0 + NESZ) / (sigma0 + NESZ)): the real speckle is kept, and where the sea is already near the
noise floor the slick fades, as it does on real scenes. Below about 2 m/s there are no Bragg waves to damp
(the sea is as dark as the oil); the local background level relative to the scene's stands in for wind.
A composited pixel is labelled slick only where it is inside the strand and at least 1 dB darker, since
an analyst cannot label what does not show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.ndimage import uniform_filter

from ..scenes.normalise import Stretch
from .synth import SceneSpec, generate, paint, seep_strands, speckle
from .real_scenes import SceneArrays, _resize

DN_PER_DB_RANGE = (25.0, 40.0)
"""Stretched levels per dB on the authors' 8-bit tiles, whose dB scale is not stored: eq. 1 maps mean +- 2
sigma onto 254 levels, and sea at 25 m varies by 1.6-2.5 dB (sigma) on EW scenes, so 25-40 levels a dB."""
VISIBLE_DB = -1.0
MIN_DATA = 0.6
MIN_TRANSPLANT_PIXELS = 50
"""A crop's labelled slick pixels below which it gives no slick to transplant."""


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of tile in a training set (normalised when drawn), and what the synthetic ones hold."""

    labelled: float = 0.35
    composite: float = 0.35
    grd: float = 0.15
    synthetic: float = 0.15
    transplant: float = 0.0
    front: float = 0.0
    """Share of crops of real sea with one side of a wavering line a few dB darker and nothing new labelled
    (``darken_side``): the edges of low-wind areas and the seams of mosaicked acquisitions, along which the fold models
    trace false slicks."""
    synthetic_lookalikes: bool = False
    """Synthetic tiles with rain cells, sea-ice edges and sub-swath noise bands too (``SceneSpec.more_lookalikes``):
    look-alikes the real tiles may hold too few of."""
    strand_width: float = 1.0
    """Composited strands' width relative to the generator's (100-350 m): the real strands the bundled recipe's fold
    models miss are 3-5 px wide, where most composited ones are wider."""
    faintest: float = 0.5
    """The faintest composited oil's damping ratio (sigma0 multiplied by 0.2 up to this; 0.5 is -3 dB): real strands
    the fold models miss are about 2 dB darker than the sea around them."""

    def shares(self) -> dict[str, float]:
        parts = {"labelled": self.labelled, "composite": self.composite, "grd": self.grd, "synthetic": self.synthetic,
                 "transplant": self.transplant, "front": self.front}
        total = sum(parts.values())
        if total <= 0 or min(parts.values()) < 0:
            raise ValueError(f"tile shares must be non-negative and not all zero: {parts}")
        return {k: v / total for k, v in parts.items()}


REAL_CROPS = Mix(labelled=1.0, composite=0.0, grd=0.0, synthetic=0.0)
"""Crops of the labelled real scenes only: what masked-image pretraining and fine-tuning's replay draw."""


@dataclass
class Tiles:
    """Stretched tiles (float32 0..255, 0 = no data), slick targets and where the target is known."""

    x: list[np.ndarray] = field(default_factory=list)
    y: list[np.ndarray] = field(default_factory=list)
    valid: list[np.ndarray] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)

    def add(self, x: np.ndarray, y: np.ndarray, valid: np.ndarray, kind: str) -> None:
        self.x.append(x.astype(np.float32))
        self.y.append(y.astype(np.float32))
        self.valid.append(valid.astype(np.float32))
        self.kind.append(kind)

    def __len__(self) -> int:
        return len(self.x)


def composite_seep(
    values: np.ndarray, rng: np.random.Generator, dn_per_db: float, pixel_m: float, scene_level: float, width_scale: float = 1.0,
    faintest: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (stretched, 0 = no data) with one seep's strands (``width_scale`` times the generator's width) damped
    in, and the strands' slick mask."""
    shape = values.shape
    data = values > 0
    for _ in range(20):
        source = np.array([rng.uniform(0, shape[0]), rng.uniform(0, shape[1])])
        if data[int(source[0]), int(source[1])]:
            break
    else:
        return values, np.zeros(shape, bool)
    cover, attenuation = paint(seep_strands(rng, source, rng.uniform(0, 2 * math.pi), pixel_m, shape, width_scale, faintest), shape)
    background_db = (uniform_filter(np.where(data, values, scene_level), size=max(3, int(1000 / pixel_m))) - scene_level) / dn_per_db
    # No Bragg waves to damp at low wind (background 5 dB under the scene's level), full damping 2 dB under it.
    wind = np.clip((background_db + 5.0) / 3.0, 0.0, 1.0)
    nesz_db = rng.uniform(-10.0, -4.0)  # the noise floor under the scene's sea level
    q = 10.0 ** ((nesz_db - background_db) / 10.0)
    factor = ((1.0 - attenuation * wind) + q) / (1.0 + q)
    drop_db = 10.0 * np.log10(factor)
    out = np.where(data, np.clip(values + dn_per_db * drop_db, 1.0, 255.0), 0.0).astype(np.float32)
    return out, (cover >= 0.5) & (drop_db <= VISIBLE_DB) & data


def transplant_slick(values: np.ndarray, source: np.ndarray, mask: np.ndarray, dn_per_db: float, pixel_m: float,
                     scene_level: float) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (stretched, 0 = no data) with a real slick damped in, and its slick mask. ``mask`` is an analyst's
    slick on another crop, ``source`` that crop's stretched levels: the slick's darkness relative to its own surroundings
    (smoothed, so its speckle stays behind) carries a real slick's shape, contrast and inner structure onto this sea,
    whose speckle it keeps. Both crops are eq. 1 stretched, so a level's drop means about as many dB in each. Over sea
    near the low-wind level no slick shows, as for the composites (``composite_seep``)."""
    data = values > 0
    mask = mask & (source > 0)
    size = max(3, int(1000 / pixel_m))
    sea = ((source > 0) & ~mask).astype(np.float32)
    around = uniform_filter(source * sea, size) / np.maximum(uniform_filter(sea, size), 1e-6)
    darkness = np.where(mask, np.minimum(uniform_filter(source, 5) - around, 0.0), 0.0)
    background_db = (uniform_filter(np.where(data, values, scene_level), size=size) - scene_level) / dn_per_db
    drop = darkness * np.clip((background_db + 5.0) / 3.0, 0.0, 1.0)
    out = np.where(data, np.clip(values + drop, 1.0, 255.0), 0.0).astype(np.float32)
    return out, mask & (drop <= VISIBLE_DB * dn_per_db) & data


def _crop(scene: SceneArrays, tile: int, rng: np.random.Generator, near_slick: bool) -> Optional[tuple[slice, slice]]:
    h, w = scene.values.shape
    if h < tile or w < tile:
        return None
    slick_rows, slick_cols = np.nonzero(scene.slick) if near_slick else ((), ())
    for _ in range(30):
        if len(slick_rows):
            i = rng.integers(len(slick_rows))
            r = int(np.clip(slick_rows[i] - rng.integers(tile // 8, 7 * tile // 8), 0, h - tile))
            c = int(np.clip(slick_cols[i] - rng.integers(tile // 8, 7 * tile // 8), 0, w - tile))
        else:
            r, c = int(rng.integers(0, h - tile + 1)), int(rng.integers(0, w - tile + 1))
        window = (slice(r, r + tile), slice(c, c + tile))
        if scene.data[window].mean() >= MIN_DATA and scene.known[window].mean() >= MIN_DATA:
            return window
    return None


def _labelled_tile(scenes: list[SceneArrays], weights: np.ndarray, tile: int, rng: np.random.Generator, out: Tiles) -> bool:
    scene = scenes[rng.choice(len(scenes), p=weights)]
    window = _crop(scene, tile, rng, near_slick=bool(scene.slick.any()) and rng.random() < 0.6)
    if window is None:
        return False
    out.add(scene.values[window], scene.slick[window], scene.known[window], "labelled")
    return True


def _composite_tile(scenes: list[SceneArrays], weights: np.ndarray, tile: int, rng: np.random.Generator, out: Tiles,
                    width_scale: float, faintest: float) -> bool:
    scene = scenes[rng.choice(len(scenes), p=weights)]
    window = _crop(scene, tile, rng, near_slick=False)
    if window is None:
        return False
    values, slick = scene.values[window], scene.slick[window]
    level = float(np.median(scene.values[scene.data]))
    for _ in range(int(rng.integers(1, 3))):
        values, added = composite_seep(values, rng, rng.uniform(*DN_PER_DB_RANGE), scene.pixel_size, level, width_scale, faintest)
        slick = slick | added
    out.add(values, slick, scene.known[window] | slick, "composite")
    return True


def _transplant_tile(scenes: list[SceneArrays], weights: np.ndarray, tile: int, rng: np.random.Generator, out: Tiles) -> bool:
    """A labelled slick of one crop, turned and flipped at random, damped into another crop's real sea."""
    donors = [scene for scene in scenes if scene.slick.any()]
    if not donors:
        return False
    donor = donors[int(rng.integers(len(donors)))]
    window = _crop(donor, tile, rng, near_slick=True)
    if window is None or donor.slick[window].sum() < MIN_TRANSPLANT_PIXELS:
        return False
    turns, flip = int(rng.integers(4)), bool(rng.random() < 0.5)

    def moved(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, turns)
        return np.ascontiguousarray(a[:, ::-1] if flip else a)

    scene = scenes[rng.choice(len(scenes), p=weights)]
    target = _crop(scene, tile, rng, near_slick=False)
    if target is None:
        return False
    level = float(np.median(scene.values[scene.data]))
    values, added = transplant_slick(scene.values[target], moved(donor.values[window]), moved(donor.slick[window]),
                                     rng.uniform(*DN_PER_DB_RANGE), scene.pixel_size, level)
    out.add(values, scene.slick[target] | added, scene.known[target] | added, "transplant")
    return True


def darken_side(values: np.ndarray, rng: np.random.Generator, dn_per_db: float) -> np.ndarray:
    """``values`` (stretched, 0 = no data) with the sea on one side of a line through the tile 1.5-4 dB darker, the line
    wavering by up to a tenth of the tile and its edge sharp (a seam) or up to 4 px soft (a wind front)."""
    h, w = values.shape
    angle = rng.uniform(0, 2 * math.pi)
    centre = np.array([rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w])
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    across = (rows - centre[0]) * math.cos(angle) + (cols - centre[1]) * math.sin(angle)
    along = -(rows - centre[0]) * math.sin(angle) + (cols - centre[1]) * math.cos(angle)
    across += 0.1 * max(h, w) * rng.uniform(0, 1) * np.sin(2 * math.pi * along / (max(h, w) * rng.uniform(0.5, 2)) + rng.uniform(0, 2 * math.pi))
    side = np.clip(0.5 + across / (2 * max(rng.uniform(0, 4), 1e-3)), 0.0, 1.0)
    darker = np.where(values > 0, np.clip(values - dn_per_db * rng.uniform(1.5, 4.0) * side, 1.0, 255.0), 0.0)
    return darker.astype(np.float32)


def _front_tile(scenes: list[SceneArrays], weights: np.ndarray, tile: int, rng: np.random.Generator, out: Tiles) -> bool:
    """A crop of a labelled scene, drawn as the composites' are (not steered to its slicks), one side darkened
    (``darken_side``), its labels kept as they were."""
    scene = scenes[rng.choice(len(scenes), p=weights)]
    window = _crop(scene, tile, rng, near_slick=False)
    if window is None:
        return False
    out.add(darken_side(scene.values[window], rng, rng.uniform(*DN_PER_DB_RANGE)), scene.slick[window], scene.known[window], "front")
    return True


def _grd_tile(grd: SceneArrays, grd_stretch: Stretch, tile: int, pixel_m: float, rng: np.random.Generator, out: Tiles,
              width_scale: float, faintest: float) -> bool:
    """A crop of the coarse real scene brought to ``pixel_m`` in dB, with EW speckle, re-stretched by eq. 1."""
    factor = grd.pixel_size / pixel_m
    size = max(4, math.ceil(tile / factor))
    h, w = grd.values.shape
    for _ in range(30):
        r, c = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = grd.values[r : r + size, c : c + size]
        if (crop > 0).mean() >= 0.9:
            break
    else:
        return False
    db = grd_stretch.mean + (crop - 128.0) / 127.0 * 2.0 * grd_stretch.std  # eq. 1 undone
    db = _resize(np.where(crop > 0, db + 100.0, 0.0).astype(np.float32), factor, "bilinear")[:tile, :tile]
    data = db > 0
    spec = SceneSpec(height=tile, width=tile, mode="EW_HH", pixel_size=pixel_m, seed=int(rng.integers(2**31)))
    db = np.where(data, db - 100.0 + 10.0 * np.log10(speckle(spec, 0, tile)), np.nan)
    values = Stretch("float32_db", float(np.nanmean(db)), float(np.nanstd(db))).apply(db)
    level = float(np.median(values[data]))
    dn_per_db = 254.0 / (4.0 * float(np.nanstd(db)))
    values, slick = composite_seep(values, rng, dn_per_db, pixel_m, level, width_scale, faintest)
    out.add(values, slick, data, "grd")
    return True


def _synthetic_tile(tile: int, pixel_m: float, rng: np.random.Generator, out: Tiles, more_lookalikes: bool) -> bool:
    i = int(rng.integers(2**31))
    spec = SceneSpec(height=tile, width=tile, mode=("IW_VV", "EW_HH")[i % 2], pixel_size=pixel_m, seed=i,
                     n_seeps=int(rng.integers(0, 3)), n_ships=int(rng.integers(0, 4)), n_lookalikes=int(rng.integers(1, 4)),
                     land=rng.random() < 0.2, nodata_border=rng.random() < 0.2, more_lookalikes=more_lookalikes)
    sigma0, classes = generate(spec)
    values = np.where(sigma0 > 0, sigma0, np.nan).astype(np.float32)
    stretched = Stretch.fit("float32_linear", [values]).apply(values)
    out.add(stretched, classes == 1, stretched > 0, "synthetic")
    return True


def training_tiles(
    scenes: list[SceneArrays], grd: Optional[tuple[SceneArrays, Stretch]], n: int, tile: int, seed: int, mix: Mix = Mix()
) -> Tiles:
    """``n`` tiles drawn by ``mix`` from ``scenes`` (labelled, on the model's grid) and the coarse ``grd``
    scene with its eq. 1 stretch; the same arguments always give the same tiles."""
    if not scenes:
        raise ValueError("real-texture tiles need at least one labelled real scene")
    shares = mix.shares()
    if grd is None:
        shares["grd"] = 0.0
    kinds = list(shares)
    p = np.array([shares[k] for k in kinds])
    p /= p.sum()
    area = np.array([float(s.known.sum()) for s in scenes])
    weights = np.sqrt(area) / np.sqrt(area).sum()  # small scenes are not drowned by large ones
    rng = np.random.default_rng(seed)
    pixel_m = scenes[0].pixel_size
    out = Tiles()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n:
            raise ValueError(f"only {len(out)} of {n} tiles of {tile} px fit in these scenes")
        kind = kinds[rng.choice(len(kinds), p=p)]
        if kind == "labelled":
            _labelled_tile(scenes, weights, tile, rng, out)
        elif kind == "composite":
            _composite_tile(scenes, weights, tile, rng, out, mix.strand_width, mix.faintest)
        elif kind == "grd":
            _grd_tile(grd[0], grd[1], tile, pixel_m, rng, out, mix.strand_width, mix.faintest)
        elif kind == "transplant":
            _transplant_tile(scenes, weights, tile, rng, out)
        elif kind == "front":
            _front_tile(scenes, weights, tile, rng, out)
        else:
            _synthetic_tile(tile, pixel_m, rng, out, mix.synthetic_lookalikes)
    return out


def scene_tiles(scene: SceneArrays, tile: int) -> Tiles:
    """A validation scene cut into non-overlapping tiles (the last row and column shifted inward to fit)."""
    out = Tiles()
    h, w = scene.values.shape
    rows = sorted({*range(0, max(h - tile, 0) + 1, tile), max(h - tile, 0)})
    cols = sorted({*range(0, max(w - tile, 0) + 1, tile), max(w - tile, 0)})
    for r in rows:
        for c in cols:
            window = (slice(r, r + tile), slice(c, c + tile))
            if scene.known[window].any():
                out.add(scene.values[window], scene.slick[window], scene.known[window], "validation")
    return out


def split_scene(scene: SceneArrays, val_fraction: float, gap: int) -> tuple[SceneArrays, SceneArrays]:
    """(training part, validation part) of a labelled scene, cut by a straight line parallel to an edge.

    The validation part is the narrowest band along one of the four edges that holds ``val_fraction`` of the
    scene's slick pixels: the labelled tiles are crops around one seep, so a fixed band (say the bottom
    quarter) often holds no slick and cannot choose a threshold. ``gap`` pixels inside the line belong to
    neither part, and the training part's validation pixels are no data, so no training crop sees them.
    """
    slick_total = int(scene.slick.sum())
    if not slick_total:
        raise ValueError(f"{scene.name} has no labelled slick to validate on")
    best = None
    for axis in (0, 1):
        counts = scene.slick.sum(axis=1 - axis)
        for from_end in (False, True):
            ordered = counts[::-1] if from_end else counts
            width = int(np.searchsorted(np.cumsum(ordered), val_fraction * slick_total)) + 1
            if best is None or width / len(counts) < best[0]:
                best = (width / len(counts), axis, from_end, width)
    _, axis, from_end, width = best
    n = scene.slick.shape[axis]
    index = np.arange(n)
    held = index >= n - width if from_end else index < width
    unseen = index >= n - width - gap if from_end else index < width + gap
    held, unseen = (held[:, None], unseen[:, None]) if axis == 0 else (held[None, :], unseen[None, :])
    train_known, val_known = scene.known & ~unseen, scene.known & held
    return (SceneArrays(scene.name, np.where(unseen, 0.0, scene.values).astype(np.float32), scene.slick & train_known, train_known,
                        scene.pixel_size),
            SceneArrays(f"{scene.name} (validation part)", scene.values, scene.slick & val_known, val_known, scene.pixel_size))
