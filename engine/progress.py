"""Progress reporting and cancellation, shared by every long engine function.

Engine functions take one ``Progress`` and call ``update`` as they go; ``update`` raises
``Cancelled`` once the cancel flag is set, so cancellation needs no extra plumbing. The CLI prints a
bar or JSON lines from the same calls; the plugin's worker reads those lines.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from .errors import Cancelled

ProgressCallback = Callable[[str, int, int, str], None]
"""Called as ``callback(stage, done, total, message)``."""


class Progress:
    """A progress callback plus a cancel flag, with sub-ranges for nested stages."""

    def __init__(
        self,
        callback: Optional[ProgressCallback] = None,
        cancel_event: Optional[threading.Event] = None,
        log: Optional[Callable[[str], None]] = None,
    ) -> None:
        self._callback = callback
        self.cancel_event = cancel_event or threading.Event()
        self._log = log
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


def silent() -> Progress:
    """A progress that reports nothing and is never cancelled: for tests and library callers."""
    return Progress()
