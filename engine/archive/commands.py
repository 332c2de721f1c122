"""The archive commands of the engine's CLI: ``batch`` and ``seeps``."""

from __future__ import annotations

import argparse

from ..cli.args import DETECT_HELP, add_options, options_from
from ..progress import Progress

BATCH_DETECT_OPTIONS = ("model", "tile", "overlap", "threshold", "device", "band", "min_area_km2", "land_mask", "tta")
"""The detection options a batch takes; the rest keep DetectOptions' defaults."""


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``batch``; ``seeps`` is registered alone (``add_seeps_cli``): it needs no PyTorch."""
    from ..jobs.detect import DetectOptions

    p = subparsers.add_parser("batch")
    p.add_argument("scenes", nargs="+", help="scene files, folders, glob patterns, or a .txt/.csv list of paths")
    p.add_argument("--out", required=True, help="batch folder: manifest.json, scenes/, slicks.parquet, catalogue.gpkg")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, help="local workers (default: sized to the cores and memory)")
    add_options(p, DetectOptions, {name: DETECT_HELP[name] for name in BATCH_DETECT_OPTIONS})
    p.set_defaults(func=_batch)


def _batch(args: argparse.Namespace, progress: Progress) -> dict:
    from ..jobs.detect import DetectOptions
    from .batch import BatchOptions, run_batch

    options = BatchOptions(options_from(args, DetectOptions), args.scheduler, args.workers)
    result = run_batch(args.scenes, args.out, options, progress)
    for failure in result["failures"]:
        progress.log(f"failed: {failure['scene']}: {failure['error']}")
    return result


def add_seeps_cli(subparsers: argparse._SubParsersAction) -> None:
    from .seeps import SeepOptions

    p = subparsers.add_parser("seeps")
    p.add_argument("catalogue", help="batch folder, its slicks.parquet or its catalogue.gpkg")
    p.add_argument("--out", required=True, help="GeoPackage to write: layers sites (source points) and slicks (with site_id)")
    add_options(p, SeepOptions, {"distance_m": "metres within which slick origins belong to one site",
                                 "min_scenes": "scenes with a slick a site needs"}, distance_m={"flag": "--distance"})
    p.set_defaults(func=_seeps)


def _seeps(args: argparse.Namespace, progress: Progress) -> dict:
    from .seeps import SeepOptions, run_seeps

    return run_seeps(args.catalogue, args.out, options_from(args, SeepOptions))
