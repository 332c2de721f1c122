"""Whether a faster way of running a model still draws PyTorch fp32's slick masks: the real tiles every such
check runs on, and how two sets of masks are compared.

The quantiser takes int8's activation ranges from one half of a spread of real tiles and checks its masks on the
other half; ``auto`` times and checks every runtime on two tiles of that other half. So no check, the
quantiser's or ``auto``'s, runs on a tile int8 was calibrated on, where it would flatter int8.
"""

from __future__ import annotations

import numpy as np

from ..data.bundled import SAMPLES_DIR
from .inference import probability
from .registry import ModelCard

AGREEMENT = 0.98
"""Slick Dice against PyTorch fp32 below which a faster runtime or an int8 model is refused."""
MIN_DATA = 0.75
"""The share of a check tile that must be data, where the model's tile fits the scenes with more."""
CALIBRATION_TILES = 8
"""Real tiles int8's activation ranges are taken from; as many others, interleaved with them, are where its masks
are compared."""


def calibration_tiles(card: ModelCard, n: int) -> list[np.ndarray]:
    """Real tiles (0..255) from the bundled Arctic scenes that no test or demo scores on: cuts more than three quarters
    data, or, for a tile too large for that (the dark-spot detector's 1,024 px on scenes of 768-1,280), each scene's
    fullest cuts, so that every model has tiles to be checked on."""
    import rasterio

    tiles = []
    size = card.tile_size
    for name in ("sample_70", "sample_0"):
        with rasterio.open(SAMPLES_DIR / name / "raw_mosaic.tif") as ds:
            scene = ds.read(1).astype(np.float32)
        cuts = []
        for row in range(0, max(1, scene.shape[0] - size + 1), size // 2):
            for col in range(0, max(1, scene.shape[1] - size + 1), size // 2):
                cut = np.zeros((size, size), np.float32)
                part = scene[row : row + size, col : col + size]
                cut[: part.shape[0], : part.shape[1]] = part
                cuts.append(cut)
        data = [float((cut > 0).mean()) for cut in cuts]
        tiles += [cut for cut, share in zip(cuts, data) if share > MIN_DATA] or [cut for cut, share in zip(cuts, data) if share == max(data)]
    if n and len(tiles) > n:  # spread over both scenes
        tiles = [tiles[i] for i in np.linspace(0, len(tiles) - 1, n).round().astype(int)]
    return tiles


def quantisation_split(card: ModelCard) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(tiles an int8 model's activation ranges come from, tiles its masks are compared on): interleaved over the
    same spread."""
    spread = calibration_tiles(card, 2 * CALIBRATION_TILES)
    return spread[0::2], spread[1::2]


def choice_tiles(card: ModelCard) -> list[np.ndarray]:
    """The tiles ``auto`` times the runtimes on and compares their masks on: the first and last of the quantiser's
    check tiles."""
    held = quantisation_split(card)[1]
    return [held[0], held[-1]] if len(held) > 1 else held


def slick_mask(logits: np.ndarray, card: ModelCard) -> np.ndarray:
    return probability(logits, card) > card.threshold


def pooled_dice(reference: list[np.ndarray], other: list[np.ndarray]) -> float:
    """Slick Dice of ``other``'s masks against ``reference``'s, pooled over the tiles."""
    inter = sum(int(np.logical_and(a, b).sum()) for a, b in zip(reference, other))
    total = sum(int(a.sum() + b.sum()) for a, b in zip(reference, other))
    return 1.0 if total == 0 else 2 * inter / total
