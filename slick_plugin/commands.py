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
from typing import Optional, Tuple

from .worker import EngineCommand

DOCTOR = EngineCommand("doctor")
MODELS = EngineCommand("models")

OUTPUT_SUFFIXES = ("_probability.tif", "_mask.tif", "_slicks.gpkg")
SIDECARS = ("", ".aux.xml", ".ovr", "-wal", "-shm", "-journal")
TEMP_MARKER = ".slickmapper-tmp"
"""Name start of the engine's in-progress files; only a killed engine leaves them behind."""


def info_command(scene: str) -> EngineCommand:
    return EngineCommand("info", (scene,))


def label_store_init_command(store: str, crs: str) -> EngineCommand:
    """Create an empty label store; the engine refuses to replace an existing file."""
    return EngineCommand("labels", ("init", store, "--crs", crs))


def label_export_command(store: str, scene: str, out: str) -> EngineCommand:
    """Write one scene's slick labels as a mask in the paper's format (.png + .pgw, or .tif)."""
    return EngineCommand("labels", ("export", store, "--scene", scene, "--out", out))


def _remove_temp_leftovers(folder: Path) -> None:
    """Delete what a killed engine left in ``folder`` (a cancelled or failed one cleans up itself)."""
    if folder.is_dir():
        for leftover in folder.glob(f"{TEMP_MARKER}*"):
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
    tile: int = 512
    overlap: int = 64
    threshold: float = 0.0
    """0: the model's own."""
    bounds: Optional[Tuple[float, float, float, float]] = None
    bounds_crs: str = ""

    def command(self) -> EngineCommand:
        args = [self.scene, "--out", self.out_dir, "--prefix", self.prefix, "--device", self.device,
                "--tile", str(self.tile), "--overlap", str(self.overlap)]
        if self.threshold:
            args += ["--threshold", str(self.threshold)]
        if self.model:
            args += ["--model", self.model]
        if self.bounds is not None:
            args += ["--bounds", *(repr(float(value)) for value in self.bounds), "--bounds-crs", self.bounds_crs]
        return EngineCommand("detect", tuple(args))

    def output_paths(self) -> Tuple[Path, ...]:
        return tuple(Path(self.out_dir) / f"{self.prefix}{suffix}" for suffix in OUTPUT_SUFFIXES)

    def remove_outputs(self) -> None:
        """Delete whatever this run left (after a failure, a kill or a late cancel) and temp leftovers."""
        for output in self.output_paths():
            for sidecar in SIDECARS:
                Path(f"{output}{sidecar}").unlink(missing_ok=True)
        _remove_temp_leftovers(Path(self.out_dir))


TRAIN_LAYERS = ("decoder", "all")
"""The engine's ``finetune --train-layers`` choices."""


@dataclass(frozen=True)
class FinetuneParameters:
    """One fine-tuning run; an empty ``train_layers`` lets the engine choose (all on a GPU, decoder elsewhere)."""

    base: str
    store: str
    out: str
    epochs: int = 20
    tile: int = 256
    train_layers: str = ""
    device: str = "auto"

    def command(self) -> EngineCommand:
        args = ["--base", self.base, "--labels", self.store, "--out", self.out, "--epochs", str(self.epochs),
                "--tile", str(self.tile), "--device", self.device]
        if self.train_layers:
            args += ["--train-layers", self.train_layers]
        return EngineCommand("finetune", tuple(args))

    def remove_outputs(self) -> None:
        """Delete the model file of a run that did not succeed (a late cancel) and a killed engine's temp file.

        ``out`` was a free name when the run started (``finetuned_model_path``), so a file there is this run's.
        """
        Path(self.out).unlink(missing_ok=True)
        _remove_temp_leftovers(Path(self.out).parent)


def user_models_dir() -> Path:
    """Where the engine lists installed models from, besides its bundled ones.

    Mirrors ``engine.models.user_models_dir`` (the plugin never imports the engine): a fine-tuned model
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
    stem = f"{_safe(Path(base).stem)}_ft_{stamp}"
    path, number = folder / f"{stem}.safetensors", 1
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}.safetensors"
    return path


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
    while any((Path(out_dir) / f"{prefix}{suffix}").exists() for suffix in OUTPUT_SUFFIXES):
        number += 1
        prefix = f"{base}-{number}"
    return prefix
