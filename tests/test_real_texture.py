"""Real-texture training data: the composited slick's physics, the validation split, the tile mix."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion, laplace

from engine.data.bundled import ARCTIC, NORTH_SEA
from engine.data.real_scenes import load_grd, load_labelled
from engine.data.real_texture import VISIBLE_DB, Mix, composite_seep, darken_side, split_scene, training_tiles, transplant_slick


def _sea(level: float, shape=(256, 256), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(level + 20 * rng.standard_normal(shape), 1, 255).astype(np.float32)


def _composite(values: np.ndarray, level: float, seed: int = 3, dn_per_db: float = 30.0):
    return composite_seep(values, np.random.default_rng(seed), dn_per_db, 25.0, level)


def test_slick_darkens_only_inside_strands_and_keeps_the_speckle():
    sea = _sea(130.0)
    out, slick = _composite(sea, 130.0)
    assert slick.sum() > 50
    drop = out - sea
    assert np.all(drop <= 1e-4)  # oil only damps
    changed = drop < -1e-3
    # The drop is a smooth factor in dB, so the real speckle survives: pixel-to-pixel differences of the drop
    # are small against the speckle's own (but at the soft edges of the thinnest strands).
    interior = binary_erosion(slick & (out > 1) & (sea < 254), iterations=1)
    assert interior.sum() > 20
    assert np.median(np.abs(laplace(drop))[interior]) < 0.25 * np.median(np.abs(laplace(sea))[interior])
    # Labelled pixels are at least VISIBLE_DB darker; nothing outside the strands changed much.
    assert np.all(drop[slick] <= 30.0 * VISIBLE_DB + 1e-3)
    assert changed.sum() < 0.5 * sea.size


def test_no_slick_shows_on_sea_too_calm_to_damp():
    level = 130.0
    calm = _sea(level - 6 * 30.0 + 60.0)  # background 4 dB under the scene's level: little Bragg scattering left
    out_calm, slick_calm = _composite(calm, level)
    out_wind, slick_wind = _composite(_sea(level), level)
    assert slick_calm.sum() < 0.2 * slick_wind.sum()
    assert np.abs(out_calm - calm).max() < np.abs(out_wind - _sea(level)).max()


def test_no_data_stays_no_data():
    sea = _sea(130.0)
    sea[:, :100] = 0.0
    out, slick = _composite(sea, 130.0)
    assert np.all(out[:, :100] == 0.0) and not slick[:, :100].any()


def _donor(darkness: float, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A crop of sea at 130 with a broad band ``darkness`` levels darker, and the band as its analyst's slick."""
    source = _sea(130.0, seed=seed)
    mask = np.zeros(source.shape, bool)
    mask[100:130, 40:220] = True
    return np.where(mask, np.clip(source - darkness, 1, 255), source).astype(np.float32), mask


def test_a_transplanted_slick_darkens_the_new_sea_inside_its_mask_only_and_keeps_that_sea_s_speckle():
    source, mask = _donor(120.0)
    sea = _sea(130.0, seed=9)
    out, slick = transplant_slick(sea, source, mask, 30.0, 25.0, 130.0)
    drop = out - sea
    assert np.all(drop[~mask] == 0) and np.all(drop <= 0)
    assert slick.sum() > 0.8 * mask.sum() and not (slick & ~mask).any()
    assert np.all(drop[slick] <= 30.0 * VISIBLE_DB)
    inner = binary_erosion(mask, iterations=4)  # the smoothed darkness is flat inside the band: the new sea's speckle shows
    assert np.corrcoef(out[inner], sea[inner])[0, 1] > 0.9
    # A donor crop no darker inside its slick than around it gives nothing; calm new sea shows no slick either.
    flat, _ = _donor(0.0)
    assert not transplant_slick(sea, flat, mask, 30.0, 25.0, 130.0)[1].any()
    calm = _sea(35.0, seed=9)  # 5.5 dB under a scene level of 200, at 30 levels a dB: no Bragg waves to damp
    calm_out, calm_slick = transplant_slick(calm, source, mask, 30.0, 25.0, 200.0)
    assert not calm_slick.any() and np.array_equal(calm_out, calm)


def test_transplant_tiles_carry_real_slicks_onto_other_crops_and_the_bundled_mix_draws_none():
    scenes = [load_labelled(scene, 25.0) for scene in ARCTIC[:2]]
    tiles = training_tiles(scenes, None, 6, 128, 2, Mix(labelled=0, composite=0, grd=0, synthetic=0, transplant=1))
    assert set(tiles.kind) == {"transplant"} and sum(int(y.sum()) for y in tiles.y) > 500
    assert Mix().transplant == 0 and "transplant" not in training_tiles(scenes, None, 12, 128, 2).kind


def test_lookalike_mix_changes_the_synthetic_tiles_only():
    """The look-alikes are drawn last from each synthetic scene's own seed: every other tile of the set stays as it was."""
    scenes = [load_labelled(ARCTIC[0], 25.0)]
    mix = dict(labelled=1, composite=1, grd=0, synthetic=2)
    plain = training_tiles(scenes, None, 10, 128, 4, Mix(**mix))
    more = training_tiles(scenes, None, 10, 128, 4, Mix(**mix, synthetic_lookalikes=True))
    assert plain.kind == more.kind and "synthetic" in plain.kind and len(set(plain.kind)) == 3
    same = [np.array_equal(x, y) for x, y in zip(plain.x, more.x)]
    assert all(s for s, kind in zip(same, plain.kind) if kind != "synthetic")
    assert not all(s for s, kind in zip(same, plain.kind) if kind == "synthetic")


def test_validation_band_holds_slick_and_training_never_sees_it():
    scene = load_labelled(ARCTIC[0], 25.0)
    train, val = split_scene(scene, 0.3, gap=32)
    assert val.slick.sum() >= 0.3 * scene.slick.sum()
    assert not (train.known & val.known).any()
    assert np.all(train.values[val.known] == 0.0)  # not even as context
    # the gap: no training pixel within 32 px of a validation pixel, along the cut
    rows = np.flatnonzero(val.known.any(axis=1))
    cols = np.flatnonzero(val.known.any(axis=0))
    near = np.zeros_like(val.known)
    near[max(rows[0] - 32, 0): rows[-1] + 33, max(cols[0] - 32, 0): cols[-1] + 33] = True
    assert not (train.known & near).any()


def test_north_sea_tiles_are_restretched_and_resampled():
    scene = load_labelled(NORTH_SEA[0], 25.0)
    assert scene.values.shape == (358, 358)  # 448 px at 20 m
    valid = scene.values[scene.values > 0]
    assert 45 < valid.std() < 75  # eq. 1: mean +- 2 sigma over 254 levels
    assert scene.slick.any()


def test_tiles_are_reproducible_and_follow_the_mix():
    scenes = [load_labelled(ARCTIC[0], 25.0), load_labelled(NORTH_SEA[0], 25.0)]
    grd = load_grd()
    a = training_tiles(scenes, grd, 12, 128, seed=5, mix=Mix(labelled=1, composite=1, grd=1, synthetic=0))
    b = training_tiles(scenes, grd, 12, 128, seed=5, mix=Mix(labelled=1, composite=1, grd=1, synthetic=0))
    assert all(np.array_equal(x, y) for x, y in zip(a.x, b.x))
    assert "synthetic" not in a.kind and len(set(a.kind)) >= 2
    for x, y, v in zip(a.x, a.y, a.valid):
        assert x.shape == y.shape == v.shape == (128, 128)
        assert not np.any(y * (1 - v))  # a target is only where it is known
    with pytest.raises(ValueError, match="non-negative"):
        Mix(labelled=-1).shares()


def test_thinner_strands_are_the_same_strands_narrowed_and_change_the_composites_only():
    """``Mix.strand_width`` narrows each composited strand along the same path: the same random draws, fewer labelled
    pixels, all within a few pixels of the wide strands; the labelled and synthetic tiles of a set stay as they were."""
    sea = _sea(130.0)
    wide = composite_seep(sea, np.random.default_rng(3), 30.0, 25.0, 130.0)[1]
    thin = composite_seep(sea, np.random.default_rng(3), 30.0, 25.0, 130.0, width_scale=0.6)[1]
    assert 0.3 * wide.sum() < thin.sum() < 0.8 * wide.sum()
    assert (thin & ~binary_dilation(wide, iterations=2)).sum() < 0.02 * thin.sum()
    scenes = [load_labelled(ARCTIC[0], 25.0)]
    mix = dict(labelled=1, composite=2, grd=0, synthetic=1)
    plain = training_tiles(scenes, None, 10, 128, 4, Mix(**mix))
    narrow = training_tiles(scenes, None, 10, 128, 4, Mix(**mix, strand_width=0.6))
    assert plain.kind == narrow.kind and "composite" in plain.kind
    same = [np.array_equal(y, z) for y, z in zip(plain.y, narrow.y)]
    assert all(s for s, kind in zip(same, plain.kind) if kind != "composite")
    assert sum(y.sum() for y, kind in zip(narrow.y, narrow.kind) if kind == "composite") < \
        sum(y.sum() for y, kind in zip(plain.y, plain.kind) if kind == "composite")


def test_fainter_oil_damps_the_same_strands_less():
    """``Mix.faintest`` widens the damping ratio's range from the same random draw: the same strands, no darker than before,
    and some fainter, while every labelled pixel stays at least ``VISIBLE_DB`` darker."""
    sea = _sea(130.0)
    strong, strong_slick = composite_seep(sea, np.random.default_rng(5), 30.0, 25.0, 130.0)
    faint, faint_slick = composite_seep(sea, np.random.default_rng(5), 30.0, 25.0, 130.0, faintest=0.7)
    assert np.all(faint >= strong - 1e-3) and (faint > strong + 1.0).any()
    assert faint_slick.sum() <= strong_slick.sum() and not (faint_slick & ~strong_slick).any()
    assert np.all((faint - sea)[faint_slick] <= 30.0 * VISIBLE_DB + 1e-3)


def test_a_front_darkens_one_side_of_real_sea_and_labels_nothing_new():
    """``darken_side`` leaves one side as it was and takes 1.5-4 dB off the other, no data staying no data; the front tiles
    of a set carry their crop's own labels only."""
    sea = _sea(130.0)
    sea[:, :5] = 0  # a no-data border
    darker = darken_side(sea, np.random.default_rng(2), 30.0)
    drop = (sea - darker)[sea > 0]
    assert np.all(darker[sea == 0] == 0) and np.all(drop >= -1e-3)
    assert (drop < 1e-3).mean() > 0.1 and ((drop > 1.5 * 30.0 - 1) & (drop < 4 * 30.0 + 1)).mean() > 0.1
    scene = load_labelled(ARCTIC[0], 25.0)
    unlabelled = dataclasses.replace(scene, slick=np.zeros_like(scene.slick))
    tiles = training_tiles([unlabelled], None, 12, 128, 4, Mix(labelled=1, composite=0, grd=0, synthetic=0, front=2))
    fronts = [(x, y) for x, y, kind in zip(tiles.x, tiles.y, tiles.kind) if kind == "front"]
    assert fronts and not any(y.any() for _, y in fronts)
