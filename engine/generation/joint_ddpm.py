"""The DAKTer joint generator: one pixel-space DDPM over a SAR tile and its label (Moon et al., 2025).

The network sees the SAR tile and the C label channels stacked, (1 + C) x H x W, noised together with the
same linear 1,000-step schedule, and predicts the clean tile (L2 loss) and per-class logits (cross-entropy
against the one-hot label): paper Algorithm 1. The label channels are one-hot labels mapped to {-1, 1} and
scaled by the SNR balancing factor ``b`` (supplementary C), so that noise wipes out label and image at the
same pace. Sampling (Algorithm 2) feeds the predicted logits back as ``(softmax * 2 - 1) * b`` at every
step of a deterministic solver, and returns the tile and the last logits, from which soft labels
``softmax(logits / T)`` are made for the student.

diffusers supplies the network (``UNet2DModel``) and the noise schedules and solvers; this module holds
what is specific to the method: ``b``, the joint loss, the label rescaling, the two training stages' settings
(supplementary B: bilinearly halved tiles first, then full size; ``generator.train`` runs them) and the sampling
loop. A generator file is
a ``.safetensors`` file like a segmentation model's (engine/models/registry.py), with its own card key so that no
tool mistakes one for the other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..contract import GENERATOR_LOW_RES_STEPS, GENERATOR_STEPS, SOLVER_STEPS
from ..errors import InputError, ModelError
from ..models.eager import autocast, fast_dtype
from ..models.registry import CARD_KEY, GENERATOR_CARD_KEY, card_data, read_metadata, read_weights, save_model
from ..models.training import training_dtype

if TYPE_CHECKING:  # diffusers takes seconds to import: only the commands that run a generator pay for it
    from diffusers import DDPMScheduler, UNet2DModel

GENERATOR_FORMAT = "slick-mapper-generator"
GENERATOR_VERSION = 1
KIND = "dakter"
"""This generator's kind among ``contract.GENERATOR_KINDS``."""
NOISE = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
"""The paper's forward process: DDPM's linear schedule over 1,000 steps."""

NETS: dict[str, dict[str, Any]] = {
    "small": {
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 1,
        "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        "norm_num_groups": 8,
    },
    "ddpm": {
        "block_out_channels": [128, 128, 256, 256, 512, 512],
        "layers_per_block": 2,
        "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    },
}
"""U-Net sizes. ``small`` (1.1 M weights, attention at a quarter of the tile) trains on a laptop CPU;
``ddpm`` is DDPM's 256-pixel network (114 M weights, attention at 16 x 16 for 256-pixel tiles), the size
of the paper's generator, for a GPU."""

SOLVERS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", SOLVER_STEPS["ddim"], {"clip_sample": False, "set_alpha_to_one": True}),
    "dpm++": ("DPMSolverMultistepScheduler", SOLVER_STEPS["dpm++"], {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}
"""Solver -> (diffusers scheduler class, default steps, settings). DDIM with 200 steps is the paper's; DPM-Solver++
reaches similar samples in about 20. Both are deterministic, so a sample depends on its seed alone.
Clipping is left to the sampling loop, which clips the image channel only: the label channels live in
[-b, b], and b may exceed 1 (the paper's ablation tries b = 2)."""


@dataclass
class GeneratorCard:
    """Everything a generator file says about itself."""

    name: str
    classes: list[str]
    tile_size: int
    pixel_size: float
    b: float
    """The SNR balancing factor the generator was trained with; sampling must use the same."""
    unet: dict[str, Any]
    """``UNet2DModel`` arguments."""
    noise: dict[str, Any] = field(default_factory=lambda: dict(NOISE))
    normalisation: dict[str, Any] = field(default_factory=lambda: {"kind": "eq1_2sigma_db", "x0": "stretched / 127.5 - 1"})
    training: dict[str, Any] = field(default_factory=dict)
    """Where the tiles came from, the settings, b's origin and the loss history."""
    format: str = GENERATOR_FORMAT
    version: int = GENERATOR_VERSION
    kind: str = KIND
    """Which network the file holds; files written before there were two kinds hold DAKTer's."""
    engine_version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def channels(self) -> int:
        return 1 + len(self.classes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GeneratorCard":
        return cls(**{k: v for k, v in card_data(text).items() if k in cls.__dataclass_fields__})


def unet_config(net: str | dict[str, Any], tile: int, n_classes: int) -> dict[str, Any]:
    """``UNet2DModel`` arguments for a named size (or explicit arguments) and the data's shape."""
    if isinstance(net, str):
        if net not in NETS:
            raise InputError(f"Unknown generator network {net!r}.", f"Use one of: {', '.join(NETS)}.")
        net = NETS[net]
    config = {**net, "sample_size": tile, "in_channels": 1 + n_classes, "out_channels": 1 + n_classes}
    # The low-resolution stage halves the tile, then every block but the last halves it again.
    factor = 2 ** len(config["block_out_channels"])
    if tile % factor or tile < 2 * factor:
        raise InputError(
            f"Tile size {tile} does not fit this network: it must be a multiple of {factor} and at least {2 * factor}.",
            f"Use e.g. --tile {max(2 * factor, tile // factor * factor)}.",
        )
    return config


def net_name(unet: dict[str, Any]) -> str:
    """The ``NETS`` size whose network ``unet`` (``unet_config``'s arguments) describes, or "custom"."""
    layers = {k: v for k, v in unet.items() if k not in ("sample_size", "in_channels", "out_channels")}
    return next((name for name, net in NETS.items() if net == layers), "custom")


def build_unet(card: GeneratorCard) -> UNet2DModel:
    from diffusers import UNet2DModel

    return UNet2DModel(**card.unet)


def noise_schedule(card: GeneratorCard) -> DDPMScheduler:
    """The forward process, x0-predicting: every solver is built ``from_config`` of this one."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**card.noise, prediction_type="sample")


@dataclass
class JointSet:
    """Training pairs as the diffusion model sees them: tiles in [-1, 1], class probabilities per pixel
    (one-hot at full size), and which pixels have a known label."""

    x0: torch.Tensor
    """(N, 1, H, W) float32: stretched / 127.5 - 1."""
    target: torch.Tensor
    """(N, C, H, W) float32 class probabilities, 0 where unknown."""
    known: torch.Tensor
    """(N, 1, H, W) float32 0/1."""

    @classmethod
    def from_arrays(cls, tiles: np.ndarray, labels: np.ndarray, known: np.ndarray, n_classes: int) -> "JointSet":
        """``tiles`` (N, H, W) stretched 1..255, ``labels`` (N, H, W) class indices, ``known`` (N, H, W) 0/1."""
        x0 = torch.from_numpy(np.asarray(tiles, dtype=np.float32)).unsqueeze(1) / 127.5 - 1
        k = torch.from_numpy(np.asarray(known, dtype=np.float32)).unsqueeze(1)
        onehot = F.one_hot(torch.from_numpy(np.asarray(labels, dtype=np.int64)), n_classes).permute(0, 3, 1, 2).float()
        return cls(x0, onehot * k, k)

    def __len__(self) -> int:
        return self.x0.shape[0]

    def __getitem__(self, idx: torch.Tensor) -> "JointSet":
        return JointSet(self.x0[idx], self.target[idx], self.known[idx])

    def labels(self) -> torch.Tensor:
        """y0 of Algorithm 1: one-hot mapped to {-1, 1}; unknown pixels 0, halfway between the classes,
        which is also what the sampler feeds back for a pixel it cannot decide."""
        return (2 * self.target - 1) * self.known

    def halved(self) -> "JointSet":
        """The set at half size for the first training stage: images bilinearly downsampled (with
        antialiasing, as an image resize does), and labels through the very same filter, so a low-resolution
        label pixel holds the class fractions of the pixels it covers. Low-resolution pixels less than half
        known stay unknown."""
        def down(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)

        known = down(self.known)
        mass = down(self.target)
        keep = (known >= 0.5).float()
        return JointSet(down(self.x0), mass / known.clamp(min=1e-6) * keep, keep)

    def to(self, device: torch.device) -> "JointSet":
        return JointSet(self.x0.to(device), self.target.to(device), self.known.to(device))


def mean_power(v: torch.Tensor) -> float:
    """P of eq. 9: the mean over frequencies (and over tiles and channels) of |DFT|^2.

    By Parseval this is H * W * mean(v^2); the DFT is kept because it is the paper's definition and costs
    nothing at these sizes.
    """
    total, count = 0.0, 0
    for chunk in v.split(256):
        spectrum = torch.fft.fft2(chunk.double())
        total += float((spectrum.real**2 + spectrum.imag**2).sum())
        count += spectrum.numel()
    return total / count


def balancing_factor(data: JointSet) -> float:
    """b = sqrt(P(x0) / P(y0)) over the training set (eq. 16), computed once before training.

    P(y0) is taken on the label channels as the network sees them, unknown pixels 0 included. For fully
    labelled tiles P(y0) = H * W, so b is the root-mean-square of the tiles in [-1, 1]: the paper's 0.44 to
    0.51 on its datasets.
    """
    label_power = mean_power(data.labels())
    if label_power == 0:
        raise InputError("The training tiles hold no known label pixel.", "Mark the areas you checked as reviewed.")
    return float(np.sqrt(mean_power(data.x0) / label_power))


def joint_loss(
    net: UNet2DModel, noise: DDPMScheduler, batch: JointSet, b: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, L2, CE) of Algorithm 1 on one batch already on the network's device.

    Timesteps and noise come from ``gen`` on the CPU, so a seeded run draws the same on any device. The
    cross-entropy counts known pixels only; the L2 counts every pixel (generator tiles hold no no-data).
    """
    device = batch.x0.device
    clean = torch.cat([batch.x0, b * batch.labels()], dim=1)
    eps = torch.randn(clean.shape, generator=gen).to(device)
    t = torch.randint(0, noise.config.num_train_timesteps, (clean.shape[0],), generator=gen).to(device)
    noisy = noise.add_noise(clean, eps, t)
    with autocast(device, training_dtype(device)):
        out = net(noisy, t).sample
    out = out.float()
    l2 = F.mse_loss(out[:, :1], batch.x0)
    ce_map = F.cross_entropy(out[:, 1:], batch.target, reduction="none")
    known = batch.known[:, 0]
    ce = (ce_map * known).sum() / known.sum().clamp(min=1)
    return l2 + ce, l2, ce


def dihedral(batch: JointSet, gen: torch.Generator) -> JointSet:
    """A random flip and quarter turn per tile, the same for image and label: eight views of every tile,
    none of which changes what the sea or a slick looks like at these sizes."""
    parts: list[list[torch.Tensor]] = [[], [], []]
    for i in range(len(batch)):
        k = int(torch.randint(0, 4, (1,), generator=gen))
        flip = bool(torch.randint(0, 2, (1,), generator=gen))
        for part, t in zip(parts, (batch.x0[i], batch.target[i], batch.known[i])):
            t = torch.rot90(t, k, dims=(1, 2))
            part.append(torch.flip(t, dims=(2,)) if flip else t)
    return JointSet(*(torch.stack(p) for p in parts))


@dataclass
class GeneratorTraining:
    """Settings of the two stages; the low-resolution stage uses 4 x the batch at half size (the paper's
    64 and 16), so both stages see the same number of pixels per step, and half the learning rate after."""

    steps: int = GENERATOR_STEPS
    """Full-size steps."""
    low_res_steps: int = GENERATOR_LOW_RES_STEPS
    batch_size: int = 8
    lr: float = 2e-4
    """Stage 1 learning rate; stage 2 uses half, the paper's ratio (2e-5 then 1e-5 over 400k steps; short
    runs need larger rates)."""
    weight_decay: float = 1e-4
    slick_share: Optional[float] = 0.5
    """Expected share of each batch drawn from tiles holding a slick pixel; None draws tiles uniformly.
    Seep slicks cover well under 1 % of Arctic sea and a few % of its tiles, so uniform batches taught a
    CPU-sized generator to draw no slick at all (0 of 128 samples); an analyst generates samples for their
    slicks. With no slick tile in the set, batches are uniform whatever this says."""
    seed: int = 0
    device: str = "cpu"

    def stages(self, data: JointSet) -> list[tuple[int, str, JointSet, int, int, float]]:
        """(number, progress stage, tiles, steps, batch size, learning rate) of each stage that has steps."""
        stages = [
            (1, "training (low res)", data.halved(), self.low_res_steps, 4 * self.batch_size, self.lr),
            (2, "training", data, self.steps, self.batch_size, self.lr / 2),
        ]
        return [s for s in stages if s[3] > 0]

    def tile_weights(self, data: JointSet, slick: Optional[int]) -> torch.Tensor:
        return tile_weights(data, slick, self.slick_share)


def tile_weights(data: JointSet, slick: Optional[int], slick_share: Optional[float]) -> torch.Tensor:
    """Each tile's chance of being drawn into a batch (see ``GeneratorTraining.slick_share``)."""
    weights = torch.ones(len(data), dtype=torch.float64)
    if slick_share is None or slick is None:
        return weights
    has_slick = (data.target[:, slick] > 0.5).flatten(1).any(1)
    n = int(has_slick.sum())
    if 0 < n < len(data):
        weights[has_slick] = slick_share / n
        weights[~has_slick] = (1 - slick_share) / (len(data) - n)
    return weights


StepCallback = Callable[[int, int], None]
"""Called as ``callback(step, steps)`` after every solver step; raising stops the loop."""


def sample(
    net: UNet2DModel,
    card: GeneratorCard,
    seeds: list[int],
    solver: str = "ddim",
    steps: Optional[int] = None,
    callback: Optional[StepCallback] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate one (tile, logits) pair per seed in one batch: Algorithm 2.

    Returns tiles (N, 1, H, W) in [-1, 1] and logits (N, C, H, W), float32 on the CPU.

    The state z_t = (x_t, y'_t) is kept exactly as training built the network's input, with
    y'_t = alpha_t * b * y0 + sigma_t * eps (eq. 13), and it is fed to the network unscaled; at t = T it is
    pure N(0, I) noise on every channel. The paper's Algorithm 2 writes the input as (x_t, b * y'_t) with
    y'_T ~ N(0, I); read literally, b would multiply the label state again at every one of the 200 steps
    (b^200 for b ~ 0.5) and the first input would carry noise of variance b^2 where training used 1, so we
    read its b * y'_t as the name of the b-scaled noisy label of eq. 13, which is what makes the loop match
    training. The network's prediction is fed back in the same space: the image channel clipped to the data
    range [-1, 1], the label channels as (softmax(logits) * 2 - 1) * b.

    Each seed draws its own starting noise from its own generator and the solvers add no noise after, so a
    sample depends only on its seed, the solver and its steps. Batching changes float rounding in the
    network (about 1e-6 on a CPU), so bit-identical regeneration reruns the sample's whole batch.
    """
    import diffusers

    try:
        class_name, default_steps, settings = SOLVERS[solver]
    except KeyError:
        raise InputError(f"Unknown solver {solver!r}.", f"Use one of: {', '.join(SOLVERS)}.") from None
    steps = steps or default_steps
    device = next(net.parameters()).device
    # "trailing" spacing starts at t = 999, where the state really is pure noise; the default "leading"
    # spacing starts 50 steps later with 20 steps, asking the network to find signal that is not there.
    scheduler = getattr(diffusers, class_name).from_config(noise_schedule(card).config, **settings, timestep_spacing="trailing")
    scheduler.set_timesteps(steps, device=device)
    shape = (card.channels, card.tile_size, card.tile_size)
    z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(device)
    z = z * scheduler.init_noise_sigma
    dtype = fast_dtype(device)
    logits = torch.zeros(0)
    with torch.inference_mode():
        for i, t in enumerate(scheduler.timesteps):
            with autocast(device, dtype):
                out = net(scheduler.scale_model_input(z, t), t).sample
            out = out.float()
            logits = out[:, 1:]
            x_hat = out[:, :1].clamp(-1, 1)
            y_hat = (torch.softmax(logits, dim=1) * 2 - 1) * card.b
            z = scheduler.step(torch.cat([x_hat, y_hat], dim=1), t, z).prev_sample
            if callback is not None:
                callback(i + 1, steps)
    return z[:, :1].clamp(-1, 1).cpu(), logits.cpu()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Tiles in [-1, 1] -> stretched uint8 1..255: 0 means no data, and a generated tile has none."""
    return ((x + 1) * 127.5).round().clamp(1, 255).to(torch.uint8).numpy()


def save_generator(net: UNet2DModel, card: GeneratorCard, path: str | Path) -> Path:
    return save_model(net, card, path, card_key=GENERATOR_CARD_KEY)


def read_generator_card(path: str | Path) -> GeneratorCard:
    """The card alone; a segmentation model or a generator of another format version is a clear error."""
    path = Path(path)
    meta = read_metadata(path)
    if GENERATOR_CARD_KEY not in meta:
        if CARD_KEY in meta:
            raise ModelError(f"{path.name} is a segmentation model, not a sample generator.", "Train one with: python -m engine generator train.")
        raise ModelError(f"{path.name} has no Slick Mapper generator card.", "Generators are written by: python -m engine generator train.")
    data = card_data(meta[GENERATOR_CARD_KEY])
    if data.get("format") != GENERATOR_FORMAT or data.get("version") != GENERATOR_VERSION:
        raise ModelError(
            f"{path.name} is a generator of format {data.get('format')!r} version {data.get('version')}, "
            f"written by engine {data.get('engine_version', '?')}; this engine reads version {GENERATOR_VERSION}.",
            "Train the generator again with this version, or use the engine version that wrote it.",
        )
    return GeneratorCard.from_json(meta[GENERATOR_CARD_KEY])


def require_kind(card: GeneratorCard, kind: str, path: str | Path) -> None:
    """Refuse a generator file of another kind than the loader at hand builds."""
    if card.kind != kind:
        raise ModelError(
            f"{Path(path).name} holds a {card.kind!r} generator where a {kind!r} one is expected.",
            f"python -m engine generate reads either kind; train a {kind!r} one with: python -m engine generator train --kind {kind}.",
        )


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[UNet2DModel, GeneratorCard]:
    card = read_generator_card(path)
    require_kind(card, KIND, path)
    net = build_unet(card)
    try:
        net.load_state_dict(read_weights(path))
    except RuntimeError as exc:
        raise ModelError(f"The weights in {Path(path).name} do not fit its card ({exc}).", "The file is damaged; train it again.") from exc
    return net.to(device).eval(), card
