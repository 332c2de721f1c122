"""The paper's segmentation loss as training uses it: the BCE's slick weight, its cap from the training config, and the
centre-line recall term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.models.losses import label_skeleton, skeleton_recall_loss, soft_dice_loss
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


def test_the_skeleton_is_each_strand_s_centre_line_three_pixels_wide():
    """A 5-px strand keeps its middle three rows; a 25 x 30-px patch only its medial line, so a wide slick weighs
    little more than a thin one of the same length."""
    y = torch.zeros(1, 1, 64, 64)
    y[0, 0, 20:25, 5:60] = 1.0
    y[0, 0, 35:60, 10:40] = 1.0
    skeleton = label_skeleton(y)
    assert torch.equal(skeleton[0, 0, 18:27, 30], torch.tensor([0.0, 0, 0, 1, 1, 1, 0, 0, 0]))
    assert bool((skeleton <= y).all())
    patch = skeleton[0, 0, 35:60, 10:40]
    assert 0 < patch.sum() < 0.15 * 25 * 30 and patch[:, 25 - 10].sum() == 3  # three pixels across its middle


def test_skeleton_recall_counts_a_missed_thin_strand_where_dice_barely_does():
    """Finding the wide slick of a batch and missing a thin strand beside it costs Dice a tenth, the skeleton's recall
    most of it (a square's skeleton is its centre); the term is added to the paper's loss only when weighted, and is
    nothing without slicks."""
    y = torch.zeros(1, 1, 64, 64)
    y[0, 0, 5:45, 5:45] = 1.0  # wide
    y[0, 0, 55:58, 2:62] = 1.0  # thin, 60 px long
    valid = torch.ones_like(y)
    found_wide = torch.where(y.bool() & (torch.arange(64)[:, None] < 50), 9.0, -9.0)
    assert soft_dice_loss(found_wide, y, valid) < 0.12
    assert skeleton_recall_loss(found_wide, y, valid) > 0.8
    data = TileSet(x=torch.zeros_like(y), y=y, valid=valid)
    plain = tile_loss(found_wide, data, TrainConfig())
    assert torch.allclose(tile_loss(found_wide, data, TrainConfig(skeleton_weight=0.5)),
                          plain + 0.5 * skeleton_recall_loss(found_wide, y, valid))
    logits = torch.randn(y.shape, requires_grad=True)
    nothing = skeleton_recall_loss(logits, torch.zeros_like(y), valid)
    nothing.backward()
    assert nothing.item() == 0.0 and logits.grad is not None


def test_a_teacher_s_term_pulls_the_logits_toward_its_probability_and_leaves_untaught_tiles_alone():
    """Where a tile carries no teacher's probability (validation) the loss is the paper's; where it does, a gradient
    step on the teacher's term alone moves the student's softened probability toward the teacher's, from either side;
    a skeleton term is added to it as to the paper's loss."""
    from engine.models.losses import TeacherLoss, slick_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.9).float()
    valid = torch.ones_like(target)
    loss = TeacherLoss(cap=1.0)
    assert torch.equal(loss(logits, target, valid), slick_loss(logits, target, valid, cap=1.0))
    teacher = torch.sigmoid(torch.randn(2, 1, 16, 16) * 3 / loss.temperature)
    student = logits.clone().requires_grad_(True)
    (loss(student, target, valid, teacher) - slick_loss(student, target, valid, cap=1.0)).backward()
    stepped = torch.sigmoid((student - 2 * valid.sum() * student.grad) / loss.temperature)  # the mean's 1/N undone
    before = (torch.sigmoid(logits / loss.temperature) - teacher).abs()
    assert (stepped - teacher).abs().mean() < 0.7 * before.mean()
    assert ((stepped - teacher).abs() < before).all()
    config = TrainConfig(student=loss, skeleton_weight=0.5)  # a skeleton term is added to a teacher's loss as to the paper's
    taught = TileSet(torch.rand(2, 1, 16, 16) * 255, target, valid, teacher)
    torch.testing.assert_close(tile_loss(logits, taught, config),
                               loss(logits, target, valid, teacher) + 0.5 * skeleton_recall_loss(logits, target, valid))
