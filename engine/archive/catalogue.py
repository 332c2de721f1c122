"""The catalogue of a batch: every slick of every finished scene in one table, and the scenes' footprints.

Scenes are detected each in its own UTM zone; the catalogue holds them all in EPSG:4326, so scenes of any
zone or mode sit in one file. It is written as GeoParquet (for analysis: pandas, DuckDB, GeoPandas) and as a
GeoPackage with two layers, ``slicks`` and ``footprints`` (for QGIS). It is derived from the manifest and
rebuilt whole at the end of every run, so it always says what the manifest says; every row names the model
and its hash, and one batch folder holds one model, so two model versions are never mixed. Every row also says the
threshold and the smallest slick its scene was detected with: slick counts compare only under the same two.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry import MultiPolygon, Polygon

from ..atomic import staged_folder
from ..errors import InputError
from .manifest import Manifest

SLICKS_PARQUET = "slicks.parquet"
FOOTPRINTS_PARQUET = "footprints.parquet"
GEOPACKAGE = "catalogue.gpkg"
CRS = "EPSG:4326"
SCENE_COLUMNS = ["scene_id", "scene_hash", "acquired", "mode", "polarisation", "model_name", "model_hash", "weights_from", "threshold",
                 "min_area_km2"]


def build(manifest: Manifest) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """(slicks, footprints) of every scene the manifest records as done."""
    slick_frames, footprint_rows = [], []
    for record in sorted(manifest.done(), key=lambda r: (r.acquired or "", r.scene_id)):
        scene = {
            "scene_id": record.scene_id, "scene_hash": record.scene_hash, "acquired": record.acquired,
            "mode": record.mode, "polarisation": record.polarisation,
            "model_name": manifest.model_name, "model_hash": manifest.model_hash, "weights_from": record.weights_from,
            "threshold": record.threshold, "min_area_km2": record.min_area_km2,
        }
        slicks = gpd.read_file(manifest.folder / record.slicks, engine="fiona")
        if len(slicks):
            slicks = slicks.to_crs(CRS)
            slicks.insert(0, "slick_id", [f"{record.scene_hash[:8]}-{i}" for i in range(len(slicks))])
            for column, value in reversed(scene.items()):
                slicks.insert(1, column, value)
            slick_frames.append(slicks)
        footprint = gpd.read_file(manifest.folder / record.folder / "footprint.geojson", engine="fiona")
        geometry = footprint.geometry.union_all() if len(footprint) else None
        footprint_rows.append({**scene, "n_slicks": record.n_slicks, "path": record.path, "geometry": geometry})
    if slick_frames:
        slicks = gpd.GeoDataFrame(pd.concat(slick_frames, ignore_index=True), crs=CRS)
    else:
        slicks = gpd.GeoDataFrame({"slick_id": [], **{c: [] for c in SCENE_COLUMNS}}, geometry=[], crs=CRS)
    footprints = gpd.GeoDataFrame(footprint_rows or {"n_slicks": [], "path": [], **{c: [] for c in SCENE_COLUMNS}},
                                  geometry="geometry" if footprint_rows else [], crs=CRS)
    for frame in (slicks, footprints):
        frame["acquired"] = pd.to_datetime(frame["acquired"], utc=True, format="ISO8601")
    return slicks, footprints


def write(manifest: Manifest) -> dict:
    """Write the catalogue files beside the manifest, all or none; returns their paths and the slick count."""
    slicks, footprints = build(manifest)
    folder = manifest.folder
    with staged_folder(folder) as stage:
        slicks.to_parquet(stage / SLICKS_PARQUET)
        footprints.to_parquet(stage / FOOTPRINTS_PARQUET)
        write_layer(slicks, stage / GEOPACKAGE, "slicks", "Polygon")
        write_layer(footprints, stage / GEOPACKAGE, "footprints", "MultiPolygon")
    return {"paths": {"slicks": str(folder / SLICKS_PARQUET), "footprints": str(folder / FOOTPRINTS_PARQUET),
                      "geopackage": str(folder / GEOPACKAGE)}, "n_slicks": len(slicks)}


def write_layer(frame: gpd.GeoDataFrame, path: Path, layer: str, geometry_type: str) -> None:
    """One layer of a GeoPackage. Datetimes go as naive UTC (what OGR stores as a DateTime field, which QGIS's
    temporal controller can bind to); polygons are promoted to the layer's multi type where it has one."""
    frame = frame.copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            frame[column] = frame[column].dt.tz_convert("UTC").dt.tz_localize(None)
    if geometry_type == "MultiPolygon":
        frame = frame.set_geometry(frame.geometry.apply(lambda g: MultiPolygon([g]) if isinstance(g, Polygon) else g))
    schema = gpd.io.file.infer_schema(frame)
    schema["geometry"] = geometry_type
    frame.to_file(path, layer=layer, driver="GPKG", engine="fiona", schema=schema)


def read(path: str | Path) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """(slicks, footprints) of a catalogue given by its folder, its GeoParquet or its GeoPackage."""
    path = Path(path)
    if path.is_dir():
        path = path / SLICKS_PARQUET
    if not path.exists():
        raise InputError(f"Catalogue not found: {path}.", "Give a batch folder, its slicks.parquet or its catalogue.gpkg.")
    try:
        if path.suffix.lower() == ".gpkg":
            slicks = gpd.read_file(path, layer="slicks", engine="fiona")
            footprints = gpd.read_file(path, layer="footprints", engine="fiona")
        else:
            slicks = gpd.read_parquet(path)
            footprints = gpd.read_parquet(path.with_name(FOOTPRINTS_PARQUET))
    except Exception as exc:  # pyarrow, fiona and OGR each raise their own kinds for a foreign or broken file
        raise InputError(f"Cannot read the catalogue {path} ({exc}).",
                         "Give the slicks.parquet or catalogue.gpkg a batch wrote (with its footprints beside it).") from exc
    for frame in (slicks, footprints):
        frame["acquired"] = pd.to_datetime(frame["acquired"], utc=True)
    models = set(slicks["model_hash"].dropna()) | set(footprints["model_hash"].dropna())
    if len(models) > 1:
        raise InputError(f"{path} mixes detections of {len(models)} model versions.",
                         "Build one catalogue per model (one batch folder each) and analyse them apart.")
    return slicks, footprints
