"""The label store as the SQLite file a GeoPackage is: checked on every open, read from a snapshot.

An analyst's labels are hours of work, written by QGIS while the engine reads them and by the engine while
QGIS has them open. SQLite makes each write a transaction (OGR and fiona commit whole batches), so a
process killed at any moment leaves either the old store or the new one, plus a *hot journal* from which
the next opener rolls the interrupted write back. ``check`` does that roll-back explicitly, says so, and
refuses a store SQLite finds damaged (``PRAGMA quick_check``) before anything reads or writes it.
``snapshot`` gives readers a consistent copy (SQLite's online backup), so a fine-tune and a generation
reading the store while QGIS saves a polygon each see one state of it, the one their lineage hash names.
"""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import InputError

SQLITE_HEADER = b"SQLite format 3\x00"
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
"""SQLite writes it at the head of a rollback journal once the journal is safely on disk, just before it
changes the database file: a journal that starts with it and outlives its writer holds a half-done write."""
BUSY_TIMEOUT_S = 10.0
"""How long to wait for QGIS or another engine run to finish a write before saying the store is busy."""
_RESTORE = "Restore the store from a backup (QGIS keeps none by itself), or start a new one and import your labels again."


def check(path: Path) -> list[str]:
    """Roll back an interrupted write, check the file, and return what was repaired (empty: nothing).

    Raises ``InputError`` for a file that is not SQLite or that SQLite finds damaged; nothing is changed then.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise InputError(f"Cannot open the label store {path} ({exc.strerror or exc}).", "Check the path and its permissions.") from exc
    if header != SQLITE_HEADER:
        raise InputError(f"{path.name} cannot be read as a GeoPackage: it is not an SQLite file (damaged, or another kind of file).", _RESTORE)
    journal = Path(f"{path}-journal")
    interrupted = _starts_with(journal, JOURNAL_MAGIC)
    try:
        with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise InputError(f"The label store {path.name} stayed busy for {BUSY_TIMEOUT_S:g} s (another program is writing it).", "Save or stop editing in QGIS, then try again.") from exc
        if "readonly" in str(exc) or "read-only" in str(exc):
            raise InputError(
                f"The label store {path.name} holds an interrupted write that cannot be rolled back: the file is read-only.",
                "Make the file and its folder writable, then open it again.",
            ) from exc
        raise InputError(f"The label store {path.name} cannot be read by SQLite ({exc}).", _RESTORE) from exc
    except sqlite3.DatabaseError as exc:
        raise InputError(f"The label store {path.name} is damaged ({exc}); nothing was changed.", _RESTORE) from exc
    if problems != ["ok"]:
        lines = [line for problem in problems for line in str(problem).splitlines() if not line.startswith("***")]
        shown = "; ".join(lines[:3]) + (" ..." if len(lines) > 3 else "")
        raise InputError(f"The label store {path.name} is damaged (SQLite finds: {shown}); nothing was read or changed.", _RESTORE)
    if interrupted and not journal.exists():
        return [f"An interrupted write to {path.name} (a program killed while saving) was rolled back; the labels saved before it are intact."]
    return []


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


@contextmanager
def snapshot(path: Path) -> Iterator[Path]:
    """A consistent copy of the store, in a temporary folder removed after the block."""
    with tempfile.TemporaryDirectory(prefix=".slickmapper-tmp-") as folder:
        copy = Path(folder) / "snapshot.gpkg"
        try:
            with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as source, closing(sqlite3.connect(copy)) as target:
                source.backup(target)
        except sqlite3.Error as exc:
            raise InputError(f"Cannot take a consistent copy of the label store {path.name} ({exc}).", "Try again once QGIS has saved.") from exc
        yield copy
