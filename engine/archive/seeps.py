"""Seep sites: places whose slicks come back scene after scene, with how often and where they start.

A seep's slicks leave the source thin and widen as they drift, so each slick's origin is taken as the
narrower end of its long axis (an end cut by the scene's edge is never an origin: the slick went on
outside). Origins of different scenes are grouped by density (DBSCAN, ``distance_m`` apart at most, in
metres of a local equidistant projection, so the scale means the same anywhere on Earth), and a group
seen in at least ``min_scenes`` scenes is a site. Its recurrence is the share of the scenes that observed
the site (their footprints cover it) in which it had a slick: a seep seen twice in two passes is more
certain than one seen twice in twenty. The source is the geometric median of the origins, which a few
fragments drifting far off cannot drag; its uncertainty radius is the 95th percentile of bootstrap
medians' distances from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Point, Polygon, box
from shapely.affinity import rotate
from sklearn.cluster import DBSCAN

from ..atomic import staged
from ..errors import InputError
from . import catalogue

DEFAULT_DISTANCE_M = 1000.0
_END_SHARE = 0.2
"""Width is compared over the outer fifth of each end: enough pixels to average speckle out."""
_EDGE_M = 60.0
_BOOTSTRAPS = 200


@dataclass
class SeepOptions:
    distance_m: float = DEFAULT_DISTANCE_M
    min_scenes: int = 3
    """Scenes with a slick a site needs: one scene is a spill or a look-alike, two may be chance."""
    min_area_km2: float = 0.1
    """Strands smaller than this give no origin: specks a model marks at random would gather by chance."""


def local_crs(frame: gpd.GeoDataFrame) -> str:
    """An azimuthal equidistant projection at the data's centre: distances in metres, true from there."""
    lon, lat = frame.to_crs("EPSG:4326").union_all().centroid.coords[0]
    return f"+proj=aeqd +lat_0={lat:.6f} +lon_0={lon:.6f} +datum=WGS84 +units=m +no_defs"


def origin_of(slick: Polygon, edge=None) -> tuple[Point, float]:
    """The narrower end of the slick's long axis (not one lying on ``edge``), and its width in metres."""
    rectangle = slick.minimum_rotated_rectangle
    corners = np.asarray(rectangle.exterior.coords)[:4]
    sides = np.diff(np.vstack([corners, corners[:1]]), axis=0)
    long_side = sides[np.argmax(np.hypot(sides[:, 0], sides[:, 1]))]
    angle = np.degrees(np.arctan2(long_side[1], long_side[0]))
    centre = rectangle.centroid
    upright = rotate(slick, -angle, origin=centre)  # long axis along x
    minx, miny, maxx, maxy = upright.bounds
    reach = (maxx - minx) * _END_SHARE
    ends = []
    for first in (True, False):
        lo, hi = (minx, minx + reach) if first else (maxx - reach, maxx)
        part = upright.intersection(box(lo, miny, hi, maxy))
        width = part.area / reach if reach > 0 else 0.0
        tip = upright.intersection(box(minx, miny, minx + reach / 2, maxy) if first else box(maxx - reach / 2, miny, maxx, maxy))
        point = rotate(tip.centroid if not tip.is_empty else part.centroid, angle, origin=centre)
        cut = edge is not None and point.distance(edge) < _EDGE_M + width
        ends.append((cut, width, point))
    ends.sort(key=lambda e: (e[0], e[1]))
    return ends[0][2], ends[0][1]


def find_sites(slicks: gpd.GeoDataFrame, footprints: gpd.GeoDataFrame, options: SeepOptions) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """(sites as source points, slicks with their ``site_id``), both in EPSG:4326."""
    if options.distance_m <= 0:
        raise InputError(f"Distance scale {options.distance_m} m is not positive.", "Give metres, e.g. --distance 1000.")
    if options.min_scenes < 1:
        raise InputError("A site needs at least one scene.", "Give --min-scenes 2 or more.")
    slicks = slicks.copy()
    slicks["site_id"] = pd.array([pd.NA] * len(slicks), dtype="Int64")
    if len(slicks) == 0:
        return _empty_sites(), slicks
    crs = local_crs(footprints if len(footprints) else slicks)
    local = slicks.to_crs(crs)
    prints = footprints.to_crs(crs)
    edges = {row.scene_hash: row.geometry.boundary for row in prints.itertuples() if row.geometry is not None}
    big = np.flatnonzero((local["area_km2"] >= options.min_area_km2).to_numpy())
    if big.size == 0:
        return _empty_sites(), slicks
    xy = np.array([origin_of(local.geometry.iloc[i], edges.get(local["scene_hash"].iloc[i]))[0].coords[0] for i in big])
    labels = DBSCAN(eps=options.distance_m, min_samples=2).fit_predict(xy)
    rows = []
    claims: dict[int, list[tuple[float, int]]] = {}
    rng = np.random.default_rng(0)
    for label in sorted(set(labels) - {-1}):
        ends = np.flatnonzero(labels == label)
        scenes = set(local["scene_hash"].iloc[big[ends]])
        if len(scenes) < options.min_scenes:
            continue
        source = geometric_median(xy[ends])
        spread = [np.hypot(*(geometric_median(xy[rng.choice(ends, ends.size)]) - source)) for _ in range(_BOOTSTRAPS)]
        point = Point(source)
        # Members: every slick reaching the source's neighbourhood, not only those whose own end lies there: a
        # seep with several strands leaves a V whose ends are both downstream, yet it did leak that day.
        near = local.geometry.distance(point) <= options.distance_m / 2
        members = np.union1d(big[ends], np.flatnonzero(near.to_numpy()))
        scenes = set(local["scene_hash"].iloc[members])
        observed = {row.scene_hash for row in prints.itertuples() if row.geometry is not None and row.geometry.covers(point)}
        observed |= scenes  # a slick was seen, so its scene saw the site even if the source sits just outside
        times = local["acquired"].iloc[members].dropna()
        site_id = len(rows) + 1
        for member in members:
            claims.setdefault(int(member), []).append((point.distance(local.geometry.iloc[member]), site_id))
        rows.append({
            "site_id": site_id,
            "scenes_with_slick": len(scenes),
            "scenes_observed": len(observed),
            "recurrence": round(len(scenes) / len(observed), 4),
            "first_detection": times.min() if len(times) else pd.NaT,
            "last_detection": times.max() if len(times) else pd.NaT,
            "uncertainty_m": round(float(np.percentile(spread, 95)), 1),
            "model_name": local["model_name"].iloc[members[0]],
            "model_hash": local["model_hash"].iloc[members[0]],
            "geometry": point,
        })
    if not rows:
        return _empty_sites(), slicks
    # A long strand may pass a second site; each slick is given to the site whose source is nearest.
    for member, claimed in claims.items():
        slicks.iloc[member, slicks.columns.get_loc("site_id")] = min(claimed)[1]
    sites = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs).to_crs("EPSG:4326")
    sites.insert(1, "n_slicks", [int((slicks["site_id"] == r["site_id"]).sum()) for r in rows])
    sites["source_lon"], sites["source_lat"] = sites.geometry.x.round(6), sites.geometry.y.round(6)
    sites["label"] = [f"{r.scenes_with_slick}/{r.scenes_observed} scenes" for r in sites.itertuples()]
    return sites, slicks


def geometric_median(points: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Weiszfeld's iteration: the point of least summed distance, robust to half the points being off."""
    centre = np.median(points, axis=0)
    for _ in range(iterations):
        distance = np.maximum(np.hypot(*(points - centre).T), 1e-6)
        moved = (points / distance[:, None]).sum(axis=0) / (1.0 / distance).sum()
        if np.hypot(*(moved - centre)) < 0.01:
            return moved
        centre = moved
    return centre


def _empty_sites() -> gpd.GeoDataFrame:
    columns = ["site_id", "n_slicks", "scenes_with_slick", "scenes_observed", "recurrence", "first_detection",
               "last_detection", "uncertainty_m", "model_name", "model_hash", "source_lon", "source_lat", "label"]
    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs="EPSG:4326")


def run_seeps(catalogue_path: str | Path, out: str | Path, options: SeepOptions) -> dict:
    """Find the sites of a batch catalogue and write ``sites`` (points) and ``slicks`` (with site_id) to ``out``."""
    slicks, footprints = catalogue.read(catalogue_path)
    sites, slicks = find_sites(slicks, footprints, options)
    out = Path(out)
    with staged(out) as tmp:
        tmp.unlink()  # OGR creates the GeoPackage itself
        catalogue.write_layer(sites, tmp, "sites", "Point")
        catalogue.write_layer(slicks, tmp, "slicks", "Polygon")
    return {
        "sites": len(sites),
        "slicks": len(slicks),
        "slicks_in_sites": int(slicks["site_id"].notna().sum()),
        "out": str(out),
        "table": [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items() if k != "geometry"}
                  for row in sites.to_dict("records")],
    }
