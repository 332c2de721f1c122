"""EngineTask: engine commands in QGIS's task manager, so QGIS stays usable while they run.

``run()`` (a worker thread) only drives the runner and never raises; ``finished()`` (the main thread)
emits ``done`` with the RunResult, and its receiver is the only code that touches layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from qgis.core import QgsTask
from qgis.PyQt.QtCore import QThreadPool, pyqtSignal

from .progress_text import ProgressEvent, TimeLeft, describe
from .engine_runner import EngineCommand, EngineRunner, RunResult


@dataclass(frozen=True)
class Step:
    """One engine command of a task and what removes its partial outputs when it does not succeed."""

    command: EngineCommand
    cleanup: Optional[Callable[[], None]] = None


class EngineTask(QgsTask):
    """Runs ``command`` with ``runner`` and emits ``done(RunResult)`` on the main thread at the end.

    ``cleanup`` runs in the worker thread when the run did not succeed, to remove partial outputs.
    ``then`` are commands that need the first one's outputs (a generator, then samples from it): they
    run in order in the same task, each once the one before succeeded, so the analyst sees one run with
    one Cancel that stops whichever command is running. The task's result is the last command's;
    ``results`` holds each command's that ran.
    """

    progressed = pyqtSignal(object, str)
    """(ProgressEvent, text for a progress bar)"""
    logged = pyqtSignal(str)
    measured = pyqtSignal(object)
    """(dict) one epoch's scores from a training run"""
    done = pyqtSignal(object)
    """(RunResult)"""

    def __init__(self, description: str, runner: EngineRunner, command: EngineCommand,
                 cleanup: Optional[Callable[[], None]] = None, then: Sequence[Step] = ()) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self._runner = runner
        self._steps = (Step(command, cleanup), *then)
        self._time_left = TimeLeft()
        self.pid: Optional[int] = None
        self.result = RunResult.failed("The task did not run.")
        self.results: List[RunResult] = []

    def run(self) -> bool:
        # This thread only waits for the engine process, for hours when samples are generated, while QGIS
        # renders the map in the same global thread pool (2 threads on a 2-core machine): its slot goes back to
        # the pool, the way Qt documents for a pool thread that sleeps, and is taken again at the end.
        pool = QThreadPool.globalInstance()
        pool.releaseThread()
        try:
            return self._run_steps()
        finally:
            pool.reserveThread()

    def _run_steps(self) -> bool:
        try:
            for step in self._steps:
                if self.isCanceled():  # between two commands: the next one never starts
                    self.result = RunResult.cancelled()
                    break
                self.result = self._runner.run(step.command, on_progress=self._progress, on_log=self.logged.emit,
                                               is_cancelled=self.isCanceled, on_started=self._started,
                                               on_metrics=self.measured.emit)
                self.results.append(self.result)
                if not self.result.ok:
                    if step.cleanup is not None:
                        step.cleanup()
                    break
        except Exception as error:  # noqa: BLE001 - a plugin bug must end the task, never QGIS
            self.result = RunResult.failed(f"Slick Mapper hit an internal error: {error!r}")
        return self.result.ok

    def finished(self, ok: bool) -> None:
        self.done.emit(self.result)

    def _started(self, pid: int) -> None:
        self.pid = pid

    def _progress(self, event: ProgressEvent) -> None:
        self.setProgress(event.percent)
        self.progressed.emit(event, describe(event, self._time_left.update(event)))
