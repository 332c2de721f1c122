"""The transfer-learning paper's loss: L = (1 - a) weighted BCE + a Dice (eqs. 2-3, a = 0.5).

The BCE weight is inverse to the slick frequency of the batch, so the rare slick pixels count as much as
the sea around them; the Dice term is on the slick class only, like the metric (eq. 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALPHA = 0.5


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    prob = torch.sigmoid(logits) * valid
    target = target * valid
    intersection = (prob * target).sum()
    return 1 - (2 * intersection + eps) / (prob.sum() + target.sum() + eps)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    positives = (target * valid).sum()
    negatives = valid.sum() - positives
    pos_weight = (negatives / positives.clamp(min=1.0)).clamp(1.0, 100.0)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1.0)


def slick_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """(B,1,H,W) logits, 0/1 target and 0/1 valid-pixel mask -> scalar loss."""
    return (1 - alpha) * weighted_bce(logits, target, valid) + alpha * soft_dice_loss(logits, target, valid)
