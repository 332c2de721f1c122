"""The analysis grid: the scene's UTM zone at the model's pixel size, and reading onto it.

The paper reprojects every scene to its UTM zone and resamples bilinearly to 10 or 25 m so that slicks
have the same size in pixels as during training. A scene already on such a grid is read directly; any
other goes through a GDAL warped VRT, read window by window, so no scene is ever loaded whole.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, reproject, transform_bounds
from rasterio.windows import Window

from ..errors import InputError
from .read_errors import reading


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid in a projected CRS."""

    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def pixel_size(self) -> float:
        return abs(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform.c, self.transform.f
        return (left, top - self.height * self.pixel_size, left + self.width * self.pixel_size, top)

    def describe(self) -> str:
        return f"{self.width}x{self.height} @ {self.pixel_size:g} m {self.crs}"


def analysis_grid(
    ds: rasterio.DatasetReader,
    utm_crs: str,
    pixel_size: float,
    bounds: Optional[tuple[float, float, float, float]] = None,
    bounds_crs: Optional[str] = None,
) -> Grid:
    """The grid detection runs on; with ``bounds``, the part of it inside them, on the same pixel lattice.

    Cutting the extent from the full grid (rather than building a new one) keeps a canvas-extent run's
    pixels exactly on the whole-scene run's pixels, so the two can be compared or mosaicked.
    """
    with reading(ds.name):  # a damaged georeference fails here, in PROJ
        full = _full_grid(ds, utm_crs, pixel_size)
    if bounds is None:
        return full
    left, bottom, right, top = transform_bounds(bounds_crs or full.crs, full.crs, *bounds, densify_pts=21)
    g_left, g_bottom, g_right, g_top = full.bounds
    left, bottom, right, top = max(left, g_left), max(bottom, g_bottom), min(right, g_right), min(top, g_top)
    if right <= left or top <= bottom:
        raise InputError(
            "The requested extent does not overlap the scene.",
            "Zoom the map onto the scene, or run on the whole scene.",
        )
    col0 = math.floor((left - g_left) / full.pixel_size)
    col1 = math.ceil((right - g_left) / full.pixel_size)
    row0 = math.floor((g_top - top) / full.pixel_size)
    row1 = math.ceil((g_top - bottom) / full.pixel_size)
    transform = full.transform @ Affine.translation(col0, row0)
    return Grid(full.crs, transform, col1 - col0, row1 - row0)


def covering_window(transform: Affine, height: int, width: int, bounds: np.ndarray) -> Window:
    """The whole-pixel window of a north-up raster (``transform``, ``height`` x ``width``) that holds every pixel
    meeting any of ``bounds`` (rows of minx, miny, maxx, maxy), a pixel more on each side, clipped to the raster.

    Per-slick sums over a strip touch only this window: the slicks of a strip usually fill a small part of a
    scene's width, and the pixels outside it would only be read, converted and burnt to be left out.
    """
    size_x, size_y = transform.a, -transform.e
    col0 = max(0, math.floor((bounds[:, 0].min() - transform.c) / size_x) - 1)
    col1 = min(width, math.ceil((bounds[:, 2].max() - transform.c) / size_x) + 1)
    row0 = max(0, math.floor((transform.f - bounds[:, 3].max()) / size_y) - 1)
    row1 = min(height, math.ceil((transform.f - bounds[:, 1].min()) / size_y) + 1)
    return Window(col0, row0, max(0, col1 - col0), max(0, row1 - row0))


def _full_grid(ds: rasterio.DatasetReader, utm_crs: str, pixel_size: float) -> Grid:
    if ds.crs is not None and CRS.from_user_input(ds.crs) == CRS.from_user_input(utm_crs):
        left, bottom, right, top = ds.bounds
        width = max(1, round((right - left) / pixel_size))
        height = max(1, round((top - bottom) / pixel_size))
        return Grid(utm_crs, Affine(pixel_size, 0, left, 0, -pixel_size, top), width, height)
    gcps, gcp_crs = ds.gcps
    if ds.crs is None:
        transform, width, height = calculate_default_transform(
            gcp_crs, utm_crs, ds.width, ds.height, gcps=gcps, resolution=pixel_size
        )
    else:
        transform, width, height = calculate_default_transform(
            ds.crs, utm_crs, ds.width, ds.height, *ds.bounds, resolution=pixel_size
        )
    # Snap the origin to whole pixels of the UTM lattice so that grids of overlapping scenes line up.
    left = math.floor(transform.c / pixel_size) * pixel_size
    top = math.ceil(transform.f / pixel_size) * pixel_size
    return Grid(utm_crs, Affine(pixel_size, 0, left, 0, -pixel_size, top), width + 1, height + 1)


class GridReader:
    """Reads one band of a scene on the analysis grid, window by window, as float32 with NaN for no data.

    Every tile detection, fine-tuning and the generator's training see is read here, so a scene's failing
    block is reported here, once, as the scene's ``InputError``."""

    def __init__(self, source: rasterio.io.DatasetReaderBase, band: int, offset: tuple[int, int] = (0, 0), scene: str = "") -> None:
        self._source = source
        self._band = band
        self._scene = scene or source.name
        self._row0, self._col0 = offset
        self._nodata = source.nodata

    def read(self, window: Window) -> np.ndarray:
        """Read ``window`` of the grid; parts outside the source come back as NaN (warped VRTs are not boundless)."""
        row0, col0 = int(window.row_off) + self._row0, int(window.col_off) + self._col0
        height, width = int(window.height), int(window.width)
        values = np.zeros((height, width), dtype=np.float32)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1, c1 = min(row0 + height, self._source.height), min(col0 + width, self._source.width)
        if r1 > r0 and c1 > c0:
            inside = Window(c0, r0, c1 - c0, r1 - r0)
            with reading(self._scene):
                values[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = self._source.read(self._band, window=inside)
        invalid = ~np.isfinite(values) | (values == 0)
        if self._nodata is not None and np.isfinite(self._nodata):
            invalid |= values == self._nodata
        values[invalid] = np.nan
        return values


@contextmanager
def open_on_grid(ds: rasterio.DatasetReader, band: int, grid: Grid) -> Iterator[GridReader]:
    """A reader of ``band`` on ``grid``: the file itself when it already is on that lattice, else a warped VRT."""
    if ds.crs is not None and CRS.from_user_input(ds.crs) == CRS.from_user_input(grid.crs):
        same_pixels = (
            math.isclose(ds.transform.a, grid.transform.a)
            and math.isclose(ds.transform.e, grid.transform.e)
            and ds.transform.b == 0
            and ds.transform.d == 0
        )  # a rotated file (a or e of 0) is warped, never divided by
        if same_pixels:
            col = (grid.transform.c - ds.transform.c) / ds.transform.a
            row = (grid.transform.f - ds.transform.f) / ds.transform.e
            if abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6:
                yield GridReader(ds, band, (round(row), round(col)))
                return
    float_data = np.dtype(ds.dtypes[band - 1]).kind == "f"
    src_nodata = ds.nodata if ds.nodata is not None else (np.nan if float_data else 0)
    if ds.crs is None:
        yield GcpReader(ds, band, grid, src_nodata)
        return
    with WarpedVRT(
        ds,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling.bilinear,
        src_nodata=src_nodata,
        nodata=np.nan if float_data else 0,
        dtype="float32" if float_data else ds.dtypes[band - 1],
    ) as vrt:
        yield GridReader(vrt, band, scene=ds.name)


class GcpReader(GridReader):
    """Geocodes radar-geometry windows through the scene's GCPs, one window at a time.

    A warped VRT with a chosen output grid reads nothing but zeros from GCP-only files (rasterio 1.4), so
    each window is warped on its own with ``reproject``, which uses GDAL's GCP transformer.
    """

    def __init__(self, ds: rasterio.DatasetReader, band: int, grid: Grid, src_nodata: float) -> None:
        super().__init__(ds, band)
        self._grid = grid
        self._src_nodata = src_nodata

    def read(self, window: Window) -> np.ndarray:
        values = np.full((int(window.height), int(window.width)), np.nan, dtype=np.float32)
        gcps, gcp_crs = self._source.gcps
        with reading(self._scene):
            reproject(
                rasterio.band(self._source, self._band),
                values,
                gcps=gcps,
                src_crs=gcp_crs,
                src_nodata=self._src_nodata,
                dst_transform=self._grid.transform @ Affine.translation(window.col_off, window.row_off),
                dst_crs=self._grid.crs,
                dst_nodata=np.nan,
                resampling=Resampling.bilinear,
            )
        values[values == 0] = np.nan
        return values
