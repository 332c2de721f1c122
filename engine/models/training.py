"""One training loop for pretraining and fine-tuning segmentation models on stretched tiles.

Inputs are tiles already stretched by ``normalise.Stretch`` (0..255, 0 = no data), the same path as
detection. The loop keeps the weights of the epoch with the lowest validation loss and stops early when
it stops improving, as the paper does. Fine-tuning uses the same loop with the paper's augmentation, a
learning rate from ``lr_range_test``, optionally a frozen encoder, and bf16 autocast where the hardware
has it. A student (engine/generation/distill.py) trains in the same loop on a set that also holds generated tiles with
their soft labels, with ``StudentLoss`` in place of the transfer-learning paper's.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, runtime_checkable

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..atomic import staged
from ..contract import TRAIN_LAYERS
from ..progress import Progress, silent
from .eager import autocast, fast_dtype
from .losses import ALPHA, StudentLoss, TeacherLoss, skeleton_recall_loss, slick_loss
from .registry import POS_WEIGHT_CAP
from .views import FLIPS

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""``(x, y, valid, generator) -> (x, y, valid)`` on a batch of (N,1,H,W) tiles."""
TRAINED_GROUPS = {"all": ("encoder", "decoder"), "decoder": ("decoder",)}
"""``train_layers`` -> the parameter groups it trains; the ``frozen`` group never trains."""
assert set(TRAINED_GROUPS) == set(TRAIN_LAYERS)


@dataclass
class TileSet:
    """Stretched tiles (N,1,H,W float32 0..255), slick targets and valid-pixel masks (N,1,H,W 0/1)."""

    x: torch.Tensor
    y: torch.Tensor
    valid: torch.Tensor
    soft: Optional[torch.Tensor] = None
    """Student or taught training only: the slick probability each pixel is taught, (N,1,H,W): a generated tile's
    soft label (eq. 3), a real tile's label itself; or a teacher's probability (``TeacherLoss``)."""
    generated: Optional[torch.Tensor] = None
    """Student training only, with ``soft``: (N,) bool, which tiles are generated."""

    @classmethod
    def from_arrays(cls, tiles: list[np.ndarray], masks: list[np.ndarray]) -> "TileSet":
        x = torch.from_numpy(np.stack(tiles).astype(np.float32)).unsqueeze(1)
        y = torch.from_numpy(np.stack(masks).astype(np.float32)).unsqueeze(1)
        return cls(x, y, (x > 0).float())

    def __len__(self) -> int:
        return self.x.shape[0]

    def take(self, idx: torch.Tensor | slice) -> "TileSet":
        return TileSet(*(None if t is None else t[idx] for t in (self.x, self.y, self.valid, self.soft, self.generated)))

    def to(self, device: torch.device) -> "TileSet":
        return TileSet(*(None if t is None else t.to(device) for t in (self.x, self.y, self.valid, self.soft, self.generated)))


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


def paper_augment(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The paper's fine-tuning augmentation (rotation up to 30 degrees, soft zoom, crops, brightness and
    contrast) plus flips, drawn per tile.

    Geometric draws move image, target and valid mask together (masks by nearest neighbour); corners
    rotated in and pixels that were no data stay 0 and leave the loss. torchvision draws from torch's
    global generator, which ``train`` seeds, so ``gen`` is not used.
    """
    size = x.shape[-2:]
    geometric = v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomAffine(degrees=30, scale=(0.9, 1.1)),
        v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25)),
    ])
    photometric = v2.ColorJitter(brightness=0.2, contrast=0.2)
    out = []
    for xi, yi, vi in zip(x, y, valid):
        image, target, known, data = geometric(
            tv_tensors.Image(xi / 255), tv_tensors.Mask(yi), tv_tensors.Mask(vi), tv_tensors.Mask((xi > 0).float())
        )
        image = photometric(image)
        data = data > 0
        out.append((
            torch.where(data, (image * 255).clamp(1, 255), 0).as_subclass(torch.Tensor),
            target.as_subclass(torch.Tensor),
            (known * data).as_subclass(torch.Tensor),
        ))
    return tuple(torch.stack(parts) for parts in zip(*out))


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    seed: int = 0
    input_scale: float = 1 / 255
    augment: Augment = augment
    train_layers: str = "all"
    """``all``, or ``decoder``: the encoder frozen, batch-norm statistics included (few labels, CPU)."""
    threshold: float = 0.5
    """The parent's decision threshold (``ModelCard.threshold``), kept when validation holds no slick."""
    select_on_dice: bool = False
    """Keep (and stop early on) the epoch with the best validation Dice at its calibrated threshold rather
    than the lowest validation loss. See ``train``."""
    calibrate: bool = True
    """False: every epoch is judged, and the kept weights returned, at ``threshold``: validation with few slick
    pixels places a threshold by luck (on a real scene, 210 pixels moved it from 0.95 to 0.70 and the rest of
    the scene from Dice 0.35 to 0.09), while it can still tell better weights from worse at a fixed one."""
    frozen_statistics: bool = False
    """Every batch-norm layer keeps the statistics training started with (a trained parent's; ``train_mode``)."""
    parent_competes: bool = False
    """The weights training started from are a candidate, epoch 0, judged by the same rule as every epoch:
    a fine-tuning that cannot beat its parent on the validation pixels hands back the parent."""
    parent_weight: float = 0.0
    """L2-SP (Li et al., 2018): ``parent_weight / 2`` times the squared distance of the trained weights from
    those training started with, added to the loss, so that a few labels adjust the parent rather than
    replace what it learnt elsewhere. 0: plain fine-tuning (AdamW's decay toward zero only)."""
    average_from: Optional[int] = None
    """Return the average of the weights at the end of every epoch from this one on (stochastic weight
    averaging, Izmailov et al., 2018), batch-norm statistics re-estimated on the training tiles, instead of the
    best single epoch; every epoch runs. An average lies in a wider optimum than any one epoch, which a model
    needs on scenes unlike its few labelled ones; validation then only places the threshold."""
    keep_last: bool = False
    """Every epoch runs and the last one's weights are returned; validation only places the threshold. Choosing the
    epoch on a few narrow validation bands is itself a draw that the kept weights inherit."""
    stop_after: Optional[int] = None
    """The last epoch to run, the learning-rate schedule still laid out for ``epochs``: a refit on every labelled pixel
    ends where the run that had validation kept its weights (``pretrain.refit``)."""
    checkpoint: Optional[Path] = None
    """A file the run saves itself to after every epoch and resumes from when it exists (long pretraining
    runs that outlast a session); deleted once the run has returned its weights."""
    pos_weight_cap: float = POS_WEIGHT_CAP
    """The most the BCE weights a slick pixel over a sea pixel (``weighted_bce``); the inverse slick frequency
    below it. A high weight makes every dark line worth calling slick, which the threshold must then cut back."""
    dice_weight: float = ALPHA
    """``a`` of the paper's loss, (1 - a) BCE + a Dice (``slick_loss``)."""
    skeleton_weight: float = 0.0
    """Weight of ``skeleton_recall_loss`` added to the paper's loss (0: none)."""
    device: str = "cpu"
    student: Optional[StudentLoss | TeacherLoss] = None
    """None: the transfer-learning paper's loss (``slick_loss``); otherwise a student's losses (eqs. 5-6) or the paper's
    loss with a teacher's (``TeacherLoss``), in validation too."""


@dataclass
class TrainReport:
    epochs_run: int
    best_epoch: int
    """0: no epoch beat the weights training started from (``TrainConfig.parent_competes``)."""
    best_val_loss: Optional[float]
    """None, as the other validation figures, for a run without validation tiles."""
    val_dice: Optional[float]
    """At 0.5 (a logit of 0), as ``dice_score`` counts."""
    threshold: float
    """The kept weights' Dice-maximising threshold on the validation tiles (``calibrated_threshold``); without
    validation tiles, ``TrainConfig.threshold``."""
    val_dice_calibrated: Optional[float]
    """The kept weights' validation Dice at ``threshold``."""
    seconds: float
    val_seconds: float
    """Of ``seconds``, the time spent scoring the validation tiles after each epoch."""
    tiles_per_second: float
    history: list[dict] = field(default_factory=list)


def training_dtype(device: torch.device) -> Optional[torch.dtype]:
    """bf16 where the hardware runs it natively; fp16 would need loss scaling and plain CPUs emulate bf16."""
    return torch.bfloat16 if fast_dtype(device) == torch.bfloat16 else None


@runtime_checkable
class DeclaresParameterGroups(Protocol):
    """A network that says which of its parameters are ``encoder``, ``decoder`` and ``frozen`` (SamLoRA: the
    LoRA adapters are its trainable encoder part, the pretrained ViT weights are frozen)."""

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]: ...


def parameter_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """The model's own groups where it declares them; otherwise (smp) ``model.encoder`` and everything else."""
    if isinstance(model, DeclaresParameterGroups):
        return model.parameter_groups()
    encoder = list(model.encoder.parameters())
    inside = {id(p) for p in encoder}
    return {"encoder": encoder, "decoder": [p for p in model.parameters() if id(p) not in inside], "frozen": []}


def trainable_parameters(model: torch.nn.Module, train_layers: str) -> list[torch.nn.Parameter]:
    """Freeze the encoder for ``decoder``: a few hundred labelled pixels cannot retrain millions of weights,
    and a step that backpropagates through the decoder alone is about 1.5x faster on a CPU (default U-Net).
    Parameters in no trained group are frozen, whatever they were before."""
    if train_layers not in TRAIN_LAYERS:
        raise ValueError(f"train_layers must be one of {TRAIN_LAYERS}, got {train_layers!r}")
    groups = parameter_groups(model)
    trained = {id(p) for group in TRAINED_GROUPS[train_layers] for p in groups[group]}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trained)
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def train_mode(model: torch.nn.Module, train_layers: str, frozen_statistics: bool = False) -> None:
    """Training mode, except a frozen encoder's batch norms, whose statistics must stay the parent's, and
    with ``frozen_statistics`` every batch norm's (as smp's ``freeze_encoder`` does for the encoder).

    Few-shot batches of four mostly-sea tiles re-estimate the running statistics far from those the parent's
    weights were fitted to: on the Arctic tiles, training at a learning rate of 1e-6, where the weights
    barely move, dropped the validation Dice from 0.35 to 0.17 in six epochs through the statistics alone."""
    model.train()
    if train_layers == "decoder":
        model.encoder.eval()
    if frozen_statistics:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def tile_loss(logits: torch.Tensor, batch: TileSet, config: TrainConfig) -> torch.Tensor:
    if config.student is None and batch.soft is not None:
        raise ValueError("a set with soft labels needs a StudentLoss or a TeacherLoss in the TrainConfig")
    loss = (slick_loss(logits, batch.y, batch.valid, alpha=config.dice_weight, cap=config.pos_weight_cap) if config.student is None
            else config.student(logits, batch.y, batch.valid, batch.soft, batch.generated))
    return loss + config.skeleton_weight * skeleton_recall_loss(logits, batch.y, batch.valid) if config.skeleton_weight else loss


def augmented(batch: TileSet, config: TrainConfig, gen: torch.Generator) -> TileSet:
    """``config.augment`` applied to a batch; soft labels ride along as a second label channel, so that
    they move exactly as the hard ones."""
    if batch.soft is None:
        return TileSet(*config.augment(batch.x, batch.y, batch.valid, gen))
    x, labels, valid = config.augment(batch.x, torch.cat([batch.y, batch.soft], dim=1), batch.valid, gen)
    return TileSet(x, labels[:, :1], valid, labels[:, 1:], batch.generated)


def batch_loss(model: torch.nn.Module, data: TileSet, idx: torch.Tensor, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Loss of one augmented batch, forward pass under autocast where it helps, loss in float32."""
    device = torch.device(config.device)
    batch = augmented(data.take(idx), config, gen).to(device)
    with autocast(device, training_dtype(device)):
        logits = model(batch.x * config.input_scale)
    return tile_loss(logits.float(), batch, config)


THRESHOLDS = np.round(np.concatenate([np.arange(0.05, 0.96, 0.05), [0.97, 0.98, 0.99]]), 2)
"""Decision thresholds a validation set picks from: a coarse grid, since a few validation tiles cannot place
a threshold more finely, in the steps of the plugin's threshold field, closer together at the top, where
models trained with positively weighted BCE put their slick/sea boundary (0.95 was the last step before,
and the most often chosen)."""


@dataclass
class Validation:
    """A model's figures on the validation tiles."""

    loss: float
    dice: float
    """Slick Dice over all valid pixels at 0.5 (a logit of 0)."""
    dice_at: np.ndarray
    """Slick Dice at each of ``THRESHOLDS``."""
    slick_pixels: int

    def calibrated(self, fallback: float) -> tuple[float, float]:
        """(threshold, Dice there): the Dice-maximising threshold, the one nearest ``fallback`` (the parent's,
        or 0.5) among equals, since a tie gives no reason to move it.

        Validation without a slick pixel scores 1 wherever the model predicts nothing, which says nothing
        about where slicks start: then ``fallback``, at the nearest grid Dice."""
        if not self.slick_pixels:
            return fallback, self.dice_near(fallback)
        best = np.flatnonzero(self.dice_at >= self.dice_at.max() - 1e-9)
        if abs(self.dice_near(fallback) - self.dice_at.max()) <= 1e-9:
            return fallback, self.dice_near(fallback)
        pick = best[np.argmin(abs(THRESHOLDS[best] - fallback))]
        return float(THRESHOLDS[pick]), float(self.dice_at[pick])

    def dice_near(self, threshold: float) -> float:
        """Dice at the candidate threshold nearest ``threshold``."""
        return float(self.dice_at[np.argmin(abs(THRESHOLDS - threshold))])


def interpolate_weights(model: torch.nn.Module, toward: dict[str, torch.Tensor], share: float) -> None:
    """Moves every floating tensor of ``model`` (weights and batch-norm statistics) ``share`` of the way to
    ``toward``'s (WiSE-FT, Wortsman et al. 2022: a model between a trained one and its starting point often holds
    up better on data unlike its training data than either); counters stay the model's."""
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                value.lerp_(toward[name].to(value.device, value.dtype), share)


def validate(model: torch.nn.Module, data: TileSet, config: TrainConfig, batch: int = 8, mirrored: bool = False) -> Validation:
    """Loss and slick Dice at 0.5 and at every candidate threshold, over all pixels of ``data``.

    ``mirrored``: the Dice figures are those of the probability averaged over each tile's mirror images, as
    detection computes it by default, so that a threshold chosen here is one for the probability it will cut."""
    model.eval()
    device = torch.device(config.device)
    tp = fp = fn = 0.0
    at = torch.zeros(3, len(THRESHOLDS), dtype=torch.float64)
    cuts = torch.tensor(THRESHOLDS, dtype=torch.float32, device=device).view(-1, 1, 1, 1, 1)
    losses = []
    with torch.inference_mode(), autocast(device, training_dtype(device)):
        for i in range(0, len(data), batch):
            part = data.take(slice(i, i + batch)).to(device)
            x, y, v = part.x, part.y, part.valid
            logits = model(x * config.input_scale).float()
            losses.append(float(tile_loss(logits, part, config)) * x.shape[0])
            probability = torch.sigmoid(logits)
            if mirrored:
                views = [torch.sigmoid(model(x.flip(dims) * config.input_scale).float()).flip(dims) for dims in FLIPS[1:]]
                probability = torch.stack([probability, *views]).mean(dim=0)
            pred = (probability > 0.5).float() * v
            tp += float((pred * y).sum())
            fp += float((pred * (1 - y)).sum())
            fn += float(((1 - pred) * y * v).sum())
            above = (probability > cuts).float() * v
            at[0] += (above * y).sum(dim=(1, 2, 3, 4)).double().cpu()
            at[1] += (above * (1 - y)).sum(dim=(1, 2, 3, 4)).double().cpu()
            at[2] += ((1 - above) * y * v).sum(dim=(1, 2, 3, 4)).double().cpu()
    dice = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    counted = 2 * at[0] + at[1] + at[2]
    dice_at = torch.where(counted > 0, 2 * at[0] / counted.clamp(min=1), torch.ones_like(counted)).numpy()
    return Validation(sum(losses) / max(len(data), 1), dice, dice_at, int((data.y * data.valid).sum()))


def dice_score(model: torch.nn.Module, data: TileSet, config: TrainConfig, batch: int = 8) -> tuple[float, float]:
    """(mean loss, slick Dice at 0.5 over all pixels of ``data``)."""
    scores = validate(model, data, config, batch)
    return scores.loss, scores.dice


def lr_range_test(
    model: torch.nn.Module,
    train_set: TileSet,
    config: TrainConfig,
    progress: Progress | None = None,
    steps: int = 16,
    start: float = 1e-5,
    end: float = 1.0,
) -> float:
    """A learning rate for ``train`` from a short range test (Smith, 2017); the weights are restored after.

    ``steps`` training steps at exponentially increasing learning rates, stopped once the loss explodes,
    each followed by the loss on one fixed probe batch without augmentation: with a few tiles, the loss of
    the training batches themselves varies more from batch to batch than with the learning rate. The probe
    takes tiles holding slicks first: a probe of clean sea alone is minimised by a model that calls nothing
    slick, which the largest rates reach fastest (on the left half of sample_0, one slick tile in 14, the
    probe loss fell to 0 at 1e-2 and the pick of 2e-3 made training diverge). The pick is a tenth of the rate
    where the probe loss was lowest, safely below where training diverges.

    With few tiles this test, not the training, is most of a CPU fine-tuning's time, so it is kept short:
    AdamW steps below 1e-5 leave the probe loss flat (measured on the default model), and three rates a
    decade place the minimum within a factor of 2.2, fine for a pick that is then divided by ten. On the
    8 labelled tiles of benchmarks/finetune_bench.py it ran 11 steps and 36 CPU-seconds where 30 steps
    from 1e-6 ran 22 and 61 CPU-seconds, picking 1.0e-4 instead of 7.9e-5.
    """
    progress = progress or silent()
    device = torch.device(config.device)
    model.to(device)
    saved = copy.deepcopy(model.state_dict())
    torch.manual_seed(config.seed)  # torchvision's augmentation draws from the global generator: the same pick in any process
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(train_set), generator=gen)
    slick = (train_set.y * train_set.valid).flatten(1).sum(1)[order] > 0
    probe = train_set.take(torch.cat([order[slick], order[~slick]])[: config.batch_size])
    optimiser = torch.optim.AdamW(trainable_parameters(model, config.train_layers), lr=start, weight_decay=config.weight_decay)
    factor = (end / start) ** (1 / max(steps - 1, 1))
    lrs: list[float] = []
    losses: list[float] = []
    try:
        for step in range(steps):
            lr = start * factor**step
            for group in optimiser.param_groups:
                group["lr"] = lr
            train_mode(model, config.train_layers, config.frozen_statistics)
            idx = torch.randint(len(train_set), (min(config.batch_size, len(train_set)),), generator=gen)
            loss = batch_loss(model, train_set, idx, config, gen)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            probe_loss, _ = dice_score(model, probe, config)
            progress.update("lr range test", step + 1, steps, f"lr {lr:.1e}: loss {probe_loss:.3f}")
            if not math.isfinite(probe_loss) or (losses and probe_loss > 4 * min(losses)):
                break
            lrs.append(lr)
            losses.append(probe_loss)
    finally:
        model.load_state_dict(saved)
    return lrs[int(np.argmin(losses))] / 10 if losses else start


def l2_sp(parameters: list[torch.nn.Parameter], anchor: list[torch.Tensor], weight: float) -> torch.Tensor | float:
    """The L2-SP penalty (``TrainConfig.parent_weight``); 0 without an anchor. The training losses it joins
    are means over pixels, so ``weight`` is per squared unit of weight change, summed over parameters."""
    if not anchor:
        return 0.0
    return weight / 2 * sum(((p - a) ** 2).sum() for p, a in zip(parameters, anchor))


def train(model: torch.nn.Module, train_set: TileSet, val_set: Optional[TileSet], config: TrainConfig,
          progress: Progress | None = None) -> TrainReport:
    """Train in place; on return ``model`` holds the best weights on the validation tiles, or with none
    (``val_set`` None) those of the last epoch, every epoch run.

    From scratch (pretraining) "best" is the lowest validation loss, as in the paper. Fine-tuning picks on
    validation Dice at each epoch's calibrated threshold instead (``select_on_dice``), and with
    ``parent_competes`` the parent's own weights compete as epoch 0, so a run never returns weights that score
    below those it started from on the validation pixels. Measured on the Arctic tiles: the validation loss,
    whose slick-weighted BCE rewards predicting slick wherever its odds exceed one in a hundred, kept falling
    while the validation Dice fell from 0.35 to 0.1-0.2.
    """
    progress = progress or silent()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model.to(torch.device(config.device))
    trained = trainable_parameters(model, config.train_layers)
    anchor = [p.detach().clone() for p in trained] if config.parent_weight else []
    optimiser = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train_set) // config.batch_size)
    total = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=total)

    def cut(scores: Validation) -> tuple[float, float]:
        """(threshold, Dice there) of an epoch's weights."""
        return scores.calibrated(config.threshold) if config.calibrate else (config.threshold, scores.dice_near(config.threshold))

    def merit(scores: Validation) -> float:
        return cut(scores)[1] if config.select_on_dice else -scores.loss

    start = validate(model, val_set, config) if config.parent_competes and val_set is not None else None
    best = (merit(start), 0, copy.deepcopy(model.state_dict()), start) if start else (-math.inf, 0, None, None)
    stale = 0
    history: list[dict] = []
    started = time.monotonic()
    seen, val_seconds, first = 0, 0.0, 1
    average: Optional[dict[str, torch.Tensor]] = None
    averaged = 0
    if config.checkpoint is not None and config.checkpoint.exists():
        first, best, stale, history, seen, elapsed, average, averaged = _resume(config.checkpoint, model, optimiser, scheduler, gen)
        started -= elapsed  # the run's time includes the epochs before the stop
        progress.log(f"resuming from {config.checkpoint} after epoch {first - 1}")
    for epoch in range(first, min(config.epochs, config.stop_after or config.epochs) + 1):
        if stale >= config.patience and config.average_from is None and not config.keep_last:
            break
        train_mode(model, config.train_layers, config.frozen_statistics)
        order = torch.randperm(len(train_set), generator=gen)
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            loss = batch_loss(model, train_set, idx, config, gen)
            optimiser.zero_grad(set_to_none=True)
            (loss + l2_sp(trained, anchor, config.parent_weight)).backward()
            optimiser.step()
            scheduler.step()
            running += loss.item()
            seen += len(idx)
            progress.update("training", (epoch - 1) * steps_per_epoch + step + 1, total, f"epoch {epoch}, loss {running / (step + 1):.4f}")
        if config.average_from is not None and epoch >= config.average_from:
            average, averaged = running_mean(average, model.state_dict(), averaged), averaged + 1
        if val_set is None:
            history.append({"epoch": epoch, "train_loss": running / steps_per_epoch})
            progress.metrics(**history[-1])
            best = (float(epoch), epoch, None, None)  # the last epoch's weights, which the model holds
        else:
            scoring = time.monotonic()
            scores = validate(model, val_set, config)
            val_seconds += time.monotonic() - scoring
            threshold, calibrated = cut(scores)
            history.append({"epoch": epoch, "train_loss": running / steps_per_epoch, "val_loss": scores.loss, "val_dice": scores.dice,
                            "threshold": threshold, "val_dice_calibrated": calibrated})
            shown = history[-1] if config.select_on_dice else {key: history[-1][key] for key in ("epoch", "train_loss", "val_loss", "val_dice")}
            progress.metrics(**shown)
            if config.keep_last or merit(scores) > best[0]:
                best, stale = (merit(scores), epoch, copy.deepcopy(model.state_dict()), scores), 0
            else:
                stale += 1
        if config.checkpoint is not None:
            _save_checkpoint(config.checkpoint, epoch, model, optimiser, scheduler, gen, best, stale, history, seen,
                             time.monotonic() - started, average, averaged)
    _, best_epoch, best_state, kept = best
    if average is not None:
        model.load_state_dict(average)
        if config.train_layers == "all" and not config.frozen_statistics:
            reestimate_batch_norm(model, train_set, config)
        best_epoch, kept = len(history), validate(model, val_set, config) if val_set is not None else None
    elif best_state is not None:
        model.load_state_dict(best_state)
    threshold, calibrated = cut(kept) if kept is not None else (config.threshold, None)
    seconds = time.monotonic() - started
    if config.checkpoint is not None:
        config.checkpoint.unlink(missing_ok=True)
    return TrainReport(
        epochs_run=len(history),
        best_epoch=best_epoch,
        best_val_loss=kept.loss if kept is not None else None,
        val_dice=kept.dice if kept is not None else None,
        threshold=threshold,
        val_dice_calibrated=calibrated,
        seconds=round(seconds, 1),
        val_seconds=round(val_seconds, 1),
        tiles_per_second=round(seen / seconds, 2),
        history=history,
    )


def running_mean(average: Optional[dict[str, torch.Tensor]], state: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """The mean of ``count`` states (``average``) and ``state``; integer buffers (batch counters) are ``state``'s."""
    if average is None:
        return {k: v.detach().clone() for k, v in state.items()}
    return {k: a + (state[k].detach() - a) / (count + 1) if a.is_floating_point() else state[k].detach().clone() for k, a in average.items()}


def reestimate_batch_norm(model: torch.nn.Module, data: TileSet, config: TrainConfig) -> None:
    """Batch-norm statistics of averaged weights, from one pass over the training tiles: the averaged running
    statistics belong to no set of weights (Izmailov et al., 2018)."""
    device = torch.device(config.device)
    batches = (data.x[i : i + config.batch_size].to(device) * config.input_scale for i in range(0, len(data), config.batch_size))
    torch.optim.swa_utils.update_bn(batches, model, device)


def loop_state(model: torch.nn.Module, optimiser: torch.optim.Optimizer, scheduler, gen: torch.Generator) -> dict:
    """What any training loop must save to go on as if it had never stopped: weights, optimiser, schedule and
    both random streams (the loop's own and torch's, which augmentation draws from)."""
    return {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state()}


def restore_loop(state: dict, model: torch.nn.Module, optimiser: torch.optim.Optimizer, scheduler, gen: torch.Generator) -> None:
    """The inverse of ``loop_state``."""
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    scheduler.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])


def _save_checkpoint(path: Path, epoch: int, model: torch.nn.Module, optimiser: torch.optim.Optimizer, scheduler, gen: torch.Generator,
                     best: tuple, stale: int, history: list[dict], seen: int, elapsed: float,
                     average: Optional[dict[str, torch.Tensor]], averaged: int) -> None:
    """Everything a resumed run needs to go on as if it had never stopped, as tensors and plain values only,
    so that it loads with ``weights_only`` (a checkpoint can never run code)."""
    merit, best_epoch, best_state, kept = best
    state = {
        "epoch": epoch, **loop_state(model, optimiser, scheduler, gen), "stale": stale, "history": history, "seen": seen,
        "elapsed": elapsed, "average": average, "averaged": averaged, "best_merit": merit, "best_epoch": best_epoch, "best_state": best_state,
        "best_scores": None if kept is None else {"loss": kept.loss, "dice": kept.dice, "dice_at": kept.dice_at.tolist(),
                                                  "slick_pixels": kept.slick_pixels},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, model: torch.nn.Module, optimiser: torch.optim.Optimizer, scheduler, gen: torch.Generator) -> tuple:
    state = torch.load(path, map_location="cpu", weights_only=True)
    restore_loop(state, model, optimiser, scheduler, gen)
    scores = state["best_scores"]
    kept = None if scores is None else Validation(scores["loss"], scores["dice"], np.array(scores["dice_at"]), scores["slick_pixels"])
    best = (state["best_merit"], state["best_epoch"], state["best_state"], kept)
    return (state["epoch"] + 1, best, state["stale"], state["history"], state["seen"], state["elapsed"], state["average"],
            state["averaged"])
