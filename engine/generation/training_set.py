"""What a generator learns from, and what its card keeps of it: a label store's tiles, the balancing factor b,
the training record and the file written once training succeeded. DAKTer (``generator``) and SAR-JointNet
(``jointnet``) share them, so both learn from exactly what detection and fine-tuning see.

Training tiles are cut by ``finetune_data.collect_tiles``: the scene's UTM analysis grid at the target pixel size
and the eq. 1 stretch.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..jobs.finetune_data import check_store, collect_tiles
from ..jobs.labels import LabelStore, read_store
from ..models.registry import DEFAULT_MODEL, ModelCard, check_new_model_file, read_card
from ..progress import Progress
from .joint_ddpm import GeneratorCard, JointSet, balancing_factor, net_name, save_generator
from .parent import Parent

MIN_TILES = 16
"""Fewest usable tiles a generator is trained on. Far from enough for varied samples (the paper had
thousands); below it a generator can do little but copy its tiles."""
FEW_TILES = 200
"""Below this many tiles, training says that samples will stay close to the labelled tiles."""
MIN_KNOWN = 0.5
"""Least known fraction of a training tile: a mostly unknown label would teach the label channels that
'no answer' is a normal output."""


def training_tiles(
    store: LabelStore, tile: int, pixel_size: float, progress: Progress, classes: Sequence[str] = ("slick",)
) -> tuple[JointSet, int, list[str]]:
    """(tiles as the generator learns them, tiles left out, scenes used), of ``1 + len(classes)`` classes: the
    unlabelled known pixels, then the store's label ``classes``.

    A tile is used when every pixel holds data (a generated tile never has no data, so the generator must
    not learn to make any) and at least ``MIN_KNOWN`` of it is labelled or reviewed.
    """
    # collect_tiles reads the pixel size and band count a segmentation model's card would give.
    grid = ModelCard(name="sample generator", architecture="joint_ddpm", encoder="none", tile_size=tile, pixel_size=pixel_size)
    tiles = collect_tiles(store, grid, tile, progress, classes)
    usable = [t for t in tiles if t.x.min() > 0 and t.valid.mean() >= MIN_KNOWN]
    if len(usable) < MIN_TILES:
        raise InputError(
            f"Only {len(usable)} of the {len(tiles)} labelled {tile}-pixel tiles are at least {MIN_KNOWN:.0%} reviewed and free of "
            f"no data; a generator needs at least {MIN_TILES} (and a few hundred to vary).",
            "Mark more checked sea as reviewed (with every slick in it labelled), add scenes, or use smaller tiles (e.g. --tile 32).",
        )
    if len(usable) < FEW_TILES:
        progress.log(f"warning: {len(usable)} training tiles; generated samples will stay close to them")
    data = JointSet.from_arrays(
        np.stack([t.x for t in usable]), np.stack([t.target for t in usable]), np.stack([t.valid for t in usable]), 1 + len(classes)
    )
    return data, len(tiles) - len(usable), sorted({t.scene for t in usable})


def store_tiles(
    store_path: str | Path, tile: int, pixel_size: Optional[float], progress: Progress, classes: Sequence[str] = ("slick",)
) -> tuple[LabelStore, float, tuple[JointSet, int, list[str]]]:
    """(the label store, read and checked; the pixel size, None meaning the bundled model's; ``training_tiles``)."""
    store = read_store(store_path)
    for note in store.repairs:
        progress.log(f"warning: {note}")
    check_store(store)
    pixel_size = pixel_size or read_card(DEFAULT_MODEL).pixel_size
    return store, pixel_size, training_tiles(store, tile, pixel_size, progress, classes)


def store_record(store: LabelStore, scenes: list[str], skipped: int) -> dict[str, Any]:
    """What a generator card's ``training`` says of the label store tiles it learnt from."""
    return {"labels": {"path": str(store.path.resolve()), "sha256": store.sha256}, "scenes": scenes, "skipped_tiles": skipped}


def balancing(data: JointSet, given: Optional[float], parent: Optional[Parent]) -> tuple[float, str]:
    """(b, where it came from): ``given``, else the parent's (its label channels learnt at that scale), else
    from the tiles (eq. 16)."""
    if given is not None:
        return given, "given"
    if parent is not None:
        return parent.card.b, "parent"
    return balancing_factor(data), "tiles"


def training_record(
    card: GeneratorCard, source: dict[str, Any], b_from: str, config: Any, seconds: dict[int, float], history: list[dict],
    parent: Optional[Parent],
) -> dict[str, Any]:
    """A generator card's ``training``: what ``source`` says of the tiles, b's origin, the network, the settings
    (``config``, a dataclass), the seconds of training over every run that went into it, the loss history and
    the generator it started from."""
    return {
        **source,
        "b_from": b_from,
        "net": net_name(card.unet),
        **asdict(config),
        "seconds": round(sum(seconds.values()), 1),
        "history": history,
        **({"initialised_from": parent.record()} if parent is not None else {}),
    }


def write_generator(net: torch.nn.Module, card: GeneratorCard, out_path: Path, progress: Progress) -> None:
    """Written once training succeeded, whole (``save_model``), never over a file."""
    progress.update("saving", 0, 1, "Writing the generator file")
    check_new_model_file(out_path)  # a file may have appeared there while training ran
    save_generator(net, card, out_path)
