"""Networks of one recipe, trained with different seeds, run as one model whose logit is their mean.

With four labelled scenes to learn from, the seed alone moves a held-out scene's Dice by up to 0.3
(docs/benchmark_bcecap.md): which dark lines a model calls slick is partly chance. Averaging the members'
logits (a deep ensemble, Lakshminarayanan et al. 2017) keeps what they agree on; averaging their weights
instead (a soup) did not help (docs/benchmark_soup.md). The members live in one network, so every runtime
exports and runs an ensemble as it does a single U-Net, at the members' summed cost.

Measured by leave one scene out (docs/benchmark_ensemble_bce1.md): two seeds' mean logit 0.451 against 0.448 for the
two seeds' own models, and on one view of each tile no better than one model; the bundled model stays one network.
"""

from __future__ import annotations

import torch

from .registry import architecture


class Ensemble(torch.nn.Module):
    """``members`` networks of ``member_architecture``, all built with the same arguments; built as smp's are."""

    def __init__(self, encoder_name: str, encoder_weights: None = None, in_channels: int = 1, classes: int = 1,
                 members: int = 2, member_architecture: str = "unet", **kwargs) -> None:
        super().__init__()
        build = architecture(member_architecture)
        self.members = torch.nn.ModuleList(build(encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels,
                                                 classes=classes, **kwargs) for _ in range(members))

    @property
    def encoder(self) -> torch.nn.ModuleList:
        """The members' encoders, which training groups and freezes as it does one network's."""
        return torch.nn.ModuleList(member.encoder for member in self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)
