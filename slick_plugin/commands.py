"""The engine commands the plugin sends, built from plain values, and the files a run leaves.

The dock and the Processing algorithms both fill a ``DetectParameters`` and hand its command to the
worker, so a run from either place is the same run. The label store and fine-tuning go through the
same worker: the engine owns the store's schema and every model file.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence, Tuple

from .contract import (DEFAULT_OVERLAP, GENERATOR_KINDS, GENERATOR_LOW_RES_STEPS,
                       GENERATOR_STEPS, SOLVER_STEPS, STAGING_PREFIX, TRAIN_LAYERS, detection_files)
from .engine_runner import EngineCommand

DOCTOR = EngineCommand("doctor")
MODELS = EngineCommand("models")

SIDECARS = ("", ".aux.xml", ".ovr", "-wal", "-shm", "-journal")


def info_command(scene: str, model: str = "") -> EngineCommand:
    """The engine's verdict on running ``model`` (empty: the bundled default) on ``scene``."""
    return EngineCommand("info", (scene, "--model", model) if model else (scene,))


def measure_command(scene: str) -> EngineCommand:
    """Measure the scene's eq. 1 statistics in the background (kept by the engine until the file changes), so
    that a detection on it does not start by reading the whole scene."""
    return EngineCommand("measure", (scene,), low_priority=True)


def prepare_command(model: str, device: str) -> EngineCommand:
    """Make in the background what the model's first detection on this machine would make before its first tile (the
    runtime ``auto`` measures fastest here, the model's export and int8 model), so that detection starts at once."""
    return EngineCommand("prepare", (*(("--model", model) if model else ()), "--device", device), low_priority=True)


def remove_model_command(model: str) -> EngineCommand:
    """Delete a fine-tuned model from the user's models folder (the engine refuses any other)."""
    return EngineCommand("models", ("--remove", model))


def label_store_init_command(store: str, crs: str) -> EngineCommand:
    """Create an empty label store; the engine refuses to replace an existing file."""
    return EngineCommand("labels", ("init", store, "--crs", crs))


def label_export_command(store: str, scene: str, out: str) -> EngineCommand:
    """Write one scene's slick labels as a mask in the paper's format (.png + .pgw, or .tif)."""
    return EngineCommand("labels", ("export", store, "--scene", scene, "--out", out))


def _remove_temp_leftovers(folder: Path) -> None:
    """Delete what a killed engine left in ``folder`` (a cancelled or failed one cleans up itself)."""
    if folder.is_dir():
        for leftover in folder.glob(f"{STAGING_PREFIX}*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


@dataclass(frozen=True)
class DetectParameters:
    """Everything one detection needs; an empty ``model`` means the engine's bundled default."""

    scene: str
    out_dir: str
    prefix: str
    model: str = ""
    device: str = "auto"
    tile: int = 0
    """0: the model's own."""
    overlap: int = DEFAULT_OVERLAP
    threshold: float = 0.0
    """0: the model's own."""
    min_area_km2: float = 0.0
    """0: the model's own (its card's smallest slick)."""
    bounds: Optional[Tuple[float, float, float, float]] = None
    bounds_crs: str = ""
    mirror: bool = True
    """Average over mirror images (the engine's ``--tta``, its default too, said either way so a settings
    choice never rests on the engine's default)."""
    against_parent: bool = False
    """Detect with the fine-tuned ``model``'s parent too and write the slicks that differ (the engine's ``changes``)."""

    def command(self) -> EngineCommand:
        args = [self.scene, "--out", self.out_dir, "--prefix", self.prefix, "--device", self.device,
                "--overlap", str(self.overlap)]
        if self.min_area_km2:
            args += ["--min-area-km2", repr(float(self.min_area_km2))]
        if self.tile:
            args += ["--tile", str(self.tile)]
        if self.threshold:
            args += ["--threshold", str(self.threshold)]
        if self.model:
            args += ["--model", self.model]
        if self.bounds is not None:
            args += ["--bounds", *(repr(float(value)) for value in self.bounds), "--bounds-crs", self.bounds_crs]
        args.append("--tta" if self.mirror else "--no-tta")
        return EngineCommand("changes" if self.against_parent else "detect", tuple(args))

    def output_paths(self) -> Tuple[Path, ...]:
        return tuple(Path(self.out_dir) / name for name in detection_files(self.prefix, self.against_parent).values())

    def remove_outputs(self) -> None:
        """Delete whatever this run left (after a failure, a kill or a late cancel) and temp leftovers."""
        for output in self.output_paths():
            for sidecar in SIDECARS:
                Path(f"{output}{sidecar}").unlink(missing_ok=True)
        _remove_temp_leftovers(Path(self.out_dir))


@dataclass(frozen=True)
class FinetuneParameters:
    """One fine-tuning run: the engine's recipe, with the dock's epochs, tile size, layers and samples."""

    base: str
    store: str
    out: str
    epochs: int = 10
    tile: int = 128
    train_layers: str = "all"
    device: str = "auto"
    generated: str = ""
    """A sample folder whose first ``n_generated`` kept samples join the training tiles; empty: none."""
    n_generated: int = 0
    """0: the engine's choice, as many samples as training tiles (the paper's)."""
    use_on: str = "labelled"
    """Where the new model's weights detect: ``labelled`` (its labels' scenes, the parent's elsewhere) or ``every``."""
    label_check: bool = True
    """False: the new weights are kept even where they find the labelled slicks no better than the parent's."""
    close_to_parent: bool = False
    """True: ``--stay-close``, the engine's way of keeping closer to this kind of parent: fewer places made worse."""

    def command(self) -> EngineCommand:
        args = ["--base", self.base, "--labels", self.store, "--out", self.out, "--epochs", str(self.epochs),
                "--tile", str(self.tile), "--train-layers", self.train_layers, "--device", self.device, "--use-on", self.use_on,
                "--label-check" if self.label_check else "--no-label-check"]
        if self.close_to_parent:
            args.append("--stay-close")
        if self.generated:
            args += ["--generated", self.generated]
            if self.n_generated:
                args += ["--n-generated", str(self.n_generated)]
        return EngineCommand("finetune", tuple(args))

    def remove_outputs(self) -> None:
        """Delete the model file of a run that did not succeed (a late cancel) and a killed engine's temp file.

        ``out`` was a free name when the run started (``finetuned_model_path``), so a file there is this run's.
        """
        Path(self.out).unlink(missing_ok=True)
        _remove_temp_leftovers(Path(self.out).parent)


GENERATOR_NETS = ("small", "ddpm")
"""The engine's ``generator train --net`` choices: small trains on a CPU, ddpm is the paper's size (GPU)."""
DAKTER = next(iter(GENERATOR_KINDS))
"""The default generator kind, the one whose two training stages the options page's step settings set; the
other kind trains its three stages for the engine's CPU preset."""


@dataclass(frozen=True)
class GenerateParameters:
    """One press of Generate samples: train a generator when ``train`` is set, then add ``n`` samples from it.

    ``generator`` is a free name when ``train`` is set (the engine never replaces a generator), so a
    file there after a failed training is that run's. ``low_priority`` (the default) runs both commands
    below normal CPU priority: generation is background work the analyst keeps labelling and detecting beside.
    """

    store: str
    generator: str
    folder: str
    n: int
    train: bool
    tile: int = 64
    kind: str = DAKTER
    """Of a newly trained generator (``GENERATOR_KINDS``); generation reads the kind from the file."""
    init: str = ""
    """The pretrained generator a new one is fine-tuned from (``bundled_generator``), with its network and the
    engine's fine-tuning steps; empty: trained from scratch with ``net`` and the steps below."""
    net: str = "small"
    train_steps: int = GENERATOR_STEPS
    low_res_steps: int = GENERATOR_LOW_RES_STEPS
    solver: str = "dpm++"
    solver_steps: int = 0
    """0: the solver's own default (``SOLVER_STEPS``)."""
    device: str = "auto"
    mix_generators: bool = False
    """Allow adding to a folder holding samples of an earlier generator (after retraining)."""
    low_priority: bool = True

    def commands(self) -> Tuple[EngineCommand, ...]:
        generate = ["--generator", self.generator, "--out", self.folder, "--n", str(self.n),
                    "--solver", self.solver, "--device", self.device]
        if self.solver_steps:
            generate += ["--steps", str(self.solver_steps)]
        if self.mix_generators:
            generate.append("--mix-generators")
        commands = (EngineCommand("generate", tuple(generate), low_priority=self.low_priority),)
        if not self.train:
            return commands
        steps = ("--steps", str(self.train_steps), "--low-res-steps", str(self.low_res_steps)) if self.kind == DAKTER else ()
        start = ("--init", self.init) if self.init else ("--net", self.net, *steps)
        train = EngineCommand("generator", (
            "train", "--kind", self.kind, "--labels", self.store, "--out", self.generator, "--tile", str(self.tile),
            *start, "--device", self.device), low_priority=self.low_priority)
        return (train, *commands)

    def remove_generator(self) -> None:
        """Delete the generator file of a training that did not succeed (a late cancel) and temp leftovers."""
        Path(self.generator).unlink(missing_ok=True)
        _remove_temp_leftovers(Path(self.generator).parent)

    def remove_partial_samples(self) -> None:
        """Delete what a killed engine left half-written; the engine keeps every whole sample itself."""
        for folder in (Path(self.folder), Path(self.folder) / "tiles", Path(self.folder) / "previews"):
            _remove_temp_leftovers(folder)


def samples_summary_command(folder: str) -> EngineCommand:
    """What a sample folder holds, one line per sample with its preview image."""
    return EngineCommand("samples", ("summary", folder))


def samples_keep_command(folder: str, ids: Sequence[str], keep: bool) -> EngineCommand:
    """Keep samples for training, or discard them (never used for training; their seeds stay taken)."""
    return EngineCommand("samples", ("keep" if keep else "discard", folder, *ids))


def user_models_dir() -> Path:
    """Where the engine lists installed models from, besides its bundled ones.

    Mirrors ``engine.models.registry.user_models_dir`` (the plugin never imports the engine): a fine-tuned model
    saved here shows up in the dock's model list with no further step.
    """
    env = os.environ.get("SLICK_MAPPER_MODELS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "slick_mapper" / "models"


def finetuned_model_path(folder: Path, base: str, now: Optional[datetime] = None) -> Path:
    """``<base stem>_ft_<YYYYmmdd-HHMMSS>.safetensors`` in ``folder``, numbered if that name is taken."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return free_path(folder / f"{_safe(Path(base).stem)}_ft_{stamp}.safetensors")


def free_path(path: Path) -> Path:
    """``path``, else ``<stem>-2<suffix>``, ``-3``... whichever does not exist: the engine never overwrites."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def _safe(text: str) -> str:
    """``text`` reduced to characters that are safe in a file name on every system."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "run"


def unique_prefix(out_dir: str, scene: str, model_name: str, now: Optional[datetime] = None) -> str:
    """``<scene>_<model>_<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... if a run in that second exists.

    The engine refuses to overwrite, so every run gets its own prefix and nothing is replaced.
    """
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{_safe(Path(scene).stem)}_{_safe(model_name)}_{stamp}"
    prefix, number = base, 1
    while any((Path(out_dir) / name).exists() for name in detection_files(prefix, against_parent=True).values()):
        number += 1
        prefix = f"{base}-{number}"
    return prefix
