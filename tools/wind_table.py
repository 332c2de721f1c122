"""Tabulates xsarsea's wind model functions for detection (``.venv/bin/python tools/wind_table.py``).

Writes ``resources/wind/cmod5n_45deg.npz``: sea sigma0 (dB) of CMOD5.n for VV and of CMOD5.n with Mouche's
polarisation ratio for HH, at the wind direction detection assumes, over incidence x wind speed, and a README
beside it naming the xsarsea version and this command. Detection inverts the table (``engine.archive.wind``)
instead of importing xsarsea, whose xarray, pandas, dask and numba cost every run about 1.4 s of CPU for one
number per slick. Run it again after changing xsarsea's pin; ``tests/test_wind.py`` checks the table against
the installed xsarsea.

The values come from the same call detection made before it had the table (xsarsea's scalar Python model
function, ``numba=False``). A 1-degree by 200-speed grid (speeds evenly spaced in their logarithm, so finer in
low winds, where sigma0 changes fastest) is enough under cubic interpolation: the inverted speed agrees with a
bisection on xsarsea itself to within its 0.01 m/s rounding.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.archive.wind import ASSUMED_WIND_DIRECTION_DEG, MODEL_FUNCTIONS, SPEED_RANGE, TABLE  # noqa: E402

INCIDENCE_DEG = np.arange(10.0, 60.0 + 0.5, 1.0)
"""Every Sentinel-1 wide-swath incidence (about 19-47 degrees) with a margin for cubic interpolation's edges."""
SPEEDS = 200


def tabulate() -> dict[str, np.ndarray]:
    """sigma0 in dB of each polarisation's model function at every (incidence, speed) of the grid."""
    import xsarsea.windspeed  # noqa: F401 - registers the model functions
    from xsarsea.windspeed.gmfs import GmfModel

    speeds = np.geomspace(*SPEED_RANGE, SPEEDS)
    table = {"incidence_deg": INCIDENCE_DEG, "speed_ms": speeds}
    for polarisation, name in MODEL_FUNCTIONS.items():
        gmf = GmfModel._registry[name]  # xsarsea offers no public lookup by name
        table[f"sigma0_db_{polarisation}"] = np.array(
            [[10.0 * np.log10(float(gmf(float(incidence), float(speed), ASSUMED_WIND_DIRECTION_DEG, numba=False)))
              for speed in speeds] for incidence in INCIDENCE_DEG])
    return table


def main() -> int:
    table = tabulate()
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(TABLE, **table)
    functions = ", ".join(f"{pol}: `{name}`" for pol, name in MODEL_FUNCTIONS.items())
    (TABLE.parent / "README.md").write_text(
        f"`{TABLE.name}`: sea sigma0 (dB) of xsarsea {version('xsarsea')}'s model functions ({functions}), wind "
        f"{ASSUMED_WIND_DIRECTION_DEG:g} degrees to the radar look, at incidences {INCIDENCE_DEG[0]:g}-{INCIDENCE_DEG[-1]:g} "
        f"degrees every {INCIDENCE_DEG[1] - INCIDENCE_DEG[0]:g} and {SPEEDS} wind speeds {SPEED_RANGE[0]:g}-{SPEED_RANGE[1]:g} m/s "
        "evenly spaced in their logarithm.\n\n"
        "Made by `.venv/bin/python tools/wind_table.py`; detection inverts it for the wind speed behind each slick "
        "(`engine/archive/wind.py`).\n")
    print(f"Wrote {TABLE.relative_to(ROOT)} ({TABLE.stat().st_size / 1024:.0f} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
