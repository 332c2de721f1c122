"""A generator's training stages, each resumable from a checkpoint file of its own.

Both kinds of generator train in stages (DAKTer: half-size tiles, then full size; SAR-JointNet: SAR-Net,
Label-Net, all layers) with the same step: a weighted draw of tiles, a random flip and quarter turn, the
kind's loss, AdamW with the gradient clipped. ``run`` takes that step through a stage; given a folder, it
saves the stage about twenty times, at least every ``CHECKPOINT_SECONDS``, and when cancelled, so that a
run started again with the same settings goes on from where it stopped and ends with the very weights of
a run that never stopped. A checkpoint names everything its weights depend on (``Stage.trained_with``),
and a run that disagrees on any of it is refused rather than silently mixing two trainings.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch

from ..atomic import staged
from ..errors import Cancelled, InputError, ModelError
from ..progress import Progress
from .joint_ddpm import GeneratorCard, JointSet, dihedral

if TYPE_CHECKING:
    from .parent import Parent

CHECKPOINT_SECONDS = 600.0
"""Longest time between two checkpoint writes, besides the ~20 per stage."""

Loss = Callable[[JointSet], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""(L, L2, CE) of a batch already on the network's device."""


@dataclass(frozen=True)
class Stage:
    number: int
    """Its checkpoint is ``stage<number>.pt``."""
    name: str
    """As progress and the loss history name it."""
    steps: int
    batch_size: int
    trained_with: dict[str, Any]
    """What the stage's weights depend on: settings, tiles (``data_sha256``), the weights it started from."""
    folder: Optional[Path] = None
    """The checkpoint folder; None: no checkpoints, a stopped run starts again."""

    def checkpoint(self) -> Optional[dict[str, Any]]:
        """This stage's checkpoint, None when there is none (or no folder)."""
        return None if self.folder is None else read_checkpoint(self.folder, self.number, self.trained_with)


def trained_with(card: GeneratorCard, data_sha256: str, init: Optional[Parent], **settings: Any) -> dict[str, Any]:
    """A stage's ``Stage.trained_with``: the generator's card but its name and b's origin, the tiles' hash,
    the parent's hash when it starts from one, and the training ``settings`` of the stages up to it."""
    return {
        "kind": card.kind, "unet": card.unet, "classes": card.classes, "tile_size": card.tile_size, "b": card.b, "noise": card.noise,
        "data_sha256": data_sha256, **settings, **({"init": init.sha256} if init is not None else {}),
    }


def data_sha256(data: JointSet) -> str:
    digest = hashlib.sha256()
    for t in (data.x0, data.target, data.known):
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def checkpoint_path(folder: Path, stage: int) -> Path:
    return folder / f"stage{stage}.pt"


def read_checkpoint(folder: Path, stage: int, expected: dict[str, Any]) -> Optional[dict[str, Any]]:
    """A stage's checkpoint (None when there is none), refused when it was made with other settings or tiles."""
    path = checkpoint_path(folder, stage)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # a checkpoint never runs code
    except Exception as exc:  # torch raises many kinds for a cut-off or foreign file
        raise ModelError(f"The checkpoint {path} cannot be read ({exc}).", "Delete it to train that stage again.") from exc
    if state.get("trained_with") != json.dumps(expected, sort_keys=True):
        made = json.loads(state.get("trained_with") or "{}")
        differ = sorted(k for k in set(made) | set(expected) if made.get(k) != expected.get(k))
        raise InputError(
            f"The stage {stage} checkpoint in {folder} was made with other settings or tiles (differing: {', '.join(differ)}).",
            "Run with the settings it was made with, or give another --checkpoints folder (or delete it) to start afresh.",
        )
    return state


def _write_checkpoint(folder: Path, stage: int, state: dict[str, Any]) -> None:
    with staged(checkpoint_path(folder, stage), "Check the free space and permissions of the checkpoint folder.") as tmp:
        torch.save(state, tmp)


def run(
    stage: Stage,
    net: torch.nn.Module,
    params: list[torch.nn.Parameter],
    optimiser: torch.optim.Optimizer,
    gen: torch.Generator,
    loss_of: Loss,
    data: JointSet,
    weights: torch.Tensor,
    progress: Progress,
    state: Optional[dict[str, Any]] = None,
) -> tuple[list[dict], float]:
    """Train ``params`` of ``net`` through ``stage`` from ``state`` (its checkpoint, None: from the start);
    (the stage's loss history, its seconds over every run that went into it).

    A finished checkpoint only loads its weights and the random state it ended with (DAKTer's next stage
    draws on from it). Batches are ``weights``-drawn tiles of ``data``, timesteps and noise come from ``gen``.
    """
    name, steps, folder = stage.name, stage.steps, stage.folder
    history: list[dict] = []
    sums, first, seconds = np.zeros(3), 1, 0.0
    if state is not None:
        net.load_state_dict(state["weights"])
        gen.set_state(state["generator"])
        if state["step"] >= steps:
            progress.log(f"{name}: finished in {checkpoint_path(folder, stage.number)}")
            return state["history"], state["seconds"]
        optimiser.load_state_dict(state["optimiser"])
        history, sums, first, seconds = state["history"], np.array(state["sums"]), state["step"] + 1, state["seconds"]
        progress.log(f"{name}: resuming at step {first} of {steps} from {checkpoint_path(folder, stage.number)}")
    device = next(net.parameters()).device
    window = max(1, steps // 20)
    started = saved = time.monotonic()
    done = first - 1

    def save(finished: bool) -> None:
        if folder is None:
            return
        state = {"trained_with": json.dumps(stage.trained_with, sort_keys=True), "step": done, "steps": steps, "history": history,
                 "seconds": seconds + time.monotonic() - started, "generator": gen.get_state(),
                 "weights": {k: v.cpu() for k, v in net.state_dict().items()}}
        if not finished:  # what going on needs; a finished stage keeps its weights and random state only
            state.update(optimiser=optimiser.state_dict(), sums=sums.tolist())
        _write_checkpoint(folder, stage.number, state)

    try:
        for step in range(first, steps + 1):
            idx = torch.multinomial(weights, stage.batch_size, replacement=True, generator=gen)
            loss, l2, ce = loss_of(dihedral(data[idx], gen).to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            done = step
            sums += [loss.item(), l2.item(), ce.item()]
            if step % window == 0 or step == steps:
                mean = sums / (window if step % window == 0 else step % window)
                sums[:] = 0
                loss_, l2_, ce_ = (round(float(v), 5) for v in mean)
                history.append({"stage": name, "step": step, "loss": loss_, "l2": l2_, "ce": ce_})
                progress.log(f"{name} step {step}/{steps}: loss {mean[0]:.4f} (L2 {mean[1]:.4f}, CE {mean[2]:.4f})")
                if step < steps:
                    save(False)
                    saved = time.monotonic()
            elif time.monotonic() - saved > CHECKPOINT_SECONDS:
                save(False)
                saved = time.monotonic()
            progress.update(name, step, steps, f"loss {loss.item():.4f}")
    except Cancelled:
        if folder is not None and done >= first:
            save(False)
            progress.log(f"{name}: stopped at step {done} of {steps}; the next run goes on from {checkpoint_path(folder, stage.number)}")
        raise
    save(True)
    progress.log(f"{name}: {steps - first + 1} steps of {stage.batch_size} tiles in {time.monotonic() - started:.0f} s")
    return history, round(seconds + time.monotonic() - started, 1)
