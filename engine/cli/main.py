"""Command line: ``python -m engine COMMAND``; a thin layer over the engine's functions.

With ``--jsonl`` every command speaks in JSON lines on stdout (progress, log, one result or error), which
is how the QGIS plugin's worker process talks to it; without it, a progress bar goes to stderr and the
result is printed for a person. SIGTERM sets the cancel flag, so a stopped job cleans up after itself.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import signal
import sys
import time
import traceback
from typing import Any, Callable, Optional

from .. import __version__
from ..contract import METRICS_EVENT
from ..errors import Cancelled, SlickMapperError
from ..progress import Progress, describe_metrics
from ..scenes.block_cache import bound_for_process

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


COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("engine.cli.commands:add_info_cli", "describe a scene and what detection will do with it"),
    "measure": ("engine.cli.commands:add_measure_cli", "measure a scene's eq. 1 statistics now, so that detections on it start at once"),
    "prepare": ("engine.cli.commands:add_prepare_cli", "make a model ready on this machine now (runtime choice, export, int8), so that its first detection starts at once"),
    "detect": ("engine.cli.commands:add_detect_cli", "detect slicks: probability COG, mask and polygons (GeoPackage)"),
    "changes": ("engine.cli.commands:add_changes_cli", "detect with a fine-tuned model and its parent: the slicks fine-tuning added and removed"),
    "models": ("engine.cli.commands:add_models_cli", "list installed models"),
    "doctor": ("engine.cli.commands:add_doctor_cli", "what the engine sees: versions, device, GPU"),
    "evaluate": ("engine.jobs.evaluate:add_cli", "slick Dice of a prediction against a label, aligned by georeference"),
    "uncertainty": ("engine.jobs.uncertainty:add_cli", "where to label next: the blocks of a probability raster the model is least sure about"),
    "synth": ("engine.data.synth:add_cli", "write a synthetic Sentinel-1 scene (and its class mask)"),
    "demo": ("engine.experiments.demo:add_cli", "detect on the bundled real Arctic tiles and compare with the paper"),
    "pretrain": ("engine.models.pretrain:add_cli", "pretrain the bundled model on real SAR texture (or any network on synthetic scenes)"),
    "ensemble": ("engine.models.pretrain:add_ensemble_cli", "combine models into one whose logit is their mean, its threshold placed on the validation bands"),
    "labels": ("engine.jobs.labels:add_cli", "the label store: init, summary, export, import"),
    "finetune": ("engine.jobs.finetune:add_cli", "fine-tune a model on the labels of a label store (few-shot)"),
    "experiment": ("engine.experiments.cli:add_cli", "the transfer-learning paper's experiments on the bundled tiles"),
    "generator": ("engine.generation.cli:add_cli", "sample generators (DAKTer or SAR-JointNet joint diffusion): train, info, pretrain"),
    "generate": ("engine.generation.cli:add_cli", "generate SAR tiles with soft labels into a sample folder"),
    "samples": ("engine.generation.samples:add_cli", "a sample folder: summary, keep, discard, regenerate"),
    "darkspot": ("engine.models.darkspot:add_cli", "the classical dark-spot baseline detector"),
    "batch": ("engine.archive.commands:add_cli", "detect slicks in many scenes on Dask: manifest, per-scene outputs, catalogue"),
    "seeps": ("engine.archive.commands:add_seeps_cli", "group a batch catalogue's slicks into seep sites with recurrence and source"),
}
"""Command -> (``module:function`` that registers it with its options, its line in the overview), in the order of
the help. Named, not imported: most command modules import PyTorch, seconds of start-up that light commands
(``labels``, ``samples``, ``info``, ``models``) and the overview of ``--help`` never need."""


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of ``command`` alone when it is one of ``COMMANDS``, so that only its module is imported;
    otherwise every command's name and line without its options (the overview of ``--help``, or argparse's list
    of choices for a mistyped one), which imports no command module."""
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Slick Mapper engine: map oil slicks in Sentinel-1 SAR scenes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jsonl", action="store_true", help="speak JSON lines on stdout (used by the QGIS plugin)")
    parser.add_argument("--version", action="version", version=f"Slick Mapper engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in COMMANDS:
        module, function = COMMANDS[command][0].split(":")
        getattr(importlib.import_module(module), function)(sub)
    else:
        for name, (_, line) in COMMANDS.items():
            sub.add_parser(name, help=line)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by the parser of its command alone (``build_parser``)."""
    return build_parser(_command(argv)).parse_args(argv)


def _command(argv: list[str]) -> Optional[str]:
    """The command word of ``argv``: its first word that is no option, as no option before it takes a value;
    None after ``-h``, which asks for the overview whatever follows."""
    for word in argv:
        if word in ("-h", "--help"):
            return None
        if not word.startswith("-"):
            return word
    return None


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
    argv = sys.argv[1:] if argv is None else argv
    bound_for_process()
    args = parse_args(argv)
    args.invocation = "python -m engine " + shlex.join(a for a in argv if a != "--jsonl")  # what a report says remakes it
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
