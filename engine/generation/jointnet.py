"""SAR-JointNet (the DAKD paper, sec. 3.1): two diffusion U-Nets, one for the SAR tile and one for its label,
joined at every resolution level and trained in three stages.

SAR-Net denoises the SAR tile (one channel). Label-Net denoises the C label channels, one-hot labels mapped
to {-1, 1} and scaled by the balancing factor b exactly as DAKTer's label channels are
(``joint_ddpm.JointSet.labels``, ``joint_ddpm.balancing_factor``), and predicts per-class logits. Both are
diffusers ``UNet2DModel`` of one architecture. After each down block, the mid block and each up block, each
net's features get a 1 x 1 convolution of the other's added (JointNet, Zhang et al., 2024); the convolutions
start at zero, so a freshly joined pair computes exactly what its nets compute alone, and Label-Net can be
added to a SAR-Net trained on SAR tiles alone without disturbing it.

Training, each stage from a checkpoint file of its own so that a stopped run goes on where it stopped:

1. SAR-Net alone, L2 to the clean tile (eq. 5);
2. Label-Net starts as a copy of SAR-Net whose input and output layers are made afresh for the label
   channels; Label-Net and the joining convolutions learn L_x + L_y (eq. 7, L_y the cross-entropy of the
   logits against the one-hot label, eq. 6) while the rest of SAR-Net stays frozen;
3. every layer, at a tenth of the learning rate.

The forward process is the paper's squared-cosine schedule over 1,000 steps. The joined pair maps the stacked
(1 + C)-channel state to a (1 + C)-channel prediction as DAKTer's single U-Net does, so DAKTer's joint loss,
its sampling loop (DDIM or DPM-Solver++, the logits fed back as ``(softmax * 2 - 1) * b``), its card and file
format and the sample folder serve both kinds; the card's ``kind`` tells the files apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..contract import GENERATOR_KINDS, LABEL_CLASSES
from ..data.synth import CLASS_NAMES
from ..errors import InputError, ModelError
from ..models.eager import autocast, pick_device
from ..models.pretrain import synthetic_scenes
from ..models.registry import check_new_model_file, read_weights, slick_index
from ..models.training import training_dtype
from ..progress import Progress, silent
from . import joint_ddpm, stages
from .joint_ddpm import (
    GeneratorCard,
    GeneratorTraining,
    JointSet,
    joint_loss,
    noise_schedule,
    read_generator_card,
    require_kind,
    tile_weights,
    unet_config,
)
from .parent import Parent
from .stages import Stage, read_checkpoint
from .training_set import balancing, store_record, store_tiles, training_record, write_generator

KIND = "sar-jointnet"
NOISE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
"""The paper's forward process: a squared-cosine schedule over 1,000 steps."""
CLASSES = ["slick" if name == "oil" else name for name in CLASS_NAMES]
"""Label-Net's classes: sea, slick, look-alike, ship, land. A label store gives the first three (its
``LABEL_CLASSES`` on reviewed sea), synthetic scenes all five (their oil is the slick)."""
STAGES = (1, 2, 3)
STAGE_NAMES = {1: "stage 1: SAR-Net", 2: "stage 2: Label-Net", 3: "stage 3: all layers"}


@dataclass(frozen=True)
class JointNetTraining:
    """Settings of the three stages."""

    steps: tuple[int, int, int] = (200, 200, 100)
    """Steps of stages 1, 2 and 3. With the small network at 64 px a step took 0.7 to 2.3 s on one thread of
    the shared 2-core CPU (docs/dakd.md): 6 to 20 minutes."""
    lr: tuple[float, float, float] = (2e-4, 2e-4, 2e-5)
    """Learning rates of stages 1, 2 and 3: the paper's 1e-4, 1e-4, 1e-5 doubled, as short runs need."""
    batch_size: int = 8
    weight_decay: float = 1e-4
    slick_share: Optional[float] = GeneratorTraining.slick_share
    seed: int = 0
    device: str = "cpu"

    def trained_with(self, stage: int, card: GeneratorCard, data_sha256: str, init: Optional[Parent] = None) -> dict[str, Any]:
        """What a stage's weights depend on: its checkpoint is only taken up by a run that agrees on all of it."""
        return stages.trained_with(card, data_sha256, init, steps=list(self.steps[:stage]), lr=list(self.lr[:stage]),
                                   batch_size=self.batch_size, weight_decay=self.weight_decay, slick_share=self.slick_share, seed=self.seed)


PRESETS = {
    "cpu": JointNetTraining(),
    "paper": JointNetTraining(steps=(50_000, 250_000, 100_000), lr=(1e-4, 1e-4, 1e-5), batch_size=32),
}
"""``cpu``: minutes on a CPU. ``paper``: the paper's OSD schedule (50k, 250k and 100k steps, AdamW at
1e-4, 1e-4 and 1e-5, 2 x 16 tiles a step), for a GPU with ``--net ddpm --tile 256``."""


class JointNet(torch.nn.Module):
    """SAR-Net and Label-Net, walked block by block in lockstep so that they can exchange features."""

    def __init__(self, unet: dict[str, Any], n_classes: int) -> None:
        from diffusers import UNet2DModel

        super().__init__()
        self.sar = UNet2DModel(**{**unet, "in_channels": 1, "out_channels": 1})
        self.label = UNet2DModel(**{**unet, "in_channels": n_classes, "out_channels": n_classes})
        _check_walkable(self.sar)
        channels = list(self.sar.config.block_out_channels)
        widths = channels + channels[-1:] + channels[::-1]  # after each down block, the mid block, each up block
        self.to_sar = torch.nn.ModuleList(_zero_conv(w) for w in widths)
        self.to_label = torch.nn.ModuleList(_zero_conv(w) for w in widths)

    def forward(self, z: torch.Tensor, t: torch.Tensor | int) -> Any:
        """(x_t, y'_t) stacked -> (x0 prediction, logits) stacked, as ``UNet2DModel`` returns it
        (``.sample``); UNet2DModel.forward's steps, for two nets at once."""
        from diffusers.models.unets.unet_2d import UNet2DOutput

        nets = (self.sar, self.label)
        emb = [_time_embedding(net, t, z) for net in nets]
        h = [net.conv_in(part) for net, part in zip(nets, (z[:, :1], z[:, 1:]))]
        skips = [(part,) for part in h]
        level = 0
        for blocks in zip(self.sar.down_blocks, self.label.down_blocks):
            out = [block(hidden_states=part, temb=e) for block, part, e in zip(blocks, h, emb)]
            skips = [s + o[1] for s, o in zip(skips, out)]
            h, level = self._exchange([o[0] for o in out], level), level + 1
        h, level = self._exchange([net.mid_block(part, e) for net, part, e in zip(nets, h, emb)], level), level + 1
        for blocks in zip(self.sar.up_blocks, self.label.up_blocks):
            n = len(blocks[0].resnets)
            res, skips = [s[-n:] for s in skips], [s[:-n] for s in skips]
            h, level = self._exchange([block(part, r, e) for block, part, r, e in zip(blocks, h, res, emb)], level), level + 1
        out = [net.conv_out(net.conv_act(net.conv_norm_out(part))) for net, part in zip(nets, h)]
        return UNet2DOutput(sample=torch.cat(out, dim=1))

    def _exchange(self, h: list[torch.Tensor], level: int) -> list[torch.Tensor]:
        sar, label = h
        return [sar + self.to_sar[level](label), label + self.to_label[level](sar)]

    def start_label_net(self, sar_net: dict[str, torch.Tensor]) -> None:
        """Stage 2's start: SAR-Net from stage 1, and Label-Net a copy of it but for its input and output
        layers, which keep their fresh initialisation for the label channels."""
        self.sar.load_state_dict(sar_net)
        self.label.load_state_dict({k: v for k, v in sar_net.items() if not k.startswith(("conv_in.", "conv_out."))}, strict=False)

    def trainable(self, stage: int) -> list[torch.nn.Parameter]:
        """What a stage trains; everything else is frozen (no gradient, not in the optimiser)."""
        joining = [*self.to_sar.parameters(), *self.to_label.parameters()]
        trained = {1: list(self.sar.parameters()), 2: [*self.label.parameters(), *joining], 3: list(self.parameters())}[stage]
        chosen = {id(p) for p in trained}
        for p in self.parameters():
            p.requires_grad_(id(p) in chosen)
        return trained


def shared_unet(net: str | dict[str, Any], tile: int, n_classes: int) -> dict[str, Any]:
    """The ``UNet2DModel`` arguments both nets share (``joint_ddpm.unet_config``'s); ``JointNet`` sets each
    one's channels."""
    return {k: v for k, v in unet_config(net, tile, n_classes).items() if k not in ("in_channels", "out_channels")}


def _zero_conv(channels: int) -> torch.nn.Conv2d:
    conv = torch.nn.Conv2d(channels, channels, 1)
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    return conv


def _check_walkable(net: Any) -> None:
    """``JointNet.forward`` walks plain U-Net blocks: refuse the variants whose extra paths it does not take."""
    config = net.config
    odd = [name for name in (*config.down_block_types, *config.up_block_types) if "Skip" in name]
    if config.time_embedding_type == "fourier" or config.center_input_sample or net.class_embedding is not None:
        odd.append("fourier time embedding, centred input or class conditioning")
    if net.mid_block is None:
        odd.append("no mid block")
    if odd:
        raise InputError(f"SAR-JointNet cannot join U-Nets with {', '.join(odd)}.", "Use plain down and up blocks, e.g. --net small.")


def _time_embedding(net: Any, t: torch.Tensor | int, z: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=z.device)
    if t.ndim == 0:
        t = t[None]
    t = t * torch.ones(z.shape[0], dtype=t.dtype, device=t.device)
    return net.time_embedding(net.time_proj(t).to(dtype=net.dtype))


def sar_loss(net: JointNet, noise: Any, batch: JointSet, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1's (L, L_x, 0): eq. 5 on SAR-Net alone, timesteps and noise drawn as ``joint_loss`` draws them."""
    device = batch.x0.device
    eps = torch.randn(batch.x0.shape, generator=gen).to(device)
    t = torch.randint(0, noise.config.num_train_timesteps, (len(batch),), generator=gen).to(device)
    with autocast(device, training_dtype(device)):
        out = net.sar(noise.add_noise(batch.x0, eps, t), t).sample
    l2 = F.mse_loss(out.float(), batch.x0)
    return l2, l2, torch.zeros((), device=device)


def train(
    card: GeneratorCard,
    data: JointSet,
    config: JointNetTraining,
    folder: str | Path,
    stage: Optional[int] = None,
    progress: Optional[Progress] = None,
    init: Optional[Parent] = None,
) -> tuple[JointNet, list[dict], dict[int, float]]:
    """Run stage ``stage`` (None: all three in turn), each from its checkpoint in ``folder``; (the network
    after the last stage run, the loss history of the stages run, finished ones included, and the seconds
    each took over all the runs that went into it).

    A stage needs the one before it finished in ``folder``. Cancel saves the stage where it stopped. From a
    trained SAR-JointNet ``init`` only stage 3 runs, starting from its weights: the nets and their joining
    layers have learnt already, and all of them adapt to ``data`` together.
    """
    if init is not None and stage not in (None, 3):
        raise InputError(f"A SAR-JointNet that starts from {init.path.name} runs stage 3 only, not stage {stage}.",
                         "Leave --stage out (or give --stage 3).")
    progress = progress or silent()
    folder = Path(folder)
    digest = stages.data_sha256(data)
    weights = tile_weights(data, slick_index(card.classes), config.slick_share)
    net: Optional[JointNet] = None
    history: list[dict] = []
    seconds: dict[int, float] = {}
    for k in (3,) if init is not None else (stage,) if stage else STAGES:
        net, done, seconds[k] = _run_stage(k, card, data, weights, config, folder, digest, progress, init)
        history += done
    assert net is not None
    return net.eval(), history, seconds


def _run_stage(
    stage: int, card: GeneratorCard, data: JointSet, weights: torch.Tensor, config: JointNetTraining, folder: Path, digest: str,
    progress: Progress, init: Optional[Parent],
) -> tuple[JointNet, list[dict], float]:
    run = Stage(stage, STAGE_NAMES[stage], config.steps[stage - 1], config.batch_size, config.trained_with(stage, card, digest, init), folder)
    state = run.checkpoint()
    torch.manual_seed(config.seed)
    net = JointNet(card.unet, len(card.classes))
    if state is None and init is not None:
        net.load_state_dict(init.weights())
    elif state is None and stage > 1:
        before = read_checkpoint(folder, stage - 1, config.trained_with(stage - 1, card, digest))
        if before is None or before["step"] < before["steps"]:
            where = "holds none" if before is None else f"holds it at step {before['step']} of {before['steps']}"
            raise InputError(
                f"Stage {stage} starts from a finished stage {stage - 1}, and {folder} {where}.",
                f"Run stage {stage - 1} first (--stage {stage - 1}), or leave --stage out to run the stages in turn.",
            )
        if stage == 2:
            net.start_label_net({k[4:]: v for k, v in before["weights"].items() if k.startswith("sar.")})
        else:
            net.load_state_dict(before["weights"])
    net.to(torch.device(config.device)).train()
    params = net.trainable(stage)
    optimiser = torch.optim.AdamW(params, lr=config.lr[stage - 1], weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, stage]).generate_state(1)[0]))
    noise = noise_schedule(card)

    def loss_of(batch: JointSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return sar_loss(net, noise, batch, gen) if stage == 1 else joint_loss(net, noise, batch, card.b, gen)

    history, seconds = stages.run(run, net, params, optimiser, gen, loss_of, data, weights, progress, state)
    return net, history, seconds


def load_jointnet(path: str | Path, device: torch.device | str = "cpu") -> tuple[JointNet, GeneratorCard]:
    card = read_generator_card(path)
    require_kind(card, KIND, path)
    net = JointNet(card.unet, len(card.classes))
    try:
        net.load_state_dict(read_weights(path))
    except RuntimeError as exc:
        raise ModelError(f"The weights in {Path(path).name} do not fit its card ({exc}).", "The file is damaged; train it again.") from exc
    return net.to(device).eval(), card


LOADERS = {joint_ddpm.KIND: joint_ddpm.load_generator, KIND: load_jointnet}


def load_any(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, GeneratorCard]:
    """A generator of either kind, by its card: both map the noisy (1 + C)-channel state to the (1 + C)-channel
    prediction, so one sampling loop (``joint_ddpm.sample``) serves both."""
    card = read_generator_card(path)
    if card.kind not in LOADERS:
        raise ModelError(
            f"{Path(path).name} holds a generator of kind {card.kind!r}; this engine knows {', '.join(GENERATOR_KINDS)}.",
            "Use the engine version that wrote it.",
        )
    return LOADERS[card.kind](path, device)


# --- the training job -----------------------------------------------------------------------------


@dataclass
class JointNetOptions:
    tile: int = 64
    net: str | dict[str, Any] = "small"
    """A size from ``joint_ddpm.NETS`` or explicit ``UNet2DModel`` arguments, for each of the two nets."""
    preset: str = "cpu"
    """Stage steps, learning rates and batch size (``PRESETS``), unless given below."""
    stage_steps: Optional[tuple[int, int, int]] = None
    lr: Optional[float] = None
    """Stages 1 and 2; stage 3 takes a tenth, the paper's ratio."""
    batch_size: Optional[int] = None
    b: Optional[float] = None
    """None: from the training tiles (eq. 4), as DAKTer's."""
    slick_share: Optional[float] = GeneratorTraining.slick_share
    synthetic: int = 0
    """Synthetic scenes to learn from beside the label store's tiles; they add the ship and land classes."""
    stage: Optional[int] = None
    """Run this stage alone; None: all three in turn."""
    checkpoints: Optional[Path] = None
    """None: beside the generator file, its name + ``.stages``."""
    seed: int = 0
    device: str = "auto"
    pixel_size: Optional[float] = None
    name: Optional[str] = None
    init: Optional[Path] = None
    """A SAR-JointNet to start from: only stage 3 runs, for the third of the stage steps (``GeneratorOptions.init``)."""

    def training(self, device: torch.device) -> JointNetTraining:
        preset = PRESETS[self.preset]
        return replace(
            preset,
            steps=tuple(self.stage_steps or preset.steps),
            lr=preset.lr if self.lr is None else (self.lr, self.lr, self.lr / 10),
            batch_size=self.batch_size or preset.batch_size,
            slick_share=self.slick_share,
            seed=self.seed,
            device=str(device),
        )


def train_jointnet(
    store_path: str | Path, out_path: str | Path, options: Optional[JointNetOptions] = None, progress: Optional[Progress] = None
) -> dict[str, Any]:
    """Train SAR-JointNet on a label store's tiles (and synthetic scenes) from its stage checkpoints, or from
    ``options.init``; the generator file is written once stage 3 has finished, never replacing one."""
    options = options or JointNetOptions()
    progress = progress or silent()
    out_path = Path(out_path)
    check_options(options)
    check_new_model_file(out_path)
    parent = Parent.read(options.init, KIND) if options.init else None
    # A fine-tune learns its parent's label classes, as far as the store (and synthetic scenes) hold them.
    labels = LABEL_CLASSES[: len(parent.card.classes) - 1] if parent is not None else LABEL_CLASSES
    classes = CLASSES if options.synthetic else CLASSES[: 1 + len(labels)]
    if parent is not None:
        parent.check(options.tile, shared_unet(options.net, options.tile, len(classes)), classes, options.pixel_size)
    pixel_size = options.pixel_size or (parent.card.pixel_size if parent else None)
    store, pixel_size, (labelled, skipped, scenes) = store_tiles(store_path, options.tile, pixel_size, progress, labels)
    data = labelled
    if options.synthetic:
        synthetic = synthetic_set(options.synthetic, options.tile, pixel_size, options.seed, progress)
        data = JointSet(
            torch.cat([labelled.x0, synthetic.x0]),
            torch.cat([F.pad(labelled.target, (0, 0, 0, 0, 0, len(CLASSES) - labelled.target.shape[1])), synthetic.target]),
            torch.cat([labelled.known, synthetic.known]),
        )
    progress.log(f"{len(labelled)} labelled tiles, {len(data) - len(labelled)} synthetic; classes {', '.join(classes)}")
    source = {**store_record(store, scenes, skipped), "train_tiles": len(labelled), "synthetic_tiles": len(data) - len(labelled)}
    name = options.name or f"SAR-JointNet {options.tile} px, {store.path.stem}"
    return fit_jointnet(data, out_path, options, pixel_size, classes, name, source, progress, parent)


def fit_jointnet(
    data: JointSet, out_path: Path, options: JointNetOptions, pixel_size: float, classes: list[str], name: str, source: dict[str, Any],
    progress: Progress, parent: Optional[Parent] = None,
) -> dict[str, Any]:
    """Train SAR-JointNet on ``data`` of ``classes`` (from ``parent``'s weights when given) and write it once
    stage 3 has finished: what training on a label store and pretraining share. ``source`` is what the card
    says of the tiles, its ``train_tiles``, ``synthetic_tiles`` and ``skipped_tiles`` among it."""
    device = pick_device(options.device)
    b, b_from = balancing(data, options.b, parent)
    progress.log(f"{len(data)} training tiles ({source['skipped_tiles']} left out); b = {b:.4f} ({b_from})")
    config = options.training(device)
    card = GeneratorCard(name=name, classes=list(classes), tile_size=options.tile, pixel_size=pixel_size, b=b,
                         unet=shared_unet(options.net, options.tile, len(classes)), noise=dict(NOISE), kind=KIND)
    folder = options.checkpoints or out_path.with_name(out_path.stem + ".stages")
    net, history, stage_seconds = train(card, data, config, folder, options.stage, progress, parent)
    written = parent is not None or options.stage in (None, 3)
    if written:
        card.training = {**training_record(card, source, b_from, config, stage_seconds, history, parent), "preset": options.preset,
                         "stage_seconds": list(stage_seconds.values())}
        write_generator(net, card, out_path, progress)
    progress.update("done", 1, 1)
    return {
        "generator": str(out_path) if written else None,
        "kind": KIND,
        "checkpoints": str(folder),
        "stages": list(stage_seconds),
        "classes": card.classes,
        "b": b,
        "b_from": b_from,
        "train_tiles": source["train_tiles"],
        "synthetic_tiles": source["synthetic_tiles"],
        "skipped_tiles": source["skipped_tiles"],
        "tile": options.tile,
        "stage_steps": list(config.steps),
        "final_loss": history[-1]["loss"] if history else None,
        "device": str(device),
        "seconds": round(sum(stage_seconds.values()), 1),
        "initialised_from": parent.record() if parent is not None else None,
        "history": history,
    }


def synthetic_set(n: int, tile: int, pixel_size: float, seed: int, progress: Progress) -> JointSet:
    """``n`` seeded synthetic scenes of one tile each, in all five classes; those with no-data edges are left
    out, as from a label store."""
    tiles, masks = [], []
    for i, (x, mask) in enumerate(synthetic_scenes(n, tile, pixel_size, seed)):
        progress.update("synthetic scenes", i, n, "Drawing synthetic scenes")
        if x.min() > 0:
            tiles.append(x)
            masks.append(mask)
    if not tiles:
        raise InputError(f"None of the {n} synthetic scenes is free of no data.", "Ask for more (--synthetic).")
    return JointSet.from_arrays(np.stack(tiles), np.stack(masks), np.ones((len(tiles), tile, tile)), len(CLASSES))


def check_options(options: JointNetOptions) -> None:
    if options.preset not in PRESETS:
        raise InputError(f"Unknown preset {options.preset!r}.", f"Use one of: {', '.join(PRESETS)}.")
    if options.stage_steps is not None and (len(options.stage_steps) != 3 or min(options.stage_steps) < 0):
        raise InputError(f"Stage steps {options.stage_steps}: give three counts, none negative.", "E.g. --stage-steps 200 200 100.")
    if options.stage not in (None, *STAGES):
        raise InputError(f"There is no stage {options.stage}.", "Give --stage 1, 2 or 3, or leave it out to run all three.")
    if options.batch_size is not None and options.batch_size < 1:
        raise InputError("Batch size must be at least 1.", "E.g. --batch-size 8.")
    if options.lr is not None and not options.lr > 0:
        raise InputError(f"Learning rate {options.lr} must be positive.", "E.g. --lr 2e-4.")
    if options.b is not None and not options.b > 0:
        raise InputError(f"Balancing factor b = {options.b} must be positive.", "Give e.g. --b 0.5, or --b auto.")
    if options.slick_share is not None and not 0 < options.slick_share < 1:
        raise InputError(f"Slick share {options.slick_share} must lie between 0 and 1.", "Give e.g. --slick-share 0.5, or --slick-share uniform.")
    if options.synthetic < 0:
        raise InputError(f"--synthetic {options.synthetic}: a count of scenes cannot be negative.", "Give e.g. --synthetic 200, or 0.")
