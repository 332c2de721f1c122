"""EngineTask in QGIS's task manager, against the fake engine of test_worker: chained commands, and the map
rendering while engine runs wait."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

import pytest
from qgis.core import QgsApplication, QgsMapRendererParallelJob, QgsMapSettings, QgsRasterLayer
from qgis.PyQt.QtCore import QSize, QThreadPool

from slick_plugin.tasks import EngineTask, Step
from slick_plugin.engine_runner import EngineCommand, EngineRunner, Status

from .conftest import SAMPLE
from .test_worker import fake_runner


@pytest.fixture
def runner(tmp_path: Path) -> EngineRunner:
    return fake_runner(tmp_path)


def run(task: EngineTask, qtbot) -> None:
    with qtbot.waitSignal(task.done, timeout=30_000):
        QgsApplication.taskManager().addTask(task)


def test_chained_commands_run_in_order_and_stop_at_the_first_failure(qgis_app, qtbot, runner: EngineRunner) -> None:
    cleaned: List[str] = []
    task = EngineTask("chain", runner, EngineCommand("ok"), lambda: cleaned.append("first"),
                      then=[Step(EngineCommand("input-error"), lambda: cleaned.append("second")),
                            Step(EngineCommand("ok"), lambda: cleaned.append("third"))])
    run(task, qtbot)
    assert [result.status for result in task.results] == [Status.SUCCEEDED, Status.FAILED]
    assert task.result is task.results[-1] and task.result.message == "The scene has no CRS. Assign one."
    assert cleaned == ["second"]  # only the command that failed cleans up; the third never ran


def test_cancel_stops_the_running_command_and_starts_no_other(qgis_app, qtbot, runner: EngineRunner) -> None:
    task = EngineTask("chain", runner, EngineCommand("slow"), then=[Step(EngineCommand("ok"))])
    task.progressed.connect(lambda event, _: event.done >= 3 and task.cancel())
    run(task, qtbot)
    assert task.result.status is Status.CANCELLED and len(task.results) == 1


def test_the_map_renders_while_more_engine_runs_wait_than_the_thread_pool_has_threads(qgis_app, qtbot,
                                                                                      runner: EngineRunner) -> None:
    """QGIS renders map layers in the thread pool that runs tasks: a generation and a detection must not
    stop the canvas from drawing, even on a 2-core machine (a pool of 2)."""
    pool = QThreadPool.globalInstance()
    tasks = [EngineTask(f"slow {n}", runner, EngineCommand("slow")) for n in range(pool.maxThreadCount() + 1)]
    ended: List[Status] = []
    for task in tasks:
        task.done.connect(lambda result: ended.append(result.status))
        QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: all(task.progress() > 0 for task in tasks), timeout=30_000)  # all running at once
    layer = QgsRasterLayer(str(SAMPLE / "raw_mosaic.tif"), "scene")
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(256, 256))
    job = QgsMapRendererParallelJob(settings)
    started = time.monotonic()
    with qtbot.waitSignal(job.finished, timeout=10_000):
        job.start()
    assert time.monotonic() - started < 5 and not ended  # drawn while every engine run still waits
    for task in tasks:
        task.cancel()
    qtbot.waitUntil(lambda: len(ended) == len(tasks), timeout=15_000)
    assert set(ended) == {Status.CANCELLED}
    qtbot.waitUntil(lambda: pool.activeThreadCount() == 0, timeout=5_000)  # each slot given back was taken again
