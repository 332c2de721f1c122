"""A seeded synthetic archive: a time series of scenes over one area with seeps of known activity.

Seep analysis can only be checked against a truth no real archive has: where each seep is and how often
it is active. Each seep here is active in a known share of the scenes that see it; scenes are shifted
against each other so not every scene sees every seep (recurrence is counted over the scenes that saw the
site, from their footprints); one-off spills and the generator's look-alikes and ships add what a seep
analysis must not count. Every scene is ``engine.synth`` with the seeps placed at fixed map positions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from rasterio.warp import transform as transform_points

from ..atomic import write_text
from ..data.synth import SceneSpec, write_scene

CRS = "EPSG:32636"
ORIGIN = (449000.0, 8360000.0)
PIXEL = 25.0


@dataclass(frozen=True)
class TrueSeep:
    """A seep at (x, y) metres in ``CRS``, active in ``share`` of the scenes that see it."""

    x: float
    y: float
    share: float


def default_seeps(size: int) -> list[TrueSeep]:
    """Two seeps well apart in the middle of a ``size``-pixel area, one always active, one in three scenes of five."""
    extent = size * PIXEL
    return [
        TrueSeep(ORIGIN[0] + 0.33 * extent, ORIGIN[1] - 0.36 * extent, 1.0),
        TrueSeep(ORIGIN[0] + 0.8 * extent, ORIGIN[1] - 0.64 * extent, 0.6),
    ]


def write_archive(folder: Path, n_scenes: int = 6, size: int = 320, seed: int = 0,
                  seeps: list[TrueSeep] | None = None, spill_share: float = 0.5, labels: Path | None = None) -> dict:
    """Write ``n_scenes`` float32 sigma0 scenes into ``folder`` and ``truth.json``; returns the truth.

    With ``labels``, each scene's class mask goes there under the scene's name (outside ``folder``, so a
    batch over the folder sees scenes only)."""
    seeps = seeps or default_seeps(size)
    rng = np.random.default_rng(seed)
    for target in (folder, labels):
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
    shift = 0.3 * size * PIXEL
    origins = [(ORIGIN[0] + rng.uniform(-shift, shift), ORIGIN[1] + rng.uniform(-shift, shift)) for _ in range(n_scenes)]
    margin = 0.0
    observes = [[_inside(s, o, size, margin) for o in origins] for s in seeps]
    active = []
    for seep, seen in zip(seeps, observes):
        observed = [j for j, ok in enumerate(seen) if ok]
        chosen = set(rng.permutation(observed)[: round(seep.share * len(observed))].tolist())
        active.append([j in chosen for j in range(n_scenes)])
    start = datetime(2024, 1, 1, 5, 30, tzinfo=timezone.utc)
    scenes = []
    for j, origin in enumerate(origins):
        sites = [_pixel(s, origin) for s, on in zip(seeps, (a[j] for a in active)) if on]
        spill = None
        if rng.random() < spill_share:  # a one-off release far from every seep: never a site
            for _ in range(20):
                candidate = rng.uniform(0.15, 0.85, 2) * size
                if all(np.hypot(*(candidate - _pixel(s, origin))) * PIXEL > 3000 for s in seeps):
                    spill = (float(candidate[0]), float(candidate[1]))
                    sites.append(spill)
                    break
        when = start + timedelta(days=6 * j, minutes=int(rng.integers(0, 60)))
        name = f"S1A_EW_GRDM_1SDH_{when:%Y%m%dT%H%M%S}_synth.tif"
        spec = SceneSpec(height=size, width=size, seed=seed * 1000 + j, n_seeps=0, n_ships=2, n_lookalikes=2,
                         crs=CRS, origin=origin, seep_sites=tuple(sites))
        write_scene(spec, folder / name, label_path=labels / name if labels else None)
        scenes.append({"name": name, "acquired": when.isoformat(), "origin": origin, "spill": spill})
    truth_seeps = []
    for seep, seen, on in zip(seeps, observes, active):
        lon, lat = transform_points(CRS, "EPSG:4326", [seep.x], [seep.y])
        n_observed, n_active = sum(seen), sum(on)
        truth_seeps.append({**asdict(seep), "lon": lon[0], "lat": lat[0], "observed_scenes": n_observed,
                            "active_scenes": n_active, "recurrence": n_active / n_observed if n_observed else None})
    truth = {"crs": CRS, "pixel_size": PIXEL, "seeps": truth_seeps, "scenes": scenes}
    write_text(folder / "truth.json", json.dumps(truth, indent=1))
    return truth


def _inside(seep: TrueSeep, origin: tuple[float, float], size: int, margin: float) -> bool:
    return (origin[0] + margin <= seep.x <= origin[0] + size * PIXEL - margin
            and origin[1] - size * PIXEL + margin <= seep.y <= origin[1] - margin)


def _pixel(seep: TrueSeep, origin: tuple[float, float]) -> np.ndarray:
    """(row, col) of the seep in a scene whose top-left corner is ``origin``."""
    return np.array([(origin[1] - seep.y) / PIXEL, (seep.x - origin[0]) / PIXEL])
