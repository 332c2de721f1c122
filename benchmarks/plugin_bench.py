"""The plugin's own costs: how responsive QGIS stays during a detection, and what the task path adds.

    .venv/bin/python benchmarks/plugin_bench.py            # 3000 x 3000 synthetic scene, ~4 min on 2 cores
    .venv/bin/python benchmarks/plugin_bench.py --size 1500

Figures (targets from the plugin issue):
  1 UI responsiveness   lateness of a 10 ms QTimer on QGIS's main thread while an EngineTask runs a
                        detection: p50 / p99 / max; target p99 < 50 ms
  2 plugin overhead     wall time of the same detection through EngineTask (QgsTaskManager, worker
                        process, JSON-lines progress) / through the engine CLI in a subprocess; runs
                        interleaved (CLI, task, CLI, task) and medians compared; target <= 1.05

A real offscreen QgsApplication and the real worker mechanism are used, nothing is mocked. Results are
printed and written to bench_output/plugin_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import report  # noqa: E402
from qgis.core import QgsApplication  # noqa: E402
from qgis.PyQt.QtCore import QElapsedTimer, QEventLoop, QTimer  # noqa: E402

from slick_plugin.commands import DetectParameters  # noqa: E402
from slick_plugin.paths import default_engine_python, engine_root  # noqa: E402
from slick_plugin.tasks import EngineTask  # noqa: E402
from slick_plugin.engine_runner import EngineRunner, RunResult  # noqa: E402

TICK_MS = 10


@contextmanager
def qgis_session() -> Iterator[tuple[EngineRunner, Path]]:
    """An offscreen QgsApplication, the runner the plugin would use, and a scratch folder, for one benchmark."""
    app = QgsApplication([], False)
    app.initQgis()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            yield EngineRunner(default_engine_python(), engine_root()), Path(tmp)
    finally:
        app.exitQgis()


def make_scene(size: int, folder: Path) -> Path:
    scene = folder / f"synthetic_{size}.tif"
    subprocess.run([default_engine_python(), "-m", "engine", "synth", "--out", str(scene), "--size", str(size), str(size),
                    "--seed", "7"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return scene


def run_cli(scene: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([default_engine_python(), "-m", "engine", "detect", str(scene), "--out", str(out), "--device", "cpu"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run_task(scene: Path, out: Path, runner: EngineRunner) -> tuple[float, list[float]]:
    """Wall time of one detection through EngineTask, and the main thread's timer lateness meanwhile (ms)."""
    params = DetectParameters(scene=str(scene), out_dir=str(out), prefix=scene.stem, device="cpu")
    seconds, lateness, result = follow(EngineTask("benchmark detection", runner, params.command()))
    if not result.ok:
        raise SystemExit(f"The task failed: {result.message}")
    return seconds, lateness


def follow(task: EngineTask) -> tuple[float, list[float], RunResult]:
    """Queue ``task`` and wait for it in an event loop: its wall time, the timer lateness meanwhile (ms), its result."""
    results = []
    loop = QEventLoop()  # sleeps between events, as QGIS's own loop does (a processEvents spin eats a core)
    task.done.connect(lambda result: (results.append(result), loop.quit()))
    lateness: list[float] = []
    clock = QElapsedTimer()
    timer = QTimer()
    timer.setInterval(TICK_MS)

    def tick() -> None:
        lateness.append(max(clock.restart() - TICK_MS, 0))

    timer.timeout.connect(tick)
    started = time.perf_counter()
    QgsApplication.taskManager().addTask(task)
    clock.start()
    timer.start()
    loop.exec_()
    timer.stop()
    return time.perf_counter() - started, lateness, results[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=3000, help="synthetic scene side in pixels (default 3000)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with qgis_session() as (runner, folder):
        scene = make_scene(args.size, folder)
        cli_times, task_times, lateness = [], [], []
        for i in range(args.repeats):
            cli_times.append(run_cli(scene, folder / f"cli{i}"))
            seconds, late = run_task(scene, folder / f"task{i}", runner)
            task_times.append(seconds)
            lateness += late
            print(f"round {i + 1}: CLI {cli_times[-1]:.1f} s, task {seconds:.1f} s", file=sys.stderr)
    results = {
        "machine": report.host(),
        "scene_pixels": f"{args.size} x {args.size}",
        "cli_seconds": [round(t, 2) for t in cli_times],
        "task_seconds": [round(t, 2) for t in task_times],
        "plugin_overhead": round(statistics.median(task_times) / statistics.median(cli_times), 3),
        "timer_lateness_ms": {"ticks": len(lateness), "p50": percentile(lateness, 0.5),
                              "p99": percentile(lateness, 0.99), "max": max(lateness)},
    }
    report.finish(results, ROOT / "bench_output" / "plugin_bench.json")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
