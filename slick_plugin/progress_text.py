"""Progress events from the engine and the text the analyst sees for them ("tiles 12/64, about 40 s left").

Plain Python, no Qt: the dock, the task manager and Processing all show the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class ProgressEvent:
    """One ``{"event": "progress"}`` line: ``done`` of ``total`` steps of ``stage``."""

    stage: str
    done: int
    total: int
    message: str = ""

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total > 0 else 0.0


class TimeLeft:
    """Estimates the seconds left in the current stage from its pace so far.

    A new stage (or a counter that goes back) restarts the estimate, because stages run at
    different speeds and an average across them would mislead.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stage: Optional[str] = None
        self._start_time = 0.0
        self._start_done = 0

    def update(self, event: ProgressEvent) -> Optional[float]:
        """Record ``event``; the estimated seconds left, or None until one step has been timed."""
        now = self._clock()
        if event.stage != self._stage or event.done < self._start_done:
            self._stage, self._start_time, self._start_done = event.stage, now, event.done
            return None
        steps = event.done - self._start_done
        if steps <= 0 or event.total <= 0:
            return None
        return (now - self._start_time) / steps * max(event.total - event.done, 0)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s`` or ``1 h 02 min``: short enough for a progress bar."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def describe(event: ProgressEvent, seconds_left: Optional[float]) -> str:
    """The progress bar text: stage, counts and, when known, the time left."""
    text = f"{event.stage} {event.done}/{event.total}"
    if seconds_left is not None:
        text += f" – about {format_seconds(seconds_left)} left"
    return text
