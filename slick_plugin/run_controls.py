"""RunControls: the run button, Cancel and progress bar that every long engine run in the dock shows.

Detection and fine-tuning (and any later long run) each follow an ``EngineTask`` and must look and behave alike:
the run button is off while a run is on, Cancel is on only while there is something to cancel, and
the bar says what the engine is doing, then how the run ended. One widget holds that state machine
so the panels only decide what to run and what to do with its result.

    IDLE -> STARTING -> RUNNING -> DONE | FAILED | CANCELLED
    STARTING or RUNNING -> (Cancel) CANCELLING -> CANCELLED, or DONE / FAILED when the run ended first

Owners connect ``run_button.clicked`` to their own run method and hand each task to ``follow``
before it is queued (the dock's ``_start`` does that), so no early progress event is missed.
"""

from __future__ import annotations

from enum import Enum
from functools import partial
from typing import Optional

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from .progress_text import ProgressEvent
from .tasks import EngineTask
from .engine_runner import RunResult, Status


class RunState(Enum):
    """Where the followed run is; the value is what the progress bar says (RUNNING shows the engine's stage)."""

    IDLE = "Idle"
    STARTING = "Starting the engine…"
    RUNNING = ""
    CANCELLING = "Cancelling…"
    DONE = "Done"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def active(self) -> bool:
        return self in (RunState.STARTING, RunState.RUNNING, RunState.CANCELLING)


_ENDINGS = {Status.SUCCEEDED: RunState.DONE, Status.FAILED: RunState.FAILED, Status.CANCELLED: RunState.CANCELLED}


class RunControls(QWidget):
    """Run / Cancel buttons and a progress bar following one EngineTask at a time."""

    state_changed = pyqtSignal(object)
    """(RunState) after every change, e.g. for an owner that locks its inputs while a run is on."""

    def __init__(self, run_text: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setTextVisible(True)
        row = QHBoxLayout()
        row.addWidget(self.run_button, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        self.task: Optional[EngineTask] = None
        """The run being followed; None once it has ended, so an owner can start the next one."""
        self.state = RunState.IDLE
        self._show(RunState.IDLE, 0)

    def follow(self, task: EngineTask) -> None:
        """Show ``task`` from now until it ends; call before the task is queued. One run at a time."""
        if self.task is not None:
            raise RuntimeError(f"RunControls already follows '{self.task.description()}'; wait for it to end.")
        self.task = task
        task.progressed.connect(partial(self._progressed, task))
        task.done.connect(partial(self._ended, task))
        self._show(RunState.STARTING, 0)

    def cancel(self) -> None:
        """Ask the followed run to stop; it ends as CANCELLED once the engine has cleaned up."""
        if self.task is not None and self.state in (RunState.STARTING, RunState.RUNNING):
            self._show(RunState.CANCELLING, self.progress.value())
            self.task.cancel()

    def _progressed(self, task: EngineTask, event: ProgressEvent, text: str) -> None:
        if task is self.task and self.state is not RunState.CANCELLING:
            self._show(RunState.RUNNING, int(event.percent), text)

    def _ended(self, task: EngineTask, result: RunResult) -> None:
        if task is not self.task:
            return
        self.task = None
        ending = _ENDINGS[result.status]
        self._show(ending, 100 if ending is RunState.DONE else self.progress.value())

    def _show(self, state: RunState, percent: int, text: str = "") -> None:
        changed = state is not self.state
        self.state = state
        self.run_button.setEnabled(not state.active)
        self.cancel_button.setEnabled(state in (RunState.STARTING, RunState.RUNNING))
        self.progress.setValue(percent)
        self.progress.setFormat(text or state.value)
        if changed:
            self.state_changed.emit(state)
