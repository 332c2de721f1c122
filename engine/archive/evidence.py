"""Look-alike evidence for every slick polygon: what an analyst weighs before calling a dark patch oil.

Dark patches on SAR are oil only sometimes: the sea also darkens where the wind drops below about 2 m/s,
under biogenic films, in rain cells and wind shadows, and near the noise floor. For each slick this writes
the contrast to the surrounding sea (dB), the background backscatter and the wind speed it implies
(``wind``), the incidence angle, the margin above the noise floor, the shape (elongation, complexity,
width), the distance to the scene's edge or no-data and to land, and a look-alike score with its reasons.
No slick is ever dropped: the score ranks, the analyst decides.

Kept cheap: the backscatter sums come from one pass over only the strips of the analysis grid that hold a
slick or its ring (``RING_M`` of sea around it), and everything else is per-polygon geometry.
Backscatter in dB is meaningful only for calibrated sigma0 (float32 linear or dB); uncalibrated amplitude
numbers (uint16 DN) still give a contrast (a ratio), and 8-bit stretched scenes give neither.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
from affine import Affine
from fiona.transform import transform_geom
from rasterio.features import rasterize
from rasterio.windows import Window
from shapely.geometry import Polygon, mapping, shape
from shapely.ops import unary_union

from ..scenes.grid import Grid, GridReader, covering_window
from ..scenes.normalise import to_db
from ..jobs.outputs import MASK_NODATA
from ..progress import Progress
from ..scenes.raster import SceneInfo
from ..scenes.tiling import strip_rows
from .footprint import valid_outline
from .scene_list import scene_metadata
from .wind import wind_speed

RING_M = 1000.0
_STRIP_ROWS = 512
"""Rows of the pass over the rasters, fewer where a wide scene's strip would hold more than ``STRIP_PIXELS``."""
NOMINAL_INCIDENCE = {"EW": 33.0, "IW": 37.5}
"""Mid-swath incidence of Sentinel-1's wide modes, used (and flagged as assumed) when no annotation says."""
NOMINAL_NESZ_DB = -25.0
"""Noise-equivalent sigma0 typical of Sentinel-1's IW and EW swaths (ESA specifies at most -22 dB), used, and
written beside the margin, when no noise annotation is read."""
CALIBRATED = ("float32_linear", "float32_db")

FIELDS = {
    "contrast_db": "float",
    "slick_db": "float",
    "background_db": "float",
    "wind_ms": "float",
    "incidence_deg": "float",
    "incidence_source": "str",
    "nesz_db": "float",
    "margin_db": "float",
    "elongation": "float",
    "complexity": "float",
    "width_m": "float",
    "dist_edge_km": "float",
    "dist_land_km": "float",
    "lookalike_score": "float",
    "lookalike_reasons": "str",
}
"""Attributes added to every slick polygon (GeoPackage field types)."""


def add_evidence(slicks: list[dict], reader: Optional[GridReader], info: SceneInfo, grid: Grid, mask_path: Path,
                 land: list[dict], mode: Optional[str], progress: Progress) -> None:
    """Fill ``FIELDS`` into each slick dict (geometry in the grid's CRS) in place.

    ``reader`` gives the scene's values on ``grid``: detection hands over the copy it staged while the tiles
    were predicted, the very pixels the model saw, because warping the scene a second time took 30 s of a full
    EW-size scene on a 2-core Xeon, more than its model's 27 s (measured). None (not read) for a stretched 8-bit
    scene, whose grey levels are no backscatter to average."""
    if not slicks:
        return
    outlines = [shape(s["geometry"]) for s in slicks]
    if info.value_scale == "uint8_stretched":  # stretched grey levels are no backscatter: nothing to average
        inside = ring = np.full(len(outlines), np.nan)
    else:
        inside, ring = _backscatter_means(reader, info, grid, mask_path, outlines, progress)
    edge = valid_outline(mask_path)[0]
    edge = edge.boundary if edge is not None else None
    land_union = unary_union([shape(g) for g in land]) if land else None
    mode = mode or scene_metadata(Path(info.path))["mode"]
    incidences, source = _incidence(info, grid, outlines, mode)
    calibrated = info.value_scale in CALIBRATED
    for slick, outline, mean_in, mean_out, incidence in zip(slicks, outlines, inside, ring, incidences):
        facts = _shape(outline)
        facts["dist_edge_km"] = round(outline.distance(edge) / 1000, 3) if edge is not None else None
        facts["dist_land_km"] = round(outline.distance(land_union) / 1000, 3) if land_union is not None else None
        facts["incidence_deg"] = None if incidence is None else round(incidence, 2)
        facts["incidence_source"] = source
        contrast = _db(mean_in / mean_out) if mean_in > 0 and mean_out > 0 else None
        facts["contrast_db"] = None if info.value_scale == "uint8_stretched" else contrast
        facts.update(slick_db=None, background_db=None, wind_ms=None, nesz_db=None, margin_db=None)
        if calibrated and contrast is not None:
            facts.update(slick_db=_db(mean_in), background_db=_db(mean_out), nesz_db=NOMINAL_NESZ_DB)
            facts["margin_db"] = round(facts["slick_db"] - NOMINAL_NESZ_DB, 2)
            if incidence is not None:
                facts["wind_ms"] = wind_speed(mean_out, incidence, info.polarisation)
        facts["lookalike_score"], facts["lookalike_reasons"] = score(facts, slick["area_km2"], calibrated, info.polarisation)
        slick.update(facts)


def score(facts: dict, area_km2: float, calibrated: bool, polarisation: Optional[str]) -> tuple[float, str]:
    """A 0..1 look-alike likelihood and the reasons for it, strongest first; the weights are rules of thumb."""
    reasons: list[tuple[float, str]] = []
    wind = facts.get("wind_ms")
    if wind is not None and wind < 2.0:
        reasons.append((0.5, "wind below 2 m/s: low-wind look-alike likely"))
    elif wind is not None and wind < 3.0:
        reasons.append((0.25, "wind below 3 m/s: low-wind look-alike possible"))
    elif wind is not None and wind > 12.0:
        reasons.append((0.2, "wind above 12 m/s: oil films rarely stay visible, check it"))
    margin = facts.get("margin_db")
    if margin is not None and margin < 3.0:
        reasons.append((0.3, f"only {margin:.1f} dB above the noise floor: unreliable"))
    contrast = facts.get("contrast_db")
    if contrast is not None and contrast > -1.0:
        reasons.append((0.2, f"weak contrast ({contrast:.1f} dB)"))
    if facts["elongation"] is not None and facts["elongation"] < 2.0 and area_km2 > 5.0:
        reasons.append((0.2, "large compact patch: the shape of a low-wind area"))
    if facts["complexity"] is not None and facts["complexity"] > 4.0:
        reasons.append((0.1, "convoluted outline: eddy or biogenic-film shape"))
    if facts.get("dist_edge_km") is not None and facts["dist_edge_km"] < 0.5:
        reasons.append((0.1, "at the scene edge or no-data: shape and contrast incomplete"))
    if facts.get("dist_land_km") is not None and facts["dist_land_km"] < 2.0:
        reasons.append((0.1, "within 2 km of land: wind shadow possible"))
    notes = []
    if not calibrated:
        notes.append("backscatter not calibrated: wind and noise margin unknown")
    elif wind is None and polarisation in ("HV", "VH"):
        notes.append("cross-polarised: no wind model")
    reasons.sort(key=lambda r: -r[0])
    total = float(min(1.0, sum(weight for weight, _ in reasons)))
    return round(total, 2), "; ".join([text for _, text in reasons] + notes)


def _db(value: float) -> float:
    return round(10.0 * math.log10(value), 2)


def _shape(outline: Polygon) -> dict:
    """Elongation (long/short side of the tightest rectangle), complexity (1 for a disc) and mean width."""
    corners = np.asarray(outline.minimum_rotated_rectangle.exterior.coords)
    sides = np.hypot(*np.diff(corners, axis=0).T)
    length, short = (float(sides.max()), float(sides.min())) if sides.size else (0.0, 0.0)
    area = outline.area
    return {
        "elongation": round(length / short, 2) if short > 0 else None,
        "complexity": round(outline.length / (2 * math.sqrt(math.pi * area)), 2) if area > 0 else None,
        "width_m": round(area / length, 1) if length > 0 else None,
    }


def _backscatter_means(reader: GridReader, info: SceneInfo, grid: Grid, mask_path: Path, outlines: list[Polygon],
                       progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Mean linear backscatter inside each slick and in its sea ring (other slicks and no-data excluded).

    Larger slicks are burnt first so a small one keeps its pixels; rings likewise, and a ring pixel that a
    slick of the mask covers never counts as sea.
    """
    n = len(outlines)
    sums_in, counts_in = np.zeros(n + 1), np.zeros(n + 1)
    sums_out, counts_out = np.zeros(n + 1), np.zeros(n + 1)
    order = sorted(range(n), key=lambda i: -outlines[i].area)
    # Buffering the pixel-traced outline itself costs GEOS ~25 ms a slick (its staircase of vertices); the outline
    # simplified by one pixel gives the same ring to within a pixel, 40 times faster.
    pixel = abs(grid.transform.a)
    rings = [outlines[i].simplify(pixel).buffer(RING_M) for i in range(n)]
    bounds = np.array([r.bounds for r in rings])
    outline_bounds = np.array([o.bounds for o in outlines])
    with rasterio.open(mask_path) as mask_ds:
        step = strip_rows(grid.width, _STRIP_ROWS)
        for row in range(0, grid.height, step):
            progress.check()
            height = min(step, grid.height - row)
            transform = grid.transform @ Affine.translation(0, row)
            top, bottom = transform.f, transform.f + transform.e * height
            hit = [i for i in order if bounds[i, 1] < top and bounds[i, 3] > bottom]
            if not hit:
                continue
            # Only the part the hit slicks and rings can cover is read and burnt, where each slick's pixels keep their
            # order and so their sums. The reader is detection's staged copy, already on the grid: any window of it
            # holds the same values (a reader warping through GCPs would move them a little from window to window).
            near = covering_window(transform, height, grid.width, np.vstack([bounds[hit], outline_bounds[hit]]))
            window = Window(near.col_off, row + near.row_off, near.width, near.height)
            transform = grid.transform @ Affine.translation(window.col_off, window.row_off)
            values = reader.read(window)
            mask = mask_ds.read(1, window=window)
            shape_ = (window.height, window.width)
            ids = rasterize(((outlines[i], i + 1) for i in hit), out_shape=shape_, transform=transform, dtype="int32")
            ring_ids = rasterize(((rings[i], i + 1) for i in hit), out_shape=shape_, transform=transform, dtype="int32")
            # Backscatter is converted only where it is summed: slick pixels in the slicks, sea pixels in the rings.
            for burnt, kind, sums, counts in ((ids, 1, sums_in, counts_in), (ring_ids, 0, sums_out, counts_out)):
                at = np.nonzero((burnt > 0) & (mask == kind))
                power = 10.0 ** (to_db(values[at], info.value_scale) / 10.0)
                counted = np.isfinite(power)
                which = burnt[at][counted]
                sums += np.bincount(which, weights=power[counted], minlength=n + 1)
                counts += np.bincount(which, minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums_in / counts_in)[1:], (sums_out / counts_out)[1:]


def _incidence(info: SceneInfo, grid: Grid, outlines: list[Polygon], mode: Optional[str]) -> tuple[list[Optional[float]], str]:
    """Per slick: from the GRD annotation's geolocation grid when the SAFE folder has it, else the mode's
    mid-swath value (flagged ``assumed``), else unknown."""
    grid_points = _annotation_grid(Path(info.path))
    if grid_points is not None:
        from scipy.interpolate import griddata

        centres = [transform_geom(grid.crs, "EPSG:4326", mapping(o.representative_point()))["coordinates"] for o in outlines]
        values = griddata(grid_points[:, :2], grid_points[:, 2], np.array(centres), method="linear")
        return [None if not np.isfinite(v) else float(v) for v in values], "annotation"
    if mode in NOMINAL_INCIDENCE:
        return [NOMINAL_INCIDENCE[mode]] * len(outlines), f"assumed {mode} mid-swath"
    return [None] * len(outlines), "unknown"


def _annotation_grid(scene: Path) -> Optional[np.ndarray]:
    """(lon, lat, incidence) of the geolocation grid in ``<SAFE>/annotation/<measurement name>.xml``."""
    xml = scene.parent.parent / "annotation" / (scene.stem + ".xml")
    if scene.parent.name != "measurement" or not xml.is_file():
        return None
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        return None
    points = [
        (float(p.findtext("longitude")), float(p.findtext("latitude")), float(p.findtext("incidenceAngle")))
        for p in root.iter("geolocationGridPoint")
        if re.fullmatch(r"-?[\d.]+", p.findtext("incidenceAngle") or "")
    ]
    return np.array(points) if len(points) >= 3 else None
