"""The plugin as QGIS installs it: metadata.txt and the zip that build.py makes."""

from __future__ import annotations

import configparser
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from engine import __version__ as engine_version
from engine.models.registry import DEFAULT_MODEL, LIGHT_MODEL

from .conftest import REPO

REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository", "tracker", "homepage", "tags", "icon", "experimental", "license")


def test_metadata_is_complete_for_the_plugin_repository() -> None:
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    assert [key for key in REQUIRED_METADATA if not general.get(key)] == []
    assert general["name"] == "Slick Mapper" and general["qgisMinimumVersion"] == "3.22"
    assert general["version"] == engine_version and general["experimental"] == "True"
    assert (REPO / general["icon"]).exists()


def test_the_zip_holds_the_plugin_with_its_engine_and_nothing_else(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("slick_mapper_build", REPO / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    archive = build.build(tmp_path / "slick_mapper.zip")
    names = zipfile.ZipFile(archive).namelist()
    assert {name.split("/")[0] for name in names} == {"slick_mapper"}
    for needed in ("__init__.py", "plugin.py", "engine_runner.py", "metadata.txt", "LICENSE", "engine/__init__.py",
                   "engine/cli/main.py", "resources/icons/slick_mapper.svg", "resources/styles/probability.qml",
                   "resources/wind/cmod5n_45deg.npz", *(f"resources/models/{path.name}" for path in (DEFAULT_MODEL, LIGHT_MODEL))):
        assert f"slick_mapper/{needed}" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc") or "/models/evaluation/" in name
                or "/tests/" in name or ".venv" in name or "slick_plugin" in name]

    zipfile.ZipFile(archive).extractall(tmp_path / "plugins")
    code = ("import shutil; import slick_mapper.paths as p; print(p.engine_root()); print(p.icon_path());"
            "print(p.default_engine_python()); print(shutil.which('python3') or shutil.which('python'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "plugins", capture_output=True, text=True,
                          timeout=60, check=True)
    root, icon, python, on_path = done.stdout.splitlines()
    assert Path(root) == tmp_path / "plugins" / "slick_mapper"
    assert Path(icon).exists() and Path(icon).is_relative_to(root)
    assert python == on_path and ".venv" not in python  # no .venv inside an installed plugin: python3 from PATH
