"""Wind speed from sea backscatter: CMOD5.n inverted at one incidence angle, from a table of xsarsea's implementation.

VV uses CMOD5.n itself (Hersbach 2010, neutral winds); HH uses xsarsea's CMOD5.n with the polarisation
ratio of Mouche et al. (2005), the usual way to carry a VV model function over to HH. The wind direction
relative to the radar look is not known from one scene, so it is taken at 45 degrees, between upwind and
crosswind: the speed is then good to about +-20 % whatever the true direction, enough to tell a low-wind
look-alike (below 2 to 3 m/s) from a slick on a wind-roughened sea.

The model functions are xsarsea's, tabulated over incidence x wind speed by ``tools/wind_table.py`` into
``resources/wind/``: importing xsarsea itself pulls in xarray, pandas, dask and numba, about 1.4 s of CPU in
every detection run for one number per slick. Cubic interpolation of the table stays so close to xsarsea's
values that the inversion below, a bisection over wind speed as on xsarsea itself, gives the same speed to
within its 0.01 m/s rounding over 15-50 degrees (``tests/test_wind.py``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

ASSUMED_WIND_DIRECTION_DEG = 45.0
SPEED_RANGE = (0.2, 50.0)
MODEL_FUNCTIONS = {"VV": "gmf_cmod5n", "HH": "gmf_cmod5n_pr_mouche1"}
"""xsarsea's model function for each polarisation that has one (the cross-polarisations have none)."""
TABLE = Path(__file__).resolve().parents[2] / "resources" / "wind" / "cmod5n_45deg.npz"
_STEPS = 20  # bisection halvings: 50 m/s / 2**20 is far below what the model function can tell


class _Grid:
    """The table read once: sigma0 (dB) per polarisation on incidences and log wind speeds, both evenly spaced."""

    def __init__(self, path: Path) -> None:
        with np.load(path) as table:
            incidence, speed = table["incidence_deg"], table["speed_ms"]
            self.sigma0_db = {pol: table[f"sigma0_db_{pol}"] for pol in MODEL_FUNCTIONS}
        self.incidence = (float(incidence[0]), float(incidence[1] - incidence[0]), len(incidence))
        log_low, log_high = math.log(speed[0]), math.log(speed[-1])
        self.log_speed = (log_low, (log_high - log_low) / (len(speed) - 1), len(speed))

    def covers(self, incidence_deg: float) -> bool:
        first, step, n = self.incidence
        return first <= incidence_deg <= first + step * (n - 1)


@lru_cache(maxsize=None)
def _grid() -> _Grid:
    return _Grid(TABLE)


def _cubic(x: float, axis: tuple[float, float, int]) -> tuple[int, np.ndarray]:
    """The first of the four nodes of an evenly spaced ``axis`` (first, step, count) around ``x``, and their cubic
    Lagrange weights: far closer to the model function than linear weights on a grid of the same size."""
    first, step, n = axis
    position = (x - first) / step
    k = min(max(math.floor(position) - 1, 0), n - 4)
    t = position - k
    return k, np.array([-(t - 1) * (t - 2) * (t - 3) / 6, t * (t - 2) * (t - 3) / 2,
                        -t * (t - 1) * (t - 3) / 2, t * (t - 1) * (t - 2) / 6])


def backscatter(speed: float, incidence_deg: float, polarisation: str) -> float:
    """Sea sigma0 (linear) of ``polarisation``'s model function for a wind of ``speed`` m/s at the assumed direction."""
    grid = _grid()
    i, along_incidence = _cubic(incidence_deg, grid.incidence)
    j, along_speed = _cubic(math.log(speed), grid.log_speed)
    return 10.0 ** (float(along_incidence @ grid.sigma0_db[polarisation][i : i + 4, j : j + 4] @ along_speed) / 10.0)


def wind_speed(sigma0: float, incidence_deg: float, polarisation: Optional[str]) -> Optional[float]:
    """The 10 m neutral wind speed (m/s) whose sea backscatter is ``sigma0`` (linear); None for cross-pol and for an
    incidence outside the table (10-60 degrees, beyond any Sentinel-1 swath)."""
    if polarisation not in MODEL_FUNCTIONS or not sigma0 > 0 or not math.isfinite(sigma0) or not _grid().covers(incidence_deg):
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
