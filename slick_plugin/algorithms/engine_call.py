"""Runs one engine command synchronously for a Processing algorithm, speaking QgsProcessingFeedback.

Processing decides where an algorithm runs (its own task in the dialog, the caller's thread in
``processing.run``), so the algorithm simply blocks on the same EngineRunner the dock uses.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from .. import settings
from ..progress_text import ProgressEvent, TimeLeft, describe
from ..engine_runner import EngineCommand, Status


def run_engine(command: EngineCommand, feedback: QgsProcessingFeedback,
               cleanup: Optional[Callable[[], None]] = None, with_message: bool = False) -> Dict[str, Any]:
    """The engine's result data; raises QgsProcessingException when the run fails or is cancelled.

    Progress goes to ``feedback.setProgress``, engine messages to ``pushInfo``; ``feedback.isCanceled``
    stops the engine. ``cleanup`` removes partial outputs when the run does not succeed. ``with_message``
    shows the engine's own progress message (a batch's "5 done, 1 failed, 12 left") before the time left.
    """
    time_left = TimeLeft()

    def progressed(event: ProgressEvent) -> None:
        feedback.setProgress(event.percent)
        text = describe(event, time_left.update(event))
        feedback.setProgressText(f"{event.message} ({text})" if with_message and event.message else text)

    result = settings.engine_runner().run(command, on_progress=progressed, on_log=feedback.pushInfo,
                                          is_cancelled=feedback.isCanceled)
    if result.ok:
        return result.data
    if cleanup is not None:
        cleanup()
    if result.status is Status.CANCELLED:
        raise QgsProcessingException("Cancelled; nothing was written.")
    raise QgsProcessingException(result.message)
