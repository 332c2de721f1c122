"""SAR statistics on inputs whose answer is known: gamma speckle of L looks, shifted value sets, white
and smoothed noise."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from engine.experiments.sar_stats import DB_SPAN, enl, histogram_distance, intensity, psd_distance, radial_psd, window_enl

from conftest import SAMPLES


def _stretched_speckle(looks: float, db_span: float, shape=(40, 64, 64), seed: int = 0) -> np.ndarray:
    """Gamma speckle of ``looks`` looks, in dB, stretched onto 1..255 over ``db_span`` dB and rounded to grey levels."""
    power = np.random.default_rng(seed).standard_gamma(looks, shape) / looks
    return np.clip(np.rint(128 + 10 * np.log10(power) * 254 / db_span), 1, 255)


@pytest.mark.parametrize("looks", [1.0, 4.4, 10.0])
def test_enl_of_gamma_speckle_is_its_number_of_looks(looks):
    # A 100 dB span clips almost nothing even of single-look speckle's deep fades, so nearly every window counts.
    tiles = _stretched_speckle(looks, db_span=100.0)
    assert window_enl(tiles, db_span=100.0).size > 0.95 * 40 * 16
    assert enl(tiles, db_span=100.0) == pytest.approx(looks, rel=0.08)


def test_enl_leaves_out_slick_and_clipped_windows_and_depends_on_the_assumed_span():
    tiles = _stretched_speckle(10.0, db_span=40.0)
    slick = np.zeros(tiles.shape, dtype=bool)
    slick[:, :16, :16] = True  # one window of every tile
    tiles[:, 40, 40] = 255  # a clipped pixel in another
    assert window_enl(tiles, slick, db_span=40.0).size == 40 * 14
    # The same grey levels read with half the span look half as contrasted in dB: about 4x the looks.
    assert enl(tiles, db_span=20.0) == pytest.approx(4 * enl(tiles, db_span=40.0), rel=0.15)
    assert np.isnan(enl(np.full((2, 32, 32), 255.0)))


def test_intensity_undoes_the_db_stretch():
    assert intensity(np.array([128.0]))[0] == pytest.approx(1.0)
    assert intensity(np.array([128.0 + 254 / DB_SPAN * 10]))[0] == pytest.approx(10.0)  # +10 dB


def test_histogram_distance_is_zero_for_identical_sets_and_grows_with_a_shift():
    tiles = _stretched_speckle(10.0, db_span=80.0)  # values well inside 1..255, so a shift moves every one
    assert histogram_distance(tiles, tiles.copy()) == 0.0
    assert histogram_distance(tiles, tiles[::-1]) == 0.0  # a different order of the same values
    distances = [histogram_distance(tiles, tiles + d) for d in (1, 5, 20)]
    assert distances == pytest.approx([1, 5, 20], abs=1e-9)
    assert histogram_distance(tiles, tiles[:10]) < 1.0  # a subset of the same distribution is close
    # To a single value c the distance is E|x - c|: here the spread around the mean, which a mean alone misses.
    assert histogram_distance(tiles, np.full_like(tiles, 128)) == pytest.approx(np.abs(tiles - 128).mean())


def test_psd_distance_tells_white_from_smoothed_noise():
    rng = np.random.default_rng(1)
    white = 128 + 30 * rng.standard_normal((32, 64, 64))
    other_white = 128 + 30 * rng.standard_normal((32, 64, 64))
    blurred = white - 128
    for _ in range(2):  # two passes of a circular 3 x 3 box blur
        blurred = sum(np.roll(blurred, (dy, dx), axis=(1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    smoothed = 128 + 30 * blurred / blurred.std()
    spectrum = radial_psd(white)
    assert spectrum.shape == (32,) and np.ptp(10 * np.log10(spectrum)) < 3  # flat within the estimate's noise
    assert psd_distance(white, white) == 0.0
    assert psd_distance(white, other_white) < 0.5
    assert psd_distance(white, smoothed) > 10  # same variance, its power moved to low frequencies
    with pytest.raises(ValueError):
        psd_distance(white, white[:, :32, :32])


def test_real_scenes_are_closer_to_each_other_than_to_unstructured_noise():
    def tiles(sample: str) -> np.ndarray:
        with rasterio.open(SAMPLES / sample / "raw_mosaic.tif") as ds:
            v = ds.read(1)[:768, :768].astype(np.float64)
        return v.reshape(12, 64, 12, 64).transpose(0, 2, 1, 3).reshape(-1, 64, 64)

    one, two = tiles("sample_1"), tiles("sample_2")
    noise = np.clip(np.random.default_rng(2).normal(one.mean(), one.std(), one.shape), 1, 255)
    assert psd_distance(one, two) < psd_distance(one, noise)
    assert 5 < enl(one) < 30 and 5 < enl(two) < 30  # real EW sea, with the assumed 10 dB stretch
