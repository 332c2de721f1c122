"""The generator a training starts from (``generator train --init``), e.g. one pretrained on real SAR texture.

Its weights mean something only for the network, tile size, classes and pixel size they were trained
with, so a fine-tune takes all four from it; a run that asks for others is refused with what differs, and
a file of the other kind with the kind it holds. The new generator's card names the parent by its hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..errors import InputError
from ..machine import file_sha256
from ..models.registry import read_weights
from .joint_ddpm import NETS, GeneratorCard, net_name, read_generator_card


@dataclass(frozen=True)
class Parent:
    path: Path
    card: GeneratorCard
    sha256: str

    @classmethod
    def read(cls, path: str | Path, kind: str) -> "Parent":
        """The generator file at ``path``, which must hold a generator of ``kind``."""
        path = Path(path)
        card = read_generator_card(path)
        if card.kind != kind:
            raise InputError(
                f"{path.name} holds a {card.kind} generator; a {kind} generator cannot start from it.",
                f"Give --kind {card.kind} to fine-tune it, or --init a {kind} generator.",
            )
        return cls(path, card, file_sha256(path))

    def weights(self) -> dict[str, torch.Tensor]:
        return read_weights(self.path)

    def options(self) -> dict[str, Any]:
        """The training options a fine-tune takes from the parent unless given: its tile size and network."""
        name = net_name(self.card.unet)
        return {"tile": self.card.tile_size, "net": name if name in NETS else self.card.unet}

    def check(self, tile: int, unet: dict[str, Any], classes: Sequence[str], pixel_size: Optional[float]) -> None:
        """Refuse a generator of other ``tile``, network, ``classes`` or ``pixel_size`` (None: the parent's)."""
        layers = ("sample_size", "in_channels", "out_channels")  # the tile and the classes, compared on their own
        theirs = {k: v for k, v in self.card.unet.items() if k not in layers}
        ours = {k: v for k, v in unet.items() if k not in layers}
        differ = [
            f"{what} {mine} where this run asks for {asked}"
            for what, mine, asked, same in (
                ("tile size", self.card.tile_size, tile, self.card.tile_size == tile),
                ("network", net_name(self.card.unet), net_name(unet), theirs == ours),
                ("classes", ", ".join(self.card.classes), ", ".join(classes), list(self.card.classes) == list(classes)),
                ("pixel size", self.card.pixel_size, pixel_size, pixel_size in (None, self.card.pixel_size)),
            )
            if not same
        ]
        if differ:
            raise InputError(
                f"{self.path.name} cannot start this generator: it has {'; '.join(differ)}.",
                "Leave out --tile, --net and --pixel-size to take the generator's own, or train from scratch without --init.",
            )

    def record(self) -> dict[str, Any]:
        """What the new generator's card says of where it started."""
        return {"name": self.card.name, "file": self.path.name, "kind": self.card.kind, "sha256": self.sha256}
