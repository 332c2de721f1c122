"""The engine's ``engine/contract.py``, loaded by path: the names and choices both sides agree on.

QGIS's Python lacks the engine's requirements (torch, rasterio), so the file is loaded on its own rather
than through the ``engine`` package, from the checkout or from inside the installed plugin folder alike.
"""

from __future__ import annotations

import importlib.util
import sys

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
STAGING_PREFIX = _contract.STAGING_PREFIX
OUTPUT_SUFFIXES = _contract.OUTPUT_SUFFIXES
SLICKS_LAYER = _contract.SLICKS_LAYER
SLICK_FIELDS = _contract.SLICK_FIELDS
LABEL_CLASSES = _contract.LABEL_CLASSES
LABEL_ORIGINS = _contract.LABEL_ORIGINS
LABELS_LAYER = _contract.LABELS_LAYER
REVIEWED_LAYER = _contract.REVIEWED_LAYER
SOLVER_STEPS = _contract.SOLVER_STEPS
SOLVER_TITLES = _contract.SOLVER_TITLES
GENERATOR_KINDS = _contract.GENERATOR_KINDS
TRAIN_LAYERS = _contract.TRAIN_LAYERS
METRICS_EVENT = _contract.METRICS_EVENT
not_sar_reason = _contract.not_sar_reason
