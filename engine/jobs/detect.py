"""Slick detection on a whole scene: read on the analysis grid, stretch, tile, predict, blend, write.

Memory stays flat whatever the scene's height: one strip of tile rows is read, predicted and blended at
a time, and finished rows go straight to disk. Everything is staged and moved into place only when the
run succeeds, so a failure or Cancel leaves the output folder as it was.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from fiona.transform import transform_geom
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..archive.evidence import FIELDS as EVIDENCE_FIELDS, add_evidence
from ..contract import DEFAULT_MIN_AREA_KM2, DEFAULT_OVERLAP, detection_files
from ..errors import InputError, ResourceError
from ..models import runtimes
from ..models.inference import Predictor, device_name
from ..models.registry import DEFAULT_MODEL, load_model, read_card, weights_for
from ..progress import Progress, silent
from ..scenes import landmask
from ..scenes.analysis import assess, open_for_analysis
from ..scenes.block_cache import bounded_cache
from ..scenes.grid import Grid, GridReader
from ..scenes.landmask import Exclusion
from ..scenes.normalise import Stretch
from ..scenes.prefetch import prefetch
from ..scenes.read_errors import check_unchanged, stamp
from ..scenes.tiling import Panel, StripBlender, count_tiles, panels, tile_starts
from .outputs import MASK_NODATA, OutputSet, polygonise, raster_profile, to_cog, write_slicks


@dataclass
class DetectOptions:
    """Everything a detection run can be told; the CLI, the plugin and the benchmarks fill one in."""

    model: Optional[str] = None
    tile: Optional[int] = None
    overlap: int = DEFAULT_OVERLAP
    threshold: Optional[float] = None
    """None: the model's own for this scene (``ModelCard.threshold_for``)."""
    device: str = "auto"
    band: Optional[str] = None
    bounds: Optional[tuple[float, float, float, float]] = None
    bounds_crs: Optional[str] = None
    prefix: Optional[str] = None
    min_area_km2: Optional[float] = None
    """None: the model's own (``ModelCard.min_area_km2``); 0 keeps every patch."""
    land_mask: Optional[str] = landmask.DEFAULT
    """``default`` (GSHHG coastline), ``none``, or the analyst's polygon file or land raster."""
    land_buffer: int = landmask.DEFAULT_LAND_BUFFER_PX
    nodata_buffer: int = landmask.DEFAULT_NODATA_BUFFER_PX
    source_grid: bool = False
    overwrite: bool = False
    tta: bool = True
    """Average each tile's probability over its mirror images: four times the model's work, and on by default
    because leave one scene out over the real Arctic scenes measured it better for the bundled model (slick
    Dice 0.385 -> 0.414 over four seeds, every seed better, less false slick area; docs/benchmark_tta.md).
    Models that are mirror-symmetric by construction (``ModelCard.mirror_symmetric``) run once."""
    rotations: bool = False
    """With ``tta``, also average over the tile's rotations by 90 degrees (eight views, twice mirror averaging's work).
    Off by default: leave one scene out measured 0.427 against 0.448 for mirrors alone (docs/benchmark_rotations_bce1.md)."""
    half_turn: bool = False
    """With ``tta`` (and without ``rotations``), average over the tile and its half turn only: two views, half mirror
    averaging's work. Off by default: leave one scene out measured 0.436 against 0.452 for the four views, and 0.406 for
    one (docs/benchmark_half_turn.md)."""
    fast: bool = True
    runtime: str = field(default_factory=runtimes.default_runtime)
    """``auto`` (the fastest measured here whose masks agree with PyTorch fp32), or one of ``runtimes.RUNTIMES``;
    ``$SLICK_MAPPER_RUNTIME`` sets the default."""


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
    """Tiles never predicted: all no data, all land (or coast or no-data border), or outside the extent."""
    device: str
    model_name: str
    runtime: str
    """What ran the model: runtime and precision, e.g. ``openvino fp32``."""
    mirrored: bool
    """Whether each tile was averaged over its mirror images (``DetectOptions.tta``)."""
    rotated: bool
    """Whether that average also held the tile's rotations by 90 degrees (``DetectOptions.rotations``)."""
    half_turn: bool
    """Whether that average held the tile and its half turn only (``DetectOptions.half_turn``)."""
    grid: str
    threshold: float
    """The one the mask and polygons were cut at: the option's, else the model's for this scene."""
    threshold_from: str = "the model's"
    """Where ``threshold`` comes from: ``given``, ``the model's``, or ``calibrated on labels of this scene``."""
    min_area_km2: float = DEFAULT_MIN_AREA_KM2
    """The smallest slick kept (the option's, else the model's): said with the count, since a stored setting shapes it."""
    weights_from: str = ""
    """Empty when the chosen model's weights detected; else whose did, and why (``registry.weights_for``)."""
    warnings: list[str] = field(default_factory=list)
    tiles_skipped_by: dict[str, int] = field(default_factory=dict)
    masked: str = ""
    """What was left out: the land mask and its buffer, the no-data border band."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Where ``seconds`` went, in stages that add up to it: ``before_tiles`` (the model's runtime, the scene's
    checks, grid and eq. 1 statistics), ``model`` (inside the network's runtime), ``tiles_outside_model`` (reading,
    warping, stretching, blending and staging while the tiles ran), ``tracing``, ``evidence``, ``writing`` (the
    GeoPackage, and the COGs still being written) and ``finishing``: what the pipeline benchmark splits its overhead by."""

    def to_dict(self) -> dict:
        return asdict(self)


def detect(scene: str | Path, out_dir: str | Path, options: DetectOptions, progress: Progress | None = None) -> DetectResult:
    """Detect slicks in ``scene`` and write probability, mask and polygons into ``out_dir``."""
    with bounded_cache():
        return _detect(scene, out_dir, options, progress)


def _detect(scene: str | Path, out_dir: str | Path, options: DetectOptions, progress: Progress | None) -> DetectResult:
    progress = progress or silent()
    started = time.monotonic()
    scene = Path(scene)
    _check_options(options)
    before = stamp(scene)
    device = device_name(options.device)
    model_path, weights_from = weights_for(options.model or DEFAULT_MODEL, scene)
    card = read_card(model_path)
    info = assess(scene, card, options.band)
    warnings = list(info.warnings)
    threshold, threshold_from = card.threshold_for(scene) if options.threshold is None else (options.threshold, "given")
    min_area_km2 = card.min_area_km2 if options.min_area_km2 is None else options.min_area_km2
    tile = options.tile or card.tile_size
    if tile % 32 or not 64 <= tile <= 2048:
        raise InputError(f"Tile size {tile} is not usable.", "Use a multiple of 32 between 64 and 2048, e.g. 256 or 512.")
    if options.overlap >= tile // 2:
        raise InputError(f"Overlap {options.overlap} is too large for {tile}-pixel tiles.", f"Use less than {tile // 2}.")
    if options.fast:
        predictor, notes = runtimes.make_predictor(model_path, device, options.runtime, progress=progress)
        warnings += notes
    else:
        predictor = Predictor(load_model(model_path, device)[0], card, device, fast=False)
    predictor.tta = options.tta and not card.mirror_symmetric
    predictor.rotations = options.rotations and predictor.tta
    predictor.half_turn = options.half_turn and predictor.tta and not predictor.rotations
    prefix = options.prefix or scene.stem
    names = detection_files(prefix)

    with open_for_analysis(scene, card, options.band, options.bounds, options.bounds_crs, progress, info) as opened:
        ds, grid = opened.dataset, opened.grid
        layout = panels(grid.width, tile, options.overlap, _panel_width(grid, tile, options.overlap))
        stretch = opened.stretch
        exclusion = Exclusion(landmask.open_land_mask(options.land_mask), options.land_buffer, options.nodata_buffer)
        if options.source_grid and ds.crs is None:
            raise InputError(
                "--source-grid needs a scene with a geotransform; this one is in radar geometry (GCPs only).",
                "Use the analysis grid (the default), which is the scene geocoded to its UTM zone.",
            )
        scene_pixels = {"crs": ds.crs, "transform": ds.transform, "width": ds.width, "height": ds.height} if options.source_grid else None
        with OutputSet(out_dir, names, options.overwrite) as outputs:
            staged_prob = outputs.stage / "analysis_probability.tif"
            staged_mask = outputs.stage / "analysis_mask.tif"
            # Stretched grey levels are no backscatter: the evidence averages none, so none is staged for it.
            staged_backscatter = None if info.value_scale == "uint8_stretched" else outputs.stage / "analysis_backscatter.tif"
            marks = {"before_tiles": time.monotonic()}
            n_tiles, skipped, model_seconds = _predict_to_files(opened.reader, grid, layout, stretch, predictor, tile, options, threshold,
                                                                exclusion, (staged_prob, staged_mask, staged_backscatter), progress)
            marks["tiles"] = time.monotonic()
            # The COGs are made from the staged rasters while the slicks are traced and weighed: GDAL works outside
            # the GIL, on the core that single-threaded tracing leaves idle; the mask's once tracing has dropped the
            # slicks too small to keep from it. GDAL's copy cannot be interrupted, so a Cancel meanwhile waits for it,
            # as it did when the copy came last.
            with ThreadPoolExecutor(1, thread_name_prefix="slick-mapper-cog") as pool:
                cogs = [pool.submit(_write_cog, staged_prob, outputs.path("probability"), Resampling.bilinear, scene_pixels)]
                progress.update("polygons", 0, 1, "Tracing slick outlines")
                slicks = polygonise(staged_mask, staged_prob, min_area_km2, progress)
                marks["tracing"] = time.monotonic()
                cogs.append(pool.submit(_write_cog, staged_mask, outputs.path("mask"), Resampling.nearest, scene_pixels))
                progress.update("evidence", 0, 1, "Weighing look-alike evidence")
                land = landmask.land_polygons(exclusion.land, grid.crs, grid.transform, (grid.height, grid.width)) if slicks else []
                with ExitStack() as stack:
                    backscatter = GridReader(stack.enter_context(rasterio.open(staged_backscatter)), 1) if staged_backscatter else None
                    add_evidence(slicks, backscatter, info, grid, staged_mask, land, None, progress)
                marks["evidence"] = time.monotonic()
                n_slicks, area = write_slicks(outputs.path("slicks"), grid.crs, slicks, scene.name, card.name, EVIDENCE_FIELDS)
                progress.update("writing", 0, 1, "Writing Cloud-Optimised GeoTIFFs")
                for cog in cogs:
                    cog.result()
            marks["writing"] = time.monotonic()
            check_unchanged(scene, before)
            paths = outputs.commit()
    progress.update("done", 1, 1)
    finished = time.monotonic()
    stages = dict(zip(marks, np.diff([started, *marks.values()])), finishing=finished - marks["writing"])
    stages["tiles_outside_model"] = stages.pop("tiles") - model_seconds
    return DetectResult(
        probability=paths["probability"],
        mask=paths["mask"],
        slicks=paths["slicks"],
        n_slicks=n_slicks,
        total_area_km2=round(area, 4),
        seconds=round(finished - started, 2),
        stage_seconds={name: round(float(value), 3) for name, value in {**stages, "model": model_seconds}.items()},
        tiles=n_tiles,
        tiles_skipped=sum(skipped.values()),
        tiles_skipped_by=skipped,
        masked=exclusion.description,
        device=str(device),
        model_name=card.name,
        runtime=predictor.runtime,
        mirrored=predictor.tta,
        rotated=predictor.rotations,
        half_turn=predictor.half_turn,
        grid=grid.describe(),
        threshold=threshold,
        threshold_from=threshold_from,
        min_area_km2=min_area_km2,
        weights_from=weights_from,
        warnings=warnings,
    )


def _check_options(options: DetectOptions) -> None:
    if options.threshold is not None and not 0 < options.threshold < 1:
        raise InputError(f"Threshold {options.threshold} is outside (0, 1).", "Use a probability such as 0.5.")
    if options.overlap < 0:
        raise InputError("Overlap cannot be negative.", "Use 0 or more pixels, e.g. 64.")
    if options.land_buffer < 0 or options.nodata_buffer < 0:
        raise InputError("Buffers cannot be negative.", "Use 0 or more pixels, e.g. 8.")
    if options.min_area_km2 is not None and options.min_area_km2 < 0:
        raise InputError("The minimum slick area cannot be negative.", "Use 0 to keep every slick.")


_STRIP_BYTES_PER_PIXEL = 70
"""Memory of the tile stage per pixel of a strip (tile rows by the panel's width): the strips read ahead, the one
being predicted, its masks and backscatter and the blender's sums. Measured on this project's 2-core EPYC: 1.25 GB
on a 17,521-px-wide EW-size scene in 1,024-px tiles, above what detection held before its first tile."""

_STRIP_BUDGET = 256 * 2**20
"""What the tile stage may hold: a scene whose strips would need more is detected in panels of tile columns, so
the strips stay flat in the scene's width as in its height. About 7,300 px in 512-px tiles: narrower scenes run as
one panel. A scene warped onto the grid is resampled window by window (GDAL's warper places each window's pixels
within 1/8 px), so its panels, like its strips, move a few pixels' values; one on the grid maps as in one panel."""


def _panel_width(grid: Grid, tile: int, overlap: int) -> Optional[int]:
    """The widest panel the tile stage may hold, None where the whole width fits; refuse what this machine cannot
    hold even in the narrowest panel."""
    per_column = _STRIP_BYTES_PER_PIXEL * tile
    available = _available_memory()
    budget = min(_STRIP_BUDGET, 0.5 * available)
    if per_column * max(grid.width, tile) <= budget:
        return None
    narrowest = panels(grid.width, tile, overlap, 0)[0].width
    if per_column * narrowest > 0.5 * available:
        raise ResourceError(
            f"A {narrowest}-pixel-wide strip needs about {per_column * narrowest / 2**30:.1f} GiB; {available / 2**30:.1f} GiB is free.",
            "Close other programs, or use a smaller tile size.",
        )
    return int(budget // per_column)


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


@dataclass
class _Strip:
    """One strip of tile rows, read, stretched and masked ahead of the model."""

    panel: int
    index: int
    """Its tile row."""
    backscatter: np.ndarray
    """The scene's values on the grid (NaN = no data), kept for the look-alike evidence."""
    stretched: np.ndarray
    valid: np.ndarray
    """Pixels with backscatter inside the requested extent."""
    usable: np.ndarray
    """Valid pixels that are neither on land (with its buffer) nor near a no-data border: the only ones
    that can become slicks."""
    in_extent: Optional[np.ndarray]


def _extent_shape(options: DetectOptions, grid: Grid) -> Optional[dict]:
    """The requested extent as a polygon in the grid's CRS when it is not the grid's own rectangle.

    An extent given in another CRS (a QGIS map view in Web Mercator) is a quadrilateral on the UTM grid;
    the grid is its bounding box, and tiles in the corners outside it are not what was asked for.
    """
    if options.bounds is None or not options.bounds_crs or CRS.from_user_input(options.bounds_crs) == CRS.from_user_input(grid.crs):
        return None
    outline = shapely.segmentize(shapely.box(*options.bounds), max(options.bounds[2] - options.bounds[0], options.bounds[3] - options.bounds[1]) / 50)
    return transform_geom(options.bounds_crs, grid.crs, shapely.geometry.mapping(outline))


def _strips(reader, grid: Grid, layout: list[Panel], stretch: Stretch, tile: int, overlap: int, exclusion: Exclusion,
            extent: Optional[dict]) -> Iterator[_Strip]:
    """Every panel's strips, top to bottom, panel after panel; read with ``exclusion.margin`` extra rows, and extra
    columns where a panel has a neighbour, so buffers cross strip and panel borders."""
    m = exclusion.margin
    for p, panel in enumerate(layout):
        left = m if panel.x0 > 0 else 0
        right = m if panel.x0 + panel.width < grid.width else 0
        cols = np.arange(panel.x0 - left, panel.x0 + panel.width + right)
        for index, top in enumerate(tile_starts(grid.height, tile, overlap)):
            raw = reader.read(Window(panel.x0 - left, top - m, cols.size, tile + 2 * m))
            rows = np.arange(top - m, top + tile + m)
            inside = ((rows >= 0) & (rows < grid.height))[:, None] & (cols < grid.width)[None, :]
            at = grid.transform @ Affine.translation(panel.x0 - left, top - m)
            on_land, near_nodata = (mask[:, left : left + panel.width] for mask in exclusion.excluded(grid.crs, at, ~np.isfinite(raw), inside))
            backscatter = raw[m : m + tile, left : left + panel.width]
            stretched = stretch.apply(backscatter)
            valid = stretched > 0
            in_extent = None
            if extent is not None:  # outside pixels stay model input (context), never output
                in_extent = rasterize([extent], out_shape=valid.shape, transform=grid.transform @ Affine.translation(panel.x0, top)).astype(bool)
                valid &= in_extent
            yield _Strip(p, index, backscatter, stretched, valid, valid & ~on_land & ~near_nodata, in_extent)


def _predict_to_files(
    reader,
    grid: Grid,
    layout: list[Panel],
    stretch: Stretch,
    predictor: Predictor,
    tile: int,
    options: DetectOptions,
    threshold: float,
    exclusion: Exclusion,
    staged: tuple[Path, Path, Optional[Path]],
    progress: Progress,
) -> tuple[int, dict[str, int], float]:
    """Predict every tile with something usable in it into the staged probability, mask and (unless its path
    is None) backscatter rasters, panel by panel of ``layout``; return (tiles predicted, tiles skipped by reason,
    seconds inside the model)."""
    prob_path, mask_path, backscatter_path = staged
    blender: Optional[StripBlender] = None
    total = count_tiles(grid.height, grid.width, tile, options.overlap)
    extent = _extent_shape(options, grid)
    done, model_seconds = 0, 0.0
    skipped = {"no_data": 0, "land_or_border": 0, "outside_extent": 0}

    def flush(pending: list[tuple[int, np.ndarray]]) -> None:
        nonlocal done, model_seconds
        started = time.perf_counter()
        predictions = predictor(np.stack([cut for _, cut in pending]))
        model_seconds += time.perf_counter() - started
        for (col, _), prediction in zip(pending, predictions):
            blender.add(col, prediction)
        done += len(pending)

    with rasterio.open(prob_path, "w", **raster_profile(grid, "float32", float("nan"))) as prob_dst, \
            rasterio.open(mask_path, "w", **raster_profile(grid, "uint8", MASK_NODATA)) as mask_dst, ExitStack() as stack:
        backscatter_dst = stack.enter_context(rasterio.open(backscatter_path, "w", **raster_profile(grid, "float32", float("nan")))) \
            if backscatter_path else None
        for strip in prefetch(lambda: _strips(reader, grid, layout, stretch, tile, options.overlap, exclusion, extent)):
            if strip.index == 0:  # a new panel, which finishes the columns the one before shares with it
                blender = StripBlender(grid.height, grid.width, tile, options.overlap, layout[strip.panel],
                                       blender.seam_out if blender else None)
            pending: list[tuple[int, np.ndarray]] = []
            for col in blender.rows[strip.index].cols:
                if not strip.usable[:, col : col + tile].any():  # nothing that could be a slick: never predicted
                    skipped[_skip_reason(strip, col, tile)] += 1
                    done += 1
                    continue
                pending.append((col, strip.stretched[:, col : col + tile]))
                if len(pending) == predictor.batch_size:
                    flush(pending)
                    pending = []
                    progress.update("tiles", done, total, f"Tile {done} of {total}")
            if pending:
                flush(pending)
            progress.update("tiles", done, total, f"Tile {done} of {total}")
            top, probability = blender.finish_row(strip.index)
            n, own = probability.shape
            valid, usable = strip.valid[:n, :own], strip.usable[:n, :own]
            probability[valid & ~usable] = 0.0
            probability[~valid] = np.nan
            window = Window(layout[strip.panel].x0, top, own, n)
            prob_dst.write(probability, 1, window=window)
            mask = np.where(valid, (probability > threshold).astype(np.uint8), MASK_NODATA).astype(np.uint8)
            mask_dst.write(mask, 1, window=window)
            if backscatter_dst:
                backscatter_dst.write(strip.backscatter[:n, :own], 1, window=window)
    return total - sum(skipped.values()), skipped, model_seconds


def _skip_reason(strip: _Strip, col: int, tile: int) -> str:
    if strip.valid[:, col : col + tile].any():
        return "land_or_border"
    if strip.in_extent is not None and not strip.in_extent[:, col : col + tile].any():
        return "outside_extent"
    return "no_data"


def _write_cog(staged: Path, cog: Path, resampling: Resampling, scene_pixels: Optional[dict]) -> None:
    """The staged analysis-grid raster as its output COG; with ``scene_pixels`` (the scene's crs, transform, width and
    height) warped back onto the scene's own pixels on the way, block by block through a warped VRT, so memory stays
    flat in scene size: warping into one whole-scene array peaked at 1.4 GB on a 12,000-px scene, this at 0.45 GB."""
    with rasterio.open(staged) as src, ExitStack() as stack:
        source = src if scene_pixels is None else stack.enter_context(
            WarpedVRT(src, resampling=resampling, nodata=src.nodata, **scene_pixels))
        to_cog(source, cog)
