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
from rasterio.features import geometry_mask, shapes
from rasterio.windows import from_bounds
from shapely.geometry import mapping, shape

from .errors import OutputError
from .grid import Grid
from .progress import Progress

TMP_PREFIX = ".slickmapper-tmp-"
MASK_NODATA = 255
SLICK_FIELDS = {
    "area_km2": "float",
    "length_km": "float",
    "mean_prob": "float",
    "scene": "str",
    "model": "str",
    "created": "str",
}


class OutputSet:
    """A run's output files, staged in a hidden folder and moved into place together on success."""

    def __init__(self, out_dir: str | Path, names: dict[str, str], overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.final = {key: self.out_dir / name for key, name in names.items()}
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.stage = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.out_dir))
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


def polygonise(mask_path: Path, probability_path: Path, min_area_km2: float, progress: Progress) -> Iterable[dict]:
    """Slick polygons (value 1 of the mask) with area, length and mean probability, smallest dropped."""
    with rasterio.open(mask_path) as mask_ds, rasterio.open(probability_path) as prob_ds:
        pixel = abs(mask_ds.transform.a)
        for n, (geom, value) in enumerate(shapes(rasterio.band(mask_ds, 1), connectivity=8, transform=mask_ds.transform)):
            if n % 200 == 0:
                progress.check()
            if value != 1:
                continue
            poly = shape(geom)
            area_km2 = poly.area / 1e6
            if area_km2 < min_area_km2:
                continue
            poly = poly.simplify(pixel / 2, preserve_topology=True)
            rect = poly.minimum_rotated_rectangle
            corners = list(rect.exterior.coords)
            sides = [np.hypot(x1 - x0, y1 - y0) for (x0, y0), (x1, y1) in zip(corners, corners[1:])]
            yield {
                "geometry": mapping(poly),
                "area_km2": round(area_km2, 4),
                "length_km": round(max(sides, default=0.0) / 1000, 3),
                "mean_prob": round(_mean_inside(prob_ds, geom), 4),
            }


def _mean_inside(ds: rasterio.DatasetReader, geom: dict) -> float:
    bounds = shape(geom).bounds
    window = from_bounds(*bounds, transform=ds.transform).round_offsets().round_lengths()
    values = ds.read(1, window=window, boundless=True, fill_value=np.nan)
    inside = geometry_mask([geom], out_shape=values.shape, transform=ds.window_transform(window), invert=True)
    picked = values[inside & np.isfinite(values)]
    return float(picked.mean()) if picked.size else float("nan")


def write_slicks(path: Path, crs: str, slicks: Iterable[dict], scene: str, model: str) -> tuple[int, float]:
    """Write slick polygons to a GeoPackage layer ``slicks``; return (count, total area km2)."""
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    schema = {"geometry": "Polygon", "properties": SLICK_FIELDS}
    count, area = 0, 0.0
    with fiona.open(path, "w", driver="GPKG", layer="slicks", crs=crs, schema=schema) as dst:
        for slick in slicks:
            properties = {k: slick[k] for k in ("area_km2", "length_km", "mean_prob")}
            properties.update(scene=scene, model=model, created=created)
            dst.write({"geometry": slick["geometry"], "properties": properties})
            count += 1
            area += slick["area_km2"]
    return count, area

