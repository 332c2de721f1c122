"""Image statistics that tell SAR tiles apart, for judging generated tiles against real ones.

Tiles are eq. 1-stretched dB values: 1..255 spanning mean +- 2 sigma of their scene's dB values. Three
views of a set of tiles, each reduced to one comparison with a reference set:

* Grey-level histogram: the 1-D Wasserstein (earth mover's) distance of the two sets' pooled values, in
  grey levels. It reads as "how far, on average, the values have to move", so a set that is 10 levels too
  dark scores 10, whatever the shape; a Jensen-Shannon divergence saturates as soon as the histograms
  stop overlapping and says nothing of how far apart they are.
* Speckle: the equivalent number of looks, ENL = mean^2 / variance of the linear intensity in windows
  of sea. A stretched value v is converted back to a relative intensity I = 10^((v - 128) * S / 254 / 10),
  S being the dB span of the stretch (4 sigma of the scene). The bundled tiles do not say what S was, so
  it is an assumption (``DB_SPAN``) shared by every set compared: ENL scales about as 1 / S^2, so the
  absolute number depends on it, the ratio between two sets hardly at all. The intensity's unknown scale
  (the stretch's mean) cancels in mean^2 / variance.
* Texture: the radially averaged power spectrum (mean over tiles, Hann-windowed, tile mean removed); the
  distance is the root mean square difference of the two log spectra over the non-zero radial
  frequencies, in dB. Speckle correlation, wind streaks and slick edges all live in its shape.
"""

from __future__ import annotations

import numpy as np

DB_SPAN = 10.0
"""Assumed dB span of the eq. 1 stretch (4 sigma): about 2.5 dB of scene standard deviation, speckle of
EW's ~10 looks (1.4 dB) plus wind texture. With it the five bundled real scenes have median window ENLs
of 8 to 19, around the nominal ~10 of Sentinel-1 EW GRDM products (8 dB would give 13 to 30, 12 dB 5 to 13)."""
ENL_WINDOW = 16
"""Window side in pixels: speckle is correlated over about 3 EW pixels, so smaller windows hold too few
independent looks for a stable variance."""
LEVELS = 256


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance between the value distributions of two sets of stretched tiles, in grey levels.

    Computed from histograms of unit-wide bins over 0..255 as the area between the two cumulative
    distributions; any shapes, any counts.
    """
    cdf = [np.cumsum(np.histogram(np.asarray(v, dtype=np.float64).ravel(), bins=LEVELS, range=(0, LEVELS))[0]) for v in (a, b)]
    return float(np.abs(cdf[0] / cdf[0][-1] - cdf[1] / cdf[1][-1]).sum())


def intensity(tiles: np.ndarray, db_span: float = DB_SPAN) -> np.ndarray:
    """Relative linear intensity of stretched values (see the module's docstring)."""
    return 10.0 ** ((np.asarray(tiles, dtype=np.float64) - 128.0) * (db_span / 254.0) / 10.0)


def window_enl(tiles: np.ndarray, slick: np.ndarray | None = None, window: int = ENL_WINDOW, db_span: float = DB_SPAN) -> np.ndarray:
    """ENL of every non-overlapping ``window``-pixel square of ``tiles`` (N, H, W) that holds only sea.

    Windows with a slick pixel (``slick``, same shape, where labels are known) are left out, and so are
    windows touching the stretch's clip levels (1 and 255) or no data (0), where the intensity is not the
    sensor's. Texture inside a window lowers its ENL; the median over windows (``enl``) is robust to the
    few windows that straddle a front.
    """
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape
    rows, cols = h // window, w // window

    def windows(a: np.ndarray) -> np.ndarray:
        a = a[:, : rows * window, : cols * window].reshape(n, rows, window, cols, window)
        return a.transpose(0, 1, 3, 2, 4).reshape(-1, window * window)

    values = windows(tiles)
    keep = (values > 1).all(axis=1) & (values < 255).all(axis=1)
    if slick is not None:
        keep &= ~windows(np.asarray(slick, dtype=bool)).any(axis=1)
    power = intensity(values[keep], db_span)
    return power.mean(axis=1) ** 2 / power.var(axis=1, ddof=1)


def enl(tiles: np.ndarray, slick: np.ndarray | None = None, window: int = ENL_WINDOW, db_span: float = DB_SPAN) -> float:
    """Median window ENL of a set of tiles; NaN when no window qualifies."""
    values = window_enl(tiles, slick, window, db_span)
    return float(np.median(values)) if values.size else float("nan")


def radial_psd(tiles: np.ndarray) -> np.ndarray:
    """Mean radially averaged power spectrum of square tiles (N, S, S), at integer radii 1..S/2 (cycles per tile)."""
    tiles = np.asarray(tiles, dtype=np.float64)
    size = tiles.shape[-1]
    if tiles.shape[-2] != size:
        raise ValueError(f"radial_psd needs square tiles, got {tiles.shape[-2]} x {size}")
    taper = np.outer(np.hanning(size), np.hanning(size))
    centred = (tiles - tiles.mean(axis=(1, 2), keepdims=True)) * taper
    power = (np.abs(np.fft.fft2(centred)) ** 2).mean(axis=0)
    k = np.fft.fftfreq(size) * size
    radius = np.rint(np.hypot(*np.meshgrid(k, k, indexing="ij"))).astype(int).ravel()
    sums = np.bincount(radius, weights=power.ravel())
    counts = np.bincount(radius)
    return sums[1 : size // 2 + 1] / counts[1 : size // 2 + 1]


def psd_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of the two sets' log radial power spectra, in dB (0 for identical spectra)."""
    pa, pb = radial_psd(a), radial_psd(b)
    if pa.shape != pb.shape:
        raise ValueError(f"tile sizes differ: {2 * pa.size} vs {2 * pb.size} pixels")
    return float(np.sqrt(np.mean((10.0 * np.log10(pa / pb)) ** 2)))
