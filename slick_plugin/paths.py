"""Where the plugin finds the engine, its Python and its resources, from the checkout or the zip.

In the checkout the plugin package is ``slick_plugin/`` beside ``engine/`` and ``resources/``; in the
installed zip the plugin folder ``slick_mapper/`` holds ``engine/`` and ``resources/`` itself. Both layouts
are searched the same way, nearest first, so no code path depends on how the plugin was installed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Optional

PLUGIN_DIR = Path(__file__).resolve().parent


def _nearest_with(relative: str) -> Optional[Path]:
    """The plugin folder or its parent, whichever holds ``relative``; None when neither does."""
    for folder in (PLUGIN_DIR, PLUGIN_DIR.parent):
        if (folder / relative).exists():
            return folder
    return None


def engine_root() -> Optional[Path]:
    """The folder that contains the ``engine`` package: the worker's working directory.

    Symlinks are followed so a development profile that links ``engine`` into the plugin folder still
    resolves to the checkout (and therefore to the checkout's ``.venv``).
    """
    folder = _nearest_with("engine/__init__.py")
    return None if folder is None else (folder / "engine").resolve().parent


def resources_dir() -> Path:
    """The ``resources`` folder (icons, styles, bundled models)."""
    folder = _nearest_with("resources")
    return (folder or PLUGIN_DIR) / "resources"


def icon_path() -> str:
    return str(resources_dir() / "icons" / "slick_mapper.svg")


def style_path(name: str) -> str:
    """A layer style shipped in ``resources/styles`` (``name`` without the ``.qml`` suffix)."""
    return str(resources_dir() / "styles" / f"{name}.qml")


def default_engine_python() -> str:
    """The engine root's ``.venv`` Python when it exists (``make venv``), else ``python3`` on PATH."""
    root = engine_root()
    if root is not None:
        for candidate in (root / ".venv" / "bin" / "python", root / ".venv" / "Scripts" / "python.exe"):
            if candidate.exists():
                return str(candidate)
    return shutil.which("python3") or shutil.which("python") or sys.executable


def engine_fix_command(python: str) -> str:
    """The command an analyst runs to give ``python`` a working engine, for error messages."""
    root = engine_root()
    if root is None:
        return "reinstall the Slick Mapper plugin: its engine/ folder is missing"
    if (root / "Makefile").exists():
        return f"cd {root} && make venv"
    return f"{python} -m pip install -r {root / 'requirements.txt'}"
