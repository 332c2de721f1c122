"""Self-supervised pretraining of a model's encoder on real SAR pixels: masked-image modelling.

Labelled real slicks are few (five Arctic scenes, four North Sea tiles), but every real pixel shows what
sea, wind structure, films, ice and coast look like in context. Here the network sees crops of the real
scenes with a share of their square patches blanked out (set to the crop's mean level, never to 0, which
means no data) and learns to restore the backscatter under them; to do so it has to model the real scene
around the hole. Speckle cannot be predicted from context, so the target is the multilooked backscatter
(a ``look`` x ``look`` mean), not the speckled pixel; the loss counts the blanked pixels only (SimMIM, Xie
et al. 2022, on a convolutional encoder).

Only the encoder is kept: the decoder and slick head stay the parent's, and the labelled real-texture
training (``engine pretrain --data real --masked-epochs``) then trains the whole network. Only real pixels at the model's pixel size are used: the
Arctic training scenes with their validation bands blanked (they choose the later epoch and threshold)
and the North Sea tiles; the IW scene's 200-m grid, upsampled with synthetic speckle, is left out. The
stage checkpoints every epoch and resumes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..atomic import staged
from ..data.real_scenes import SceneArrays
from ..data.real_texture import REAL_CROPS, training_tiles
from ..errors import InputError
from ..machine import describe, file_sha256
from ..progress import Progress
from .registry import ModelCard, load_model, save_model
from .training import TileSet, augment, loop_state, restore_loop


@dataclass(frozen=True)
class MaskedRecipe:
    """How the encoder is pretrained; every field goes into the model card."""

    tiles: int = 400
    tile: int = 256
    epochs: int = 4
    patch: int = 16
    masked: float = 0.5
    look: int = 5
    lr: float = 5e-4
    batch_size: int = 8
    seed: int = 0


def real_crops(parts: list[SceneArrays], recipe: MaskedRecipe) -> TileSet:
    """Crops of the real scenes ``parts``; their labels are carried along but never used."""
    tiles = training_tiles(parts, None, recipe.tiles, recipe.tile, recipe.seed, REAL_CROPS)
    return TileSet.from_arrays(tiles.x, tiles.y)


def blank_patches(x: torch.Tensor, recipe: MaskedRecipe, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(input with patches blanked, which pixels were blanked) for stretched tiles (N,1,H,W), 0 = no data."""
    n, _, h, w = x.shape
    grid = torch.rand((n, 1, -(-h // recipe.patch), -(-w // recipe.patch)), generator=gen) < recipe.masked
    hidden = grid.repeat_interleave(recipe.patch, 2).repeat_interleave(recipe.patch, 3)[..., :h, :w]
    data = x > 0
    level = (x * data).sum(dim=(2, 3), keepdim=True) / data.sum(dim=(2, 3), keepdim=True).clamp(min=1)
    hidden = hidden & data
    return torch.where(hidden, level.expand_as(x), x), hidden


def multilook(x: torch.Tensor, look: int) -> torch.Tensor:
    """The mean of the valid pixels in a ``look`` x ``look`` window around each pixel."""
    data = (x > 0).float()
    total = F.avg_pool2d(x * data, look, stride=1, padding=look // 2, count_include_pad=False)
    count = F.avg_pool2d(data, look, stride=1, padding=look // 2, count_include_pad=False)
    return total / count.clamp(min=1e-6)


def masked_loss(model: torch.nn.Module, x: torch.Tensor, recipe: MaskedRecipe, gen: torch.Generator, scale: float) -> torch.Tensor:
    """Mean absolute error (0..1 scale) of the restored multilooked backscatter on the blanked pixels."""
    shown, hidden = blank_patches(x, recipe, gen)
    restored = torch.sigmoid(model(shown * scale)[:, :1])
    target = multilook(x, recipe.look) / 255.0
    return (restored - target).abs()[hidden].mean()


def _reset(module: torch.nn.Module) -> None:
    for layer in module.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()


def masked_pretrain(out: Path, parent_path: Path, parts: list[SceneArrays], recipe: MaskedRecipe, device: str, progress: Progress,
                    checkpoint: Path) -> dict:
    """Write ``out``: the parent model with its encoder pretrained by masked-image modelling on ``parts``.

    A copy of the parent, its head re-initialised, restores the blanked patches; its encoder replaces the
    parent's. Resumes from ``checkpoint`` when it exists, and removes it when done."""
    parent, card = load_model(parent_path, torch.device("cpu"))
    if not all(hasattr(parent, part) for part in ("encoder", "segmentation_head")):
        raise InputError(f"{card.name} has no separate encoder and head to pretrain.", "Start from a U-Net or DeepLabV3 model.")
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    progress.log(f"cutting {recipe.tiles} crops of {recipe.tile} px from the real scenes")
    crops = real_crops(parts, recipe)
    student = copy.deepcopy(parent)
    _reset(student.segmentation_head)
    student.to(torch.device(device))
    optimiser = torch.optim.AdamW(student.parameters(), lr=recipe.lr, weight_decay=1e-4)
    steps = max(1, len(crops) // recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=recipe.lr, total_steps=recipe.epochs * steps)
    scale = card.normalisation.get("input_scale", 1 / 255)
    history: list[float] = []
    first, elapsed = 1, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        restore_loop(state, student, optimiser, scheduler, gen)
        first, history, elapsed = state["epoch"] + 1, state["history"], state["elapsed"]
        progress.log(f"resuming from {checkpoint} after epoch {first - 1}")
    started = time.monotonic() - elapsed
    for epoch in range(first, recipe.epochs + 1):
        student.train()
        order = torch.randperm(len(crops), generator=gen)
        running = 0.0
        for step in range(steps):
            batch = crops.take(order[step * recipe.batch_size : (step + 1) * recipe.batch_size])
            x, _, _ = augment(batch.x, batch.y, batch.valid, gen)
            loss = masked_loss(student, x.to(device), recipe, gen, scale)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            running += loss.item()
            progress.update("masked-image pretraining", (epoch - 1) * steps + step + 1, recipe.epochs * steps,
                            f"epoch {epoch}, error {running / (step + 1):.4f}")
        history.append(round(running / steps, 5))
        progress.log(f"epoch {epoch}: masked error {history[-1]:.4f}")
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        with staged(checkpoint) as tmp:
            torch.save({"epoch": epoch, **loop_state(student, optimiser, scheduler, gen), "history": history,
                        "elapsed": time.monotonic() - started}, tmp)
    parent.encoder.load_state_dict(student.encoder.to("cpu").state_dict())
    seconds = round(time.monotonic() - started, 1)
    made = ModelCard.from_json(card.to_json())
    made.name = f"{card.name}, encoder pretrained on real pixels"
    made.lineage = {"initialised_from": {"name": card.name, "file": parent_path.name, "sha256": file_sha256(parent_path)}}
    made.provenance = {
        "data": {"unlabelled_scenes": [part.name for part in parts]},
        "recipe": asdict(recipe),
        "masked_error": history,
        "seconds": seconds,
        "machine": describe(torch.device(device)),
    }
    save_model(parent, made, out, half=True)
    checkpoint.unlink(missing_ok=True)
    return {"model": str(out), "masked_error": history, "seconds": seconds}
