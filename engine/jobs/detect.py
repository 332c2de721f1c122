"""Slick detection on a whole scene: read on the analysis grid, stretch, tile, predict, blend, write.

Memory stays flat whatever the scene's height: one strip of tile rows is read, predicted and blended at
a time, and finished rows go straight to disk. Everything is staged and moved into place only when the
run succeeds, so a failure or Cancel leaves the output folder as it was.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import fiona
import numpy as np
import rasterio
from affine import Affine
from fiona.transform import transform_geom
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import reproject
from rasterio.windows import Window

from ..archive.evidence import FIELDS as EVIDENCE_FIELDS, add_evidence
from ..contract import OUTPUT_SUFFIXES
from ..errors import InputError, ResourceError
from ..models.inference import Predictor, pick_device
from ..models.registry import DEFAULT_MODEL, load_model
from ..progress import Progress, silent
from ..scenes.analysis import assess, open_for_analysis
from ..scenes.grid import Grid
from ..scenes.normalise import Stretch
from ..scenes.read_errors import check_unchanged, stamp
from ..scenes.tiling import StripBlender, count_tiles
from .outputs import MASK_NODATA, OutputSet, polygonise, raster_profile, to_cog, write_slicks

DEFAULT_OVERLAP = 64
_GDAL_CACHE_BYTES = 256 * 2**20
DEFAULT_MIN_AREA_KM2 = 0.05  # 80 pixels at 25 m: smaller dark specks are speckle, not slicks


@dataclass
class DetectOptions:
    """Everything a detection run can be told; the CLI, the plugin and the benchmarks fill one in."""

    model: Optional[str] = None
    tile: Optional[int] = None
    overlap: int = DEFAULT_OVERLAP
    threshold: Optional[float] = None
    """None: the model's own (``ModelCard.threshold``)."""
    device: str = "auto"
    band: Optional[str] = None
    bounds: Optional[tuple[float, float, float, float]] = None
    bounds_crs: Optional[str] = None
    prefix: Optional[str] = None
    min_area_km2: float = DEFAULT_MIN_AREA_KM2
    land_mask: Optional[str] = None
    source_grid: bool = False
    overwrite: bool = False
    fast: bool = True


@dataclass
class DetectResult:
    probability: str
    mask: str
    slicks: str
    n_slicks: int
    total_area_km2: float
    seconds: float
    tiles: int
    tiles_skipped: int
    device: str
    model_name: str
    grid: str
    threshold: float
    """The one the mask and polygons were cut at: the option's, else the model's."""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def detect(scene: str | Path, out_dir: str | Path, options: DetectOptions, progress: Progress | None = None) -> DetectResult:
    """Detect slicks in ``scene`` and write probability, mask and polygons into ``out_dir``."""
    progress = progress or silent()
    started = time.monotonic()
    scene = Path(scene)
    _check_options(options)
    before = stamp(scene)
    device = pick_device(options.device)
    model, card = load_model(options.model or DEFAULT_MODEL, device)
    info = assess(scene, card, options.band)
    threshold = card.threshold if options.threshold is None else options.threshold
    tile = options.tile or card.tile_size
    if tile % 32 or not 64 <= tile <= 2048:
        raise InputError(f"Tile size {tile} is not usable.", "Use a multiple of 32 between 64 and 2048, e.g. 256 or 512.")
    if options.overlap >= tile // 2:
        raise InputError(f"Overlap {options.overlap} is too large for {tile}-pixel tiles.", f"Use less than {tile // 2}.")
    predictor = Predictor(model, card, device, fast=options.fast)
    prefix = options.prefix or scene.stem
    names = {kind: f"{prefix}{suffix}" for kind, suffix in OUTPUT_SUFFIXES.items()}

    # GDAL's block cache is bounded so memory stays flat (its default is 5 % of RAM); in bytes, because
    # rasterio takes GDAL_CACHEMAX=256 as 256 bytes, which made tracing polygons 6x slower (measured).
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES), \
            open_for_analysis(scene, card, options.band, options.bounds, options.bounds_crs, progress, info) as opened:
        ds, grid = opened.dataset, opened.grid
        _check_memory(grid, tile)
        stretch = opened.stretch
        land = _land_shapes(options.land_mask, grid.crs)
        with OutputSet(out_dir, names, options.overwrite) as outputs:
            staged_prob = outputs.stage / "analysis_probability.tif"
            staged_mask = outputs.stage / "analysis_mask.tif"
            n_tiles, skipped = _predict_to_files(opened.reader, grid, stretch, predictor, tile, options, threshold, land,
                                                 staged_prob, staged_mask, progress)
            progress.update("polygons", 0, 1, "Tracing slick outlines")
            slicks = polygonise(staged_mask, staged_prob, options.min_area_km2, progress)
            progress.update("evidence", 0, 1, "Weighing look-alike evidence")
            add_evidence(slicks, ds, info, grid, staged_mask, land, None, progress)
            n_slicks, area = write_slicks(outputs.path("slicks"), grid.crs, slicks, scene.name, card.name, EVIDENCE_FIELDS)
            progress.update("writing", 0, 1, "Writing Cloud-Optimised GeoTIFFs")
            if options.source_grid:
                _to_source_grid(ds, staged_prob, staged_mask)
            to_cog(staged_prob, outputs.path("probability"))
            to_cog(staged_mask, outputs.path("mask"))
            staged_prob.unlink()
            staged_mask.unlink()
            check_unchanged(scene, before)
            paths = outputs.commit()
    progress.update("done", 1, 1)
    return DetectResult(
        probability=paths["probability"],
        mask=paths["mask"],
        slicks=paths["slicks"],
        n_slicks=n_slicks,
        total_area_km2=round(area, 4),
        seconds=round(time.monotonic() - started, 2),
        tiles=n_tiles,
        tiles_skipped=skipped,
        device=str(device),
        model_name=card.name,
        grid=grid.describe(),
        threshold=threshold,
        warnings=info.warnings,
    )


def _check_options(options: DetectOptions) -> None:
    if options.threshold is not None and not 0 < options.threshold < 1:
        raise InputError(f"Threshold {options.threshold} is outside (0, 1).", "Use a probability such as 0.5.")
    if options.overlap < 0:
        raise InputError("Overlap cannot be negative.", "Use 0 or more pixels, e.g. 64.")
    if options.min_area_km2 < 0:
        raise InputError("The minimum slick area cannot be negative.", "Use 0 to keep every slick.")


def _check_memory(grid: Grid, tile: int) -> None:
    """Memory grows with the scene's width only (a strip of float32 rows, about eight copies)."""
    needed = 8 * 4 * tile * max(grid.width, tile)
    available = _available_memory()
    if needed > 0.5 * available:
        raise ResourceError(
            f"A {grid.width}-pixel-wide strip needs about {needed / 2**30:.1f} GiB; {available / 2**30:.1f} GiB is free.",
            "Run on the map extent or a subset of the scene, or use a smaller tile size.",
        )


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo (Linux); elsewhere the free physical pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _land_shapes(path: Optional[str], crs: str) -> list[dict]:
    """Land polygons in the grid's CRS, from any vector file OGR reads."""
    if not path:
        return []
    if not Path(path).exists():
        raise InputError(f"Land mask file not found: {path}.", "Give a vector file of land polygons (GeoPackage, Shapefile...).")
    try:
        with fiona.open(path) as src:
            src_crs = src.crs
            return [transform_geom(src_crs, crs, f["geometry"]) for f in src if f["geometry"] is not None]
    except fiona.errors.FionaError as exc:
        raise InputError(f"Cannot read the land mask {path} ({exc}).", "Give a polygon vector file.") from exc


def _predict_to_files(
    reader,
    grid: Grid,
    stretch: Stretch,
    predictor: Predictor,
    tile: int,
    options: DetectOptions,
    threshold: float,
    land: list[dict],
    prob_path: Path,
    mask_path: Path,
    progress: Progress,
) -> tuple[int, int]:
    blender = StripBlender(grid.height, grid.width, tile, options.overlap)
    total = count_tiles(grid.height, grid.width, tile, options.overlap)
    done = skipped = 0
    with rasterio.open(prob_path, "w", **raster_profile(grid, "float32", float("nan"))) as prob_dst, \
            rasterio.open(mask_path, "w", **raster_profile(grid, "uint8", MASK_NODATA)) as mask_dst:
        for index, row in enumerate(blender.rows):
            raw = reader.read(Window(0, row.row, max(grid.width, tile), tile))
            stretched = stretch.apply(raw)
            if land:
                strip_transform = grid.transform @ Affine.translation(0, row.row)
                on_land = rasterize(land, out_shape=stretched.shape, transform=strip_transform).astype(bool)
                stretched[on_land] = 0
            pending: list[tuple[int, np.ndarray]] = []
            for col in row.cols:
                cut = stretched[:, col : col + tile]
                if not cut.any():  # nodata or land only: nothing to look at
                    skipped += 1
                    done += 1
                    continue
                pending.append((col, cut))
                if len(pending) == predictor.batch_size:
                    done += _flush(predictor, pending, blender)
                    pending = []
                    progress.update("tiles", done, total, f"Tile {done} of {total}")
            if pending:
                done += _flush(predictor, pending, blender)
            progress.update("tiles", done, total, f"Tile {done} of {total}")
            top, probability = blender.finish_row(index)
            valid = stretched[: probability.shape[0], : grid.width] > 0
            probability[~valid] = np.nan
            window = Window(0, top, grid.width, probability.shape[0])
            prob_dst.write(probability, 1, window=window)
            mask = np.where(valid, (probability > threshold).astype(np.uint8), MASK_NODATA).astype(np.uint8)
            mask_dst.write(mask, 1, window=window)
    return total - skipped, skipped


def _flush(predictor: Predictor, pending: list[tuple[int, np.ndarray]], blender: StripBlender) -> int:
    predictions = predictor(np.stack([cut for _, cut in pending]))
    for (col, _), prediction in zip(pending, predictions):
        blender.add(col, prediction)
    return len(pending)


def _to_source_grid(ds: rasterio.DatasetReader, prob_path: Path, mask_path: Path) -> None:
    """Warp the staged analysis-grid rasters back onto the scene's own pixels (bilinear / nearest)."""
    if ds.crs is None:
        raise InputError(
            "--source-grid needs a scene with a geotransform; this one is in radar geometry (GCPs only).",
            "Use the analysis grid (the default), which is the scene geocoded to its UTM zone.",
        )
    for path, resampling, dtype, nodata in (
        (prob_path, Resampling.bilinear, "float32", float("nan")),
        (mask_path, Resampling.nearest, "uint8", MASK_NODATA),
    ):
        with rasterio.open(path) as src:
            data = np.full((ds.height, ds.width), nodata, dtype=dtype)
            reproject(
                rasterio.band(src, 1), data, dst_transform=ds.transform, dst_crs=ds.crs,
                dst_nodata=nodata, resampling=resampling,
            )
            profile = src.profile
        profile.update(width=ds.width, height=ds.height, transform=ds.transform, crs=ds.crs)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
