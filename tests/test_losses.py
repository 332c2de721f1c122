"""The paper's segmentation loss as training uses it: the BCE's slick weight, and its cap from the training config."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.models.losses import soft_dice_loss
from engine.models.registry import POS_WEIGHT_CAP
from engine.models.training import TileSet, TrainConfig, tile_loss


def _batch(slick_pixels: int) -> tuple[torch.Tensor, TileSet]:
    gen = torch.Generator().manual_seed(3)
    y = torch.zeros(2, 1, 32, 32)
    y.view(-1)[torch.randperm(y.numel(), generator=gen)[:slick_pixels]] = 1.0
    valid = torch.ones_like(y)
    valid[:, :, :4] = 0.0  # a no-data band the loss must leave out
    logits = torch.randn(y.shape, generator=gen)
    return logits, TileSet(x=torch.zeros_like(y), y=y, valid=valid)


def _by_hand(logits: torch.Tensor, data: TileSet, weight: float) -> torch.Tensor:
    v = data.valid > 0
    per_pixel = F.binary_cross_entropy_with_logits(logits, data.y, reduction="none")
    per_pixel = torch.where(data.y > 0, weight * per_pixel, per_pixel)
    return 0.5 * per_pixel[v].mean() + 0.5 * soft_dice_loss(logits, data.y, data.valid)


def test_slick_pixels_weigh_by_their_rarity_up_to_the_configured_cap():
    logits, data = _batch(slick_pixels=40)
    v = data.valid > 0
    positives = float(data.y[v].sum())
    rarity = (float(v.sum()) - positives) / positives
    assert 1.0 < rarity < POS_WEIGHT_CAP  # the default cap leaves this batch's own weight
    assert torch.allclose(tile_loss(logits, data, TrainConfig()), _by_hand(logits, data, rarity))
    assert torch.allclose(tile_loss(logits, data, TrainConfig(pos_weight_cap=10.0)), _by_hand(logits, data, 10.0))
    plain = tile_loss(logits, data, TrainConfig(pos_weight_cap=1.0))
    assert torch.allclose(plain, _by_hand(logits, data, 1.0))
    assert plain < tile_loss(logits, data, TrainConfig())  # random logits miss slick pixels: weighting them costs more


def test_a_batch_without_slick_pixels_is_plain_bce():
    logits, data = _batch(slick_pixels=0)
    assert torch.allclose(tile_loss(logits, data, TrainConfig()), _by_hand(logits, data, 1.0))


def test_fine_tuning_trains_with_its_parent_s_cap_unless_told_otherwise(tiny_model):
    """A fine-tuned model keeps its parent's threshold, which only means the same under the parent's loss."""
    from dataclasses import replace

    from engine.jobs.finetune import FinetuneOptions, train_config
    from engine.models.registry import read_card

    card = read_card(tiny_model)
    plain = replace(card, pos_weight_cap=1.0)
    cpu = torch.device("cpu")
    assert card.pos_weight_cap == POS_WEIGHT_CAP and train_config(card, FinetuneOptions(), cpu).pos_weight_cap == POS_WEIGHT_CAP
    assert train_config(plain, FinetuneOptions(), cpu).pos_weight_cap == 1.0
    assert train_config(plain, FinetuneOptions(pos_weight_cap=10.0), cpu).pos_weight_cap == 10.0
