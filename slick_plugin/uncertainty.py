"""Where to label next: the blocks of a detection's probability raster the model is least sure about.

A block's score is the mean binary entropy of its probabilities after rescaling so that the detection
threshold sits at 0.5: pixels far from the threshold (clear sea, clear slick) score near 0, pixels on
it score 1 bit. Labelling the highest-scoring blocks first teaches a fine-tuned model the most per polygon
drawn. Light array work on one strip of blocks at a time, so any scene size fits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from osgeo import gdal

BLOCK = 256
"""Block side in pixels: about what an analyst checks in one map view at full resolution."""
MIN_VALID = 0.25
"""Blocks with less valid (not no data) area than this are mostly outside the scene and not ranked."""
TOP = 10


@dataclass(frozen=True)
class Block:
    """One ranked block: its pixel window, its score and its extent in the raster's CRS."""

    row: int
    col: int
    rows: int
    cols: int
    uncertainty: float
    """Mean entropy in bits, 0..1."""
    above: float
    """Share of its valid pixels at or above the threshold."""
    extent: Tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """(xmin, ymin, xmax, ymax)"""


def threshold_entropy(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Binary entropy (bits) of ``probability`` rescaled piecewise-linearly so that ``threshold`` maps to 0.5."""
    p = np.clip(probability.astype(np.float64), 0.0, 1.0)
    q = np.where(p < threshold, 0.5 * p / threshold, 0.5 + 0.5 * (p - threshold) / (1.0 - threshold))
    q = np.clip(q, 1e-12, 1 - 1e-12)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def strip_blocks(strip: np.ndarray, valid: np.ndarray, row: int, threshold: float, block: int = BLOCK) -> List[Block]:
    """Score the blocks of one strip of rows (``strip`` and ``valid`` of the same shape) starting at ``row``."""
    entropy = threshold_entropy(np.where(valid, strip, 0.0), threshold)
    found = []
    for col in range(0, strip.shape[1], block):
        part = (slice(None), slice(col, col + block))
        inside = valid[part]
        if inside.mean() < MIN_VALID:
            continue
        found.append(Block(row, col, inside.shape[0], inside.shape[1], float(entropy[part][inside].mean()),
                           float((strip[part][inside] >= threshold).mean())))
    return found


def rank(blocks: List[Block], top: int = TOP) -> List[Block]:
    """The ``top`` most uncertain blocks, most uncertain first; ties go to the block nearest the top left."""
    return sorted(blocks, key=lambda b: (-round(b.uncertainty, 6), b.row, b.col))[:top]


def rank_raster(path: str, threshold: float, block: int = BLOCK, top: int = TOP) -> List[Block]:
    """Rank the blocks of a probability GeoTIFF (band 1), reading one strip of blocks at a time.

    Raises RuntimeError when the file cannot be read (GDAL raises it too when its exceptions are on).
    """
    dataset = gdal.Open(path)
    if dataset is None:
        raise RuntimeError(f"GDAL cannot open {path}")
    band = dataset.GetRasterBand(1)
    nodata: Optional[float] = band.GetNoDataValue()
    blocks: List[Block] = []
    for row in range(0, dataset.RasterYSize, block):
        rows = min(block, dataset.RasterYSize - row)
        strip = band.ReadAsArray(0, row, dataset.RasterXSize, rows)
        if strip is None:
            raise RuntimeError(f"GDAL cannot read rows {row}-{row + rows} of {path}")
        strip = strip.astype(np.float32)
        valid = np.isfinite(strip) & (strip >= 0) & (strip <= 1)
        if nodata is not None:
            valid &= strip != nodata
        blocks += strip_blocks(strip, valid, row, threshold, block)
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    ranked = []
    for b in rank(blocks, top):
        xs, ys = (x0 + b.col * dx, x0 + (b.col + b.cols) * dx), (y0 + b.row * dy, y0 + (b.row + b.rows) * dy)
        ranked.append(Block(b.row, b.col, b.rows, b.cols, b.uncertainty, b.above, (min(xs), min(ys), max(xs), max(ys))))
    return ranked
