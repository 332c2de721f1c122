"""Starts desktop QGIS with Slick Mapper loaded from this checkout (``make qgis``).

It builds a QGIS profile whose ``python/plugins/slick_mapper`` folder mirrors the installed zip with
symlinks into the checkout (plugin modules, metadata.txt, engine/, resources/), enables the plugin in
that profile, and replaces itself with ``qgis --profiles-path DIR``. Edits in the checkout take effect
on the next QGIS start (or Plugin Reloader); the analyst's own QGIS profile is never touched.
"""

from __future__ import annotations

import configparser
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILES = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slick-mapper" / "qgis-profiles"
PROFILE = "slick-mapper-dev"
PLUGIN = "slick_mapper"


def profile_folder(profiles_path: Path, name: str) -> Path:
    """Where ``qgis --profiles-path PROFILES --profile NAME`` keeps that profile: QGIS adds ``profiles/``."""
    return profiles_path / "profiles" / name


def link_plugin(plugins: Path) -> Path:
    """(Re)create ``plugins/slick_mapper`` as a folder of symlinks shaped like the zip's top folder."""
    folder = plugins / PLUGIN
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for source in (ROOT / "slick_plugin").iterdir():
        if source.name != "__pycache__":
            (folder / source.name).symlink_to(source)
    for name in ("metadata.txt", "requirements.txt", "engine", "resources"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def enable_plugin(profile: Path) -> None:
    """Mark the plugin enabled in the profile's QGIS3.ini so it loads without the Plugin Manager."""
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    config = configparser.RawConfigParser()
    config.optionxform = str  # QGIS keys are case-sensitive
    config.read(ini)
    if not config.has_section("PythonPlugins"):
        config.add_section("PythonPlugins")
    config.set("PythonPlugins", PLUGIN, "true")
    with ini.open("w") as handle:
        config.write(handle, space_around_delimiters=False)


def main() -> None:
    qgis = shutil.which("qgis")
    if qgis is None:
        sys.exit("Desktop QGIS is not installed: run `make qgis` (it installs Debian's qgis) or `apt-get install qgis`.")
    profile = profile_folder(PROFILES, PROFILE)
    link_plugin(profile / "python" / "plugins")
    enable_plugin(profile)
    print(f"Starting QGIS with profile {profile} (plugin linked from {ROOT})", file=sys.stderr)
    os.execv(qgis, [qgis, "--profiles-path", str(PROFILES), "--profile", PROFILE, *sys.argv[1:]])


if __name__ == "__main__":
    main()
