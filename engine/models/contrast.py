"""A U-Net told, beside each pixel, how much darker it is than the sea around it.

The eq. 1 stretch is one affine map per scene, so the same slick is a different grey in a windy part of a scene
and in a calm one, and a network that learnt from four scenes has seen few of those pairings. The dark-spot
detector's statistic, the local darkness in standard deviations over a window of valid pixels, is the same
number wherever the wind is; ``ContrastUnet`` computes it inside the network and feeds it as a second
channel, so detection, training and every runtime get it without a new input. Zero padding (beyond the tile is
no data) keeps it the same in any tile away from tile edges, as for the dark-spot detector; the window's radius
stays within half detection's tile overlap.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch

from ..errors import ModelError
from .darkspot import darkness
from .registry import ModelCard, build_model, load_model, save_model

WINDOW = 63
"""Pixels on a side of the local statistics' window: 1.6 km at 25 m, wider than a seep's strands are and within
half detection's 64-pixel tile overlap."""
CLIP = 4.0
"""Darkness beyond this many standard deviations is clipped; the channel is then scaled to -1..1."""


class ContrastUnet(torch.nn.Module):
    """smp's U-Net over (stretched tile, its local darkness); built as smp's networks are."""

    def __init__(self, encoder_name: str, encoder_weights: None = None, in_channels: int = 1, classes: int = 1,
                 window: int = WINDOW, **kwargs) -> None:
        super().__init__()
        self.window = int(window)
        self.net = smp.Unet(encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels + 1,
                            classes=classes, **kwargs)

    @property
    def encoder(self) -> torch.nn.Module:
        """smp's encoder, which training groups and freezes as it does a plain U-Net's."""
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        valid = (x > 0).to(x.dtype)
        dark = darkness(x.float(), valid.float(), self.window).clamp(-CLIP, CLIP).to(x.dtype) / CLIP
        return self.net(torch.cat([x, dark], dim=1))


def with_contrast(source: Path, out: Path, window: int = WINDOW) -> Path:
    """``source`` (a U-Net model file) as a ``ContrastUnet`` that computes exactly what it did: its weights, and
    zeros where the stem reads the darkness channel, so training starts from the same function."""
    model, card = load_model(source)
    if card.architecture != "unet":
        raise ModelError(f"{card.name} is a {card.architecture}, not a U-Net.", "Start the local-contrast network from a U-Net model file.")
    new = ModelCard.from_json(card.to_json())
    new.architecture, new.arch_kwargs = "unet_contrast", {**card.arch_kwargs, "window": window}
    new.name = f"{card.name} with local contrast"
    new.lineage = {"initialised_from": {"name": card.name, "file": Path(source).name}}
    network = build_model(new)
    state = network.net.state_dict()
    for key, value in model.state_dict().items():
        if state[key].shape == value.shape:
            state[key] = value
        else:  # the stem: the tile's channel keeps its weights, the darkness channel starts at zero
            state[key] = torch.zeros_like(state[key])
            state[key][:, :value.shape[1]] = value
    network.net.load_state_dict(state)
    return save_model(network, new, out)
