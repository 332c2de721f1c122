"""Random small rasters and damaged copies of a real scene: ``info`` and ``detect`` either succeed with
valid outputs or raise the engine's typed error, never anything else, and never leave a partial file.

Derandomized (the same inputs on every run) and sized to about a minute on a 2-core CPU. The counts of
inputs tried and faults injected are written to test_output/robustness_counts.json (docs/robustness.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, SAMPLES, make_model
from engine.jobs.detect import DetectOptions, detect
from engine.errors import SlickMapperError
from engine.scenes.raster import inspect

REAL_SCENE = SAMPLES / "sample_1" / "raw_mosaic.tif"
COUNTS = {"info_inputs": 0, "detect_inputs": 0, "faults": 0, "succeeded": 0, "typed_errors": 0, "partial_files": 0}
PLACES = {  # CRS: (origin x, origin y, pixel size in CRS units), all over the Barents Sea
    "EPSG:32636": (450_000.0, 8_350_000.0, 25.0),
    "EPSG:4326": (33.0, 75.0, 0.0004),
    "EPSG:3413": (900_000.0, -600_000.0, 25.0),
}
SETTINGS = dict(derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    started = time.monotonic()
    yield
    COUNTS["seconds"] = round(time.monotonic() - started, 1)
    (ROOT / "test_output").mkdir(exist_ok=True)
    (ROOT / "test_output" / "robustness_counts.json").write_text(json.dumps(COUNTS, indent=1))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = make_model(tmp_path_factory.mktemp("model") / "tiny64.safetensors", tile_size=64)
    COUNTS["model_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()  # its card holds its creation time
    return path


@st.composite
def rasters(draw) -> dict:
    dtype = draw(st.sampled_from(["uint8", "uint16", "int16", "float32", "float64"]))
    count = draw(st.integers(1, 3))
    crs = draw(st.sampled_from([None, *PLACES]))
    x0, y0, size = PLACES.get(crs, (0.0, 0.0, 1.0))
    angle = draw(st.sampled_from([0.0, 0.0, 20.0, 90.0]))
    flip_x, flip_y = draw(st.booleans()), draw(st.booleans())
    transform = Affine.translation(x0, y0) * Affine.rotation(angle) * Affine.scale(-size if flip_x else size, size if flip_y else -size)
    floating = dtype.startswith("float")
    return {
        "dtype": dtype,
        "count": count,
        "height": draw(st.sampled_from([1, 2, 5, 64, 150])),
        "width": draw(st.sampled_from([1, 3, 64, 170])),
        "names": draw(st.lists(st.sampled_from([None, "HH", "VV", "HV", "Sigma0_VV_db", "band 'ø'"]), min_size=count, max_size=count)),
        "nodata": draw(st.sampled_from([None, 0, 7, *(["nan", -9999.0] if floating else [])])),
        "crs": crs,
        "transform": transform,
        "values": draw(st.sampled_from(["speckle", "db", "all_nodata", "nan_inf", "constant"] if floating else ["speckle", "all_nodata", "constant"])),
        "seed": draw(st.integers(0, 2**16)),
    }


def write(spec: dict, path: Path) -> Path:
    rng = np.random.default_rng(spec["seed"])
    shape = (spec["count"], spec["height"], spec["width"])
    nodata = float("nan") if spec["nodata"] == "nan" else spec["nodata"]
    info = np.iinfo(spec["dtype"]) if spec["dtype"][0] in "ui" else None
    if spec["values"] == "speckle":
        values = rng.gamma(1.0, 0.05, shape) * (info.max / 2 if info else 1)
    elif spec["values"] == "db":
        values = rng.normal(-20, 4, shape)
    elif spec["values"] == "all_nodata":
        values = np.full(shape, 0 if nodata is None else nodata)
    elif spec["values"] == "constant":
        values = np.full(shape, 5)
    else:  # NaN and +-inf scattered in dB values
        values = rng.normal(-20, 4, shape)
        values[rng.random(shape) < 0.2] = np.nan
        values[rng.random(shape) < 0.1] = np.inf
        values[rng.random(shape) < 0.1] = -np.inf
    if info:
        values = np.clip(values, info.min, info.max)
    profile = dict(driver="GTiff", width=spec["width"], height=spec["height"], count=spec["count"], dtype=spec["dtype"],
                   nodata=nodata, crs=spec["crs"], transform=spec["transform"] if spec["crs"] else Affine.identity())
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(spec["dtype"]))
        for band, name in enumerate(spec["names"], start=1):
            if name:
                dst.set_band_description(band, name)
    return path


def check_info(path: Path) -> None:
    COUNTS["info_inputs"] += 1
    try:
        info = inspect(path)
    except SlickMapperError as error:
        COUNTS["typed_errors"] += 1
        assert str(error).strip()
        return
    COUNTS["succeeded"] += 1
    assert 0 < info.valid_fraction <= 1 and 1 <= info.band <= info.count
    assert info.utm_crs.startswith("EPSG:32") and all(math.isfinite(v) for v in info.footprint_lonlat)


def check_detect(path: Path, out: Path, model: Path, tile: int) -> None:
    COUNTS["detect_inputs"] += 1
    try:
        result = detect(path, out, DetectOptions(model=str(model), device="cpu", tile=tile, overlap=16))
    except SlickMapperError as error:
        COUNTS["typed_errors"] += 1
        assert str(error).strip()
        data = sorted(p.name for p in out.iterdir()) if out.exists() else []
        COUNTS["partial_files"] += len(data)
        assert data == [], f"a failed run left {data}"
        return
    COUNTS["succeeded"] += 1
    assert sorted(p.name for p in out.iterdir()) == sorted([*(Path(getattr(result, k)).name for k in ("probability", "mask", "slicks"))])
    with rasterio.open(result.probability) as ds:
        probability = ds.read(1)
    finite = probability[np.isfinite(probability)]
    assert ((finite >= 0) & (finite <= 1)).all()
    with rasterio.open(result.mask) as ds:
        assert set(np.unique(ds.read(1))) <= {0, 1, 255}
    with fiona.open(result.slicks) as slicks:
        assert len(slicks) == result.n_slicks


@settings(max_examples=150, **SETTINGS)
@given(spec=rasters())
def test_info_on_random_rasters_succeeds_or_says_why(spec: dict, tmp_path: Path) -> None:
    check_info(write(spec, tmp_path / f"scene {spec['seed']}.tif"))


@settings(max_examples=40, **SETTINGS)
@given(spec=rasters())
def test_detect_on_random_rasters_succeeds_with_valid_outputs_or_says_why(spec: dict, tmp_path: Path, model: Path) -> None:
    n = COUNTS["detect_inputs"]
    check_detect(write(spec, tmp_path / f"scene {n}.tif"), tmp_path / f"out {n}", model, 64)


@pytest.mark.qt_no_exception_capture  # rasterio's GDAL log handler cannot decode corrupted tags it logs; it only logs
def test_a_real_scene_cut_or_corrupted_at_random_places_is_read_or_refused(tmp_path: Path, model: Path) -> None:
    data = REAL_SCENE.read_bytes()
    rng = np.random.default_rng(17)
    for n in range(60):
        damaged = bytearray(data)
        if n % 2 == 0:  # cut: a partial download
            damaged = damaged[: int(rng.integers(1, len(data)))]
        else:  # bytes overwritten: a bad copy, header or data alike
            at = int(rng.integers(0, len(data) - 64)) if n % 4 == 1 else int(rng.integers(0, 2048))  # data or header
            length = int(rng.integers(1, 64))
            damaged[at : at + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        path = tmp_path / f"damaged {n}.tif"
        path.write_bytes(bytes(damaged))
        COUNTS["faults"] += 1
        check_info(path)
        if n % 10 == 0:
            check_detect(path, tmp_path / f"out {n}", model, 256)
