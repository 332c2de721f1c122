"""Command line: ``python -m engine COMMAND``; a thin layer over the engine's functions.

With ``--jsonl`` every command speaks in JSON lines on stdout (progress, log, one result or error), which
is how the QGIS plugin's worker process talks to it; without it, a progress bar goes to stderr and the
result is printed for a person. SIGTERM sets the cancel flag, so a stopped job cleans up after itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from typing import Any, Callable, Optional

from .. import __version__
from ..archive import commands as archive_commands
from ..contract import METRICS_EVENT
from ..data import synth
from ..errors import Cancelled, SlickMapperError
from ..experiments import cli as experiment_cli, demo
from ..generation import generator
from ..jobs import evaluate, finetune, labels, uncertainty
from ..jobs.detect import DetectOptions
from ..models import darkspot, pretrain
from ..progress import Progress, describe_metrics
from .args import DETECT_HELP, add_options, options_from

EPILOG = """examples:
  python -m engine info scene.tif
  python -m engine detect scene.tif --out results/
  python -m engine detect S1A_EW_GRDM_...-hh-....tiff --out results/ --tile 512 --threshold 0.4
  python -m engine evaluate results/scene_probability.tif --labels labels.png
  python -m engine uncertainty results/scene_probability.tif --threshold 0.5
  python -m engine synth --out synthetic.tif --labels synthetic_labels.tif --size 2048 2048
  python -m engine labels init project_labels.gpkg --crs EPSG:32636
  python -m engine labels summary project_labels.gpkg
  python -m engine finetune --base model.safetensors --labels project_labels.gpkg --out model_ft.safetensors
  python -m engine generator train --labels project_labels.gpkg --out generator.safetensors
  python -m engine generate --generator generator.safetensors --out samples/ --n 100 --solver dpm++
  python -m engine samples summary samples/
  python -m engine darkspot fit --scenes resources/samples/arctic_s1/sample_* --out darkspot.safetensors
  python -m engine finetune --base model.safetensors --labels project_labels.gpkg --out student.safetensors --generated samples/
  python -m engine batch archive/*.tif --out batch/
  python -m engine seeps batch/slicks.parquet --out sites.gpkg
"""


class Reporter:
    """Turns engine progress into a bar on stderr, or into JSON lines for the plugin's worker."""

    def __init__(self, jsonl: bool) -> None:
        self.jsonl = jsonl
        self._last = 0.0
        self._stage = ""

    def emit(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **fields}, default=str), flush=True)

    def progress(self, stage: str, done: int, total: int, message: str) -> None:
        now = time.monotonic()
        final = done >= total
        if now - self._last < 0.2 and not final and stage == self._stage:
            return
        self._last, self._stage = now, stage
        if self.jsonl:
            self.emit("progress", stage=stage, done=done, total=total, message=message)
        else:
            width = 30
            filled = int(width * done / total) if total else width
            sys.stderr.write(f"\r{stage:<11} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {message[:40]:<40}")
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()

    def log(self, message: str) -> None:
        if self.jsonl:
            self.emit("log", message=message)
        else:
            print(message, file=sys.stderr)

    def metrics(self, scores: dict[str, Any]) -> None:
        if self.jsonl:
            self.emit(METRICS_EVENT, **scores)
        else:
            print(describe_metrics(scores), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Slick Mapper engine: map oil slicks in Sentinel-1 SAR scenes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jsonl", action="store_true", help="speak JSON lines on stdout (used by the QGIS plugin)")
    parser.add_argument("--version", action="version", version=f"Slick Mapper engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="describe a scene and what detection will do with it")
    p.add_argument("scene", help="GeoTIFF, COG, VRT or Sentinel-1 GRD measurement TIFF")
    p.add_argument("--band", help="band name (HH, VV, HV, VH) or 1-based index; default: HH or VV")
    p.add_argument("--model", help="model file whose pixel size the plan uses (default: bundled model)")
    p.add_argument("--land-mask", default=DetectOptions.land_mask, help="default (GSHHG coastline), none, or a land polygon file or raster")
    p.set_defaults(func=_info)

    p = sub.add_parser("detect", help="detect slicks: probability COG, mask and polygons (GeoPackage)")
    p.add_argument("scene", help="GeoTIFF, COG, VRT or Sentinel-1 GRD measurement TIFF")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    add_options(p, DetectOptions, DETECT_HELP,
                bounds={"type": float, "nargs": 4, "metavar": ("XMIN", "YMIN", "XMAX", "YMAX")},
                land_mask={"metavar": "default|none|PATH"},
                land_buffer={"metavar": "PIXELS"},
                nodata_buffer={"metavar": "PIXELS"},
                runtime={"choices": ["auto", "torch", "torchscript", "onnxruntime", "openvino"],
                         "default": os.environ.get("SLICK_MAPPER_RUNTIME", "auto")})
    p.set_defaults(func=_detect)

    p = sub.add_parser("models", help="list installed models")
    p.set_defaults(func=_models)

    p = sub.add_parser("doctor", help="what the engine sees: versions, device, GPU")
    p.set_defaults(func=_doctor)

    evaluate.add_cli(sub)
    uncertainty.add_cli(sub)
    synth.add_cli(sub)
    demo.add_cli(sub)
    pretrain.add_cli(sub)
    labels.add_cli(sub)
    finetune.add_cli(sub)
    experiment_cli.add_cli(sub)
    generator.add_cli(sub)
    darkspot.add_cli(sub)
    archive_commands.add_cli(sub)
    return parser


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


def _detect(args: argparse.Namespace, progress: Progress) -> dict:
    from ..jobs.detect import detect

    options = options_from(args, DetectOptions, bounds=tuple(args.bounds) if args.bounds else None)
    result = detect(args.scene, args.out, options, progress)
    for warning in result.warnings:
        progress.log(f"warning: {warning}")
    ranked = uncertainty.rank_raster(result.probability, result.threshold, progress=progress)
    return {**result.to_dict(), "uncertain_blocks": [block.to_dict() for block in ranked]}


def _models(args: argparse.Namespace, progress: Progress) -> dict:
    from dataclasses import asdict

    from ..models.registry import DEFAULT_MODEL, list_models

    listed = []
    for path, card in list_models():
        entry = asdict(card)
        entry.update(path=str(path), dice=card.metrics.get("dice"), default=path == DEFAULT_MODEL.resolve())
        listed.append(entry)
    return {"models": listed}


def _doctor(args: argparse.Namespace, progress: Progress) -> dict:
    import platform

    import torch

    from ..models import cpu_features
    from ..models.inference import pick_device
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


def _print_human(result: dict) -> None:
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value, default=str)
        print(f"{key:>18}: {value}")


def _one_line(unraisable: "sys.UnraisableHookArgs") -> None:
    """Errors Python can only report, never raise (GDAL's log handler failing to decode a damaged file's
    bytes, a GeoPackage closed again after a failed write), as one line rather than a traceback: whatever
    matters about the same failure reaches the analyst as the typed error of the call that failed."""
    text = str(unraisable.exc_value).strip().splitlines()
    print(f"warning: ignored {type(unraisable.exc_value).__name__}: {text[0] if text else ''}", file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    reporter = Reporter(args.jsonl)
    progress = Progress(reporter.progress, log=reporter.log, metrics=reporter.metrics)
    signal.signal(signal.SIGTERM, lambda *_: progress.cancel())
    sys.unraisablehook = _one_line
    func: Callable[[argparse.Namespace, Progress], dict] = args.func
    try:
        result = func(args, progress)
    except Cancelled:
        if args.jsonl:
            reporter.emit("cancelled")
        else:
            print("\nCancelled; nothing was written.", file=sys.stderr)
        return Cancelled.exit_code
    except SlickMapperError as exc:
        if args.jsonl:
            reporter.emit("error", kind=type(exc).__name__, message=str(exc))
        else:
            print(f"\nerror: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return Cancelled.exit_code
    except Exception as exc:  # a bug: say so plainly, keep the traceback for the report
        traceback.print_exc()
        if args.jsonl:
            reporter.emit("error", kind="InternalError", message=f"Unexpected engine failure: {exc!r}. See the log for the traceback.")
        return 1
    if args.jsonl:
        reporter.emit("result", data=result)
    else:
        _print_human(result)
    return 0
