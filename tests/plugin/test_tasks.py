"""EngineTask running chained commands in QGIS's task manager, against the fake engine of test_worker."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
from qgis.core import QgsApplication

from slick_plugin.tasks import EngineTask, Step
from slick_plugin.worker import EngineCommand, EngineRunner, Status

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
