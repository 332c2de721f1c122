"""Which scenes a batch gets, and what their names and side files say about them.

An archive arrives as files, folders, glob patterns or a text/CSV list of paths; acquisition time and
mode are read from the Sentinel-1 file name when it follows ESA's naming, else from a ``productInfo.json``
beside the file or the TIFF's own tags, else left unknown (null) rather than guessed.
"""

from __future__ import annotations

import csv
import glob
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import rasterio

from ..errors import InputError

SCENE_SUFFIXES = (".tif", ".tiff", ".vrt")
LIST_SUFFIXES = (".txt", ".csv")
_TIME = re.compile(r"(\d{8}T\d{6})", re.IGNORECASE)
_MODE = re.compile(r"(?:^|[-_])(IW|EW|SM|WV|S[1-6])(?:[-_])", re.IGNORECASE)


def expand(items: list[str]) -> list[Path]:
    """Every scene path named by ``items``, in order, each once; a name that finds nothing is an error."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix.lower() in SCENE_SUFFIXES and not p.name.startswith("."))
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            matches = _read_list(path)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
        else:
            matches = [path]  # a missing file stays in: the batch records it as failed with its own error
        if not matches:
            raise InputError(f"{item} names no scene.", "Give scene files, folders of GeoTIFFs, glob patterns or a list file.")
        found.extend(matches)
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(str(path.resolve()), path)
    return list(unique.values())


def _read_list(path: Path) -> list[Path]:
    """One path per line, or a CSV whose first column (or one named path/scene) holds them; relative to the list."""
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and row[0].strip() and not row[0].startswith("#")]
    if rows and rows[0][0].strip().lower() in ("path", "scene", "file"):
        rows = rows[1:]
    return [p if p.is_absolute() else path.parent / p for p in (Path(row[0].strip()) for row in rows)]


def scene_metadata(path: Path) -> dict[str, Optional[str]]:
    """Acquisition time (ISO 8601, UTC) and mode of a scene where its name or side files tell them."""
    acquired = mode = None
    match = _TIME.search(path.name)
    if match:
        try:
            acquired = datetime.strptime(match.group(1).upper(), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc).isoformat()
        except ValueError:  # digits that only look like a time (day 00, month 13): not a time
            acquired = None
    match = _MODE.search(path.name)
    if match:
        mode = match.group(1).upper()
    info = path.parent / "productInfo.json"
    if info.is_file() and (acquired is None or mode is None):
        try:
            product = json.loads(info.read_text())
            acquired = acquired or _iso(product.get("startTime"))
            mode = mode or product.get("mode")
        except (OSError, ValueError):
            pass
    if acquired is None or mode is None:
        with rasterio.open(path) as ds:
            tags = ds.tags()
        acquired = acquired or _iso(tags.get("ACQUISITION_START_TIME") or _tiff_time(tags.get("TIFFTAG_DATETIME")))
        mode = mode or (tags.get("SYNTH_MODE", "").split("_")[0] or None)
    return {"acquired": acquired, "mode": mode}


def _tiff_time(text: Optional[str]) -> Optional[str]:
    """TIFF's ``YYYY:MM:DD HH:MM:SS`` as ISO."""
    if not text or len(text) < 19:
        return None
    return text[:10].replace(":", "-") + "T" + text[11:19]


def _iso(text: Optional[str]) -> Optional[str]:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
