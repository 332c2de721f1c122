"""The commands that are the engine's own rather than a job module's: ``info``, ``measure``, ``prepare``, ``detect``,
``changes``, ``models``, ``doctor``.

Each is registered by a function of its own, so that registering ``info`` or ``models`` (which the plugin
runs whenever a scene is loaded or the dock opens) imports no PyTorch; ``detect``'s options live on
``DetectOptions``, whose module does.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..progress import Progress
from .args import DETECT_HELP, add_options, options_from


def add_info_cli(subparsers: argparse._SubParsersAction) -> None:
    from ..scenes import landmask

    p = subparsers.add_parser("info")
    p.add_argument("scene", help="GeoTIFF, COG, VRT or Sentinel-1 GRD measurement TIFF")
    p.add_argument("--band", help="band name (HH, VV, HV, VH) or 1-based index; default: HH or VV")
    p.add_argument("--model", help="model file whose pixel size the plan uses (default: bundled model)")
    p.add_argument("--land-mask", default=landmask.DEFAULT, help="default (GSHHG coastline), none, or a land polygon file or raster")
    p.set_defaults(func=_info)


def add_measure_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("measure")
    p.add_argument("scene", help="GeoTIFF, COG, VRT or Sentinel-1 GRD measurement TIFF")
    p.add_argument("--band", help="band name (HH, VV, HV, VH) or 1-based index; default: HH or VV")
    p.set_defaults(func=_measure)


def add_prepare_cli(subparsers: argparse._SubParsersAction) -> None:
    from ..models import runtimes

    p = subparsers.add_parser("prepare")
    p.add_argument("--model", help="model file (default: bundled model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda, as detect takes it")
    p.add_argument("--runtime", choices=runtimes.RUNTIME_CHOICES, default=runtimes.default_runtime(),
                   help="as detect takes it")
    p.set_defaults(func=_prepare)


def add_detect_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("detect")
    p.add_argument("scene", help="GeoTIFF, COG, VRT or Sentinel-1 GRD measurement TIFF")
    _add_detect_options(p)
    p.set_defaults(func=_detect)


def add_changes_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("changes")
    p.add_argument("scene", help="a scene the fine-tuned model learnt from (GeoTIFF, COG, VRT or GRD measurement TIFF)")
    _add_detect_options(p, model={"required": True, "help": "the fine-tuned model file (.safetensors); its parent is found from its card"})
    p.set_defaults(func=_changes)


def _add_detect_options(p: argparse.ArgumentParser, **overrides: dict) -> None:
    """``--out`` and every ``DetectOptions`` field, for ``detect`` and ``changes`` alike."""
    from ..jobs.detect import DetectOptions
    from ..models import runtimes

    p.add_argument("--out", required=True, help="output folder (created if missing)")
    add_options(p, DetectOptions, DETECT_HELP,
                bounds={"type": float, "nargs": 4, "metavar": ("XMIN", "YMIN", "XMAX", "YMAX")},
                land_mask={"metavar": "default|none|PATH"},
                land_buffer={"metavar": "PIXELS"},
                nodata_buffer={"metavar": "PIXELS"},
                runtime={"choices": runtimes.RUNTIME_CHOICES,
                         "default": runtimes.default_runtime()},
                **overrides)


def add_models_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models")
    p.add_argument("--remove", metavar="MODEL", help="delete this fine-tuned model from your models folder (not a bundled one, "
                                                     "nor one another model was fine-tuned from)")
    p.set_defaults(func=_models)


def add_doctor_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("doctor")
    p.set_defaults(func=_doctor)


def _info(args: argparse.Namespace, progress: Progress) -> dict:
    from ..models.registry import DEFAULT_MODEL, read_card
    from ..scenes.analysis import assess
    from ..scenes.grid import analysis_grid
    from ..scenes.landmask import land_summary
    from ..scenes.raster import open_raster

    card = read_card(args.model or DEFAULT_MODEL)
    verdict = assess(args.scene, card, args.band)
    info = verdict.to_dict()
    with open_raster(args.scene) as ds:
        grid = analysis_grid(ds, info["utm_crs"], card.pixel_size)
    info["land_mask"] = land_summary(args.land_mask, grid.crs, grid.transform, (grid.height, grid.width))
    return info


def _measure(args: argparse.Namespace, progress: Progress) -> dict:
    """The scene's eq. 1 statistics, from every valid pixel, kept until its files change: the dock asks for them as
    soon as a scene is chosen, so that reading the whole scene is done while the analyst looks at it and the
    detections that follow (any extent, any model) start at once."""
    import time

    from ..scenes.normalise import scene_stretch
    from ..scenes.raster import inspect, open_raster

    started = time.perf_counter()
    info = inspect(args.scene, args.band)
    with open_raster(args.scene) as ds:
        stretch = scene_stretch(ds, info.band, info.value_scale, progress)
    measured = {"scene": args.scene, "band": info.band, "value_scale": info.value_scale}
    if not stretch.passthrough:
        measured.update(mean_db=round(stretch.mean, 3), std_db=round(stretch.std, 3),
                        low_db=round(stretch.mean - 2 * stretch.std, 3), high_db=round(stretch.mean + 2 * stretch.std, 3))
    return {**measured, "seconds": round(time.perf_counter() - started, 3)}


def _prepare(args: argparse.Namespace, progress: Progress) -> dict:
    """What the model's first detection on this machine would make before its first tile, made now: the dock asks for
    it as soon as a model is chosen. Asks PyTorch nothing when nothing is left to make."""
    from ..models import runtimes
    from ..models.inference import device_name
    from ..models.registry import DEFAULT_MODEL

    return runtimes.prepare(args.model or DEFAULT_MODEL, device_name(args.device), args.runtime, progress)


def _detect(args: argparse.Namespace, progress: Progress) -> dict:
    from ..jobs import uncertainty
    from ..jobs.detect import DetectOptions, detect

    options = options_from(args, DetectOptions, bounds=tuple(args.bounds) if args.bounds else None)
    result = detect(args.scene, args.out, options, progress)
    for warning in result.warnings:
        progress.log(f"warning: {warning}")
    ranked = uncertainty.rank_raster(result.probability, result.threshold, progress=progress)
    return {**result.to_dict(), "uncertain_blocks": [block.to_dict() for block in ranked]}


def _changes(args: argparse.Namespace, progress: Progress) -> dict:
    from ..jobs import uncertainty
    from ..jobs.changes import detect_changes
    from ..jobs.detect import DetectOptions

    options = options_from(args, DetectOptions, bounds=tuple(args.bounds) if args.bounds else None)
    result = detect_changes(args.scene, args.out, options, progress)
    for warning in result["warnings"]:
        progress.log(f"warning: {warning}")
    ranked = uncertainty.rank_raster(result["probability"], result["threshold"], progress=progress)
    return {**result, "uncertain_blocks": [block.to_dict() for block in ranked]}


def _models(args: argparse.Namespace, progress: Progress) -> dict:
    from dataclasses import asdict

    from ..models.registry import DEFAULT_MODEL, list_models, remove_model, user_models_dir

    if args.remove:
        return remove_model(args.remove)
    listed = []
    for path, card in list_models():
        entry = asdict(card)
        entry.update(path=str(path), network=card.network, measured=card.measured, default=path == DEFAULT_MODEL.resolve(),
                     removable=path.parent == user_models_dir().resolve())
        listed.append(entry)
    return {"models": listed}


def _doctor(args: argparse.Namespace, progress: Progress) -> dict:
    import platform

    import torch

    from ..models import cpu_features
    from ..models.eager import pick_device
    from ..models.registry import user_models_dir

    device = pick_device("auto")
    gpu_name = gpu_memory = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu_name, gpu_memory = props.name, round(props.total_memory / 2**30, 1)
    return {
        "engine_version": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch_version": torch.__version__,
        "device": device.type,
        "gpu_name": gpu_name,
        "gpu_memory_gb": gpu_memory,
        "cpu_threads": torch.get_num_threads(),
        "cpu": cpu_features.summary(),
        "models_dir": str(user_models_dir()),
    }
