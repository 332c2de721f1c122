"""Progress reporting and cancellation, shared by every long engine function.

Engine functions take one ``Progress`` and call ``update`` as they go; ``update`` raises
``Cancelled`` once the cancel flag is set, so cancellation needs no extra plumbing. The CLI prints a
bar or JSON lines from the same calls; the plugin's worker reads those lines. A training run's scores
per epoch go out as numbers (``metrics``), so a chart never has to read them back out of prose.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from .errors import Cancelled

ProgressCallback = Callable[[str, int, int, str], None]
"""Called as ``callback(stage, done, total, message)``."""
MetricsCallback = Callable[[dict[str, Any]], None]
"""Called with one epoch's scores: ``{"epoch": 3, "train_loss": ..., "val_loss": ..., "val_dice": ...}``."""


class Progress:
    """A progress callback plus a cancel flag, with sub-ranges for nested stages."""

    def __init__(
        self,
        callback: Optional[ProgressCallback] = None,
        cancel_event: Optional[threading.Event] = None,
        log: Optional[Callable[[str], None]] = None,
        metrics: Optional[MetricsCallback] = None,
    ) -> None:
        self._callback = callback
        self.cancel_event = cancel_event or threading.Event()
        self._log = log
        self._metrics = metrics
        self.started = time.monotonic()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def cancel(self) -> None:
        self.cancel_event.set()

    def check(self) -> None:
        """Raise ``Cancelled`` if the user asked to stop."""
        if self.cancel_event.is_set():
            raise Cancelled()

    def update(self, stage: str, done: int, total: int, message: str = "") -> None:
        self.check()
        if self._callback is not None:
            self._callback(stage, done, total, message)

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def waiting(self, stage: str, message: str) -> Callable[[], None]:
        """A check for a run held up by another process's work (``locks.waited_for``): says ``message`` once, so that
        the run does not look stuck, and lets it be cancelled while it waits."""
        said = False

        def check() -> None:
            nonlocal said
            if not said:
                self.update(stage, 0, 1, message)
                said = True
            self.check()

        return check

    def metrics(self, **scores: Any) -> None:
        """One epoch's scores: as numbers to whoever listens for them, else as a log line for a person."""
        if self._metrics is not None:
            self._metrics(scores)
        else:
            self.log(describe_metrics(scores))


def describe_metrics(scores: dict[str, Any]) -> str:
    """``epoch 3: train loss 0.5708, val loss 1.0559, val Dice 0.065 (0.071 at 0.40)``; the train loss alone for
    a run without validation tiles."""
    text = f"epoch {scores['epoch']}: train loss {scores['train_loss']:.4f}"
    if "val_loss" in scores:
        text += f", val loss {scores['val_loss']:.4f}, val Dice {scores['val_dice']:.3f}"
    if scores.get("val_dice_calibrated") is not None:
        text += f" ({scores['val_dice_calibrated']:.3f} at {scores['threshold']:.2f})"
    return text


def silent() -> Progress:
    """A progress that reports nothing and is never cancelled: for tests and library callers."""
    return Progress()
