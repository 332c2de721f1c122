"""Saying what is wrong with a scene file that GDAL failed to read, and what to do about it.

A partial download keeps its GeoTIFF header and a VRT's XML is whole, so both open fine and fail only when
a missing block is read, deep inside statistics or a tile, as GDAL's bare "Read failed". Every read of a
scene goes through ``reading`` (opening, the decimated preview, the statistics strips, the tiles on the
analysis grid), which turns any such failure into one ``InputError`` naming the file, the cause found by
looking at the file itself (where its data should end, which VRT source is missing, whether it changed
while it was read) and what to do.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from ..errors import InputError, SlickMapperError

READ_FAILURES = (RasterioError, CPLE_BaseError, OSError)
"""What GDAL and the file system raise for a block that cannot be read."""
_REFETCH = "Download or copy it again (compare its size with the source's), then run again."


@dataclass(frozen=True)
class Stamp:
    """Which file a path names and its state: a replaced file has another inode, a rewritten one another
    size or modification time."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def stamp(path: str | Path) -> Optional[Stamp]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return Stamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def check_unchanged(path: str | Path, before: Optional[Stamp]) -> None:
    """Refuse a result computed from a scene that was replaced or rewritten while it was read: its
    statistics and tiles may come from two different files."""
    if stamp(path) != before:
        raise InputError(
            f"{Path(path).name} was replaced or changed while it was being read; nothing was written.",
            "Wait until the copy or download of the scene has finished, then run again.",
        )


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn any failure to read ``path`` inside the block into an ``InputError`` saying why."""
    try:
        yield
    except SlickMapperError:
        raise
    except READ_FAILURES as exc:
        raise read_failure(path, exc) from exc


def read_failure(path: str | Path, exc: BaseException) -> InputError:
    """The analyst's version of ``exc``, raised while reading ``path``."""
    path = Path(path)
    if not path.exists():
        return InputError(f"{path.name} was deleted or moved while it was being read.", "Put it back, or reload the layer from its new place.")
    found = diagnose(path)
    if found is not None:
        return InputError(f"Cannot read {path.name}: {found[0]}.", found[1])
    return InputError(
        f"Cannot read part of {path.name} ({_first_line(exc)}): the file is damaged or not a raster GDAL reads.",
        "Export or download it again; check that it opens and displays whole in QGIS.",
    )


def diagnose(path: Path, _seen: frozenset[Path] = frozenset()) -> Optional[tuple[str, str]]:
    """(what is wrong, what to do), when the file itself tells: a VRT source missing or cut off, a TIFF
    whose blocks end beyond its last byte. None when nothing is found."""
    if path.suffix.lower() == ".vrt":
        return _vrt_problem(path, _seen | {path.resolve()})
    share = truncated_share(path)
    if share is not None:
        return f"the file ends after {100 * share:.0f} % of its data: probably an interrupted download", _REFETCH
    return None


def truncated_share(path: Path) -> Optional[float]:
    """The share of a TIFF's data bytes present, when its blocks (and overviews') end beyond the file."""
    size = path.stat().st_size
    try:
        with rasterio.open(path) as ds:
            if ds.driver not in ("GTiff", "COG"):
                return None
            start, end = None, 0
            for band in range(1, ds.count + 1):
                for overview in [None, *range(len(ds.overviews(band)))]:
                    for offset, length in _blocks(ds, band, overview):
                        start = offset if start is None else min(start, offset)
                        end = max(end, offset + length)
    except (RasterioError, CPLE_BaseError):
        return None
    if start is None or end <= size:
        return None
    return max(0.0, min(1.0, (size - start) / (end - start)))


def _blocks(ds: rasterio.DatasetReader, band: int, overview: Optional[int]) -> Iterator[tuple[int, int]]:
    """(offset, length) of every stored block of one band or overview, from GDAL's TIFF metadata."""
    row = 0
    while True:
        col = 0
        while True:
            offset = ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band, ovr=overview)
            if offset is None:
                break
            length = ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band, ovr=overview)
            if int(offset) > 0 and length is not None:  # 0: a sparse block, never written
                yield int(offset), int(length)
            col += 1
        if col == 0:
            return
        row += 1


def _vrt_problem(path: Path, seen: frozenset[Path]) -> Optional[tuple[str, str]]:
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        return f"its XML cannot be read ({exc}): the VRT is damaged", "Build the VRT again (gdalbuildvrt, or Raster › Miscellaneous › Build Virtual Raster)."
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name or name.startswith("/vsi"):
            continue
        source = path.parent / name if element.get("relativeToVRT") == "1" else Path(name)
        if not source.exists():
            return (
                f"the VRT points to {name}, which does not exist",
                f"Put {name} back where the VRT expects it ({source.parent}), or build the VRT again from the files you have.",
            )
        if source.resolve() in seen:
            continue
        problem = diagnose(source, seen)
        if problem is not None:
            return f"the VRT's source {name} is damaged: {problem[0]}", problem[1]
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
