"""Eq. 1 of the transfer-learning paper: a 2-sigma linear stretch of backscatter to 0..255.

We read eq. 1 as the usual standard-deviation stretch: values between mean - 2 sigma and mean + 2 sigma
map linearly onto 1..255 and the rest are clipped, 0 being kept for no data as in the paper's own
8-bit tiles. Statistics are taken in dB, where sea backscatter is close to Gaussian; in linear power a
few ships would set sigma. They come from the valid pixels of the whole scene, accumulated strip by strip
so the scene is never loaded at once. Detection, training and evaluation all go through ``Stretch``.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import numpy as np
import rasterio
from rasterio.windows import Window

from ..errors import InputError
from ..progress import Progress
from .read_errors import reading
from .remembered import remembered
from .tiling import strip_rows

NODATA = 0.0
STATS_ROWS = 512
"""Rows of a chunk of the statistics' pass, fewer where a wide scene's would hold more than ``STRIP_PIXELS``."""
_EPS = 1e-10


def needs_statistics(value_scale: str) -> bool:
    """Whether values in ``value_scale`` are stretched by their scene's statistics: 8-bit grey levels are the output
    of a stretch already and go to the model as they are."""
    return value_scale != "uint8_stretched"


def to_db(values: np.ndarray, value_scale: str) -> np.ndarray:
    """Backscatter in dB (NaN kept) from any supported encoding; 8-bit values are returned as they are."""
    values = values.astype(np.float32, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        if value_scale == "uint16_dn":  # amplitude numbers: power is their square
            return 20.0 * np.log10(np.maximum(values, _EPS))
        if value_scale == "float32_linear":
            return 10.0 * np.log10(np.maximum(values, _EPS))
    if value_scale in ("float32_db", "uint8_stretched"):
        return values
    raise ValueError(f"unknown value scale {value_scale!r}")


@dataclass(frozen=True)
class Stretch:
    """How to turn one scene's values into the 0..255 model input."""

    value_scale: str
    mean: float = 0.0
    std: float = 1.0

    @property
    def passthrough(self) -> bool:
        return not needs_statistics(self.value_scale)

    @classmethod
    def fit(cls, value_scale: str, chunks: Iterable[np.ndarray]) -> "Stretch":
        """Scene statistics from an iterable of value arrays (NaN = no data), in one streaming pass."""
        if not needs_statistics(value_scale):
            return cls(value_scale)
        return cls.from_sums(value_scale, (chunk_sums(chunk, value_scale) for chunk in chunks))

    @classmethod
    def from_sums(cls, value_scale: str, sums: Iterable[tuple[int, float, float]]) -> "Stretch":
        """The stretch from each chunk's ``chunk_sums``, added in the order given (the same order gives the same
        statistics to the bit, however the chunks were computed)."""
        count, total, total_sq = 0, 0.0, 0.0
        for n, chunk_total, chunk_total_sq in sums:
            count += n
            total += chunk_total
            total_sq += chunk_total_sq
        if count == 0:
            raise InputError("The scene has no valid pixels to compute its statistics from.", "Check the band and nodata value.")
        mean = total / count
        std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
        if std < 1e-6:
            raise InputError("The scene is flat: every valid pixel has the same value.", "Check that the right band was chosen.")
        return cls(value_scale, float(mean), std)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Model input in 0..255 as float32: valid pixels in 1..255, no data (NaN) as 0."""
        valid = np.isfinite(values)
        if self.passthrough:
            out = np.where(valid, values, NODATA).astype(np.float32)
            return out
        db = to_db(values, self.value_scale)
        # In place, in the order 1 + (db - low) / (4 std) * 254 rounds: each temporary of a 512-row strip was a
        # fresh block of memory to fault in, which cost more than the arithmetic (measured). A new array first,
        # since dB input comes back from to_db as the caller's own.
        out = np.subtract(db, self.mean - 2.0 * self.std, dtype=np.float32)
        out /= 4.0 * self.std
        out *= 254.0
        out += 1.0
        np.maximum(out, 1.0, out=out)
        np.minimum(out, 255.0, out=out)
        out[~valid] = NODATA
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def chunk_sums(values: np.ndarray, value_scale: str) -> tuple[int, float, float]:
    """(count, sum, sum of squares) of the finite dB values of one chunk, accumulated in float64 without a
    float64 copy of the chunk: the same sums to the bit (numpy casts as it goes), in half the time of the copy,
    which was a third of the statistics pass (measured)."""
    db = to_db(values, value_scale)
    db = db[np.isfinite(db)]
    return db.size, db.sum(dtype=np.float64), np.square(db, dtype=np.float64).sum()


def scene_stretch(ds: rasterio.DatasetReader, band: int, value_scale: str, progress: Progress) -> Stretch:
    """The eq. 1 stretch of ``band`` of ``ds``, from all of its valid pixels (NaN, 0 and nodata excluded),
    measured once per version of the scene's files (``remembered``)."""
    if not needs_statistics(value_scale):
        return Stretch(value_scale)
    question = f"eq. 1 statistics of band {band} as {value_scale}"
    measure = lambda: _measured_stretch(ds, band, value_scale, progress).to_dict()  # noqa: E731
    waiting = progress.waiting("waiting", "Waiting for the scene statistics another run is measuring")
    return Stretch(**remembered(ds.files, question, measure, waiting))


def _measured_stretch(ds: rasterio.DatasetReader, band: int, value_scale: str, progress: Progress) -> Stretch:
    """Chunks are read and converted on every core (GDAL's decoding and numpy's logarithm release the GIL), each
    thread through its own handle on the file: nothing else runs before the first tile can be stretched, and
    on one thread the pass kept a full EW scene waiting for 5 s (measured)."""
    nodata = ds.nodata
    rows = strip_rows(ds.width, STATS_ROWS)
    starts = range(0, ds.height, rows)
    local = threading.local()
    handles: list[rasterio.DatasetReader] = []
    lock = threading.Lock()

    def sums(row: int) -> tuple[int, float, float]:
        if not hasattr(local, "ds"):
            with reading(ds.name):
                local.ds = rasterio.open(ds.name)
            with lock:
                handles.append(local.ds)
        with reading(ds.name):
            values = local.ds.read(band, window=Window(0, row, ds.width, min(rows, ds.height - row))).astype(np.float32, copy=False)
        invalid = ~np.isfinite(values) | (values == 0)
        if nodata is not None and np.isfinite(nodata):
            invalid |= values == nodata
        values[invalid] = np.nan
        return chunk_sums(values, value_scale)

    def in_order(pool: ThreadPoolExecutor) -> Iterator[tuple[int, float, float]]:
        for i, result in enumerate(pool.map(sums, starts)):
            progress.update("statistics", i, len(starts), "Scene statistics for eq. 1")
            yield result

    pool = ThreadPoolExecutor(min(len(starts), os.cpu_count() or 1), thread_name_prefix="slick-mapper-statistics")
    try:
        return Stretch.from_sums(value_scale, in_order(pool))
    finally:  # a Cancel or an error drops the chunks not yet started
        pool.shutdown(wait=True, cancel_futures=True)
        for handle in handles:
            handle.close()
