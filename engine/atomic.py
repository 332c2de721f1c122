"""Writing a file so that readers see either the old file or the whole new one, never half of it.

A hidden temporary file beside the target (same folder, hence same file system) takes the bytes and is then
renamed over the target, which POSIX makes atomic; on any error it is removed and the target is untouched.
Model files, sample tiles, indexes and experiment results all go through ``staged``. Files GDAL, fiona or
pyarrow write themselves, often with sidecars (a PNG's world file, a GeoPackage's journal), go through
``staged_folder``: a hidden folder beside the targets whose files are moved into place together, all or
none. A detection's ``OutputSet`` builds on the same two steps (``new_stage``, ``move_in``).

Whatever writes (Python, GDAL, SQLite, safetensors), a failed write becomes one ``OutputError`` from
``write_failure``: a full disk or quota says so, with the space left, because GDAL's own words for it
("Write failed", "Unknown GDAL Error") do not.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from safetensors import SafetensorError

from .contract import STAGING_PREFIX
from .errors import OutputError, SlickMapperError

STAGED_WRITE_FAILURES = (OSError, SafetensorError)
"""How the writers used with ``staged`` (Python files, matplotlib, safetensors) fail to write; anything else
raised in the block is a bug and is left as it is."""
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
"""No space, quota exceeded, file-size limit: all three mean "make room", however the writer reports them."""
_FULL_WORDS = ("no space left", "disk quota", "file too large", "disk full", "database or disk is full", "free disk space")
_SPACE_HINT = "Free some space on that disk (or choose a folder on another one), then run again."


def write_failure(path: Path, exc: BaseException, hint: str = "Check the free space and permissions of the folder.") -> OutputError:
    """The analyst's version of a failed write of ``path``: whether the disk is full, how much is left."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    full = any(getattr(e, "errno", None) in FULL_ERRNOS or any(w in str(e).lower() for w in _FULL_WORDS) for e in chain) or _no_room(path)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if full:
        return OutputError(f"Cannot write {path}: the disk or your quota is full ({detail}){_free(path)}; nothing was left half-written.", _SPACE_HINT)
    return OutputError(f"Cannot write {path} ({detail}){_free(path)}; nothing was left half-written.", hint)


def _no_room(path: Path) -> bool:
    """Whether 1 MiB more can be written beside ``path``: GDAL says only "Write failed" (its reason goes to
    its log), so after a failure the disk is asked directly."""
    try:
        with tempfile.TemporaryFile(dir=_folder(path)) as probe:
            probe.write(bytes(2**20))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return exc.errno in FULL_ERRNOS
    return False


def _folder(path: Path) -> Path:
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def _free(path: Path) -> str:
    folder = _folder(path)
    try:
        return f", {shutil.disk_usage(folder).free / 2**20:,.0f} MB free there"
    except OSError:
        return ""


@contextmanager
def writing(path: Path, hint: str = "Check the free space and permissions of the folder.") -> Iterator[None]:
    """Turn any failure of the writer inside the block (GDAL, SQLite, safetensors raise their own types)
    into ``write_failure``; the block must do nothing but write ``path``."""
    try:
        yield
    except SlickMapperError:
        raise
    except Exception as exc:
        raise write_failure(path, exc, hint) from exc


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""What ``open()`` gives a new file under this process's umask, read once at import (setting the umask to read
it is not thread-safe)."""


@contextmanager
def staged(path: Path, hint: str = "Check the free space and permissions of the folder.") -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; it replaces ``path`` when the block succeeds.

    ``mkstemp`` rather than a fixed name, so two processes writing the same file cannot collide; the last
    rename wins whole."""
    with writing(path, hint):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=STAGING_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp's 0600 would make a model or table unreadable to the analyst's colleagues; set after writing,
        # since some writers (safetensors) replace the file they are given rather than write into it.
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except STAGED_WRITE_FAILURES as exc:
        tmp.unlink(missing_ok=True)
        raise write_failure(path, exc, hint) from exc
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
    stage = new_stage(folder, hint)
    try:
        yield stage
        made = sorted(f.name for f in stage.iterdir())
        clashes = [name for name in made if (folder / name).exists()]
        if clashes and not overwrite:
            raise OutputError(f"{', '.join(clashes)} already in {folder}; outputs are never overwritten.", "Choose another name.")
        move_in(stage, folder, made, hint)
    except OSError as exc:
        raise write_failure(folder, exc, hint) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def new_stage(folder: Path, hint: str = "Check the free space and permissions of the folder.") -> Path:
    """A new hidden folder in ``folder`` (made if missing), for ``staged_folder`` and the detection's ``OutputSet``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        raise write_failure(folder, exc, hint) from exc


def move_in(stage: Path, folder: Path, names: Iterable[str], hint: str = "Check the free space and permissions of the folder.") -> None:
    """Move the files ``names`` from ``stage`` into ``folder``, all or none: when one move fails, those already
    moved are removed again."""
    moved: list[Path] = []
    try:
        for name in names:
            os.replace(stage / name, folder / name)
            moved.append(folder / name)
    except OSError as exc:
        for path in moved:
            path.unlink(missing_ok=True)
        raise write_failure(folder, exc, hint) from exc


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
