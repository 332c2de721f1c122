"""The split of the generator experiments (``experiment dakter``, ``experiment dakd``): the transfer
experiment's (engine/experiments/transfer.py).

Generators and students learn from the pool scenes (sample_0, sample_70) through a label store the
product's own import makes; the test scenes (sample_1, sample_2, sample_123) are never trained on. Their
tiles, cut the same way, are the held-out real tiles generated ones are judged against, and the scenes
are scored whole by detection and slick Dice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.bundled import POOL
from ..generation.training_set import training_tiles
from ..generation.joint_ddpm import JointSet
from ..jobs.finetune_data import collect_tiles, split_by_area
from ..jobs.labels import read_store
from ..models.registry import ModelCard
from ..progress import Progress
from .transfer import TEST, label_store


@dataclass
class PoolSplit:
    store: Path
    """The pool's label store, which generators and students learn from."""
    pool: JointSet
    """The pool's tiles as a generator learns them."""
    held: JointSet
    """The test scenes' tiles, cut the same way: the real tiles samples are judged against."""
    real_tiles: int
    """Real training tiles of every student: the split by area depends on the seed but its size does not
    (it draws fixed shares of the slick and sea tiles)."""


def pool_split(out: Path, work: Path, card: ModelCard, tile: int, val_fraction: float, progress: Progress) -> PoolSplit:
    """The pool's label store in ``out`` (kept with the results), the held-out one in ``work``, and their tiles
    at ``card``'s pixel size."""
    store = label_store(out / "pool_labels.gpkg", POOL)
    pool, _, _ = training_tiles(read_store(store), tile, card.pixel_size, progress)
    held, _, _ = training_tiles(read_store(label_store(work / "heldout_labels.gpkg", TEST)), tile, card.pixel_size, progress)
    real_tiles = len(split_by_area(collect_tiles(read_store(store), card, tile, progress), val_fraction, 0)[0])
    return PoolSplit(store, pool, held, real_tiles)

