"""File locks between engine processes: the plugin's worker, a command line run and a background generation
may all write into one folder.

Locks are the operating system's (``flock`` on POSIX, ``msvcrt.locking`` on Windows), held by an open
file: a process killed at any moment releases them, so a killed run never blocks the next one.
"""

from __future__ import annotations

import errno
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator, Optional

from .errors import OutputError


def try_lock(path: Path) -> Optional[IO[bytes]]:
    """The open, locked file, or None when another process (or another open of it) holds the lock, or
    when the file system cannot lock: None is the cautious answer, as it never lets a live run's files be
    taken for a dead one's. Closing the file releases the lock."""
    handle = _open(path)
    try:
        _lock(handle, wait=False)
    except OSError:
        handle.close()
        return None
    return handle


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock for the block, waiting for it: for updates that take milliseconds.

    A folder is locked itself on POSIX, so an analyst's output folder gets no lock file; Windows cannot
    lock a folder, so there a hidden file in it stands for it. A network file system that refuses to lock
    a folder leaves it unlocked rather than failing the run: only two runs starting within the same
    milliseconds could then both pass their checks."""
    if path.is_dir() and os.name != "nt":
        import fcntl

        folder = os.open(path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX)
            except OSError:
                pass
            yield
        finally:
            os.close(folder)
        return
    with _open(path / ".slickmapper.lock" if path.is_dir() else path) as handle:
        _lock(handle, wait=True)
        yield  # released when the file is closed


@contextmanager
def waited_for(path: Path, check: Callable[[], None], poll_s: float = 0.1) -> Iterator[None]:
    """Hold ``path``'s lock for the block, waiting while another process holds it and calling ``check`` (a
    cancel) between tries: for work of seconds that a second process should wait for rather than repeat.

    A file system that cannot lock leaves the block unlocked: the work is then only done twice."""
    with _open(path) as handle:
        while True:
            try:
                _lock(handle, wait=False)
                break
            except OSError as exc:
                if exc.errno not in _HELD:
                    break
            check()
            time.sleep(poll_s)
        yield  # released when the file is closed


_HELD = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK}
"""What a non-blocking lock raises when another process holds it (``flock``; ``msvcrt.locking`` on Windows)."""


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "a+b")
    except OSError as exc:
        raise OutputError(f"Cannot lock {path} ({exc.strerror or exc}).", "Check the permissions of the folder.") from exc


def _lock(handle: IO[bytes], wait: bool) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)  # LK_LOCK retries for 10 s
    else:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
