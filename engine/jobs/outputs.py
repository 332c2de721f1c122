"""Writing detection results so that a failed or cancelled run leaves nothing behind.

Every file of a run is written into a hidden folder beside its final place and moved in only when the
whole run succeeded (``OutputSet``). The probability raster ends as a Cloud-Optimised GeoTIFF; slicks are
polygonised by GDAL straight from the mask file (streaming, so memory stays flat) and written to a
GeoPackage with their area, length and mean probability.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Iterable, Optional

import fiona
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.features import rasterize, shapes
from rasterio.windows import Window
from shapely.geometry import Polygon, mapping, shape

from ..contract import SLICK_FIELDS, SLICKS_LAYER, STAGING_PREFIX
from ..errors import OutputError
from ..progress import Progress
from ..scenes.grid import Grid

MASK_NODATA = 255
_STRIP_ROWS = 1024


class OutputSet:
    """A run's output files, staged in a hidden folder and moved into place together on success."""

    def __init__(self, out_dir: str | Path, names: dict[str, str], overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.final = {key: self.out_dir / name for key, name in names.items()}
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out_dir))
        except OSError as exc:
            raise OutputError(f"Cannot write to the output folder {self.out_dir} ({exc.strerror}).", "Choose a folder you can write to.") from exc
        existing = [p.name for p in self.final.values() if p.exists()]
        if existing and not overwrite:
            self.discard()
            raise OutputError(
                f"{', '.join(existing)} already exist in {self.out_dir}; nothing was overwritten.",
                "Give another --prefix or output folder, or pass --overwrite.",
            )

    def path(self, key: str) -> Path:
        """Where to write ``key`` while the run is in progress."""
        return self.stage / self.final[key].name

    def commit(self) -> dict[str, str]:
        for key, final in self.final.items():
            os.replace(self.path(key), final)
        self.discard()
        return {key: str(p) for key, p in self.final.items()}

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, kind: Optional[type], value: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if kind is not None:
            self.discard()


def raster_profile(grid: Grid, dtype: str, nodata: float) -> dict:
    """Tiled, compressed GeoTIFF on the analysis grid; 64-row blocks let strips flush without re-reads."""
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 64,
        "compress": "deflate",
        "predictor": 3 if dtype == "float32" else 2,
        "BIGTIFF": "IF_SAFER",
    }


def to_cog(src: Path, dst: Path) -> None:
    """Rewrite a tiled GeoTIFF as a COG (GDAL streams it; overviews make it quick to display in QGIS)."""
    rasterio.shutil.copy(str(src), str(dst), driver="COG", compress="DEFLATE", overview_resampling="average")


def polygonise(mask_path: Path, probability_path: Path, min_area_km2: float, progress: Progress) -> list[dict]:
    """Slick polygons (value 1 of the mask) with area, length and mean probability, smallest dropped."""
    outlines = []
    with rasterio.open(mask_path) as mask_ds:
        pixel = abs(mask_ds.transform.a)
        band = rasterio.band(mask_ds, 1)
        # The band is its own mask: water (0) is never traced, so GDAL walks only slick and nodata pixels
        # instead of building one huge sea polygon with a hole per slick.
        for n, (geom, value) in enumerate(shapes(band, mask=band, connectivity=8, transform=mask_ds.transform)):
            if n % 500 == 0:
                progress.check()
            if value == 1 and shape(geom).area / 1e6 >= min_area_km2:
                outlines.append(geom)
    means = _mean_inside(mask_path, probability_path, outlines, progress)
    slicks = []
    for geom, mean in zip(outlines, means):
        poly = shape(geom)
        area_km2 = poly.area / 1e6
        poly = poly.simplify(pixel / 2, preserve_topology=True)
        corners = list(poly.minimum_rotated_rectangle.exterior.coords)
        sides = [np.hypot(x1 - x0, y1 - y0) for (x0, y0), (x1, y1) in zip(corners, corners[1:])]
        slicks.append({
            "geometry": mapping(poly),
            "area_km2": round(area_km2, 4),
            "length_km": round(max(sides, default=0.0) / 1000, 3),
            "mean_prob": round(float(mean), 4),
        })
    return slicks


def _mean_inside(mask_path: Path, probability_path: Path, outlines: list[dict], progress: Progress) -> np.ndarray:
    """Mean probability of the slick pixels of each outline, in one pass over the rasters by strips.

    Only exterior rings are burnt, largest first, so a slick lying in a hole of a larger one keeps its
    own id, and the mask picks the slick pixels: exact, and cheap even when a noisy model leaves one
    outline with thousands of holes (GDAL's scan-line fill is slow on those).
    """
    sums = np.zeros(len(outlines) + 1)
    counts = np.zeros(len(outlines) + 1)
    if not outlines:
        return sums[1:]
    exteriors = [Polygon(shape(g).exterior) for g in outlines]
    order = sorted(range(len(outlines)), key=lambda i: -exteriors[i].area)
    bounds = np.array([p.bounds for p in exteriors])  # minx, miny, maxx, maxy
    with rasterio.open(mask_path) as mask_ds, rasterio.open(probability_path) as prob_ds:
        for row in range(0, mask_ds.height, _STRIP_ROWS):
            progress.check()
            window = Window(0, row, mask_ds.width, min(_STRIP_ROWS, mask_ds.height - row))
            transform = mask_ds.window_transform(window)
            top, bottom = transform.f, transform.f + transform.e * window.height
            hit = [i for i in order if bounds[i, 1] < top and bounds[i, 3] > bottom]
            if not hit:
                continue
            ids = rasterize(((exteriors[i], i + 1) for i in hit), out_shape=(window.height, window.width),
                            transform=transform, dtype="int32")
            values = prob_ds.read(1, window=window)
            inside = (ids > 0) & (mask_ds.read(1, window=window) == 1) & np.isfinite(values)
            sums += np.bincount(ids[inside], weights=values[inside], minlength=sums.size)
            counts += np.bincount(ids[inside], minlength=counts.size)
    with np.errstate(invalid="ignore"):
        return (sums / counts)[1:]


def write_slicks(path: Path, crs: str, slicks: Iterable[dict], scene: str, model: str) -> tuple[int, float]:
    """Write slick polygons to a GeoPackage layer ``slicks``; return (count, total area km2)."""
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    schema = {"geometry": "Polygon", "properties": SLICK_FIELDS}
    count, area = 0, 0.0
    with fiona.open(path, "w", driver="GPKG", layer=SLICKS_LAYER, crs=crs, schema=schema) as dst:
        for slick in slicks:
            properties = {k: slick[k] for k in ("area_km2", "length_km", "mean_prob")}
            properties.update(scene=scene, model=model, created=created)
            dst.write({"geometry": slick["geometry"], "properties": properties})
            count += 1
            area += slick["area_km2"]
    return count, area

