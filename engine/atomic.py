"""Writing a file so that readers see either the old file or the whole new one, never half of it.

A hidden temporary file beside the target (same folder, hence same file system) takes the bytes and is then
renamed over the target, which POSIX makes atomic; on any error it is removed and the target is untouched.
Model files, sample tiles, indexes and experiment results all go through ``staged``. Files GDAL or fiona
write themselves, often with sidecars (a PNG's world file, a GeoPackage's journal), go through
``staged_folder``: a hidden folder beside the targets whose files are moved into place together.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
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


@contextmanager
def staged_folder(folder: Path, overwrite: bool = True,
                  hint: str = "Check the free space and permissions of the folder.") -> Iterator[Path]:
    """A hidden folder in ``folder`` to write files into; when the block succeeds they move into ``folder``.

    With ``overwrite`` False a file already in ``folder`` under the name of a staged one is an
    ``OutputError`` and nothing moves. The hidden folder is removed whatever happens.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        raise OutputError(f"Cannot write into {folder} ({exc}).", hint) from exc
    try:
        yield stage
        made = sorted(stage.iterdir())
        clashes = [folder / f.name for f in made if (folder / f.name).exists()]
        if clashes and not overwrite:
            names = ", ".join(c.name for c in clashes)
            raise OutputError(f"{names} already in {folder}; outputs are never overwritten.", "Choose another name.")
        for staged_file in made:
            os.replace(staged_file, folder / staged_file.name)
    except OSError as exc:
        raise OutputError(f"Cannot write into {folder} ({exc}).", hint) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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
