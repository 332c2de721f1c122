"""The engine's ``engine/contract.py``, loaded by path: the names and choices both sides agree on.

QGIS's Python lacks the engine's requirements (torch, rasterio), so the file is loaded on its own rather
than through the ``engine`` package, from the checkout or from inside the installed plugin folder alike.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from .paths import engine_root

_NAME = "slick_mapper_engine_contract"


def _load():
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    root = engine_root()
    if root is None:
        raise ImportError("The Slick Mapper engine is missing from the plugin folder; reinstall the plugin.")
    spec = importlib.util.spec_from_file_location(_NAME, root / "engine" / "contract.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


_contract = _load()


def __getattr__(name: str) -> Any:
    """Each name of ``engine/contract.py`` (``STAGING_PREFIX``, ``not_sar_reason``...), the engine's own object."""
    return getattr(_contract, name)
