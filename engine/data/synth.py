"""Seeded synthetic Sentinel-1 GRD scenes with five-class ground truth.

Real labelled seep imagery is scarce, so tests, demos, benchmarks and the pretraining of the default
model all draw on this generator; it therefore has to carry the physics a detector must learn, not
just dark shapes.

Physical model, in the order it is applied:

* Sea clutter: sigma0 of wind-roughened sea grows roughly with the square of the wind speed, so
  ``sigma0_dB = -27 + 20 log10(U) - 0.35 (theta - 35)`` for VV; HH loses a further
  ``1 + 0.1 (theta - 20)`` dB (the polarisation ratio grows with incidence). ``U`` is a smooth
  large-scale wind field (2-12 m/s) with wind rows (streaks along the wind) and convective cells as
  dB texture; ``theta`` runs across range for where the scene sits in the IW or EW swath.
* Look-alikes (class 2), dark like oil but shaped otherwise: low-wind patches (the wind drops, so
  the sea loses several dB over kilometres-wide blobs), spiral eddy filaments and turbulent ship
  wakes. With ``SceneSpec.more_lookalikes`` also rain cells (a downdraft's gust front brightens the sea on
  one side of a cell whose rain-damped core is dark), a sea-ice edge (a band of dark grease ice along a
  wavy front, textured pack ice beyond) and the thermal noise floor in cross-track bands (NESZ rises by a
  few dB towards each sub-swath's edges, which shows as bright and dark stripes wherever the sea is
  near the noise floor).
* Oil (class 1): each seep releases strands that drift downstream along a wandering heading; they
  start thin, widen, fade and break into fragments, and their ends taper. Oil damps capillary
  waves, so sigma0 is multiplied by a damping ratio of 0.2-0.5 (-7 to -3 dB) per slick.
* Ships (class 3): a few pixels at +10 to +20 dB over the sea; land (class 4): a fractal coastline
  with bright textured backscatter that ignores the wind.
* The sensor adds its thermal noise floor (NESZ) and multiplicative gamma speckle of L looks, so
  intensity = (sigma0 + NESZ) * Gamma(L, 1/L); an optional swath edge leaves zeros as real GRD do.
  Speckle is correlated over the mode's resolution cell (about 90 m in EW, 20 m in IW), as in GRD
  products sampled finer than they resolve: white per-pixel speckle would teach a model that a dark
  streak three pixels wide is rare, when on real EW scenes speckle draws such streaks everywhere.

Smooth fields are drawn on a grid of about 100 m cells and interpolated, and everything per pixel is
rendered in fixed row blocks with a seed per row, so a scene of any size is bit-identical however
it is consumed and never needs more than a few arrays of its own size.
"""

from __future__ import annotations

import argparse
import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window

from ..atomic import staged_folder
from ..cli.args import add_options, options_from
from ..errors import InputError, OutputError
from ..progress import Progress, silent
from ..scenes.normalise import Stretch

SEA, OIL, LOOKALIKE, SHIP, LAND = 0, 1, 2, 3, 4
CLASS_NAMES = ("sea", "oil", "look-alike", "ship", "land")
ENCODINGS = ("float32_linear", "float32_db", "uint16_dn", "uint8")
DB_NODATA = -9999.0
"""dB nodata: a number rather than NaN because GDAL statistics, QGIS styling and uint8 readers
all honour a numeric nodata, and no real sigma0 comes near -9999 dB."""
DN_SCALE = 1500.0
"""uint16 amplitude DN = sqrt(sigma0) * DN_SCALE: sea at -20..-10 dB lands on DN 150..470, the
range of real GRD digital numbers, while +20 dB ships still fit below 65535."""

Spectrum = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Amplitude of a random field as a function of wavenumbers (ky, kx) in cycles per metre."""

_BLOCK_ROWS = 512  # rows rendered at a time
_CELL_M = 100.0  # smooth fields vary over kilometres; 100 m cells keep them cheap at any scene size
_MIN_GRID = 256  # draw fields on at least 25 km so a small tile is a crop of a realistic field
_SEA_DB_AT_1MS = -27.0
_DB_PER_DECADE_WIND = 20.0
_DB_PER_DEGREE = 0.35
_LOOKALIKE_DROP_DB = -3.0  # a low-wind patch is a look-alike where it is as dark as weak oil


@dataclass(frozen=True)
class _Mode:
    pixel_size: float
    looks: float
    incidence: tuple[float, float]
    swath_m: float
    polarisation: str
    nesz_db: float
    resolution_m: float


MODES = {
    "EW_HH": _Mode(25.0, 10.0, (18.9, 47.0), 400e3, "HH", -25.0, 90.0),
    "IW_VV": _Mode(10.0, 4.4, (29.1, 46.0), 250e3, "VV", -25.0, 20.0),
}


@dataclass(frozen=True)
class SceneSpec:
    """Everything that decides a synthetic scene; the same spec always gives the same arrays."""

    height: int = 1024
    width: int = 1024
    mode: str = "EW_HH"
    pixel_size: float | None = None
    seed: int = 0
    n_seeps: int = 3
    n_ships: int = 4
    n_lookalikes: int = 3
    land: bool = False
    nodata_border: bool = False
    crs: str = "EPSG:32636"
    origin: tuple[float, float] = (449000.0, 8360000.0)
    seep_sites: tuple[tuple[float, float], ...] = ()
    """Seeps at these (row, col) pixel positions instead of n_seeps random ones: a time series of scenes
    over one area shares its seeps (engine/archive/synth_archive.py)."""
    more_lookalikes: bool = False
    """Rain cells, a sea-ice edge and sub-swath noise bands too. Off by default: drawn after everything else, they
    leave every scene made without them bit-identical, so the bundled synthetic model's command still remakes it."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"Unknown acquisition mode {self.mode!r}.", f"Use one of {', '.join(MODES)}.")
        if self.height < 1 or self.width < 1:
            raise InputError(
                f"Scene size {self.height} x {self.width} is empty.", "Give a positive height and width."
            )
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise InputError(f"Pixel size {self.pixel_size} is not positive.", "Give metres per pixel, e.g. 25.")
        if min(self.n_seeps, self.n_ships, self.n_lookalikes) < 0:
            raise InputError("Counts of seeps, ships and look-alikes cannot be negative.")

    @property
    def pixel_m(self) -> float:
        return self.pixel_size if self.pixel_size is not None else MODES[self.mode].pixel_size

    @property
    def looks(self) -> float:
        return MODES[self.mode].looks

    @property
    def polarisation(self) -> str:
        return MODES[self.mode].polarisation


@dataclass(frozen=True)
class Stamp:
    """One rendered feature: coverage (0..1) and effect on a pixel window of the scene.

    Effect is the attenuation (1 - damping ratio) for dark features and the gain in dB for ships;
    the label goes where coverage reaches one half, i.e. inside the feature's nominal outline.
    """

    row: int
    col: int
    cover: np.ndarray
    effect: np.ndarray
    label: int


@dataclass
class _Layout:
    """The scene drawn once, before any pixel: low-resolution fields, features, swath edge."""

    factor: int
    sea_db: np.ndarray
    drop_db: np.ndarray
    land_level: np.ndarray | None
    land_db: np.ndarray | None
    range_db: np.ndarray
    stamps: list[Stamp]
    nodata_cols: np.ndarray | None
    nodata_left: bool
    nesz: np.ndarray | None = None
    """Linear NESZ per column where it varies across the swath (``more_lookalikes``); else the mode's."""


def generate(spec: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """Return (sigma0 linear float32 HxW, class mask uint8 HxW)."""
    return _generate(spec, silent(), 1)


def _generate(spec: SceneSpec, progress: Progress, total_parts: int) -> tuple[np.ndarray, np.ndarray]:
    # Callers that also write report the rendering as the first of total_parts equal parts.
    layout = _layout(spec)
    sigma0 = np.empty((spec.height, spec.width), np.float32)
    mask = np.empty((spec.height, spec.width), np.uint8)
    n_blocks = -(-spec.height // _BLOCK_ROWS)
    for block in range(n_blocks):
        r0, r1 = block * _BLOCK_ROWS, min(spec.height, (block + 1) * _BLOCK_ROWS)
        sigma0[r0:r1], mask[r0:r1] = _render_block(spec, layout, r0, r1)
        progress.update("synth", block + 1, n_blocks * total_parts)
    return sigma0, mask


# --- smooth random fields ---------------------------------------------------------------------------


def _noise2d(rng: np.random.Generator, shape: tuple[int, int], cell_m: float, spectrum: Spectrum) -> np.ndarray:
    """Gaussian field of unit variance with the given amplitude spectrum (of ky, kx in cycles/m).

    Drawn on at least _MIN_GRID cells and cropped, so a small scene has the variance a crop of a
    large one would have instead of being stretched to unit variance on its own.
    """
    full = (max(shape[0], _MIN_GRID), max(shape[1], _MIN_GRID))
    ky = np.fft.fftfreq(full[0], d=cell_m)[:, None]
    kx = np.fft.rfftfreq(full[1], d=cell_m)[None, :]
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(full)) * spectrum(ky, kx), s=full)
    field = field[: shape[0], : shape[1]]
    std = field.std()
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _isotropic(scale_m: float, beta: float) -> Spectrum:
    """Power-law spectrum flattening above scale_m: larger beta gives smoother, blobbier fields."""
    return lambda ky, kx: (1.0 + (np.hypot(ky, kx) * scale_m) ** 2) ** (-beta / 4.0)


def _wind_rows(spacing_m: float, direction: float) -> Spectrum:
    """Band-pass around one cross-wind wavenumber, narrow along the wind: streaks along the wind."""

    def spectrum(ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
        along = ky * math.sin(direction) + kx * math.cos(direction)
        across = kx * math.sin(direction) - ky * math.cos(direction)
        return np.exp(-0.5 * ((np.abs(across) * spacing_m - 1.0) / 0.6) ** 2 - 0.5 * (along * spacing_m * 2.5) ** 2)

    return spectrum


def _noise1d(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    """Smooth unit-variance noise along a path, correlated over about corr samples."""
    sigma = max(corr, 1.0)
    half = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    smooth = np.convolve(rng.standard_normal(n + 2 * half), kernel, mode="valid")
    return smooth / (np.linalg.norm(kernel) or 1.0)


def _upsample(grid: np.ndarray, factor: int, r0: int, r1: int, width: int) -> np.ndarray:
    """Bilinear interpolation of a field whose node i+1 sits on pixel i * factor, for rows r0:r1."""
    gy = np.arange(r0, r1) / factor + 1.0
    gx = np.arange(width) / factor + 1.0
    iy, ix = gy.astype(np.intp), gx.astype(np.intp)
    wy = (gy - iy).astype(np.float32)[:, None]
    wx = (gx - ix).astype(np.float32)
    lo = iy[0]
    rows = grid[lo : iy[-1] + 2]
    along_x = rows[:, ix] * (1 - wx) + rows[:, ix + 1] * wx  # only the few grid rows this block needs
    return along_x[iy - lo] * (1 - wy) + along_x[iy - lo + 1] * wy


# --- feature geometry ----------------------------------------------------------------------------


def _stamp_stroke(
    points: np.ndarray, radii: np.ndarray, values: np.ndarray, label: int, shape: tuple[int, int]
) -> Stamp | None:
    """Render a stroke as overlapping soft discs along a densely sampled path (pixel units).

    Discs are placed every 0.4 radius so the union reads as a continuous tube however the width
    varies; edges are soft over a third of the radius because slick borders are diffuse.
    """
    keep = values > 0  # gaps in a fragmented stroke are neither dark nor labelled
    if not keep.any():
        return None
    points, radii, values = points[keep], radii[keep], values[keep]
    step = np.diff(points, axis=0, prepend=points[:1])
    reach = np.cumsum(np.hypot(step[:, 0], step[:, 1]) / (0.4 * radii))
    picks = np.minimum(np.searchsorted(reach, np.arange(0.0, reach[-1] + 1.0, 1.0)), len(reach) - 1)
    points, radii, values = points[picks], radii[picks], values[picks]
    soft = np.maximum(radii / 3.0, 0.7)
    pad = radii + soft
    top = max(int(np.floor((points[:, 0] - pad).min())), 0)
    left = max(int(np.floor((points[:, 1] - pad).min())), 0)
    bottom = min(int(np.ceil((points[:, 0] + pad).max())) + 1, shape[0])
    right = min(int(np.ceil((points[:, 1] + pad).max())) + 1, shape[1])
    if bottom <= top or right <= left:
        return None
    cover = np.zeros((bottom - top, right - left), np.float32)
    effect = np.zeros_like(cover)
    for (y, x), r, v, s, p in zip(points, radii, values, soft, pad):
        y0, y1 = max(int(y - p), top), min(int(y + p) + 2, bottom)
        x0, x1 = max(int(x - p), left), min(int(x + p) + 2, right)
        if y1 <= y0 or x1 <= x0:
            continue
        dist = np.hypot(np.arange(y0, y1)[:, None] - y, np.arange(x0, x1)[None, :] - x)
        disc = np.clip((r - dist) / s + 0.5, 0.0, 1.0).astype(np.float32)
        window = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        np.maximum(cover[window], disc, out=cover[window])
        np.maximum(effect[window], disc * v, out=effect[window])
    return Stamp(top, left, cover, effect, label)


def _seep_strand(
    rng: np.random.Generator, start: np.ndarray, heading: float, ratio: float, px: float, width_scale: float = 1.0
) -> tuple[np.ndarray, ...]:
    """Path, radii (px) and attenuation of one oil strand drifting from a seep.

    The heading wanders smoothly around the drift (currents turn over hours while the oil drifts),
    the width grows downstream as the oil spreads, attenuation fades as it weathers, and gaps open
    more often downstream where the film breaks up.
    """
    length_m = rng.uniform(3e3, 18e3)
    step_m = min(px / 2.0, 10.0)
    n = max(int(length_m / step_m), 8)
    s = np.arange(n) / (n - 1)
    wander = rng.uniform(0.3, 1.1) * _noise1d(rng, n, rng.uniform(400.0, 1500.0) / step_m)
    cycles = length_m / rng.uniform(1e3, 4e3)
    meander = rng.uniform(0.0, 0.6) * np.sin(2 * np.pi * s * cycles + rng.uniform(0, 2 * np.pi))
    angle = heading + wander + meander
    points = start + np.cumsum(np.stack([np.sin(angle), np.cos(angle)], 1) * (step_m / px), axis=0)
    width_m = width_scale * (rng.uniform(60.0, 150.0) + rng.uniform(40.0, 200.0) * s**0.8)
    taper = np.sqrt(np.clip((1.0 - s) / 0.25, 0.0, 1.0)) * (0.5 + 0.5 * np.clip(s * length_m / 300.0, 0.0, 1.0))
    radii = np.maximum(width_m / 2.0 / px * (1.0 + 0.25 * _noise1d(rng, n, 300.0 / step_m)) * taper, 0.6)
    attenuation = (1.0 - ratio) * (1.0 - 0.4 * s**1.5)
    broken = _noise1d(rng, n, rng.uniform(150.0, 600.0) / step_m) < -1.5 + 3.0 * rng.uniform(0.4, 0.9) * s**1.5
    attenuation[broken] = 0.0
    return points, radii, attenuation


def seep_strands(rng: np.random.Generator, seep: np.ndarray, drift: float, px: float, shape: tuple[int, int],
                 width_scale: float = 1.0, faintest: float = 0.5) -> list[Stamp]:
    """The one to three strands a recurring seep has released, from within ~80 m of its source (row, col in
    pixels), drifting around ``drift`` (radians); oil of one seep damps alike (one damping ratio). ``width_scale``
    multiplies every strand's width (100-350 m at 1); the damping ratio is drawn from 0.2 to ``faintest``."""
    ratio = rng.uniform(0.2, faintest)
    stamps = []
    for _ in range(int(rng.integers(1, 4))):
        start = seep + rng.normal(0.0, 80.0 / px, 2)
        stamp = _stamp_stroke(*_seep_strand(rng, start, drift + rng.normal(0, 0.4), ratio, px, width_scale), OIL, shape)
        stamps += [stamp] if stamp is not None else []
    return stamps


def paint(stamps: list[Stamp], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(coverage 0..1, attenuation 0..1) of dark stamps on a grid of ``shape``, the strongest where they overlap."""
    cover = np.zeros(shape, np.float32)
    effect = np.zeros(shape, np.float32)
    for stamp in stamps:
        h, w = stamp.cover.shape
        window = (slice(stamp.row, stamp.row + h), slice(stamp.col, stamp.col + w))
        np.maximum(cover[window], stamp.cover[: shape[0] - stamp.row, : shape[1] - stamp.col], out=cover[window])
        np.maximum(effect[window], stamp.effect[: shape[0] - stamp.row, : shape[1] - stamp.col], out=effect[window])
    return cover, effect


def _eddy(
    rng: np.random.Generator, centre: np.ndarray, radius_px: float, px: float
) -> list[tuple[np.ndarray, ...]]:
    """Spiral filaments: surfactants gathered along an eddy's convergence lines, dark but curled."""
    turns, arms, sense = rng.uniform(0.8, 1.8), int(rng.integers(1, 3)), rng.choice([-1.0, 1.0])
    tilt, aspect = rng.uniform(0, np.pi), rng.uniform(1.0, 1.7)  # eddies are rarely circular
    shear = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]]) * [1.0, 1.0 / aspect]
    n = int(2 * np.pi * turns * radius_px * 2) + 16
    phi = np.linspace(0.0, 2 * np.pi * turns, n)
    arms_drawn = []
    for arm in range(arms):
        reach = radius_px * (phi / phi[-1]) ** 0.8 * (1.0 + 0.15 * _noise1d(rng, n, n / 8))
        a = sense * phi + rng.uniform(0, 2 * np.pi) + arm * np.pi
        points = centre + np.stack([reach * np.sin(a), reach * np.cos(a)], 1) @ shear.T
        width_m = rng.uniform(20.0, 50.0) * (1.0 + phi / phi[-1]) * (1.0 + 0.3 * _noise1d(rng, n, n / 40))
        radii = np.maximum(width_m / px, 0.6)
        attenuation = (1.0 - rng.uniform(0.25, 0.55)) * (1.0 - 0.4 * phi / phi[-1])
        attenuation[_noise1d(rng, n, n / 25) < -0.4] = 0.0
        arms_drawn.append((points, radii, attenuation))
    return arms_drawn


def _ship(rng: np.random.Generator, centre: np.ndarray, px: float, shape: tuple[int, int]) -> list[Stamp]:
    """A ship is a small bright rotated rectangle; half of them trail a dark turbulent wake."""
    length_m = rng.uniform(40.0, 300.0)
    half_len, half_wid = max(length_m / 2 / px, 0.6), max(length_m / 12 / px, 0.5)
    heading = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.sin(heading), np.cos(heading)])
    reach = int(half_len + half_wid) + 2
    y0, x0 = int(centre[0]) - reach, int(centre[1]) - reach
    yy, xx = np.mgrid[y0 : y0 + 2 * reach + 1, x0 : x0 + 2 * reach + 1]
    along = (yy - centre[0]) * direction[0] + (xx - centre[1]) * direction[1]
    across = (xx - centre[1]) * direction[0] - (yy - centre[0]) * direction[1]
    cover = np.clip(half_len + 0.5 - np.abs(along), 0, 1) * np.clip(half_wid + 0.5 - np.abs(across), 0, 1)
    cover = cover.astype(np.float32)
    gain = np.minimum(2.0 * cover, 1.0) * np.float32(rng.uniform(10.0, 20.0))  # labelled pixels get it all
    stamps = []
    if rng.random() < 0.5:
        n = 64
        back = np.linspace(half_len, half_len * rng.uniform(8.0, 20.0), n)
        points = centre - back[:, None] * direction
        radii = np.maximum(half_wid * np.linspace(1.5, 4.0, n), 0.6)
        wake = _stamp_stroke(points, radii, np.full(n, 1.0 - rng.uniform(0.4, 0.7)), LOOKALIKE, shape)
        stamps += [wake] if wake is not None else []
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + cover.shape[0], shape[0]), min(x0 + cover.shape[1], shape[1])
    if bottom > top and right > left:
        window = (slice(top - y0, bottom - y0), slice(left - x0, right - x0))
        stamps.append(Stamp(top, left, cover[window], gain[window], SHIP))
    return stamps


# --- layout ------------------------------------------------------------------------------------


def _layout(spec: SceneSpec) -> _Layout:
    rng = np.random.default_rng(spec.seed)
    mode, px, shape = MODES[spec.mode], spec.pixel_m, (spec.height, spec.width)
    factor = max(1, round(_CELL_M / px))
    cell = factor * px
    grid = (spec.height // factor + 3, spec.width // factor + 3)
    gy, gx = np.mgrid[0 : grid[0], 0 : grid[1]]
    gy, gx = (gy - 1.0) * factor, (gx - 1.0) * factor  # pixel coordinates of the grid nodes
    extent_m = max(spec.height, spec.width) * px

    wind_dir = rng.uniform(0, 2 * np.pi)
    wind = rng.uniform(4.5, 9.0) + rng.uniform(0.5, 1.5) * _noise2d(rng, grid, cell, _isotropic(15e3, 4.0))
    texture = rng.uniform(0.15, 0.45) * _noise2d(rng, grid, cell, _wind_rows(rng.uniform(0.8e3, 3e3), wind_dir))
    texture += rng.uniform(0.2, 0.5) * _noise2d(rng, grid, cell, _isotropic(1.5e3, 3.0))

    nodata_cols, nodata_left = None, bool(rng.random() < 0.5)
    if spec.nodata_border:
        rows = np.arange(spec.height)
        slope = math.tan(rng.uniform(-0.25, 0.25))
        edge = rng.uniform(0.04, 0.15) * spec.width + slope * (rows - spec.height / 2)
        edge += 2.0 * _noise1d(rng, spec.height, 20.0) + rng.integers(0, 2, spec.height)
        nodata_cols = np.clip(edge, 2, 0.4 * spec.width).astype(np.intp)

    near, far = mode.incidence
    offset_m = rng.uniform(0.0, max(mode.swath_m - spec.width * px, 0.0))
    incidence = near + (far - near) * np.clip((offset_m + np.arange(spec.width) * px) / mode.swath_m, 0.0, 1.0)
    near_west = bool(rng.random() < 0.5)  # ascending passes look east, descending ones west
    incidence = incidence if near_west else incidence[::-1]
    range_db = -_DB_PER_DEGREE * (incidence - 35.0)
    if mode.polarisation == "HH":
        range_db -= 1.0 + 0.1 * (incidence - 20.0)

    land_level = land_db = None
    if spec.land:
        side = rng.uniform(0, 2 * np.pi)
        toward = ((gy - spec.height / 2) * np.sin(side) + (gx - spec.width / 2) * np.cos(side)) / max(shape)
        coast = 0.1 * _noise2d(rng, grid, cell, _isotropic(extent_m / 3, 3.8))
        land_level = (toward - 0.5 + rng.uniform(0.15, 0.4) + coast).astype(np.float32)
        # Terrain is bright where slopes face the sensor (foreshortening) and dark behind ridges.
        slope = np.gradient(_noise2d(rng, grid, cell, _isotropic(4e3, 3.5)), axis=1)
        facing = -slope if near_west else slope
        land_db = -4.0 + 4.0 * np.tanh(facing / (facing.std() or 1.0))
        land_db += 1.5 * _noise2d(rng, grid, cell, _isotropic(500.0, 2.5))

    def usable(y: float, x: float) -> bool:
        """Seeps, ships and patches go on open sea inside the swath."""
        if not (0 <= y < spec.height and 0 <= x < spec.width):
            return False
        if nodata_cols is not None:
            edge = nodata_cols[int(y)] + 3
            if (x < edge) if nodata_left else (x >= spec.width - edge):
                return False
        return land_level is None or land_level[int(y / factor) + 1, int(x / factor) + 1] < -0.03

    def place(margin: float) -> np.ndarray | None:
        for _ in range(50):
            y, x = rng.uniform(margin, spec.height - margin), rng.uniform(margin, spec.width - margin)
            if usable(y, x):
                return np.array([y, x])
        return None

    if spec.seep_sites:
        seeps = [np.array(site, dtype=float) for site in spec.seep_sites]
    else:
        seeps = [p for p in (place(0.1 * min(shape)) for _ in range(spec.n_seeps)) if p is not None]
    multiplier = np.ones(grid, np.float32)
    outline = _noise2d(rng, grid, cell, _isotropic(3e3, 3.6))
    stamps: list[Stamp] = []
    for _ in range(spec.n_lookalikes):
        centre = place(0.0)
        if centre is None:
            continue
        if seeps and min(np.hypot(*(centre - s)) for s in seeps) * px < 2e3:
            centre = place(0.0)  # one retry keeps most patches off the seeps without ever looping
            if centre is None:
                continue
        size_px = min(rng.uniform(2e3, 15e3), rng.uniform(0.2, 0.5) * extent_m) / px
        if rng.random() < 0.5:
            aspect, turn = rng.uniform(1.0, 2.5), rng.uniform(0, np.pi)
            u = ((gy - centre[0]) * np.sin(turn) + (gx - centre[1]) * np.cos(turn)) / (size_px / 2)
            v = ((gx - centre[1]) * np.sin(turn) - (gy - centre[0]) * np.cos(turn)) / (size_px / 2 / aspect)
            inside = np.clip((1.0 - np.hypot(u, v) + 0.25 * outline) / 0.8, 0.0, 1.0)
            multiplier *= 1.0 - rng.uniform(0.45, 0.7) * inside**2 * (3.0 - 2.0 * inside)
        else:
            for arm in _eddy(rng, centre, size_px / 2, px):
                stamp = _stamp_stroke(*arm, LOOKALIKE, shape)
                stamps += [stamp] if stamp is not None else []

    drift = wind_dir + rng.normal(0.0, 0.6)
    for seep in seeps:
        stamps += seep_strands(rng, seep, drift, px, shape)
    for _ in range(spec.n_ships):
        centre = place(0.0)
        if centre is not None:
            stamps += _ship(rng, centre, px, shape)

    nesz = None
    if spec.more_lookalikes:
        columns_m = offset_m + np.arange(spec.width) * px
        nesz = _subswath_nesz(rng, mode, columns_m if near_west else columns_m[::-1])
        for _ in range(int(rng.integers(0, 3))):
            centre = place(0.0)
            if centre is not None:
                texture += _rain_cell(rng, centre, gy, gx, px, multiplier)
    drop_db = _DB_PER_DECADE_WIND * np.log10(multiplier)
    sea_db = _SEA_DB_AT_1MS + _DB_PER_DECADE_WIND * np.log10(np.clip(wind, 2.0, 12.0) * multiplier) + texture
    if spec.more_lookalikes and rng.random() < 0.5:
        drop_db = _ice_edge(rng, gy, gx, shape, px, cell, [(int(y / factor) + 1, int(x / factor) + 1) for y, x in seeps], sea_db, drop_db)

    stamps.sort(key=lambda s: {LOOKALIKE: 0, OIL: 1, SHIP: 2}[s.label])  # label priority: later wins
    return _Layout(
        factor,
        sea_db.astype(np.float32),
        drop_db.astype(np.float32),
        land_level,
        land_db.astype(np.float32) if land_db is not None else None,
        range_db.astype(np.float32),
        stamps,
        nodata_cols,
        nodata_left,
        nesz.astype(np.float32) if nesz is not None else None,
    )


def _subswath_nesz(rng: np.random.Generator, mode: _Mode, range_m: np.ndarray) -> np.ndarray:
    """Linear NESZ at each column's ground range: lowest at each sub-swath's centre, rising by 3-6 dB towards its
    edges (the elevation antenna pattern), five sub-swaths in EW, three in IW."""
    n = 5 if mode.polarisation == "HH" else 3
    within = (range_m / (mode.swath_m / n)) % 1.0
    rise = rng.uniform(3.0, 6.0)
    nesz_db = mode.nesz_db - rise / 3.0 + rise * (2.0 * within - 1.0) ** 2
    return 10.0 ** (nesz_db / 10.0)


def _rain_cell(rng: np.random.Generator, centre: np.ndarray, gy: np.ndarray, gx: np.ndarray, px: float,
               multiplier: np.ndarray) -> np.ndarray:
    """One convective rain cell, 2-8 km across: its rain-damped core darkens ``multiplier`` in place (a look-alike
    where it drops more than 3 dB); returned is the dB its gust front adds on the downdraft's side."""
    radius = rng.uniform(1e3, 4e3) / px
    r = np.hypot(gy - centre[0], gx - centre[1]) / radius
    multiplier *= (1.0 - rng.uniform(0.4, 0.75) * np.exp(-((r / 0.6) ** 2))).astype(np.float32)
    facing = 0.5 + 0.5 * np.cos(np.arctan2(gy - centre[0], gx - centre[1]) - rng.uniform(0, 2 * np.pi))
    return (rng.uniform(1.5, 4.0) * facing * np.exp(-(((r - 1.1) / 0.3) ** 2))).astype(np.float32)


def _ice_edge(rng: np.random.Generator, gy: np.ndarray, gx: np.ndarray, shape: tuple[int, int], px: float, cell: float,
              seeps: list[tuple[int, int]], sea_db: np.ndarray, drop_db: np.ndarray) -> np.ndarray:
    """A sea-ice edge across the scene, written into ``sea_db``: a 0.5-3 km band of grease ice along a wavy front,
    6-10 dB under the sea (damped like oil, but broad and following the front: a look-alike), and textured pack ice
    (-16 to -11 dB) beyond, kept 2 km clear of the ``seeps`` (their grid nodes). Returns ``drop_db`` with the band in it, so
    that the band is labelled a look-alike."""
    side = rng.uniform(0, 2 * np.pi)
    across = ((gy - shape[0] / 2) * np.sin(side) + (gx - shape[1] / 2) * np.cos(side)) * px
    front = rng.uniform(-0.3, 0.3) * max(shape) * px + 2e3 * _noise2d(rng, gy.shape, cell, _isotropic(8e3, 3.5))
    band = rng.uniform(500.0, 3e3)
    beyond = across - front
    beyond -= max([beyond[node] + 2e3 for node in seeps if beyond[node] + 2e3 > 0], default=0.0)
    grease = (beyond > 0) & (beyond < band)
    pack = beyond >= band
    floes = rng.uniform(-16.0, -11.0) + 2.5 * _noise2d(rng, gy.shape, cell, _isotropic(400.0, 2.5))
    damping = np.float32(-rng.uniform(6.0, 10.0))
    sea_db[grease] += damping
    sea_db[pack] = floes[pack]
    return np.where(grease, np.minimum(drop_db, damping), drop_db).astype(np.float32)


def _speckle_kernel(spec: SceneSpec) -> np.ndarray:
    """1-D Gaussian with a standard deviation of half the resolution cell, in pixels.

    Speckle filtered this way keeps a correlation of about 0.5 at three EW pixels, close to what the
    real EW GRDM tiles at 25 m in resources/samples show.
    """
    sigma = MODES[spec.mode].resolution_m / spec.pixel_m / 2.0
    if sigma < 0.5:
        return np.ones(1, np.float32)
    offsets = np.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def speckle(spec: SceneSpec, r0: int, r1: int) -> np.ndarray:
    """Unit-mean speckle of L looks for rows r0:r1, correlated over the resolution cell.

    Each row has its own seed, so the halo rows a block needs from its neighbours are the same numbers
    they draw themselves. Filtering gamma(L') noise with weights w leaves a field of about
    L' / sum(w_i w_j)^2 looks, so L' is set for the mode's L after filtering.
    """
    kernel = _speckle_kernel(spec)
    halo = kernel.size // 2
    looks = spec.looks * float((kernel**2).sum()) ** 2
    rows = range(r0 - halo, r1 + halo)
    noise = np.stack([
        np.random.default_rng([spec.seed, row + halo]).standard_gamma(looks, spec.width + 2 * halo, dtype=np.float32)
        for row in rows
    ]) / np.float32(looks)
    if halo == 0:
        return noise
    along = sum(w * noise[:, i : i + spec.width] for i, w in enumerate(kernel))
    return sum(w * along[i : i + r1 - r0] for i, w in enumerate(kernel))


def _render_block(
    spec: SceneSpec, layout: _Layout, r0: int, r1: int
) -> tuple[np.ndarray, np.ndarray]:
    f, width = layout.factor, spec.width
    db = _upsample(layout.sea_db, f, r0, r1, width) + layout.range_db
    sigma0 = np.exp(db * np.float32(math.log(10) / 10))
    calm = _upsample(layout.drop_db, f, r0, r1, width) < _LOOKALIKE_DROP_DB
    mask = np.where(calm, LOOKALIKE, SEA).astype(np.uint8)
    for stamp in layout.stamps:
        top, bottom = max(stamp.row, r0), min(stamp.row + stamp.cover.shape[0], r1)
        if bottom <= top:
            continue
        local = slice(top - stamp.row, bottom - stamp.row)
        target = (slice(top - r0, bottom - r0), slice(stamp.col, stamp.col + stamp.cover.shape[1]))
        effect = stamp.effect[local]
        sigma0[target] *= 10.0 ** (effect / 10.0) if stamp.label == SHIP else 1.0 - effect
        mask[target][stamp.cover[local] >= 0.5] = stamp.label
    if layout.land_level is not None:
        land = _upsample(layout.land_level, f, r0, r1, width) > 0
        land_sigma0 = np.exp(_upsample(layout.land_db, f, r0, r1, width) * np.float32(math.log(10) / 10))
        sigma0[land] = land_sigma0[land]
        mask[land] = LAND
    sigma0 += layout.nesz[None, :] if layout.nesz is not None else np.float32(10.0 ** (MODES[spec.mode].nesz_db / 10.0))
    sigma0 *= speckle(spec, r0, r1)
    np.maximum(sigma0, np.float32(1e-10), out=sigma0)  # zero is nodata: a valid pixel must never be 0
    if layout.nodata_cols is not None:
        cols = np.arange(width)[None, :]
        edge = layout.nodata_cols[r0:r1, None]
        outside = cols < edge if layout.nodata_left else cols >= width - edge
        sigma0[outside] = 0.0
        mask[outside] = SEA
    return sigma0, mask


# --- writing -----------------------------------------------------------------------------------


def _encode(sigma0: np.ndarray, encoding: str, stretch: Stretch) -> np.ndarray:
    valid = sigma0 > 0
    if encoding == "float32_linear":
        return sigma0
    db = 10.0 * np.log10(np.where(valid, sigma0, 1.0))
    if encoding == "float32_db":
        return np.where(valid, db, DB_NODATA).astype(np.float32)
    if encoding == "uint16_dn":
        return np.where(valid, np.clip(np.rint(np.sqrt(sigma0) * DN_SCALE), 1, 65535), 0).astype(np.uint16)
    return np.rint(stretch.apply(np.where(valid, sigma0, np.nan))).astype(np.uint8)


def _db_stretch(sigma0: np.ndarray) -> Stretch:
    """Eq. 1 over the valid pixels, in row blocks so no scene-sized copy is made: the stretch detection uses.

    The stretch is in dB because a linear-power stretch lets ships and speckle peaks set the scale
    and crushes the sea into a handful of grey levels, unlike the uint8 products analysts exchange.
    """
    blocks = (sigma0[r0 : r0 + _BLOCK_ROWS] for r0 in range(0, sigma0.shape[0], _BLOCK_ROWS))
    return Stretch.fit("float32_linear", (np.where(block > 0, block, np.nan) for block in blocks))


def write_scene(
    spec: SceneSpec,
    path: str | Path,
    *,
    encoding: str = "float32_linear",
    label_path: str | Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write a GeoTIFF scene (tiled, deflate) on the spec's grid, band named "HH" or "VV" by mode.

    The optional class mask at label_path shares the grid (uint8, no nodata: 0 is sea).

    Encodings imitate the inputs the engine meets: "float32_linear" (calibrated sigma0, nodata 0),
    "float32_db" (10 log10 sigma0, nodata -9999), "uint16_dn" (amplitude DN of raw GRD, DN =
    sqrt(sigma0) * 1500, nodata 0) and "uint8" (dB stretched over mean +- 2 std to 1..255, nodata 0).
    The scale of the last two is kept in tags so tests can invert them. Existing files are replaced,
    atomically: a crash or cancel never leaves a half-written scene under the final name.
    """
    if encoding not in ENCODINGS:
        raise InputError(f"Unknown encoding {encoding!r}.", f"Use one of {', '.join(ENCODINGS)}.")
    progress = progress or silent()
    targets = [Path(path)] + ([Path(label_path)] if label_path is not None else [])
    for target in targets:
        if not target.parent.is_dir():
            raise OutputError(f"Folder {target.parent} does not exist.", "Create it or choose another output path.")
    sigma0, mask = _generate(spec, progress, 2)
    stretch = _db_stretch(sigma0) if encoding == "uint8" else Stretch("float32_linear")
    dtype = {"float32_linear": "float32", "float32_db": "float32", "uint16_dn": "uint16", "uint8": "uint8"}[encoding]
    profile = {
        "driver": "GTiff",
        "width": spec.width,
        "height": spec.height,
        "count": 1,
        "crs": spec.crs,
        "transform": Affine(spec.pixel_m, 0.0, spec.origin[0], 0.0, -spec.pixel_m, spec.origin[1]),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "num_threads": "ALL_CPUS",
    }
    tags = {"SYNTH_MODE": spec.mode, "SYNTH_SEED": str(spec.seed), "ENCODING": encoding}
    if encoding == "uint16_dn":
        tags["DN_SCALE"] = str(DN_SCALE)
    if encoding == "uint8":
        tags["STRETCH_DB_MIN"], tags["STRETCH_DB_MAX"] = (f"{stretch.mean + k * stretch.std:.6f}" for k in (-2, 2))
    n_blocks = -(-spec.height // _BLOCK_ROWS)
    nodata = DB_NODATA if encoding == "float32_db" else 0
    with ExitStack() as stack:
        stages = {folder: stack.enter_context(staged_folder(folder)) for folder in dict.fromkeys(t.parent for t in targets)}
        staged = [stages[target.parent] / target.name for target in targets]
        with rasterio.open(staged[0], "w", dtype=dtype, nodata=nodata, **profile) as dst:
            dst.set_band_description(1, spec.polarisation)
            dst.update_tags(**tags)
            for block in range(n_blocks):
                rows = slice(block * _BLOCK_ROWS, min(spec.height, (block + 1) * _BLOCK_ROWS))
                window = Window(0, rows.start, spec.width, rows.stop - rows.start)
                dst.write(_encode(sigma0[rows], encoding, stretch), 1, window=window)
                progress.update("synth", n_blocks + block + 1, 2 * n_blocks)
        if label_path is not None:
            with rasterio.open(staged[1], "w", dtype="uint8", **profile) as dst:
                dst.set_band_description(1, "class")
                dst.update_tags(CLASSES=",".join(f"{i}={n}" for i, n in enumerate(CLASS_NAMES)))
                dst.write(mask, 1)
    return targets[0]


def training_pairs(
    n: int, tile: int = 256, mode: str = "IW_VV", seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield n (sigma0 linear float32 tile x tile, mask uint8) pairs, each from its own small seeded scene.

    Four tiles in five have seeps, so a model sees mostly oil but also learns that dark
    look-alike-only tiles hold none; land, swath edges, ships and look-alikes vary tile to tile.
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        spec = SceneSpec(
            height=tile,
            width=tile,
            mode=mode,
            seed=int(rng.integers(2**31)),
            n_seeps=int(rng.integers(1, 4)) if i % 5 != 4 else 0,
            n_ships=int(rng.integers(0, 4)),
            n_lookalikes=int(rng.integers(0, 4)),
            land=bool(rng.random() < 0.15),
            nodata_border=bool(rng.random() < 0.1),
        )
        yield generate(spec)


# --- command line ------------------------------------------------------------------------------


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``synth`` subcommand on the engine's CLI."""
    p = subparsers.add_parser("synth")
    p.add_argument("--out", required=True, type=Path, help="scene GeoTIFF to write")
    p.add_argument("--labels", type=Path, help="class mask GeoTIFF (0 sea, 1 oil, 2 look-alike, 3 ship, 4 land)")
    p.add_argument("--size", nargs=2, type=int, default=[SceneSpec.height, SceneSpec.width], metavar=("H", "W"))
    p.add_argument("--encoding", choices=ENCODINGS, default="float32_linear")
    add_options(p, SceneSpec, {
        "mode": "acquisition mode",
        "pixel_size": "metres (default 25 for EW_HH, 10 for IW_VV)",
        "seed": "seed of everything drawn",
        "land": "add a coastline",
        "nodata_border": "leave a swath edge of no data",
        "more_lookalikes": "rain cells, a sea-ice edge and sub-swath noise bands too",
        "n_seeps": "seeps", "n_ships": "ships",
    }, mode={"choices": sorted(MODES)}, n_seeps={"flag": "--seeps"}, n_ships={"flag": "--ships"})
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    spec = options_from(args, SceneSpec, height=args.size[0], width=args.size[1])
    scene = write_scene(spec, args.out, encoding=args.encoding, label_path=args.labels, progress=progress)
    return {
        "scene": str(scene),
        "labels": str(args.labels) if args.labels is not None else None,
        "height": spec.height,
        "width": spec.width,
    }
