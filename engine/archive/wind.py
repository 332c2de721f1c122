"""Wind speed from sea backscatter: CMOD5.n inverted at one incidence angle, from xsarsea's implementation.

VV uses CMOD5.n itself (Hersbach 2010, neutral winds); HH uses xsarsea's CMOD5.n with the polarisation
ratio of Mouche et al. (2005), the usual way to carry a VV model function over to HH. The wind direction
relative to the radar look is not known from one scene, so it is taken at 45 degrees, between upwind and
crosswind: the speed is then good to about +-20 % whatever the true direction, enough to tell a low-wind
look-alike (below 2 to 3 m/s) from a slick on a wind-roughened sea.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Callable, Optional

ASSUMED_WIND_DIRECTION_DEG = 45.0
SPEED_RANGE = (0.2, 50.0)
_GMF = {"VV": "gmf_cmod5n", "HH": "gmf_cmod5n_pr_mouche1"}
_STEPS = 20  # bisection halvings: 50 m/s / 2**20 is far below what the model function can tell


@lru_cache(maxsize=None)
def _model(polarisation: str) -> Callable[[float, float, float], float]:
    import xsarsea.windspeed  # noqa: F401 - registers the model functions
    from xsarsea.windspeed.gmfs import GmfModel

    gmf = GmfModel._registry[_GMF[polarisation]]  # xsarsea offers no public lookup by name
    return lambda incidence, speed, direction: float(gmf(incidence, speed, direction, numba=False))


def load_in_background(polarisation: Optional[str]) -> Optional[threading.Thread]:
    """Start importing the model function of ``polarisation`` in a thread of its own.

    xsarsea pulls in xarray, pandas, dask and numba: 1 to 2 s, which the first slick's wind waited for at the
    end of a detection run. Started when the run starts, the import overlaps with reading and predicting
    tiles. A failure is left for ``wind_speed`` to raise where the wind is asked for; the thread is not a
    daemon, so a run that ends first never leaves an interpreter exiting in the middle of an import. Returns
    the thread (None for a polarisation without a model function).
    """
    if polarisation not in _GMF:
        return None
    thread = threading.Thread(target=_load_quietly, args=(polarisation,), name="slick-mapper-wind-model")
    thread.start()
    return thread


def _load_quietly(polarisation: str) -> None:
    try:
        _model(polarisation)
    except Exception:  # noqa: BLE001 - raised again, where it matters, by the wind_speed call that needs it
        pass


def wind_speed(sigma0: float, incidence_deg: float, polarisation: Optional[str],
               direction_deg: float = ASSUMED_WIND_DIRECTION_DEG) -> Optional[float]:
    """The 10 m neutral wind speed (m/s) whose sea backscatter is ``sigma0`` (linear); None for cross-pol."""
    if polarisation not in _GMF or not sigma0 > 0 or not math.isfinite(sigma0):
        return None
    model = _model(polarisation)
    low, high = SPEED_RANGE
    if sigma0 <= model(incidence_deg, low, direction_deg):
        return low
    if sigma0 >= model(incidence_deg, high, direction_deg):
        return high
    for _ in range(_STEPS):  # backscatter grows with wind at a fixed incidence and direction
        middle = (low + high) / 2
        if model(incidence_deg, middle, direction_deg) < sigma0:
            low = middle
        else:
            high = middle
    return round((low + high) / 2, 2)
