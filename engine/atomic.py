"""Writing a file so that readers see either the old file or the whole new one, never half of it.

A hidden temporary file beside the target (same folder, hence same file system) takes the bytes and is then
renamed over the target, which POSIX makes atomic; on any error it is removed and the target is untouched.
Model files, sample tiles, indexes and experiment results all go through here. Rasters are the exception:
GDAL writes those itself, through the staging folders of ``outputs`` and ``synth``.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .contract import STAGING_PREFIX
from .errors import OutputError


@contextmanager
def staged(path: Path, hint: str = "Check the free space and permissions of the folder.") -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; it replaces ``path`` when the block succeeds.

    ``mkstemp`` rather than a fixed name, so two processes writing the same file cannot collide; the last
    rename wins whole."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=STAGING_PREFIX, suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise OutputError(f"Cannot write {path} ({exc}).", hint) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"Cannot write {path} ({exc}).", hint) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, hint: str = "Check the free space and permissions of the folder.") -> None:
    with staged(path, hint) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of dicts sharing the first row's keys, with a header."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
