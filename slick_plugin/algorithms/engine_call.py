"""Runs one engine command synchronously for a Processing algorithm, speaking QgsProcessingFeedback, and hands
the post-processors of its layers over to Processing.

Processing decides where an algorithm runs (its own task in the dialog, the caller's thread in
``processing.run``), so the algorithm simply blocks on the same EngineRunner the dock uses.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, TypeVar

from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsProcessingLayerPostProcessorInterface

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


Processor = TypeVar("Processor", bound=QgsProcessingLayerPostProcessorInterface)
_HANDED_OVER: List[QgsProcessingLayerPostProcessorInterface] = []


def handed_over(processor: Processor) -> Processor:
    """A new post-processor for one layer of one run, its Python side kept alive. ``LayerDetails.setPostProcessor``
    takes ownership and deletes it once the layer is loaded, so an instance shared between runs is gone by the
    second run ("wrapped C/C++ object has been deleted"); and a Python subclass must stay referenced until then, or
    its ``postProcessLayer`` is collected first (QGIS's documented pattern)."""
    _HANDED_OVER.append(processor)
    return processor
