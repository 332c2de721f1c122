"""Reading ahead of the model: the next strips are read, warped and stretched while the current one is predicted.

GDAL's reads and warps and numpy's stretch release the GIL for most of their time, so a single reader thread
overlaps them with inference and end-to-end time approaches model time. The queue is short (two strips):
memory stays flat in scene size, and a Cancel or an error in either thread stops the other at once.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(produce: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """Items of ``produce()``, made in a background thread up to ``depth`` ahead of the consumer.

    An exception in the producer is raised in the consumer at the item where it happened; a consumer that
    stops early (Cancel, an error, ``break``) makes the producer stop at its next item.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in produce():
                if not put((item, None)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put((None, exc))
            return
        put((_DONE, None))

    worker = threading.Thread(target=run, name="slick-mapper-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()
