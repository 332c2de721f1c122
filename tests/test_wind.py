"""The wind behind each slick: the tabulated model functions against xsarsea itself, and detection without xsarsea."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from engine.archive.wind import ASSUMED_WIND_DIRECTION_DEG, MODEL_FUNCTIONS, SPEED_RANGE, backscatter, wind_speed

ROOT = Path(__file__).resolve().parent.parent


def _xsarsea(polarisation: str) -> Callable[[float, float], float]:
    """xsarsea's own model function, (incidence, speed) -> sigma0 at the assumed direction."""
    import xsarsea.windspeed  # noqa: F401 - registers the model functions
    from xsarsea.windspeed.gmfs import GmfModel

    gmf = GmfModel._registry[MODEL_FUNCTIONS[polarisation]]
    return lambda incidence, speed: float(gmf(incidence, speed, ASSUMED_WIND_DIRECTION_DEG, numba=False))


def _bisection(model: Callable[[float, float], float], sigma0: float, incidence: float) -> float:
    """The inversion detection made on xsarsea before it had the table: 20 halvings, rounded to 0.01 m/s."""
    low, high = SPEED_RANGE
    if sigma0 <= model(incidence, low):
        return low
    if sigma0 >= model(incidence, high):
        return high
    for _ in range(20):
        middle = (low + high) / 2
        low, high = (middle, high) if model(incidence, middle) < sigma0 else (low, middle)
    return round((low + high) / 2, 2)


@pytest.mark.parametrize("polarisation", ["VV", "HH"])
def test_the_table_inverts_as_a_bisection_on_xsarsea(polarisation):
    """Random seas over Sentinel-1's incidences and every wind of the range (half of them log-uniform, so low winds,
    where the look-alike score turns, are well represented), with some backscatter off the model function."""
    model = _xsarsea(polarisation)
    rng = np.random.default_rng(7)
    n = 300
    incidences = rng.uniform(15.0, 50.0, n)
    speeds = np.concatenate([np.exp(rng.uniform(*np.log(SPEED_RANGE), n // 2)), rng.uniform(*SPEED_RANGE, n - n // 2)])
    sigma0s = [model(i, s) * 10 ** (e / 10) for i, s, e in zip(incidences, speeds, rng.normal(0.0, 0.5, n))]
    errors = [abs(wind_speed(s0, i, polarisation) - _bisection(model, s0, i)) for s0, i in zip(sigma0s, incidences)]
    assert max(errors) <= 0.05


@pytest.mark.parametrize("polarisation", ["VV", "HH"])
def test_the_table_is_xsarsea_s_model_function(polarisation):
    model = _xsarsea(polarisation)
    rng = np.random.default_rng(8)
    for incidence, speed in zip(rng.uniform(15.0, 50.0, 200), np.exp(rng.uniform(*np.log(SPEED_RANGE), 200))):
        assert 10 * math.log10(backscatter(speed, incidence, polarisation)) == pytest.approx(
            10 * math.log10(model(incidence, speed)), abs=0.01)


def test_no_wind_for_cross_polarisation_or_beyond_the_table():
    sigma0 = backscatter(5.0, 37.5, "VV")
    assert wind_speed(sigma0, 37.5, "VV") == pytest.approx(5.0, abs=0.01)
    assert wind_speed(sigma0, 37.5, "VH") is None and wind_speed(sigma0, 37.5, None) is None
    assert wind_speed(sigma0, 5.0, "VV") is None and wind_speed(sigma0, 75.0, "VV") is None
    assert wind_speed(0.0, 37.5, "VV") is None and wind_speed(float("nan"), 37.5, "VV") is None
    assert wind_speed(1e-9, 37.5, "VV") == SPEED_RANGE[0] and wind_speed(10.0, 37.5, "VV") == SPEED_RANGE[1]


def test_detection_weighs_the_wind_without_importing_xsarsea(tmp_path):
    """xsarsea pulls in xarray, pandas, dask and numba: over a second of every run, for one number per slick."""
    code = (
        "import sys, fiona\n"
        "from engine.data.synth import SceneSpec, write_scene\n"
        "from engine.jobs.detect import DetectOptions, detect\n"
        "from engine.models.registry import SYNTHETIC_MODEL\n"
        "scene = write_scene(SceneSpec(height=256, width=256, seed=3, n_seeps=2), sys.argv[1] + '/S1A_EW_GRDM_1SDH_20240101T050000_s.tif')\n"
        "result = detect(scene, sys.argv[1] + '/out', DetectOptions(model=str(SYNTHETIC_MODEL), tile=256, device='cpu', runtime='torch'))\n"
        "winds = [f['properties']['wind_ms'] for f in fiona.open(result.slicks)]\n"
        "print(len(winds), all(w is not None for w in winds), sorted(m for m in sys.modules if m.split('.')[0] in ('xsarsea', 'xarray', 'dask', 'numba')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    count, all_weighed, heavy = done.stdout.split(maxsplit=2)
    assert int(count) > 0 and all_weighed == "True" and heavy.strip() == "[]"
