"""GDAL's block cache, bounded for everything the engine reads and writes.

GDAL's default is 5 % of RAM (1.2 GB on a 24 GB machine), and it fills with every block read or written: a scene's
preview, its eq. 1 statistics, the staged rasters and the probability COG each left up to their whole decompressed
size in memory on an EW-size scene. Every pass of the engine reads and writes in strips and blocks, so the cache need
only hold a row of blocks (measured on the width page, docs/benchmarks_amd_width.md).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import rasterio

GDAL_CACHE_BYTES = 32 * 2**20
"""At 256 MB a detection's staged rasters filled the cache on wide scenes (806 MB peak on a 32,768-px-wide scene
against 560 MB at 32 MB, tracing 0.3 s slower there; measured). In bytes, because rasterio takes GDAL_CACHEMAX=256 as
256 bytes, which made tracing polygons 6x slower (measured)."""


def bound_for_process() -> None:
    """Bound the cache for an engine process (``python -m engine``), before any raster is opened: GDAL reads
    GDAL_CACHEMAX when it first caches a block."""
    os.environ["GDAL_CACHEMAX"] = str(GDAL_CACHE_BYTES)


def bounded_cache() -> rasterio.Env:
    """The same bound within a ``with`` block, where GDAL may have cached blocks already: a detection run inside
    another process (the benchmarks, the tests) holds what it holds in the engine's own. rasterio is imported here, so
    that the engine's commands that read no raster do not load it."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)
