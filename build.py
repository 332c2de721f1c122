"""Builds dist/slick_mapper.zip, the plugin as QGIS installs it (``python build.py``; stdlib only).

The zip's top folder ``slick_mapper/`` holds the plugin modules from ``slick_plugin/``, metadata.txt,
and the ``engine/`` and ``resources/`` folders, so the plugin finds its engine inside its own folder.
Tests, caches, virtual environments and the held-out evaluation models never go in.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Iterator, Tuple

ROOT = Path(__file__).resolve().parent
PLUGIN_FOLDER = "slick_mapper"
CONTENTS = (  # (source in the checkout, place in the plugin folder)
    ("slick_plugin", ""),
    ("metadata.txt", "metadata.txt"),
    ("LICENSE", "LICENSE"),
    ("requirements.txt", "requirements.txt"),
    ("engine", "engine"),
    ("resources", "resources"),
)
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".venv", "tests", ".git", ".ipynb_checkpoints"}
SKIPPED_FOLDERS = ("resources/models/evaluation/",)
"""The held-out models the demo and the experiments score: 46 MB an analyst's QGIS never runs."""
SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def files() -> Iterator[Tuple[Path, str]]:
    """Every (file, name in the zip), sorted so two builds of one checkout are identical."""
    for source, target in CONTENTS:
        path = ROOT / source
        if not path.exists():
            raise SystemExit(f"build.py: {path} is missing; run it from a complete checkout.")
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in found:
            relative = file.relative_to(path) if path.is_dir() else Path()
            if (SKIPPED_PARTS.intersection(relative.parts) or file.suffix in SKIPPED_SUFFIXES
                    or file.relative_to(ROOT).as_posix().startswith(SKIPPED_FOLDERS)):
                continue
            yield file, "/".join(part for part in (PLUGIN_FOLDER, target, relative.as_posix()) if part not in ("", "."))


def build(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for file, name in files():
            archive.write(file, name)
    return out


if __name__ == "__main__":
    zip_path = build(ROOT / "dist" / f"{PLUGIN_FOLDER}.zip")
    print(f"Wrote {zip_path.relative_to(ROOT)} ({zip_path.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)
