"""EngineTask: one engine command in QGIS's task manager, so QGIS stays usable while it runs.

``run()`` (a worker thread) only drives the runner and never raises; ``finished()`` (the main thread)
emits ``done`` with the RunResult, and its receiver is the only code that touches layers.
"""

from __future__ import annotations

from typing import Callable, Optional

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .progress import ProgressEvent, TimeLeft, describe
from .worker import EngineCommand, EngineRunner, RunResult


class EngineTask(QgsTask):
    """Runs ``command`` with ``runner`` and emits ``done(RunResult)`` on the main thread at the end.

    ``cleanup`` runs in the worker thread when the run did not succeed, to remove partial outputs.
    """

    progressed = pyqtSignal(object, str)
    """(ProgressEvent, text for a progress bar)"""
    logged = pyqtSignal(str)
    done = pyqtSignal(object)
    """(RunResult)"""

    def __init__(self, description: str, runner: EngineRunner, command: EngineCommand,
                 cleanup: Optional[Callable[[], None]] = None) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self._runner = runner
        self._command = command
        self._cleanup = cleanup
        self._time_left = TimeLeft()
        self.pid: Optional[int] = None
        self.result = RunResult.failed("The task did not run.")

    def run(self) -> bool:
        try:
            self.result = self._runner.run(self._command, on_progress=self._progress, on_log=self.logged.emit,
                                           is_cancelled=self.isCanceled, on_started=self._started)
            if not self.result.ok and self._cleanup is not None:
                self._cleanup()
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
