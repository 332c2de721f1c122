"""Scene inspection: value scales, bands, georeference, and the errors analysts get for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from engine.data.bundled import NORTH_SEA
from engine.data.north_sea import georeferenced
from engine.data.synth import SceneSpec, write_scene
from engine.errors import InputError
from engine.scenes.raster import inspect, utm_crs_for


def test_real_arctic_tile_is_recognised_as_stretched_8_bit(sample_scene):
    info = inspect(sample_scene)
    assert info.value_scale == "uint8_stretched"
    assert info.crs == "EPSG:32636" and info.utm_crs == "EPSG:32636"
    assert info.pixel_size == pytest.approx(25.0)
    assert 0.5 < info.valid_fraction <= 1.0
    assert "already stretched" in info.plan


def test_grd_file_is_geocoded_through_its_gcps(grd_scene):
    info = inspect(grd_scene, pixel_size=200)
    assert info.crs is None and info.has_gcps
    assert info.value_scale == "uint16_dn"
    assert info.polarisation == "VV"  # from the file name, as GRD measurement files carry it
    assert info.utm_crs == "EPSG:32618"  # off Cape Hatteras
    assert 150 < info.pixel_size < 250  # the README says about 200 m
    assert 0.9 < info.valid_fraction < 0.99  # about 5 % swath border is zero
    assert "ground control points" in info.plan


@pytest.mark.parametrize("encoding, scale", [
    ("float32_linear", "float32_linear"), ("float32_db", "float32_db"), ("uint16_dn", "uint16_dn"), ("uint8", "uint8_stretched"),
])
def test_value_scale_of_each_encoding(tmp_path, encoding, scale):
    path = write_scene(SceneSpec(height=128, width=128, seed=1), tmp_path / f"{encoding}.tif", encoding=encoding)
    info = inspect(path)
    assert info.value_scale == scale
    assert info.polarisation == "HH"
    assert info.needs_statistics is (encoding != "uint8")  # 8-bit grey levels are a stretch's output already


def test_8_bit_file_stretched_another_way_is_said(tmp_path, sample_scene):
    """The real North Sea tiles were stretched to 8 bits far narrower than eq. 1; an Arctic tile and the generator's
    8-bit scenes were not, and a generated scene squeezed into a narrow band of grey levels is."""
    assert not any("spread" in w for w in inspect(sample_scene).warnings)
    scene = write_scene(SceneSpec(height=256, width=256, seed=1), tmp_path / "wide.tif", encoding="uint8")
    assert not any("spread" in w for w in inspect(scene).warnings)
    with rasterio.open(scene) as ds:
        values, profile = ds.read(1), ds.profile
    narrow = np.where(values > 0, 100 + values // 5, 0).astype(np.uint8)
    with rasterio.open(tmp_path / "narrow.tif", "w", **profile) as dst:
        dst.write(narrow, 1)
    said = [w for w in inspect(tmp_path / "narrow.tif").warnings if "spread" in w]
    assert len(said) == 1 and "standard deviation 12 " in said[0]
    north_sea = georeferenced(NORTH_SEA[0], tmp_path / "north_sea")
    assert any("spread" in w for w in inspect(north_sea.image).warnings)


def _write(path, data, crs="EPSG:32636", transform=Affine(25, 0, 449000, 0, -25, 8360000), **extra):
    profile = dict(driver="GTiff", width=data.shape[-1], height=data.shape[-2], count=data.shape[0] if data.ndim == 3 else 1,
                   dtype=data.dtype, crs=crs, transform=transform, **extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data if data.ndim == 3 else data[None])
    return path


def test_band_chosen_by_polarisation_name(tmp_path):
    data = np.stack([np.full((32, 32), v, np.float32) for v in (0.01, 0.02)])
    path = _write(tmp_path / "dual.tif", data)
    with rasterio.open(path, "r+") as ds:
        ds.descriptions = ("Sigma0_VH", "Sigma0_VV")
    assert inspect(path).band == 2  # co-polarised preferred
    assert inspect(path, "VH").band == 1
    with pytest.raises(InputError, match="No band named HH"):
        inspect(path, "HH")
    with pytest.raises(InputError, match="Band 3 does not exist"):
        inspect(path, 3)


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "not found"),
    (lambda p: (p.write_bytes(b""), p)[1], "empty"),
    (lambda p: (p.write_bytes(b"II*\x00garbage" * 50), p)[1], "Cannot read"),
])
def test_unreadable_files(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        inspect(make(tmp_path / "scene.tif"))


def test_no_crs_and_no_gcps(tmp_path):
    path = _write(tmp_path / "plain.tif", np.ones((16, 16), np.uint8), crs=None, transform=Affine.identity())
    with pytest.raises(InputError, match="no coordinate system") as err:
        inspect(path)
    assert "world file" in str(err.value)


def test_all_nodata(tmp_path):
    path = _write(tmp_path / "empty.tif", np.zeros((16, 16), np.uint8), nodata=0)
    with pytest.raises(InputError, match="no valid pixels"):
        inspect(path)


def test_rgb_photo_is_refused(tmp_path):
    path = _write(tmp_path / "photo.tif", np.full((3, 16, 16), 90, np.uint8))
    with pytest.raises(InputError, match="RGB picture"):
        inspect(path)


@pytest.mark.parametrize("footprint, crs, warns", [
    ((33.0, 75.0, 34.0, 75.5), "EPSG:32636", False),  # Barents Sea, the paper's zone 36N
    ((-76.2, 34.7, -73.1, 36.8), "EPSG:32618", False),  # the GRD crop, inside zone 18
    ((-74.0, 35.0, -71.0, 36.0), "EPSG:32618", True),  # spans zones 18 and 19
    ((10.0, 84.5, 20.0, 85.5), "EPSG:32661", True),  # beyond 84 N: UPS North
    ((150.0, -40.0, 151.0, -39.0), "EPSG:32756", False),  # southern hemisphere
])
def test_utm_zone_choice(footprint, crs, warns):
    chosen, warnings = utm_crs_for(footprint)
    assert chosen == crs
    assert bool(warnings) == warns


def test_info_refuses_what_detect_refuses(tmp_path: Path) -> None:
    """The bundled GRD crop has ~200 m pixels: ``info`` must refuse it for the 25 m model as ``detect`` does."""
    from engine.errors import ModelError
    from engine.jobs.detect import DetectOptions, detect
    from engine.models.registry import DEFAULT_MODEL, read_card
    from engine.scenes.analysis import assess

    crop = Path(__file__).resolve().parents[1] / "resources" / "samples" / "s1_grd_crop" / "iw-vv.tiff"
    with pytest.raises(ModelError) as from_info:
        assess(crop, read_card(DEFAULT_MODEL))
    with pytest.raises(ModelError) as from_detect:
        detect(crop, tmp_path, DetectOptions(device="cpu"))
    assert str(from_info.value) == str(from_detect.value)
    assert not list(tmp_path.iterdir())


def test_covering_window_holds_every_pixel_its_shapes_burn():
    """Per-slick sums run over this window only, so it must miss no pixel a slick or ring burns, at any edge."""
    from rasterio.features import rasterize
    from shapely.geometry import box, Point

    from engine.scenes.grid import covering_window

    transform = Affine(25.0, 0, 440000.0, 0, -25.0, 8700000.0)
    height, width = 300, 400
    shapes = [box(440000 + 30.5 * 25, 8700000 - 80 * 25, 440000 + 61 * 25, 8700000 - 41.2 * 25),
              Point(440000 + 390 * 25, 8700000 - 5 * 25).buffer(1000),  # crosses the top and right edges
              Point(440000 + 200 * 25, 8700000 - 150 * 25).buffer(333.3)]
    for some in ([shapes[0]], [shapes[1]], shapes):
        window = covering_window(transform, height, width, np.array([s.bounds for s in some]))
        burnt = rasterize(some, out_shape=(height, width), transform=transform, all_touched=True).astype(bool)
        rows, cols = window.toslices()
        inside = np.zeros_like(burnt)
        inside[rows, cols] = True
        assert burnt.any() and not (burnt & ~inside).any()
        assert 0 <= window.col_off and window.col_off + window.width <= width
        assert 0 <= window.row_off and window.row_off + window.height <= height
    assert covering_window(transform, height, width, np.array([shapes[0].bounds])).width < 40
