"""What background sample generation costs the analyst: QGIS's responsiveness, and a detection's speed.

    .venv/bin/python benchmarks/generate_bench.py                 # ~10 min on 2 cores
    .venv/bin/python benchmarks/generate_bench.py --size 1000 --train-steps 20

Figures:
  1 UI responsiveness   lateness of a 10 ms QTimer on QGIS's main thread while one EngineTask trains a generator
                        (small network, 64-pixel tiles, on the bundled Arctic tile's labels) and then generates
                        samples with it, at the plugin's default low priority: p50 / p99 / max; target p99 < 50 ms
  2 detection slowdown  wall time of a detection (synthetic scene, CPU) through EngineTask on its own, beside a
                        low-priority generation and beside a normal-priority one, and the ratios to on its own:
                        what low priority is for (a ratio near 1 means generation leaves the CPU to detection)

The real worker mechanism runs the real engine in an offscreen QgsApplication, as in plugin_bench.py.
Results are printed and written to bench_output/generate_bench.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from plugin_bench import ROOT, follow, make_scene, percentile, qgis_session, run_task  # sets up the paths and Qt platform

import report  # noqa: E402
from qgis.core import QgsApplication  # noqa: E402
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop  # noqa: E402

from slick_plugin.commands import GenerateParameters  # noqa: E402
from slick_plugin.paths import default_engine_python, engine_root  # noqa: E402
from slick_plugin.tasks import EngineTask, Step  # noqa: E402
from slick_plugin.engine_runner import EngineRunner  # noqa: E402

SAMPLE = ROOT / "resources" / "samples" / "arctic_s1" / "sample_1"


def engine(*args: str) -> None:
    subprocess.run([default_engine_python(), "-m", "engine", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def label_store(folder: Path) -> Path:
    """The Arctic tile's label mask in a new label store, as an analyst's labels would be."""
    scene = folder / "sample_1.tif"
    scene.write_bytes((SAMPLE / "raw_mosaic.tif").read_bytes())
    store = folder / "labels.gpkg"
    engine("labels", "init", str(store), "--crs", "EPSG:4326")
    engine("labels", "import", str(store), "--scene", str(scene), "--mask", str(SAMPLE / "labels_mosaic.png"))
    return store


def task_of(params: GenerateParameters) -> EngineTask:
    """The task the dock's Generate samples button starts for ``params``."""
    first, *then = params.commands()
    return EngineTask("benchmark generation", EngineRunner(default_engine_python(), engine_root()), first,
                      then=[Step(command) for command in then])


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"Still waiting after {timeout_s} s")
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.05)


def detect_beside_generation(params: GenerateParameters, scene: Path, out: Path, runner: EngineRunner) -> float:
    """Seconds of one detection started while ``params`` generates (from its first sample on), then cancelled."""
    background = task_of(params)
    generating = []
    background.progressed.connect(lambda event, _: event.stage == "generating" and generating.append(True))
    ended = []
    background.done.connect(ended.append)
    QgsApplication.taskManager().addTask(background)
    wait_for(lambda: bool(generating), 300)
    seconds, _ = run_task(scene, out, runner)
    if ended:
        raise SystemExit("The generation ended before the detection: ask for more samples (--background-samples).")
    background.cancel()
    wait_for(lambda: bool(ended), 60)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1500, help="synthetic scene side for the detection (default 1500)")
    parser.add_argument("--train-steps", type=int, default=100, help="generator training steps per stage (default 100)")
    parser.add_argument("--samples", type=int, default=8, help="samples generated while the timer runs (default 8)")
    parser.add_argument("--background-samples", type=int, default=100_000,
                        help="samples asked of the generation that runs beside a detection (cancelled after it)")
    args = parser.parse_args()

    with qgis_session() as (runner, folder):
        store = label_store(folder)
        generator = folder / "generator.safetensors"
        common = dict(store=str(store), generator=str(generator), tile=64, net="small", train_steps=args.train_steps,
                      low_res_steps=args.train_steps, solver="dpm++", device="cpu")
        seconds, lateness, result = follow(task_of(GenerateParameters(
            folder=str(folder / "samples"), n=args.samples, train=True, **common)))
        if not result.ok:
            raise SystemExit(f"The generation failed: {result.message}")
        print(f"train + generate {args.samples}: {seconds:.1f} s", file=sys.stderr)

        scene = make_scene(args.size, folder)
        alone, _ = run_task(scene, folder / "alone", runner)
        beside = {}
        for priority in ("low", "normal"):
            beside[priority] = detect_beside_generation(GenerateParameters(
                folder=str(folder / f"beside_{priority}"), n=args.background_samples, train=False,
                low_priority=priority == "low", **common), scene, folder / f"detect_{priority}", runner)
            print(f"detection alone {alone:.1f} s, beside a {priority}-priority generation {beside[priority]:.1f} s",
                  file=sys.stderr)
    results = {
        "machine": report.host(),
        "generation": {"train_steps_per_stage": args.train_steps, "tile": 64, "net": "small", "samples": args.samples,
                       "solver": "dpm++ 20 steps", "priority": "low", "task_seconds": round(seconds, 1)},
        "timer_lateness_ms": {"ticks": len(lateness), "p50": percentile(lateness, 0.5),
                              "p99": percentile(lateness, 0.99), "max": max(lateness)},
        "detection_seconds": {"scene_pixels": f"{args.size} x {args.size}", "alone": round(alone, 1),
                              **{f"beside_{p}_priority_generation": round(s, 1) for p, s in beside.items()}},
        "detection_slowdown": {f"beside_{p}_priority_generation": round(s / alone, 2) for p, s in beside.items()},
    }
    report.finish(results, ROOT / "bench_output" / "generate_bench.json")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
