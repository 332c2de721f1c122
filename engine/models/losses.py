"""Segmentation losses of a one-logit (water/slick) model, over the valid pixels only.

The transfer-learning paper's loss, L = (1 - a) weighted BCE + a Dice (eqs. 2-3, a = 0.5), trains on real
labels alone. The BCE weight is inverse to the slick frequency of the batch, so the rare slick pixels count
as much as the sea around them; the Dice term is on the slick class only, like the metric (eq. 4).

A student learning from generated samples as well (DAKTer, eqs. 4-6) uses ``StudentLoss`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .registry import POS_WEIGHT_CAP

ALPHA = 0.5


def masked_mean(loss: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (loss * valid).sum() / valid.sum().clamp(min=1.0)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    prob = torch.sigmoid(logits) * valid
    target = target * valid
    intersection = (prob * target).sum()
    return 1 - (2 * intersection + eps) / (prob.sum() + target.sum() + eps)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, cap: float = POS_WEIGHT_CAP) -> torch.Tensor:
    positives = (target * valid).sum()
    negatives = valid.sum() - positives
    pos_weight = (negatives / positives.clamp(min=1.0)).clamp(1.0, cap)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    return masked_mean(loss, valid)


def slick_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, alpha: float = ALPHA,
               cap: float = POS_WEIGHT_CAP) -> torch.Tensor:
    """(B,1,H,W) logits, 0/1 target and 0/1 valid-pixel mask -> scalar loss; ``cap`` bounds the BCE's slick weight."""
    return (1 - alpha) * weighted_bce(logits, target, valid, cap) + alpha * soft_dice_loss(logits, target, valid)


def label_skeleton(target: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) 0/1 labels -> their morphological skeleton, widened to three pixels and kept inside the label.

    Lantuejoul's skeleton by min/max pooling (the soft skeleton of clDice, Shit et al. 2021, on hard labels): what each
    erosion's opening removes, eroding until nothing is left, so a slick of any width has its centre line. Widened as
    Kirchhoff et al. 2024 tube theirs, so a prediction a pixel off the centre line still counts."""

    def erode(img: torch.Tensor) -> torch.Tensor:
        return torch.minimum(-F.max_pool2d(-img, (3, 1), 1, (1, 0)), -F.max_pool2d(-img, (1, 3), 1, (0, 1)))

    def opened(img: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(erode(img), 3, 1, 1)

    widened = torch.zeros_like(target, dtype=torch.float32)
    tiles = target.flatten(1).any(1).nonzero().flatten()
    if len(tiles) == 0:
        return widened
    # Only the labels' bounding box is eroded (a few per cent of a batch of real tiles), two pixels around it so the
    # pooling's edges never touch a label where the tile has room.
    rows, cols = target.any(-1).any(0).any(0).nonzero().flatten(), target.any(-2).any(0).any(0).nonzero().flatten()
    box = (slice(max(int(rows[0]) - 2, 0), int(rows[-1]) + 3), slice(max(int(cols[0]) - 2, 0), int(cols[-1]) + 3))
    img = target[tiles][..., box[0], box[1]].float()
    skeleton = F.relu(img - opened(img))
    for _ in range(max(img.shape[-2:]) // 2):
        img = erode(img)
        if not img.any():
            break
        delta = F.relu(img - opened(img))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    widened[tiles, ..., box[0], box[1]] = F.max_pool2d(skeleton.clamp(max=1.0), 3, 1, 1)
    return widened * target


def skeleton_recall_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - the predicted slick probability's recall of the labels' skeleton (Kirchhoff et al. 2024): the Dice term
    weighs a slick by its pixels, so a thin strand beside a wide one costs it little; on its centre line every
    strand counts for its length. 0 for a batch without slicks."""
    skeleton = label_skeleton(target * valid)
    total = skeleton.sum()
    if total == 0:
        return logits.sum() * 0.0
    return 1 - (torch.sigmoid(logits) * skeleton).sum() / total


def distillation_loss(logits: torch.Tensor, soft: torch.Tensor, valid: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 4 for a one-logit student: T^2 times the mean over valid pixels of CE(q_t, p_s).

    The student's softened distribution over (not slick, slick) is (1 - s, s) with s = sigmoid(logit / T),
    the teacher's is (1 - q, q) with q its softened slick probability, so the cross-entropy is the binary
    one of logit / T against q. The T^2 keeps the gradient's size independent of T (Hinton et al.), since
    softening divides it by T^2.
    """
    ce = F.binary_cross_entropy_with_logits(logits / temperature, soft, reduction="none")
    return temperature**2 * masked_mean(ce, valid)


@dataclass(frozen=True)
class StudentLoss:
    """DAKTer's student losses: eq. 6 on real tiles, eq. 5 on generated ones (weights of supplementary B.2).

    Eq. 6's CE is the slick-weighted binary cross-entropy of ``slick_loss``, not the paper's plain one. On
    the Arctic pool (slicks on 0.6 % of the pixels, 7 % of the 64-px tiles) plain CE with its 0.5 Dice let
    students collapse to predicting no slick anywhere: test Dice 0.000 in 2 of the first 3 runs with plain
    CE (engine/experiments/dakter_eval.py), where the paper's OSD data are far less unbalanced. Eq. 5's Dice is against
    the generator's hard label (its most probable class): softened
    at T = 2, a soft target would put the Dice optimum at predictions that are not the teacher's, and the
    soft information is the KD term's job; the hard label is also the one the sample browser shows.
    """

    temperature: float
    ce: float = 1.0
    kd: float = 0.1
    dice: float = 0.5

    def real(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Eq. 6: labels of real tiles."""
        return self.ce * weighted_bce(logits, target, valid) + self.dice * soft_dice_loss(logits, target, valid)

    def generated(self, logits: torch.Tensor, soft: torch.Tensor, hard: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Eq. 5: a generator's soft label ``soft`` (softened at this loss's T) and its hard label ``hard``."""
        return self.kd * distillation_loss(logits, soft, valid, self.temperature) + self.dice * soft_dice_loss(logits, hard, valid)

    def __call__(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor,
        soft: Optional[torch.Tensor] = None,
        generated: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """A batch of real tiles, or one mixing both kinds (``generated``: (B,) bool): each kind's loss is
        weighted by its share of the batch's tiles, so that every tile counts the same whichever it is.
        Dice is a whole-batch quantity, so each kind has its own."""
        if generated is None or not generated.any():
            return self.real(logits, target, valid)
        n = len(generated)
        gen, real = generated, ~generated
        loss = gen.sum() / n * self.generated(logits[gen], soft[gen], target[gen], valid[gen])
        if real.any():
            loss = loss + real.sum() / n * self.real(logits[real], target[real], valid[real])
        return loss


@dataclass(frozen=True)
class TeacherLoss:
    """The paper's loss on the labels plus Hinton's distillation (``distillation_loss``) toward another model's slick
    probability on every pixel, the teacher's soft label softened at ``temperature`` (``TileSet.soft``).

    For a light network learning from a heavier one: the bundled U-Net beside a DeepLabV3-R50 that never saw a real
    pixel marks slicks better on held-out scenes than the U-Net alone, at 32 times its cost a tile
    (docs/benchmark_ensemble_r50.md); taught by that pair on its training tiles, the U-Net alone might keep some of it.
    Tiles without a soft label (validation) get the paper's loss alone."""

    kd: float = 1.0
    temperature: float = 2.0
    alpha: float = ALPHA
    cap: float = POS_WEIGHT_CAP

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, soft: Optional[torch.Tensor] = None,
                 generated: Optional[torch.Tensor] = None) -> torch.Tensor:
        loss = slick_loss(logits, target, valid, self.alpha, self.cap)
        return loss if soft is None else loss + self.kd * distillation_loss(logits, soft, valid, self.temperature)
