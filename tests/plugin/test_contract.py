"""The plugin asks the engine: it offers exactly the scenes the engine accepts and restates none of its rules."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from osgeo import gdal, osr
from qgis.core import QgsProject, QgsRasterLayer

from engine import contract
from engine.errors import InputError
from engine.scenes.raster import inspect

PLUGIN = Path(__file__).resolve().parents[2] / "slick_plugin"


def write_scene(path: Path, names: Sequence[str], gdal_type: int = gdal.GDT_Float32) -> str:
    """A small georeferenced scene whose bands carry ``names`` as descriptions (SNAP's convention)."""
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 64, 48, len(names), gdal_type)
    dataset.SetGeoTransform((500_000, 25, 0, 8_400_000, 0, -25))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32636)
    dataset.SetProjection(srs.ExportToWkt())
    rng = np.random.default_rng(0)
    for band, name in enumerate(names, start=1):
        dataset.GetRasterBand(band).WriteArray(rng.uniform(1, 200, (48, 64)))
        dataset.GetRasterBand(band).SetDescription(name)
    dataset = None
    return str(path)


def engine_accepts(path: str) -> bool:
    try:
        inspect(path)
    except InputError:
        return False
    return True


@pytest.mark.parametrize("names, gdal_type", [
    (("Sigma0_VV", "Sigma0_VH"), gdal.GDT_Float32),
    (("Amplitude_VH", "Amplitude_VV"), gdal.GDT_Float32),
    (("sigma0_vv_db",), gdal.GDT_Float32),
    (("", ""), gdal.GDT_Float32),
    (("", "", ""), gdal.GDT_Byte),
    (("Sigma0_HH", "", ""), gdal.GDT_Byte),
])
def test_the_dock_offers_a_scene_exactly_when_the_engine_accepts_it(dock, iface, tmp_path, names, gdal_type) -> None:
    path = write_scene(tmp_path / "scene.tif", names, gdal_type)
    layer = QgsRasterLayer(path, "scene")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    iface.canvas.setCurrentLayer(layer)
    offered = dock.layer_combo.currentLayer() is layer
    assert offered == engine_accepts(path)
    assert offered == (names != ("", "", "")), "SNAP band names are SAR bands; three unnamed bytes are a picture"


_POLARISATION_TEXT = re.compile(r"VV|VH|HH|HV", re.IGNORECASE)


def _plugin_modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(PLUGIN.rglob("*.py")) if path.name != "contract.py"]


def _contract_values() -> list[object]:
    shared = [value for name, value in vars(contract).items()
              if name.isupper() and isinstance(value, (str, tuple, dict))]
    return shared + [tuple(value) for value in shared if isinstance(value, dict)]


def test_no_plugin_module_restates_a_rule_the_engine_owns() -> None:
    """No band-name regex, no tolerance, and no copy of a shared constant: the plugin imports engine/contract.py."""
    shared = _contract_values()
    found = []
    for path, tree in _plugin_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("compile", "search", "match", "fullmatch"):
                patterns = [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
                found += [f"{path.name}:{node.lineno} band-name regex" for p in patterns if _POLARISATION_TEXT.search(p)]
        for node in tree.body:  # module-level constants
            if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
                continue
            names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]
            if any("TOLERANCE" in name for name in names):
                found.append(f"{path.name}:{node.lineno} tolerance {names}")
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            keys = tuple(value) if isinstance(value, dict) else None
            if value in shared or (keys is not None and keys in shared):
                found.append(f"{path.name}:{node.lineno} copy of a contract value {names}")
    assert found == []


def test_the_contract_loads_in_qgis_python_without_the_engine_package() -> None:
    import sys

    import slick_plugin.contract as plugin_contract

    assert plugin_contract.LABEL_CLASSES == contract.LABEL_CLASSES
    assert "rasterio" not in vars(sys.modules[plugin_contract._NAME])


def test_a_new_detection_prefix_skips_names_whose_outputs_exist(tmp_path) -> None:
    from datetime import datetime

    from slick_plugin.commands import unique_prefix

    now = datetime(2024, 5, 1, 12, 0, 0)
    first = unique_prefix(str(tmp_path), "/data/scene.tif", "model", now)
    (tmp_path / f"{first}{contract.OUTPUT_SUFFIXES['slicks']}").touch()
    second = unique_prefix(str(tmp_path), "/data/scene.tif", "model", now)
    assert second == f"{first}-2"
