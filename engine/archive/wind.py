"""Wind speed from sea backscatter: CMOD5.n inverted at one incidence angle, from a table of xsarsea's implementation.

VV uses CMOD5.n itself (Hersbach 2010, neutral winds); HH uses xsarsea's CMOD5.n with the polarisation
ratio of Mouche et al. (2005), the usual way to carry a VV model function over to HH. The wind direction
relative to the radar look is not known from one scene, so it is taken at 45 degrees, between upwind and
crosswind: the speed is then good to about +-20 % whatever the true direction, enough to tell a low-wind
look-alike (below 2 to 3 m/s) from a slick on a wind-roughened sea.

The model functions are xsarsea's, tabulated over incidence x wind speed by ``tools/wind_table.py`` into
``resources/wind/``: importing xsarsea itself pulls in xarray, pandas, dask and numba, about 1.4 s of CPU in
every detection run for one number per slick. A bicubic spline through the table stays so close to xsarsea's
values that the inversion below, a bisection over wind speed as on xsarsea itself, gives the same speed to
within its 0.01 m/s rounding over 15-50 degrees (``tests/test_wind.py``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.interpolate import RectBivariateSpline

ASSUMED_WIND_DIRECTION_DEG = 45.0
SPEED_RANGE = (0.2, 50.0)
MODEL_FUNCTIONS = {"VV": "gmf_cmod5n", "HH": "gmf_cmod5n_pr_mouche1"}
"""xsarsea's model function for each polarisation that has one (the cross-polarisations have none)."""
TABLE = Path(__file__).resolve().parents[2] / "resources" / "wind" / "cmod5n_45deg.npz"
_STEPS = 20  # bisection halvings: 50 m/s / 2**20 is far below what the model function can tell


@lru_cache(maxsize=None)
def _splines() -> dict[str, RectBivariateSpline]:
    """Bicubic splines through the table's sigma0 (dB) over incidence and log wind speed, one per polarisation."""
    with np.load(TABLE) as table:
        incidence, log_speed = table["incidence_deg"], np.log(table["speed_ms"])
        return {pol: RectBivariateSpline(incidence, log_speed, table[f"sigma0_db_{pol}"], kx=3, ky=3) for pol in MODEL_FUNCTIONS}


def _covers(incidence_deg: float) -> bool:
    spline = _splines()["VV"]
    low, high = spline.get_knots()[0][[0, -1]]
    return bool(low <= incidence_deg <= high)


def backscatter(speed: float, incidence_deg: float, polarisation: str) -> float:
    """Sea sigma0 (linear) of ``polarisation``'s model function for a wind of ``speed`` m/s at the assumed direction."""
    return 10.0 ** (float(_splines()[polarisation](incidence_deg, math.log(speed))[0, 0]) / 10.0)


def wind_speed(sigma0: float, incidence_deg: float, polarisation: Optional[str]) -> Optional[float]:
    """The 10 m neutral wind speed (m/s) whose sea backscatter is ``sigma0`` (linear); None for cross-pol and for an
    incidence outside the table (10-60 degrees, beyond any Sentinel-1 swath)."""
    if polarisation not in MODEL_FUNCTIONS or not sigma0 > 0 or not math.isfinite(sigma0) or not _covers(incidence_deg):
        return None
    low, high = SPEED_RANGE
    if sigma0 <= backscatter(low, incidence_deg, polarisation):
        return low
    if sigma0 >= backscatter(high, incidence_deg, polarisation):
        return high
    for _ in range(_STEPS):  # backscatter grows with wind at a fixed incidence and direction
        middle = (low + high) / 2
        if backscatter(middle, incidence_deg, polarisation) < sigma0:
            low = middle
        else:
            high = middle
    return round((low + high) / 2, 2)
