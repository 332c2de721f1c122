"""Where to label next: the blocks of a detection's probability raster the model is least sure about.

A block's score is the mean binary entropy of its probabilities after rescaling so that the detection
threshold sits at 0.5: pixels far from the threshold (clear sea, clear slick) score near 0, pixels on
it score 1 bit. Labelling the highest-scoring blocks first teaches a fine-tuned model the most per polygon
drawn. The raster is read a few megapixels of whole blocks at a time, so any scene size fits in memory; the plugin
only lists the answer, so QGIS never reads a whole scene on its main thread.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from rasterio.windows import Window

from ..errors import InputError
from ..progress import Progress, silent
from ..scenes.raster import open_raster
from ..scenes.read_errors import reading
from ..scenes.tiling import STRIP_PIXELS

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
    extent: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """(xmin, ymin, xmax, ymax)"""

    def to_dict(self) -> dict:
        return asdict(self)


def threshold_entropy(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Binary entropy (bits) of ``probability`` rescaled piecewise-linearly so that ``threshold`` maps to 0.5."""
    p = np.clip(probability.astype(np.float64), 0.0, 1.0)
    q = np.where(p < threshold, 0.5 * p / threshold, 0.5 + 0.5 * (p - threshold) / (1.0 - threshold))
    q = np.clip(q, 1e-12, 1 - 1e-12)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def strip_blocks(strip: np.ndarray, valid: np.ndarray, row: int, threshold: float, block: int = BLOCK, col: int = 0) -> list[Block]:
    """Score the blocks of one strip of rows (``strip`` and ``valid`` of the same shape) starting at ``row`` and ``col``;
    one block's entropy at a time, since the float64 entropy of a whole strip of a wide scene held hundreds of MB."""
    found = []
    for start in range(0, strip.shape[1], block):
        part = (slice(None), slice(start, start + block))
        inside = valid[part]
        if inside.mean() < MIN_VALID:
            continue
        entropy = threshold_entropy(np.where(inside, strip[part], 0.0), threshold)
        found.append(Block(row, col + start, inside.shape[0], inside.shape[1], float(entropy[inside].mean()),
                           float((strip[part][inside] >= threshold).mean())))
    return found


def rank(blocks: list[Block], top: int = TOP) -> list[Block]:
    """The ``top`` most uncertain blocks, most uncertain first; ties go to the block nearest the top left."""
    return sorted(blocks, key=lambda b: (-round(b.uncertainty, 6), b.row, b.col))[:top]


def rank_raster(path: str | Path, threshold: float, block: int = BLOCK, top: int = TOP,
                progress: Optional[Progress] = None) -> list[Block]:
    """Rank the blocks of a probability raster (band 1), reading a few megapixels of whole blocks at a time."""
    if not 0 < threshold < 1:
        raise InputError(f"Threshold {threshold} is outside (0, 1).", "Give the detection's threshold, e.g. 0.5.")
    if block < 1 or top < 1:
        raise InputError(f"Block size {block} and count {top} must be at least 1.", "E.g. --block 256 --top 10.")
    progress = progress or silent()
    blocks: list[Block] = []
    with open_raster(path) as ds, reading(path):
        # Windows of whole blocks, as tall as the file's own blocks (a COG's 512 rows: each is decompressed once
        # in GDAL's bounded cache) and only as wide as ``STRIP_PIXELS`` allows, so a wide scene is read in pieces.
        rows = block * max(1, ds.block_shapes[0][0] // block)
        cols = block * max(1, STRIP_PIXELS // (rows * block))
        strips = -(-ds.height // rows)
        for n, row in enumerate(range(0, ds.height, rows)):
            progress.update("ranking", n, strips, "Finding where the model is least sure")
            for col in range(0, ds.width, cols):
                window = Window(col, row, min(cols, ds.width - col), min(rows, ds.height - row))
                strip = ds.read(1, window=window).astype(np.float32)
                valid = np.isfinite(strip) & (strip >= 0) & (strip <= 1)
                if ds.nodata is not None:
                    valid &= strip != ds.nodata
                for first in range(0, strip.shape[0], block):
                    blocks += strip_blocks(strip[first:first + block], valid[first:first + block], row + first, threshold, block, col)
        transform = ds.transform
    progress.update("ranking", strips, strips)
    x0, dx, y0, dy = transform.c, transform.a, transform.f, transform.e
    ranked = []
    for b in rank(blocks, top):
        xs, ys = (x0 + b.col * dx, x0 + (b.col + b.cols) * dx), (y0 + b.row * dy, y0 + (b.row + b.rows) * dy)
        ranked.append(Block(b.row, b.col, b.rows, b.cols, b.uncertainty, b.above, (min(xs), min(ys), max(xs), max(ys))))
    return ranked


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("uncertainty")
    p.add_argument("probability", help="a detection's probability raster (<prefix>_probability.tif)")
    p.add_argument("--threshold", type=float, required=True, help="the threshold the detection cut its mask at")
    p.add_argument("--block", type=int, default=BLOCK, help=f"block side in pixels (default {BLOCK})")
    p.add_argument("--top", type=int, default=TOP, help=f"blocks listed (default {TOP})")
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    ranked = rank_raster(args.probability, args.threshold, args.block, args.top, progress)
    return {"probability": args.probability, "threshold": args.threshold, "blocks": [b.to_dict() for b in ranked]}
