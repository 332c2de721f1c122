"""RunControls following real EngineTasks: a quick engine command, a failing one, and a cancelled detection."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import List

import pytest
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt

from slick_plugin.commands import DOCTOR, DetectParameters, info_command
from slick_plugin.paths import default_engine_python, engine_root
from slick_plugin.run_controls import RunControls, RunState
from slick_plugin.tasks import EngineTask
from slick_plugin.engine_runner import EngineCommand, EngineRunner, Status

from .conftest import SAMPLE, needs_model


@pytest.fixture
def controls(qgis_app, qtbot) -> RunControls:
    widget = RunControls("Run")
    qtbot.addWidget(widget)
    return widget


def recorded(controls: RunControls) -> List[RunState]:
    """Every state ``controls`` goes through from now on."""
    states: List[RunState] = []
    controls.state_changed.connect(states.append)
    return states


def start(controls: RunControls, command: EngineCommand) -> EngineTask:
    """Follow ``command`` with ``controls`` and queue it."""
    task = EngineTask(f"test: {command.name}", EngineRunner(default_engine_python(), engine_root()), command)
    controls.follow(task)
    QgsApplication.taskManager().addTask(task)
    return task


def buttons(controls: RunControls) -> tuple:
    return controls.run_button.isEnabled(), controls.cancel_button.isEnabled()


def test_a_quick_run_goes_from_starting_to_done(controls: RunControls, qtbot) -> None:
    assert controls.state is RunState.IDLE and controls.progress.format() == "Idle" and buttons(controls) == (True, False)
    states = recorded(controls)
    task = start(controls, DOCTOR)
    assert controls.task is task and controls.progress.format() == "Starting the engine…"
    assert buttons(controls) == (False, True)
    with pytest.raises(RuntimeError, match="already follows"):
        controls.follow(EngineTask("a second run", EngineRunner(default_engine_python(), engine_root()), DOCTOR))
    qtbot.waitUntil(lambda: controls.task is None, timeout=60_000)
    assert task.result.ok, task.result.message
    assert states == [RunState.STARTING, RunState.DONE]
    assert controls.progress.value() == 100 and controls.progress.format() == "Done"
    assert buttons(controls) == (True, False)


def test_a_failed_run_says_failed_and_can_be_run_again(controls: RunControls, qtbot, tmp_path: Path) -> None:
    states = recorded(controls)
    task = start(controls, info_command(str(tmp_path / "missing.tif")))
    qtbot.waitUntil(lambda: controls.task is None, timeout=60_000)
    assert task.result.status is Status.FAILED
    assert states == [RunState.STARTING, RunState.FAILED] and controls.progress.format() == "Failed"
    assert buttons(controls) == (True, False)
    start(controls, DOCTOR)  # a new run after a failure starts from STARTING again
    qtbot.waitUntil(lambda: controls.task is None, timeout=60_000)
    assert states[2:] == [RunState.STARTING, RunState.DONE]


@needs_model
def test_cancel_shows_cancelling_until_the_engine_has_stopped(controls: RunControls, qtbot, tmp_path: Path) -> None:
    scene = tmp_path / "sample_1.tif"
    shutil.copy(SAMPLE / "raw_mosaic.tif", scene)
    params = DetectParameters(scene=str(scene), out_dir=str(tmp_path), prefix="run", device="cpu", tile=256, overlap=32)
    states = recorded(controls)
    task = start(controls, params.command())
    texts: List[str] = []  # the bar's text after each progress line has been shown
    task.progressed.connect(lambda *_: texts.append(controls.progress.format()))
    qtbot.waitUntil(lambda: controls.state is RunState.RUNNING and 0 < controls.progress.value() < 50, timeout=60_000)
    assert re.fullmatch(r"[a-z ]+ \d+/\d+( – about .+ left)?", controls.progress.format())  # the engine's stage
    assert buttons(controls) == (False, True)
    qtbot.mouseClick(controls.cancel_button, Qt.LeftButton)
    assert controls.state is RunState.CANCELLING and controls.progress.format() == "Cancelling…"
    assert buttons(controls) == (False, False)  # nothing left to cancel, and no new run until this one is gone
    at_cancel = len(texts)
    qtbot.waitUntil(lambda: controls.task is None, timeout=15_000)
    assert task.result.status is Status.CANCELLED
    assert states == [RunState.STARTING, RunState.RUNNING, RunState.CANCELLING, RunState.CANCELLED]
    assert set(texts[at_cancel:]) <= {"Cancelling…", "Cancelled"}  # late progress lines do not overwrite it
    assert controls.progress.format() == "Cancelled" and buttons(controls) == (True, False)
    assert not list(tmp_path.glob("run_*"))
