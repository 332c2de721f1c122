"""Networks run as one model whose logit is the mean (or the minimum) of theirs.

With four labelled scenes to learn from, the seed alone moves a held-out scene's Dice by up to 0.3
(docs/benchmark_bcecap.md): which dark lines a model calls slick is partly chance. Averaging the members'
logits (a deep ensemble, Lakshminarayanan et al. 2017) keeps what they agree on; averaging their weights
instead (a soup) did not help (docs/benchmark_soup.md). Members may be different networks (a U-Net that learnt
real scenes beside a DeepLabV3 that learnt synthetic ones), since only their logits meet. They live in one module,
so every runtime exports and runs an ensemble as it does a single network, at the members' summed cost.

Measured by leave one scene out: two seeds' mean logit 0.451 against 0.448 for the two seeds' own models, and on one
view of each tile no better than one model (docs/benchmark_ensemble_bce1.md); the bundled U-Net beside a DeepLabV3-R18
0.481 against 0.454, with more false slicks than the bound set for bundling it, and by their minimum logit 0.443, its cut
placed lower and its false slicks no fewer (docs/benchmark_ensemble_dlv3r18.md); beside the paper's DeepLabV3-R50 0.485
against 0.442 with no more false slicks: the heavier model an analyst makes with ``make quality-model``
(docs/benchmark_ensemble_r50.md).
"""

from __future__ import annotations

from typing import Any

import torch

from .registry import architecture


FUSIONS = ("mean", "min")
"""How the members' logits meet: their mean, or their minimum (a pixel is slick only where every member calls it so,
which keeps one member's look-alikes out where the other rejects them)."""


def member_spec(architecture_name: str, encoder: str, arch_kwargs: dict[str, Any]) -> dict[str, Any]:
    """How an ensemble's card names one member: enough to build it, as a model card would."""
    return {"architecture": architecture_name, "encoder": encoder, "arch_kwargs": dict(arch_kwargs)}


class Ensemble(torch.nn.Module):
    """The networks ``members`` (``member_spec``s) name, built as smp's are; ``encoder_name`` is the first member's,
    kept so the card lists like any other."""

    def __init__(self, encoder_name: str, encoder_weights: None = None, in_channels: int = 1, classes: int = 1,
                 members: tuple[dict[str, Any], ...] = (), fusion: str = "mean") -> None:
        super().__init__()
        if len(members) < 2:
            raise TypeError("an ensemble needs two or more members")
        if fusion not in FUSIONS:
            raise TypeError(f"an ensemble fuses its members' logits by one of {', '.join(FUSIONS)}, not {fusion!r}")
        self.fusion = fusion
        self.members = torch.nn.ModuleList(
            architecture(m["architecture"])(encoder_name=m["encoder"], encoder_weights=encoder_weights, in_channels=in_channels,
                                            classes=classes, **m["arch_kwargs"])
            for m in members)

    @property
    def encoder(self) -> torch.nn.ModuleList:
        """The members' encoders, which training groups and freezes as it does one network's."""
        return torch.nn.ModuleList(member.encoder for member in self.members)

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Fine-tuning trains the first member (the one that learnt real scenes, ``make quality-model``'s U-Net) and
        keeps the others as they are: a partner that never saw a real pixel is worth its place for erring elsewhere
        (docs/benchmark_ensemble_r50.md), which a few labels of one scene would train out of it. With the heavier model
        as parent, half-scene fine-tuning's held halves end at 0.575 against 0.546 when every member learns (four seeds,
        as many halves worse, the worst by less), in a third of the time (docs/within_scene.md)."""
        from .training import parameter_groups

        groups = parameter_groups(self.members[0])
        groups["frozen"] = groups["frozen"] + [p for member in self.members[1:] for p in member.parameters()]
        return groups

    def train(self, mode: bool = True) -> "Ensemble":
        """Only the first member ever learns (``parameter_groups``): the others keep their batch-norm statistics."""
        super().train(mode)
        for member in self.members[1:]:
            member.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([member(x) for member in self.members])
        return logits.amin(dim=0) if self.fusion == "min" else logits.mean(dim=0)
