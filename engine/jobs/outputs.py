"""Writing detection results so that a failed or cancelled run leaves nothing behind.

Every file of a run is written into a hidden folder beside its final place and moved in only when the
whole run succeeded (``OutputSet``). The probability raster ends as a Cloud-Optimised GeoTIFF; slicks are
polygonised by GDAL around the blocks of the mask file that hold slick pixels and written to a GeoPackage with
their area, length and mean probability.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType
from typing import IO, Iterable, Optional

import cv2
import fiona
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.features import rasterize, shapes
from rasterio.windows import Window
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import Polygon, mapping, shape

from ..atomic import move_in, new_stage, write_failure, writing
from ..contract import SLICK_FIELDS, SLICKS_LAYER, STAGING_PREFIX
from ..errors import OutputError, SlickMapperError
from ..locks import held, try_lock
from ..machine import utc_now
from ..progress import Progress
from ..scenes.grid import Grid, covering_window
from ..scenes.tiling import strip_rows

CLAIM = "claim"
WRITE_FAILURES = (OSError, RasterioError, CPLE_BaseError)
MASK_NODATA = 255


class OutputSet:
    """A run's output files, staged in a hidden folder and moved into place together on success.

    Two runs writing the same names into one folder are refused, not raced: each run holds a lock on a
    claim file in its staging folder naming its outputs, and a new run looks at the claims of the others
    under the folder's lock. A claim whose lock is free belongs to a run that was killed; its staging
    folder is removed then, so even a kill -9 leaves nothing behind for long.
    """

    def __init__(self, out_dir: str | Path, names: dict[str, str], overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.final = {key: self.out_dir / name for key, name in names.items()}
        self.overwrite = overwrite
        self._claim: Optional[IO[bytes]] = None
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot write to the output folder {self.out_dir} ({exc.strerror}).", "Choose a folder you can write to.") from exc
        with held(self.out_dir):
            self._check_others()
            self._check_free("already exist")
            self.stage = new_stage(self.out_dir, "Choose a folder you can write to.")
            try:
                self._claim = try_lock(self.stage / CLAIM)
                (self.stage / CLAIM).write_text("\n".join(sorted(names.values())))
            except BaseException:
                self.discard()
                raise

    def _check_others(self) -> None:
        """Refuse when a live run is writing any of our names here; remove what killed runs left."""
        ours = {p.name for p in self.final.values()}
        for stage in sorted(self.out_dir.glob(STAGING_PREFIX + "*")):
            claim = stage / CLAIM
            if not claim.is_file():
                continue  # not a detection's staging folder
            handle = try_lock(claim)
            if handle is not None:  # nobody holds it: that run was killed
                shutil.rmtree(stage, ignore_errors=True)
                handle.close()
                continue
            busy = ours.intersection(claim.read_text().split("\n"))
            if busy:
                raise OutputError(
                    f"Another run is writing {', '.join(sorted(busy))} into {self.out_dir} right now; nothing was started.",
                    "Wait for it to finish, or give another --prefix or output folder.",
                )

    def _check_free(self, why: str) -> None:
        existing = [p.name for p in self.final.values() if p.exists()]
        if existing and not self.overwrite:
            raise OutputError(
                f"{', '.join(existing)} {why} in {self.out_dir}; nothing was overwritten.",
                "Give another --prefix or output folder, or pass --overwrite.",
            )

    def path(self, key: str) -> Path:
        """Where to write ``key`` while the run is in progress."""
        return self.stage / self.final[key].name

    def commit(self) -> dict[str, str]:
        """Move every staged file into place, or none: a file that appeared meanwhile stops the move."""
        with held(self.out_dir):
            self._check_free("appeared while the run was writing")
            move_in(self.stage, self.out_dir, [final.name for final in self.final.values()])
        self.discard()
        return {key: str(p) for key, p in self.final.items()}

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
        if self._claim is not None:
            self._claim.close()
            self._claim = None

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, kind: Optional[type], value: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if kind is None:
            return
        self.discard()
        if isinstance(value, WRITE_FAILURES) and not isinstance(value, SlickMapperError):
            # What reads the scene raises InputError, so an I/O failure left here is the outputs' own.
            raise write_failure(self.out_dir, value) from value


def raster_profile(grid: Grid, dtype: str, nodata: float) -> dict:
    """The staged GeoTIFF a run writes strip by strip on the analysis grid; 64-row blocks let strips flush
    without re-reads. Zstandard at level 1 compresses these rasters about as well as deflate at a quarter of
    its time (measured): the staged file is scratch, and ``to_cog`` compresses the output once, with deflate.
    No predictor: on a float32 probability it took 0.27 of 0.30 CPU-s of writing 16.8 Mpx for 12 % less
    scratch (measured), and the no-data and land that make these rasters compressible compress without it."""
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
        "compress": "zstd",
        "zstd_level": 1,
        "BIGTIFF": "IF_SAFER",
    }


def to_cog(src: rasterio.io.DatasetReaderBase, dst: Path) -> None:
    """Copy an open raster (a staged tiled GeoTIFF, or a warped VRT of one) as a COG: GDAL streams it block by
    block, and its overviews make it quick to display in QGIS.

    Deflate, which every GIS reads. A float raster gets the floating-point predictor at level 1: a probability's
    mantissas barely compress, and on one of 16.8 Mpx this took 0.89 CPU-s for 72 MB against 1.18 for 81 MB at
    deflate's default level without it (measured); a uint8 mask compresses best and fastest at the default.
    GDAL compresses on every core: the copy comes after the last tile, beside single-threaded tracing, and on
    one thread a core sat idle once tracing was done (a few per cent of a scene's time, within run-to-run noise).
    GDAL computes the overviews into a temporary file first, LZW-compressed unless told otherwise: left
    uncompressed, the same 16.8-Mpx probability's COG took 0.82 s instead of 1.11 (1.44 CPU-s instead of 1.98),
    byte for byte the same file (measured)."""
    options = {"predictor": "YES", "level": 1} if np.dtype(src.dtypes[0]).kind == "f" else {}
    with writing(dst), rasterio.Env(COG_TMP_COMPRESSION="NONE"):
        rasterio.shutil.copy(src, str(dst), driver="COG", compress="DEFLATE", overview_resampling="average",
                             num_threads="ALL_CPUS", **options)


def polygonise(mask_path: Path, probability_path: Path, min_area_km2: float, progress: Progress) -> list[dict]:
    """Slick polygons (value 1 of the mask) with area, length and mean probability, those under ``min_area_km2``
    dropped, from the polygons and from the mask alike: the mask file is rewritten to hold only the slicks
    the polygons keep, so the raster an analyst opens, the outlines and every score agree on what a slick is."""
    with rasterio.open(mask_path) as mask_ds:
        pixel = abs(mask_ds.transform.a)
        # Outlines follow pixel edges, so a slick's area is its pixel count times a pixel's: counted, not measured,
        # the area filter is exact whichever way the slicks were found.
        fewest = int(np.ceil(round(min_area_km2 * 1e6 / (pixel * abs(mask_ds.transform.e)), 6)))
        groups = _slick_groups(mask_ds)
    if groups is None:
        outlines, means = _whole_band(mask_path, probability_path, fewest, progress)
    else:
        outlines, means = _by_groups(mask_path, probability_path, groups, fewest, progress)
    slicks = []
    for poly, mean in zip(outlines, means):
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


TRACE_BLOCK = 256
"""Side in pixels of the blocks the mask is looked at in before tracing. GDAL's polygoniser costs the same on every
pixel it walks, slick or not (0.54 s on a 37.7-Mpx mask with 0.04 % slick pixels on a 2-core Xeon), and each window
traced costs about 1 ms more. On an EW-size mask with specks all over it, when whole windows were traced, 64-px blocks
made 5,933 windows (33 Mpx) and traced in 5.1 s, 256-px blocks 1,253 windows (116 Mpx) in 3.4 s, 512-px blocks 371
(166 Mpx) in 5.0 s; once only the boxes of slick pixels were traced, 256 and 512 px were alike (4.5-5.4 and 4.7-5.1 s
for the whole of ``polygonise``) and 768 px made a window too large to hold (measured)."""

TRACE_WINDOW_PIXELS = 16 * 2**20
"""The largest window labelled in memory (about 8 bytes a pixel: the mask, three boolean planes and the int32
labels); a group of slick blocks spanning more, as a model marking much of a scene draws, is traced by GDAL
streaming the whole band, so memory stays flat in the scene's size either way. The largest window of an EW-size
mask with specks all over it held 1.3 Mpx."""


def _whole_band(mask_path: Path, probability_path: Path, fewest: int, progress: Progress) -> tuple[list[Polygon], np.ndarray]:
    """(outlines of at least ``fewest`` pixels, their mean probability) with GDAL streaming the whole band, for a
    mask whose groups of slick blocks are too large to hold; the smaller slicks are cleared from the mask file."""
    outlines: list[Polygon] = []  # shaped once: the area filter, the mean probability and the simplification use it
    dropped: list[tuple[float, float, float, float]] = []
    with rasterio.open(mask_path) as mask_ds:
        band = rasterio.band(mask_ds, 1)
        area = abs(mask_ds.transform.a * mask_ds.transform.e)
        # The band is its own mask: water (0) is never traced, so GDAL walks only slick and nodata pixels
        # instead of building one huge sea polygon with a hole per slick.
        for n, (geom, value) in enumerate(shapes(band, mask=band, connectivity=8, transform=mask_ds.transform)):
            if n % 500 == 0:
                progress.check()
            if value == 1:
                outline = shape(geom)
                if round(outline.area / area) >= fewest:
                    outlines.append(outline)
                else:
                    dropped.append(outline.bounds)
    return outlines, _keep_only(mask_path, probability_path, outlines, np.array(dropped).reshape(-1, 4), progress)


def _by_groups(mask_path: Path, probability_path: Path, groups: list[tuple[Window, Optional[np.ndarray]]], fewest: int,
               progress: Progress) -> tuple[list[Polygon], np.ndarray]:
    """(outlines of at least ``fewest`` pixels, their mean probability) window by window, the smaller slicks cleared
    from the mask file.

    Each window's slicks are labelled (8-connected, as GDAL traces them) and only those large enough are traced,
    each in its own box: pixel counts give the area filter and the labels the mean probability, so the specks a
    model leaves all over a scene are never shaped or burnt back. OpenCV labels a window about five times as fast
    as SciPy (measured on an EW-size mask). A slick never leaves its group, and pixels of other groups are cleared
    in a window so that no slick is traced twice. The outlines, means and mask are the ones of a trace of the whole
    band (tested)."""
    outlines: list[Polygon] = []
    means: list[float] = []
    with rasterio.open(mask_path, "r+") as mask_ds, rasterio.open(probability_path) as prob_ds:
        for n, (window, inside) in enumerate(groups):
            if n % 100 == 0:
                progress.check()
            mask = mask_ds.read(1, window=window)
            slick = mask == 1
            if inside is not None:
                slick &= inside
            cleared = slick.copy()
            if np.count_nonzero(slick) >= fewest:  # else specks only, as most windows of a noisy model's scene hold
                _, ids, stats, _ = cv2.connectedComponentsWithStats(slick.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
                for label in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= fewest) + 1:
                    left, top, width, height = (int(v) for v in stats[label, :4])
                    part = np.s_[top: top + height, left: left + width]
                    own = ids[part] == label
                    cleared[part] &= ~own
                    box = Window(window.col_off + left, window.row_off + top, width, height)
                    value = prob_ds.read(1, window=box)[own]
                    value = value[np.isfinite(value)]
                    means.append(value.mean(dtype=np.float64) if value.size else np.nan)
                    (geom, _), = shapes(own.view(np.uint8), mask=own, connectivity=8, transform=mask_ds.window_transform(box))
                    outlines.append(shape(geom))
            if cleared.any():  # groups own disjoint pixels: what others cleared before this read is in ``mask`` already
                mask[cleared] = 0
                mask_ds.write(mask, 1, window=window)
    return outlines, np.array(means)


def _slick_groups(mask_ds: rasterio.io.DatasetReader) -> Optional[list[tuple[Window, Optional[np.ndarray]]]]:
    """(window, which of its pixels belong to the group, None for all) for each group of ``TRACE_BLOCK`` blocks that hold slick
    pixels, read strip by strip; None where one group's window is larger than ``TRACE_WINDOW_PIXELS``.

    Two blocks join a group only where slick pixels touch across their border (8-connected), not for being
    neighbours: on an EW-size scene whose model left specks everywhere, neighbouring 64-px blocks joined into one
    window of 50 Mpx, while 64-px blocks joined by what crosses their borders made windows of 0.06 Mpx at most (measured)."""
    height, width = mask_ds.height, mask_ds.width
    block = TRACE_BLOCK
    occupied = np.zeros((-(-height // block), -(-width // block)), dtype=bool)
    index = np.arange(occupied.size).reshape(occupied.shape)
    joins: list[tuple[np.ndarray, np.ndarray]] = []
    step = max(block, strip_rows(width) // block * block)
    above: Optional[np.ndarray] = None  # the last pixel row of the strip before
    strip = np.zeros((step, width + -width % block), dtype=np.uint8)  # read into, so that no strip is copied to pad it
    for row in range(0, height, step):
        rows_read = min(step, height - row)
        strip[rows_read:] = 0
        mask_ds.read(1, window=Window(0, row, width, rows_read), out=strip[:rows_read, :width])
        padded = strip[:rows_read + -rows_read % block] == 1
        first, rows = row // block, padded.shape[0] // block
        occupied[first: first + rows] = padded.reshape(rows, block, -1, block).any(axis=(1, 3))
        # Across the borders between block rows (the strip's first row against the row above it included)...
        lasts = padded[block - 1:-1:block] if above is None else np.vstack([above[None], padded[block - 1:-1:block]])
        line, i, j = _touching(lasts, padded[0 if above is not None else block::block])
        upper = line + first - (above is not None)
        joins.append((index[upper, i // block], index[upper + 1, j // block]))
        # ...and across the borders between block columns.
        line, i, j = _touching(padded[:, block - 1:-1:block].T, padded[:, block::block].T)
        joins.append((index[first + i // block, line], index[first + j // block, line + 1]))
        above = padded[rows_read - 1]
    pairs = np.concatenate([np.stack(pair) for pair in joins], axis=1) if joins else np.zeros((2, 0), dtype=int)
    graph = coo_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=(occupied.size, occupied.size))
    component = connected_components(graph, directed=False)[1].reshape(occupied.shape)
    labels = np.where(occupied, component + 1, 0)
    groups = []
    for number, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        rows, cols = found
        window = Window(cols.start * block, rows.start * block, min(cols.stop * block, width) - cols.start * block,
                        min(rows.stop * block, height) - rows.start * block)
        if window.width * window.height > TRACE_WINDOW_PIXELS:
            return None
        own = labels[rows, cols] == number
        inside = None if own.all() else own.repeat(block, axis=0).repeat(block, axis=1)[:window.height, :window.width]
        groups.append((window, inside))
    return groups


def _touching(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line, position in ``a``, position in ``b``) of every pair of slick pixels that touch 8-wise across two
    adjacent pixel lines, ``a[line]`` and ``b[line]`` (two (n, length) boolean arrays)."""
    found = []
    for shift in (-1, 0, 1):
        length = a.shape[1] - abs(shift)
        line, at = np.nonzero(a[:, max(0, -shift): max(0, -shift) + length] & b[:, max(0, shift): max(0, shift) + length])
        found.append((line, at + max(0, -shift), at + max(0, -shift) + shift))
    return tuple(np.concatenate(parts) for parts in zip(*found))


def _keep_only(mask_path: Path, probability_path: Path, outlines: list[Polygon], dropped: np.ndarray,
               progress: Progress) -> np.ndarray:
    """Mean probability of each outline's pixels, in one pass over the rasters by strips; the pixels of the slicks
    traced and dropped (their bounds in ``dropped``, minx, miny, maxx, maxy) are set to 0 in the mask file on the way.

    Each outline is burnt as its exterior and then its holes (as 0), largest exterior first, so a slick lying in
    a hole of a larger one keeps its own id and a dropped speck in a hole is left out. Every ring is burnt as a
    simple polygon: GDAL's scan-line fill of one polygon with thousands of holes (a noisy model's) is slow.
    The outlines are traced along pixel edges, so the pixels whose centres they hold are exactly their pixels.
    Every slick pixel lies in a traced outline, kept or dropped, so only the strips and columns their bounds
    cover are read.
    """
    sums = np.zeros(len(outlines) + 1)
    counts = np.zeros(len(outlines) + 1)
    order = sorted(range(len(outlines)), key=lambda i: -outlines[i].area)
    rings = [(i, Polygon(ring), 0 if k else i + 1) for i in order for k, ring in enumerate([outlines[i].exterior, *outlines[i].interiors])]
    bounds = np.array([outline.bounds for outline in outlines]).reshape(-1, 4)  # minx, miny, maxx, maxy
    everything = np.vstack([bounds, dropped])
    if not len(everything):
        return sums[1:]
    with rasterio.open(mask_path, "r+" if len(dropped) else "r") as mask_ds, rasterio.open(probability_path) as prob_ds:
        step = strip_rows(mask_ds.width)
        for row in range(0, mask_ds.height, step):
            strip = Window(0, row, mask_ds.width, min(step, mask_ds.height - row))
            transform = mask_ds.window_transform(strip)
            top, bottom = transform.f, transform.f + transform.e * strip.height
            crossing = (everything[:, 1] < top) & (everything[:, 3] > bottom)
            if not crossing.any():
                continue
            progress.check()
            near = _near(strip, transform, everything[crossing])
            mask = mask_ds.read(1, window=near)
            rows, cols = np.nonzero(mask == 1)
            slick_ids = np.zeros(rows.size, dtype=np.int32)
            hit = np.flatnonzero(crossing[: len(outlines)])
            if hit.size:
                # Burnt and read where the kept slicks lie only: dropped specks, often all over a strip, need the mask alone.
                kept = _near(strip, transform, bounds[hit])
                at = rows - (kept.row_off - near.row_off), cols - (kept.col_off - near.col_off)
                inside = (at[0] >= 0) & (at[0] < kept.height) & (at[1] >= 0) & (at[1] < kept.width)
                at = at[0][inside], at[1][inside]
                chosen = set(hit.tolist())
                ids = rasterize(((ring, value) for i, ring, value in rings if i in chosen),
                                out_shape=(kept.height, kept.width), transform=mask_ds.window_transform(kept), dtype="int32")
                slick_ids[inside] = ids[at]
                value = prob_ds.read(1, window=kept)[at]
                counted = (slick_ids[inside] > 0) & np.isfinite(value)
                which = slick_ids[inside][counted]
                sums += np.bincount(which, weights=value[counted], minlength=sums.size)
                counts += np.bincount(which, minlength=counts.size)
            gone = slick_ids == 0
            if gone.any():
                mask[rows[gone], cols[gone]] = 0
                mask_ds.write(mask, 1, window=near)
    with np.errstate(invalid="ignore"):
        return (sums / counts)[1:]


def _near(strip: Window, transform: Affine, bounds: np.ndarray) -> Window:
    """The part of ``strip`` (whose transform is ``transform``) that holds the slicks of ``bounds``."""
    near = covering_window(transform, strip.height, strip.width, bounds)
    return Window(near.col_off, strip.row_off + near.row_off, near.width, near.height)


def write_slicks(path: Path, crs: str, slicks: Iterable[dict], scene: str, model: str,
                 extra_fields: Optional[dict[str, str]] = None) -> tuple[int, float]:
    """Write slick polygons to a GeoPackage layer ``slicks``; return (count, total area km2).

    ``extra_fields`` (name: OGR type) are taken from each slick dict too, e.g. the look-alike evidence."""
    created = utc_now()
    extra = extra_fields or {}
    schema = {"geometry": "Polygon", "properties": {**SLICK_FIELDS, **extra}}
    records = []
    for slick in slicks:
        properties = {k: slick[k] for k in ("area_km2", "length_km", "mean_prob")}
        properties.update(scene=scene, model=model, created=created)
        properties.update({k: slick.get(k) for k in extra})
        records.append({"geometry": slick["geometry"], "properties": properties})
    with writing(path), fiona.open(path, "w", driver="GPKG", layer=SLICKS_LAYER, crs=crs, schema=schema) as dst:
        dst.writerecords(records)  # one transaction, not one per slick
    return len(records), sum(record["properties"]["area_km2"] for record in records)

