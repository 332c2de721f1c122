"""Sliding-window tiling with weighted blending, one row of tiles at a time.

Tiles overlap by ``overlap`` pixels and each prediction is weighted by a ramp that falls towards the
tile's edges, where a network sees least context; the weighted mean then shows no seam. Only one row of
tiles is held at once (``StripBlender``), so memory depends on the scene's width, never its height.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from rasterio.windows import Window


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets along one axis: a regular stride, the last tile flush with the end."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, {tile}), got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """Separable ramp, 1 in the tile's core, falling linearly (never to 0) across the overlap."""
    ramp = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        edge = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return np.outer(ramp, ramp)


@dataclass(frozen=True)
class TileRow:
    """One row of tiles: where it starts, how many scene rows it reads, and its tiles' column offsets."""

    row: int
    height: int
    cols: list[int]

    @property
    def window_height(self) -> int:
        return self.height


def tile_rows(height: int, width: int, tile: int, overlap: int) -> list[TileRow]:
    cols = tile_starts(width, tile, overlap)
    return [TileRow(row, tile, cols) for row in tile_starts(height, tile, overlap)]


class StripBlender:
    """Accumulates weighted tile predictions for one strip and hands back rows as they become final."""

    def __init__(self, height: int, width: int, tile: int, overlap: int) -> None:
        self.height, self.width, self.tile = height, width, tile
        self.rows = tile_rows(height, width, tile, overlap)
        self.weights = blend_weights(tile, overlap)
        buf_width = max(width, tile)
        self._acc = np.zeros((tile, buf_width), dtype=np.float32)
        self._wsum = np.zeros((tile, buf_width), dtype=np.float32)
        self._top = 0

    def add(self, col: int, prediction: np.ndarray) -> None:
        """Add one tile's prediction (tile x tile) of the current row at column ``col``."""
        self._acc[:, col : col + self.tile] += prediction * self.weights
        self._wsum[:, col : col + self.tile] += self.weights

    def finish_row(self, index: int) -> tuple[int, np.ndarray]:
        """Close tile row ``index``: return (first scene row, blended rows that no later tile touches)."""
        top = self.rows[index].row
        last = index + 1 == len(self.rows)
        end = min(top + self.tile, self.height) if last else self.rows[index + 1].row
        n = end - top
        with np.errstate(invalid="ignore", divide="ignore"):
            done = np.where(self._wsum[:n] > 0, self._acc[:n] / self._wsum[:n], np.nan)[:, : self.width]
        self._acc[: self.tile - n] = self._acc[n:]
        self._wsum[: self.tile - n] = self._wsum[n:]
        self._acc[self.tile - n :] = 0
        self._wsum[self.tile - n :] = 0
        return top, done


def windows_of_row(row: TileRow, tile: int) -> Iterator[tuple[int, Window]]:
    for col in row.cols:
        yield col, Window(col, row.row, tile, tile)
