"""The user's cache folder: what a run measured or computed once and may ask for again.

Nothing in it is needed for a correct result: a cache that cannot be read or written is measured or computed
again, never an error.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slick_mapper"
