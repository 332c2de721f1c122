"""Sample generators pretrained on real SAR texture, for a project's generator to start from.

A generator trained from nothing on one project's few hundred labelled tiles learns the sea's texture and
hardly a slick (docs/dakd.md). ``generator pretrain`` trains either kind on the tiles the bundled
segmentation model's pretraining cuts (``models.pretrain.real_sets``: Arctic scenes but their validation bands,
the North Sea tiles, the real IW scene and synthetic scenes, in the ``real_texture.Mix`` shares, real seep slicks
and composited ones), of the Arctic scenes only ``bundled.POOL``'s, as the held-out model: the experiments score
generators and their students on the other three. Tiles are cut at the generator's tile size, with the classes
sea and slick; those holding no data, or less than ``training_set.MIN_KNOWN`` known, are left
out, as from a label store. ``generator train --init`` then fine-tunes the result on a project's labels.

``--steps`` counts every stage together, shared as the kind's own schedule shares them (DAKTer 2 : 1
half-size to full-size, SAR-JointNet 2 : 2 : 1). Each stage checkpoints itself (``stages``) in
``checkpoints/<out name>-<key of the options>/``, so the same command run again after a stop, a Cancel or
a crash goes on where it stopped; the generator file is written once the last stage has finished.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..contract import GENERATOR_KINDS, GENERATOR_LOW_RES_STEPS, GENERATOR_STEPS
from ..data.bundled import POOL
from ..errors import InputError
from ..models.pretrain import CHECKPOINTS, RealRecipe, real_sets, run_key
from ..models.registry import BINARY_CLASSES, DEFAULT_MODEL, check_new_model_file, read_card
from ..progress import Progress, silent
from . import joint_ddpm, jointnet
from .generator import GeneratorOptions, fit_generator
from .joint_ddpm import JointSet, unet_config
from .training_set import MIN_KNOWN, MIN_TILES


@dataclass
class PretrainOptions:
    kind: str = joint_ddpm.KIND
    steps: int = 6000
    """Of all stages together (see the module's docstring)."""
    tiles: int = 2000
    """Real-texture tiles cut; those with no data are left out after."""
    tile: int = 64
    net: str | dict[str, Any] = "small"
    """A size from ``joint_ddpm.NETS`` or explicit ``UNet2DModel`` arguments."""
    batch_size: int = 8
    seed: int = 0
    """Of the tiles, the initial weights, the batches and the noise."""
    device: str = "auto"

    def stage_steps(self) -> tuple[int, ...]:
        """``steps`` shared out in the proportions of the kind's default schedule, the last stage taking what
        rounding leaves."""
        shares = (GENERATOR_LOW_RES_STEPS, GENERATOR_STEPS) if self.kind == joint_ddpm.KIND else jointnet.PRESETS["cpu"].steps
        parts = [self.steps * share // sum(shares) for share in shares]
        parts[-1] += self.steps - sum(parts)
        return tuple(parts)

    def command(self, out: Path) -> str:
        """The command line that makes this generator."""
        return (f"python -m engine generator pretrain --kind {self.kind} --out {out.name} --steps {self.steps} --tiles {self.tiles} "
                f"--tile {self.tile} --net {self.net} --batch-size {self.batch_size} --seed {self.seed}")


def checkpoint_folder(out: Path, options: PretrainOptions) -> Path:
    """``checkpoints/<out name>-<key>``: the same options (wherever they run) go on in the same folder."""
    chosen = {**asdict(options), "out": str(out.resolve())}
    del chosen["device"]  # a run stopped on one device goes on on another
    return CHECKPOINTS / f"{out.stem}-{run_key(chosen)}"


def real_texture_set(options: PretrainOptions, pixel_size: float, progress: Progress) -> tuple[JointSet, dict[str, Any]]:
    """(the training tiles, what the card says of them: every real scene and tile by name, the mix, the
    tiles cut of each kind and how many were left out)."""
    progress.update("tiles", 0, 1, f"Cutting {options.tiles} real-texture tiles of {options.tile} px")
    tiles, _, data = real_sets(RealRecipe(scenes=POOL, train_tiles=options.tiles, tile=options.tile), pixel_size, options.seed)
    x, slick, valid = (t[:, 0].numpy() for t in (tiles.x, tiles.y, tiles.valid))
    usable = (x.reshape(len(x), -1).min(1) > 0) & (valid.reshape(len(x), -1).mean(1) >= MIN_KNOWN)
    n = int(usable.sum())
    if n < MIN_TILES:
        raise InputError(f"Only {n} of {len(x)} real-texture tiles of {options.tile} px are free of no data.",
                         f"Ask for more tiles (--tiles {4 * options.tiles}).")
    source = {
        "pretraining": True,
        **{k: v for k, v in data.items() if k != "validation_tiles"},
        "tiles_cut": len(x),
        "train_tiles": n,
        "synthetic_tiles": 0,
        "skipped_tiles": len(x) - n,
    }
    return JointSet.from_arrays(x[usable], slick[usable].astype(np.int64), valid[usable], 2), source


def pretrain_generator(
    out: str | Path, options: Optional[PretrainOptions] = None, progress: Optional[Progress] = None, checkpoints: Optional[Path] = None
) -> dict[str, Any]:
    """Pretrain a generator of ``options.kind`` on real-texture tiles and write it to ``out`` (never replaced),
    going on from the stage checkpoints in ``checkpoints`` (default: ``checkpoint_folder``)."""
    options = options or PretrainOptions()
    progress = progress or silent()
    out = Path(out)
    _check(options)
    check_new_model_file(out)
    folder = checkpoints or checkpoint_folder(out, options)
    pixel_size = read_card(DEFAULT_MODEL).pixel_size
    data, source = real_texture_set(options, pixel_size, progress)
    source = {**source, "how": options.command(out)}
    name = f"{GENERATOR_KINDS[options.kind].split(' (')[0]} {options.tile} px, pretrained on real SAR texture"
    common = dict(tile=options.tile, net=options.net, batch_size=options.batch_size, seed=options.seed, device=options.device)
    progress.log(f"checkpoints: {folder}")
    if options.kind == joint_ddpm.KIND:
        low_res, full = options.stage_steps()
        return fit_generator(data, out, GeneratorOptions(**common, steps=full, low_res_steps=low_res), pixel_size, name, source, progress,
                             folder)
    config = jointnet.JointNetOptions(**common, stage_steps=options.stage_steps(), checkpoints=folder)
    return jointnet.fit_jointnet(data, out, config, pixel_size, jointnet.CLASSES[: len(BINARY_CLASSES)], name, source, progress)


def _check(options: PretrainOptions) -> None:
    if options.kind not in GENERATOR_KINDS:
        raise InputError(f"Unknown generator kind {options.kind!r}.", f"Use one of: {', '.join(GENERATOR_KINDS)}.")
    if options.steps < len(options.stage_steps()):
        raise InputError(f"--steps {options.steps}: a {options.kind} generator needs a step in each of its stages.",
                         f"Give at least --steps {len(options.stage_steps())}.")
    if options.tiles < MIN_TILES or options.batch_size < 1:
        raise InputError(f"--tiles {options.tiles}, --batch-size {options.batch_size}: a generator needs at least {MIN_TILES} tiles "
                         "and a tile per batch.", "E.g. --tiles 2000 --batch-size 8.")
    unet_config(options.net, options.tile, len(BINARY_CLASSES))  # a tile that does not fit the network, before tiles are cut
