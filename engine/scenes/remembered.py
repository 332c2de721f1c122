"""Whole-scene measurements kept between runs: a scene read once is not read again to answer the same question.

Before its first tile, a detection reads the whole scene twice: a decimated preview (how its values are encoded,
how much of it holds data) and the eq. 1 statistics, which must come from every pixel so that a map-view
extent is stretched as the whole scene is. On a 16,000 x 16,000-px EW scene that made 8.7 s of a 16-tile map
view's 14.4 s, against the model's 3.2 s (docs/benchmarks_amd_map_view.md), and the dock, a detection on another
extent, or one with a fine-tuned model asked the same questions of the same files again. The answers are kept in
the user's cache, keyed by the question and by the fingerprint (size, first and last mebibyte) and modification
time of every file GDAL reads for the scene (a VRT's sources too), so a rewritten or replaced file is measured
afresh. Like every cache here, one that cannot be read or written is measured again, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Optional

from ..atomic import write_text
from ..cache import cache_dir
from ..errors import OutputError
from ..locks import waited_for
from .fingerprint import scene_fingerprint


def remembered(files: list[str], question: str, measure: Callable[[], dict], check: Callable[[], None] = lambda: None) -> dict:
    """``measure()``'s answer for the scene made of ``files`` (a dataset's ``files``), measured once per version
    of those files and ``question``; a scene that is not all local files (a VSI URL, a vanished file) is always
    measured.

    While another process measures the same scene (the dock measures a scene as soon as it is chosen, and the
    analyst may press Detect meanwhile), this one waits for its answer instead of reading the scene a second time
    on the same cores, calling ``check`` (a cancel) as it waits."""
    key = _key(files)
    if key is None:
        return measure()
    file = cache_dir() / "scenes" / f"{key}.json"
    answers = _answers(file)
    if question in answers:
        return answers[question]
    with ExitStack() as lock:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            lock.enter_context(waited_for(_lock_file(file, question), check))
        except (OSError, OutputError):
            pass  # a cache that cannot be locked is measured without waiting
        answers = _answers(file)  # what the process this one waited for measured
        if question in answers:
            return answers[question]
        answer = measure()
        try:
            write_text(file, json.dumps({**answers, question: answer}))
        except (OSError, OutputError):
            pass
    return answer


def _lock_file(file: Path, question: str) -> Path:
    """One lock per question: a scene's preview is not held up by another run measuring its statistics."""
    return file.with_name(f"{file.stem}.{hashlib.sha256(question.encode()).hexdigest()[:12]}.lock")


def _answers(file: Path) -> dict:
    try:
        answers = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return answers if isinstance(answers, dict) else {}


def _key(files: list[str]) -> Optional[str]:
    if not files:
        return None
    digest = hashlib.sha256()
    try:
        for path in sorted(files):
            digest.update(f"{scene_fingerprint(path)} {os.stat(path).st_mtime_ns};".encode())
    except OSError:
        return None
    return digest.hexdigest()[:24]
