"""The archive commands of the engine's CLI: ``batch`` and ``seeps``."""

from __future__ import annotations

import argparse

from ..progress import Progress


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("batch", help="detect slicks in many scenes on Dask: manifest, per-scene outputs, catalogue")
    p.add_argument("scenes", nargs="+", help="scene files, folders, glob patterns, or a .txt/.csv list of paths")
    p.add_argument("--out", required=True, help="batch folder: manifest.json, scenes/, slicks.parquet, catalogue.gpkg")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, help="local workers (default: sized to the cores and memory)")
    p.add_argument("--model", help="model file (.safetensors); default: the bundled model")
    p.add_argument("--tile", type=int, help="tile size in pixels (default: the model's)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (default 64)")
    p.add_argument("--threshold", type=float, help="slick probability threshold (default: the model's own)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu (default auto)")
    p.add_argument("--band", help="band name (HH, VV, HV, VH) or 1-based index")
    p.add_argument("--min-area-km2", type=float, default=0.05, help="drop slicks smaller than this (default 0.05)")
    p.add_argument("--land-mask", help="vector file of land polygons to exclude")
    p.set_defaults(func=_batch)
    add_seeps_cli(subparsers)


def _batch(args: argparse.Namespace, progress: Progress) -> dict:
    from ..jobs.detect import DetectOptions
    from .batch import BatchOptions, run_batch

    detect = DetectOptions(model=args.model, tile=args.tile, overlap=args.overlap, threshold=args.threshold,
                           device=args.device, band=args.band, min_area_km2=args.min_area_km2, land_mask=args.land_mask)
    result = run_batch(args.scenes, args.out, BatchOptions(detect, args.scheduler, args.workers), progress)
    for failure in result["failures"]:
        progress.log(f"failed: {failure['scene']}: {failure['error']}")
    return result


def add_seeps_cli(subparsers: argparse._SubParsersAction) -> None:
    from .seeps import DEFAULT_DISTANCE_M

    p = subparsers.add_parser("seeps", help="group a batch catalogue's slicks into seep sites with recurrence and source")
    p.add_argument("catalogue", help="batch folder, its slicks.parquet or its catalogue.gpkg")
    p.add_argument("--out", required=True, help="GeoPackage to write: layers sites (source points) and slicks (with site_id)")
    p.add_argument("--distance", type=float, default=DEFAULT_DISTANCE_M,
                   help=f"metres within which slick origins belong to one site (default {DEFAULT_DISTANCE_M:g})")
    p.add_argument("--min-scenes", type=int, default=2, help="scenes with a slick a site needs (default 2)")
    p.set_defaults(func=_seeps)


def _seeps(args: argparse.Namespace, progress: Progress) -> dict:
    from .seeps import SeepOptions, run_seeps

    return run_seeps(args.catalogue, args.out, SeepOptions(args.distance, args.min_scenes))
