"""Opening Sentinel-1 rasters and describing what detection will do with them.

Scenes arrive in many shapes: 8-bit tiles already stretched by someone else, GRD measurement TIFFs in
radar geometry (uint16 amplitude numbers and ground control points, no geotransform), calibrated
sigma0 in linear power or in dB. ``inspect`` recognises which, picks the SAR band, and measures the valid
fraction from a decimated read so that it stays instant on a full scene.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
import rasterio.transform
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform as transform_points

from ..contract import POLARISATIONS, not_sar_reason, polarisation_of
from ..errors import InputError
from .normalise import needs_statistics
from .read_errors import READ_FAILURES, diagnose, reading
from .remembered import remembered

VALUE_SCALES = ("uint8_stretched", "uint16_dn", "float32_linear", "float32_db")
_PREVIEW_PIXELS = 1_000_000  # decimated read size for quick statistics

EQ1_GREY_STD_FLOOR = 40.0
"""8-bit grey levels are passed to the model as they are, taken to be stretched by eq. 1 (mean +- 2 sigma onto 1..255),
which spreads a scene's valid pixels with a standard deviation near 60 (254/4 before clipping; 57-62 on the five Arctic
tiles the models learn from). A file spread much less was stretched another way: the three North Sea IW/VV tiles with
slicks, 9-21 (the coastal one, whose land spreads it, 44), their slicks 14-19 grey levels under the sea around them against
58-81 on the Arctic tiles. Stretching such a file by
eq. 1 again, as training does with those tiles, kept none of their slicks in the bundled model's form, with models that
had not learnt them, and marked more false slicks (docs/narrow_8bit.md), so it is said rather than changed."""


@dataclass
class SceneInfo:
    """What the engine found in a scene file, and what detection will do with it."""

    path: str
    width: int
    height: int
    count: int
    dtypes: list[str]
    crs: Optional[str]
    has_gcps: bool
    pixel_size: Optional[float]
    bands: list[Optional[str]]
    band: int
    polarisation: Optional[str]
    value_scale: str
    nodata: Optional[float]
    valid_fraction: float
    utm_crs: str
    footprint_lonlat: tuple[float, float, float, float]
    warnings: list[str] = field(default_factory=list)
    plan: str = ""
    needs_statistics: bool = True
    """Whether detection stretches the scene by statistics of all its pixels (``engine measure`` takes them ahead)."""

    def to_dict(self) -> dict:
        return asdict(self)


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a raster, turning GDAL's failures into an error an analyst can act on."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Scene file not found: {path}.", "Check the path, or reload the layer if the file moved.")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"Scene file is empty: {path}.", "The download or copy did not finish; fetch it again.")
    try:
        return rasterio.open(path)
    except READ_FAILURES as exc:
        found = diagnose(path)
        if found is not None:
            raise InputError(f"Cannot read {path.name}: {found[0]}.", found[1]) from exc
        raise InputError(
            f"Cannot read {path.name} as a raster ({exc}).",
            "Give a GeoTIFF, COG, VRT or Sentinel-1 GRD measurement TIFF; the file may be corrupt.",
        ) from exc


def select_band(ds: rasterio.DatasetReader, band: str | int | None) -> int:
    """Return the 1-based band index for a band given by polarisation name, index, or not at all."""
    descriptions = [d or "" for d in ds.descriptions]
    if band is None or band == "":
        for pol in POLARISATIONS:  # co-polarised first: slicks show best in HH/VV
            for i, desc in enumerate(descriptions, start=1):
                if polarisation_of(desc) == pol:
                    return i
        reason = not_sar_reason(Path(ds.name).name, ds.dtypes, descriptions)
        if reason:
            raise InputError(reason, "Load a single-band Sentinel-1 scene, or name the SAR band with --band.")
        return 1
    if isinstance(band, int) or str(band).isdigit():
        index = int(band)
        if not 1 <= index <= ds.count:
            raise InputError(
                f"Band {index} does not exist: {Path(ds.name).name} has {ds.count} band(s).",
                f"Choose a band between 1 and {ds.count}.",
            )
        return index
    wanted = str(band).upper()
    for i, desc in enumerate(descriptions, start=1):
        if polarisation_of(desc) == wanted or desc.upper() == wanted:
            return i
    names = ", ".join(d or f"#{i}" for i, d in enumerate(descriptions, start=1))
    raise InputError(f"No band named {band} in {Path(ds.name).name} (bands: {names}).", "Pick one of those bands.")


def polarisation_from_name(path: str | Path) -> Optional[str]:
    """GRD measurement files carry the polarisation only in their name (``...-vv-...tiff``)."""
    match = re.search(r"(?:^|[-_.])(hh|vv|hv|vh)(?:[-_.]|$)", Path(path).name.lower())
    return match.group(1).upper() if match else None


def detect_value_scale(dtype: str, sample: np.ndarray) -> str:
    """Guess how backscatter is encoded from the data type and the valid values' range."""
    if dtype == "uint8":
        return "uint8_stretched"
    if np.dtype(dtype).kind in "iu":
        return "uint16_dn"
    if sample.size == 0:
        return "float32_linear"
    if np.median(sample) < 0 or np.percentile(sample, 5) < -1:
        return "float32_db"
    return "float32_linear"


def valid_mask(values: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    """Pixels that carry backscatter: finite, not nodata, and not the all-zero borders of GRD swaths."""
    valid = np.isfinite(values) & (values != 0)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        valid &= values != nodata
    return valid


def preview(ds: rasterio.DatasetReader, band: int, max_pixels: int = _PREVIEW_PIXELS) -> np.ndarray:
    """A decimated read of one band (nearest), for statistics that need not touch every pixel."""
    factor = max(1.0, math.sqrt(ds.width * ds.height / max_pixels))
    shape = (max(1, int(ds.height / factor)), max(1, int(ds.width / factor)))
    with reading(ds.name):
        return ds.read(band, out_shape=shape, resampling=Resampling.nearest)


def footprint_lonlat(ds: rasterio.DatasetReader) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees, from the geotransform or the GCPs."""
    gcps, gcp_crs = ds.gcps
    if ds.crs is None and gcps:
        xs, ys = [g.x for g in gcps], [g.y for g in gcps]
        src = gcp_crs or CRS.from_epsg(4326)
    elif ds.crs is not None:
        left, bottom, right, top = ds.bounds
        xs = [left, right, right, left, (left + right) / 2]
        ys = [top, top, bottom, bottom, (top + bottom) / 2]
        src = ds.crs
    else:
        raise InputError(
            f"{Path(ds.name).name} has no coordinate system and no ground control points, so it cannot be placed on the map.",
            "Give it a CRS (e.g. gdal_edit.py -a_srs EPSG:32636) or a world file, or use the original GRD file with its GCPs.",
        )
    lons, lats = transform_points(src, "EPSG:4326", xs, ys)
    return (min(lons), min(lats), max(lons), max(lats))


def utm_crs_for(footprint: tuple[float, float, float, float]) -> tuple[str, list[str]]:
    """The UTM zone of the footprint's centre (UPS beyond 84 N / 80 S), with warnings for edge cases.

    A scene crossing a zone border stays in the centre's zone: one grid per scene keeps slicks whole, and
    the scale error a few degrees outside a zone stays well under 1 %, far below the pixel size.
    """
    west, south, east, north = footprint
    lon, lat = (west + east) / 2, (south + north) / 2
    warnings: list[str] = []
    if lat > 84:
        warnings.append("The scene's centre lies north of 84 N, outside UTM: it is projected to UPS North (EPSG:32661).")
        return "EPSG:32661", warnings
    if lat < -80:
        warnings.append("The scene's centre lies south of 80 S, outside UTM: it is projected to UPS South (EPSG:32761).")
        return "EPSG:32761", warnings
    zone = int((lon + 180) // 6) % 60 + 1
    west_zone, east_zone = int((west + 180) // 6) % 60 + 1, int((east + 180) // 6) % 60 + 1
    if west_zone != east_zone:
        warnings.append(
            f"The scene spans UTM zones {west_zone} to {east_zone}; it is processed in zone {zone}, "
            "the zone of its centre (scale error at its edges stays below 1 %)."
        )
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}", warnings


def pixel_size_m(ds: rasterio.DatasetReader) -> Optional[float]:
    """Approximate ground pixel size in metres, whatever the georeference."""
    if ds.crs is not None and ds.transform != rasterio.Affine.identity():
        size = (abs(ds.transform.a) + abs(ds.transform.e)) / 2
        if ds.crs.is_geographic:
            lat = (ds.bounds.top + ds.bounds.bottom) / 2
            size *= 111_320 * math.sqrt(math.cos(math.radians(lat)))  # geometric mean of x and y degrees
        return float(size)
    gcps, _ = ds.gcps
    if gcps:  # an affine fit to the GCPs (in degrees), scaled at the footprint's latitude
        fit = rasterio.transform.from_gcps(gcps)
        lat = sum(g.y for g in gcps) / len(gcps)
        degrees = math.sqrt(abs(fit.a * fit.e - fit.b * fit.d))
        return float(degrees * 111_320 * math.sqrt(math.cos(math.radians(lat))))
    return None


def inspect(path: str | Path, band: str | int | None = None, pixel_size: Optional[float] = None) -> SceneInfo:
    """Describe a scene and the plan for it; raise ``InputError`` for anything detection cannot use.

    ``pixel_size`` is the analysis pixel size of the model that will run, used only to describe the plan.
    """
    with open_raster(path) as ds, reading(path):  # a damaged georeference fails in PROJ, not in a read
        index = select_band(ds, band)
        footprint = footprint_lonlat(ds)
        utm, warnings = utm_crs_for(footprint)
        measured = remembered(ds.files, f"preview of band {index}: value scale, valid share, grey spread", lambda: _preview_facts(ds, index))
        scale, fraction = measured["value_scale"], measured["valid_fraction"]
        descriptions = list(ds.descriptions)
        polarisation = polarisation_of(descriptions[index - 1] or "") or polarisation_from_name(path)
        if fraction == 0:
            raise InputError(
                f"{Path(path).name} holds no valid pixels in band {index} (all nodata or zero).",
                "Check the band, or the file: it may be an empty swath or a failed export.",
            )
        if ds.count > 1 and band is None and polarisation is None:
            warnings.append(f"{ds.count} bands without polarisation names: band 1 is used; choose another with --band.")
        if polarisation in ("HV", "VH"):
            warnings.append("Cross-polarised band: slicks show far less contrast than in HH or VV.")
        spread = measured["grey_std"]
        if scale == "uint8_stretched" and spread < EQ1_GREY_STD_FLOOR:
            warnings.append(
                f"The 8-bit grey levels spread far less than the eq. 1 stretch the models learnt from (standard deviation "
                f"{spread:.0f} against about 60): slicks will show less contrast than they should. Detect on the scene's "
                "calibrated backscatter or GRD file instead, which Slick Mapper stretches itself."
            )
        info = SceneInfo(
            path=str(path),
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtypes=list(ds.dtypes),
            crs=ds.crs.to_string() if ds.crs else None,
            has_gcps=bool(ds.gcps[0]),
            pixel_size=pixel_size_m(ds),
            bands=descriptions,
            band=index,
            polarisation=polarisation,
            value_scale=scale,
            nodata=ds.nodata,
            valid_fraction=fraction,
            utm_crs=utm,
            footprint_lonlat=footprint,
            warnings=warnings,
            needs_statistics=needs_statistics(scale),
        )
    info.plan = describe_plan(info, pixel_size)
    return info


def _preview_facts(ds: rasterio.DatasetReader, band: int) -> dict:
    """How ``band``'s values are encoded, the share of pixels holding data and the valid values' standard deviation
    (``EQ1_GREY_STD_FLOOR``), from a decimated read."""
    values = preview(ds, band)
    valid = valid_mask(values, ds.nodata)
    return {"value_scale": detect_value_scale(ds.dtypes[band - 1], values[valid]),
            "valid_fraction": float(valid.mean()) if valid.size else 0.0,
            "grey_std": float(values[valid].std()) if valid.any() else 0.0}


def describe_plan(info: SceneInfo, pixel_size: Optional[float]) -> str:
    """One paragraph an analyst can read before pressing Detect."""
    steps = []
    if info.crs is None:
        steps.append(f"geocode through its ground control points into {info.utm_crs}")
    elif info.crs != info.utm_crs:
        steps.append(f"reproject from {info.crs} to {info.utm_crs}")
    if pixel_size and info.pixel_size and abs(info.pixel_size - pixel_size) > 0.01 * pixel_size:
        steps.append(f"resample bilinearly from {info.pixel_size:.1f} m to {pixel_size:g} m")
    if info.value_scale == "uint8_stretched":
        steps.append("use the 8-bit values as they are (already stretched)")
    else:
        steps.append(f"stretch {info.value_scale} values by eq. 1 (2 sigma in dB, scene statistics) to 0..255")
    return "Detection will " + ", ".join(steps) + "."
