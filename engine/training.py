"""One training loop for pretraining and fine-tuning segmentation models on stretched tiles.

Inputs are tiles already stretched by ``normalise.Stretch`` (0..255, 0 = no data), the same path as
detection. The loop keeps the weights of the epoch with the lowest validation loss and stops early when
it stops improving, as the paper does.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .losses import slick_loss
from .progress import Progress, silent


@dataclass
class TileSet:
    """Stretched tiles (N,1,H,W float32 0..255), slick targets and valid-pixel masks (N,1,H,W 0/1)."""

    x: torch.Tensor
    y: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def from_arrays(cls, tiles: list[np.ndarray], masks: list[np.ndarray]) -> "TileSet":
        x = torch.from_numpy(np.stack(tiles).astype(np.float32)).unsqueeze(1)
        y = torch.from_numpy(np.stack(masks).astype(np.float32)).unsqueeze(1)
        return cls(x, y, (x > 0).float())

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    seed: int = 0
    input_scale: float = 1 / 255


@dataclass
class TrainReport:
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    val_dice: float
    seconds: float
    tiles_per_second: float
    history: list[dict] = field(default_factory=list)


def augment(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Flips, quarter turns, and brightness/contrast shifts of the stretched values (no data stays 0)."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    flip = bool(torch.randint(0, 2, (1,), generator=gen))
    out = []
    for t in (x, y, valid):
        t = torch.rot90(t, k, dims=(2, 3))
        out.append(torch.flip(t, dims=(3,)) if flip else t)
    x, y, valid = out
    gain = 1 + 0.2 * (torch.rand((x.shape[0], 1, 1, 1), generator=gen) - 0.5)
    shift = 20 * (torch.rand((x.shape[0], 1, 1, 1), generator=gen) - 0.5)
    x = torch.where(valid > 0, ((x - 127.5) * gain + 127.5 + shift).clamp(1, 255), x)
    return x, y, valid


def dice_score(model: torch.nn.Module, data: TileSet, config: TrainConfig, batch: int = 8) -> tuple[float, float]:
    """(mean loss, slick Dice over all pixels of ``data``): the validation figures."""
    model.eval()
    tp = fp = fn = 0.0
    losses = []
    with torch.inference_mode():
        for i in range(0, len(data), batch):
            x, y, v = data.x[i : i + batch], data.y[i : i + batch], data.valid[i : i + batch]
            logits = model(x * config.input_scale)
            losses.append(float(slick_loss(logits, y, v)) * x.shape[0])
            pred = (logits > 0).float() * v
            tp += float((pred * y).sum())
            fp += float((pred * (1 - y)).sum())
            fn += float(((1 - pred) * y * v).sum())
    dice = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return sum(losses) / max(len(data), 1), dice


def train(model: torch.nn.Module, train_set: TileSet, val_set: TileSet, config: TrainConfig, progress: Progress | None = None) -> TrainReport:
    """Train in place; on return ``model`` holds the best validation-loss weights."""
    progress = progress or silent()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train_set) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch)
    best_loss, best_epoch, best_state, stale = float("inf"), 0, copy.deepcopy(model.state_dict()), 0
    history: list[dict] = []
    started = time.monotonic()
    seen = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train_set), generator=gen)
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x, y, v = augment(train_set.x[idx], train_set.y[idx], train_set.valid[idx], gen)
            loss = slick_loss(model(x * config.input_scale), y, v)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            running += loss.item()
            seen += len(idx)
            progress.update("training", (epoch - 1) * steps_per_epoch + step + 1, config.epochs * steps_per_epoch, f"epoch {epoch}")
        val_loss, val_dice = dice_score(model, val_set, config)
        history.append({"epoch": epoch, "train_loss": running / steps_per_epoch, "val_loss": val_loss, "val_dice": val_dice})
        progress.log(f"epoch {epoch}: train loss {running / steps_per_epoch:.4f}, val loss {val_loss:.4f}, val Dice {val_dice:.3f}")
        if val_loss < best_loss:
            best_loss, best_epoch, best_state, stale = val_loss, epoch, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    seconds = time.monotonic() - started
    return TrainReport(
        epochs_run=len(history),
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        val_dice=next(h["val_dice"] for h in history if h["epoch"] == best_epoch),
        seconds=round(seconds, 1),
        tiles_per_second=round(seen / seconds, 2),
        history=history,
    )
