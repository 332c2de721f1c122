"""The label store: one GeoPackage per QGIS project holding what analysts drew and what they checked.

Two polygon layers:

* ``labels``: slicks and look-alikes an analyst drew, accepted from a detection, or edited;
* ``reviewed``: areas the analyst looked at. Inside them every unlabelled pixel is water; outside them
  nothing is assumed, so a handful of labelled slicks never teaches a model that the rest of the scene is
  clean sea. A drawn label is known wherever it lies, reviewed or not.

Geometries stay in the store's CRS and are reprojected onto whatever grid asks for them, so a store in
EPSG:4326 and scenes in UTM work together. Scenes are named by their file path as given; a relative
path is taken from the store's folder, as QGIS takes relative paths from the project file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import fiona
import numpy as np
import rasterio
import shapely
from fiona.errors import DriverError, FionaError
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import rasterize, shapes
from rasterio.transform import array_bounds
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from ..atomic import staged_folder, writing
from ..contract import LABEL_CLASSES, LABEL_ORIGINS, LABELS_LAYER, REVIEWED_LAYER
from ..errors import InputError, OutputError
from ..machine import utc_now
from ..progress import Progress
from ..scenes.grid import Grid, analysis_grid
from ..scenes.raster import footprint_lonlat, open_raster, pixel_size_m, utm_crs_for
from . import store_integrity
from .evaluate import read_label_mask

SCHEMAS = {
    LABELS_LAYER: {
        "geometry": "Polygon",
        "properties": {"class": "str", "scene": "str", "author": "str", "created": "datetime", "origin": "str"},
    },
    REVIEWED_LAYER: {
        "geometry": "Polygon",
        "properties": {"scene": "str", "author": "str", "created": "datetime"},
    },
}
_STORE_HINT = "Create one with: python -m engine labels init STORE.gpkg --crs EPSG:4326"


@dataclass(frozen=True)
class Label:
    """One labelled polygon, in the store's CRS."""

    cls: str
    geometry: BaseGeometry
    author: str
    created: str
    origin: str


@dataclass(frozen=True)
class Review:
    """One area an analyst checked, in the store's CRS."""

    geometry: BaseGeometry
    author: str
    created: str


@dataclass
class SceneLabels:
    labels: list[Label] = field(default_factory=list)
    reviewed: list[Review] = field(default_factory=list)

    def count(self, cls: str) -> int:
        return sum(label.cls == cls for label in self.labels)


@dataclass
class LabelStore:
    """A label store as read: per-scene labels and reviewed areas, and a hash of its content for lineage."""

    path: Path
    crs: str
    scenes: dict[str, SceneLabels]
    sha256: str
    repairs: list[str] = field(default_factory=list)
    """What the integrity check on opening repaired (store_integrity.check)."""

    def scene_path(self, scene: str) -> Path:
        """Where a scene's file should be; relative names are relative to the store's folder."""
        path = Path(scene).expanduser()
        return path if path.is_absolute() else self.path.parent / path

    def key(self, scene: str | Path) -> str:
        """The store's name for ``scene``: the same string, or a name that points at the same file."""
        if str(scene) in self.scenes:
            return str(scene)
        wanted = Path(scene).expanduser().resolve()
        for key in self.scenes:
            if self.scene_path(key).resolve() == wanted:
                return key
        known = ", ".join(self.scenes) or "none"
        raise InputError(f"The label store {self.path.name} has no labels for {scene} (scenes: {known}).", "Check the scene path.")


def create_store(path: str | Path, crs: str) -> Path:
    """Create an empty store; refuse to replace an existing one (it holds an analyst's work)."""
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise InputError(f"A label store is a GeoPackage; {path.name} does not end in .gpkg.", "Name it e.g. labels.gpkg.")
    if path.exists():
        raise OutputError(f"{path} exists already; a label store is never overwritten.", "Choose another name, or use the existing store.")
    try:
        wkt = CRS.from_user_input(crs).to_wkt()
    except CRSError as exc:
        raise InputError(f"Unknown CRS {crs!r} ({exc}).", "Give an EPSG code such as EPSG:4326 or the project's CRS.") from exc
    with writing(path, "Choose a writable folder."), staged_folder(path.parent, hint="Choose a writable folder.") as stage:
        for layer, schema in SCHEMAS.items():
            with fiona.open(stage / path.name, "w", driver="GPKG", layer=layer, schema=schema, crs_wkt=wkt):
                pass
    return path


def read_store(path: str | Path) -> LabelStore:
    """Read every label and reviewed area, from one consistent snapshot of the store after its integrity
    check; a feature with an unknown class or no scene is an error."""
    path = Path(path)
    _require(path)
    repairs = store_integrity.check(path)
    with store_integrity.snapshot(path) as copy:
        return _read_features(path, copy, repairs)


def _read_features(path: Path, copy: Path, repairs: list[str]) -> LabelStore:
    crs = _store_crs(copy, path.name)
    scenes: dict[str, SceneLabels] = {}
    lines: list[str] = []
    for layer in SCHEMAS:
        with fiona.open(copy, layer=layer) as src:
            for feature in src:
                geometry = shape(feature.geometry) if feature.geometry is not None else None
                if geometry is None or geometry.is_empty:  # QGIS keeps features whose shape was deleted
                    continue
                props = dict(feature.properties)
                scene = props.get("scene")
                if not scene:
                    raise InputError(f"Feature {feature.id} of layer {layer} in {path.name} has no scene.", "Fill in its scene field.")
                entry = scenes.setdefault(scene, SceneLabels())
                if layer == LABELS_LAYER:
                    if props.get("class") not in LABEL_CLASSES:
                        raise InputError(
                            f"Label {feature.id} in {path.name} has class {props.get('class')!r}.",
                            f"Set its class to one of: {', '.join(LABEL_CLASSES)}.",
                        )
                    entry.labels.append(Label(props["class"], geometry, props.get("author") or "", props.get("created") or "", props.get("origin") or ""))
                else:
                    entry.reviewed.append(Review(geometry, props.get("author") or "", props.get("created") or ""))
                lines.append(json.dumps([layer, props, shapely.to_wkb(geometry, hex=True, output_dimension=2)], sort_keys=True, default=str))
    # Sorted so that the hash names the content, not the order QGIS happened to write features in.
    digest = hashlib.sha256("\n".join([crs, *sorted(lines)]).encode()).hexdigest()
    return LabelStore(path, crs, scenes, digest, repairs)


def add_labels(path: str | Path, scene: str | Path, geometries: Iterable[BaseGeometry], cls: str, *, crs: str, author: str, origin: str) -> int:
    """Append polygons of one class for ``scene``; ``crs`` is the geometries' CRS. Returns how many were added."""
    if cls not in LABEL_CLASSES:
        raise InputError(f"Unknown label class {cls!r}.", f"Use one of: {', '.join(LABEL_CLASSES)}.")
    if origin not in LABEL_ORIGINS:
        raise InputError(f"Unknown label origin {origin!r}.", f"Use one of: {', '.join(LABEL_ORIGINS)}.")
    props = {"class": cls, "scene": str(scene), "author": author, "created": utc_now(), "origin": origin}
    return _append(Path(path), LABELS_LAYER, geometries, crs, props)


def add_reviewed(path: str | Path, scene: str | Path, geometries: Iterable[BaseGeometry], *, crs: str, author: str) -> int:
    """Append areas the analyst checked for ``scene``; ``crs`` is the geometries' CRS."""
    return _append(Path(path), REVIEWED_LAYER, geometries, crs, {"scene": str(scene), "author": author, "created": utc_now()})


def import_mask(path: str | Path, scene: str | Path, mask: str | Path, *, author: str = "import", origin: str = "drawn") -> tuple[int, int]:
    """Turn a label raster in the paper's format (PNG + world file, or GeoTIFF) into store features.

    Its slick pixels become slick polygons and its whole footprint one reviewed area: the paper's
    analysts labelled every slick of a tile, so the rest of the tile is known sea. Returns
    (slick polygons, reviewed areas) added.
    """
    slick, transform, crs = read_label_mask(mask)
    if crs is None:
        raise InputError(f"The label {mask} has no CRS.", "Give it one (a .aux.xml next to the PNG, or gdal_edit.py -a_srs).")
    polygons = [shape(geom) for geom, _ in shapes(slick.astype(np.uint8), mask=slick, transform=transform)]
    footprint = box(*array_bounds(*slick.shape, transform))
    added = add_labels(path, scene, polygons, "slick", crs=crs.to_wkt(), author=author, origin=origin)
    return added, add_reviewed(path, scene, [footprint], crs=crs.to_wkt(), author=author)


def rasterise(store: LabelStore, scene: str | Path, grid: Grid, classes: Sequence[str] = ("slick",)) -> tuple[np.ndarray, np.ndarray]:
    """(target, known mask) of ``scene`` on ``grid``, both uint8: the target holds 1 + the index in
    ``classes`` of the label class a pixel lies in (the first listed wins where labels overlap), 0 elsewhere;
    with the default, slick 0/1.

    Known pixels are those inside reviewed areas or inside any label; pixels are burnt where their
    centre falls in a polygon, so polygons traced along pixel edges come back as the same pixels.
    """
    entry = store.scenes[store.key(scene)]
    burnt = [(label.geometry, classes.index(label.cls) + 1) for label in entry.labels if label.cls in classes]
    burnt.sort(key=lambda shape_value: -shape_value[1])  # rasterio burns in order, the last on top
    target = _burn(to_crs([g for g, _ in burnt], store.crs, grid.crs), grid, [v for _, v in burnt])
    known = [review.geometry for review in entry.reviewed] + [label.geometry for label in entry.labels]
    return target, _burn(to_crs(known, store.crs, grid.crs), grid)


def to_crs(geometries: list[BaseGeometry], src_crs: str, dst_crs: str) -> list[dict]:
    """GeoJSON-like geometries in ``dst_crs`` (a store's shapes on a grid, or into the store)."""
    if not geometries:
        return []
    if CRS.from_user_input(src_crs) == CRS.from_user_input(dst_crs):
        return [mapping(g) for g in geometries]
    return transform_geom(src_crs, dst_crs, [mapping(g) for g in geometries])


def scene_grid(path: str | Path) -> Grid:
    """The grid an exported mask is drawn on: the scene's own pixels, as the paper's labels are, or,
    for a scene in radar geometry (GCPs only), its UTM grid at its own pixel size."""
    with open_raster(path) as ds:
        if ds.crs is not None:
            return Grid(ds.crs.to_string(), ds.transform, ds.width, ds.height)
        utm, _ = utm_crs_for(footprint_lonlat(ds))
        return analysis_grid(ds, utm, round(pixel_size_m(ds), 1))


def export_mask(store: LabelStore, scene: str | Path, out: str | Path) -> Path:
    """Write the scene's slick labels as the paper's labels come: a 0/255 PNG with a .pgw world file
    (CRS in .png.aux.xml), or a GeoTIFF when ``out`` ends in .tif. Never overwrites."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".tif", ".tiff"):
        raise InputError(f"Cannot tell the mask format from {out.name}.", "End the file name in .png or .tif.")
    key = store.key(scene)
    scene_file = store.scene_path(key)
    grid = scene_grid(scene_file)
    target, _ = rasterise(store, key, grid)
    profile: dict[str, Any] = dict(width=grid.width, height=grid.height, count=1, dtype="uint8", crs=grid.crs, transform=grid.transform)
    if suffix == ".png":
        profile.update(driver="PNG", WORLDFILE="YES")
    else:
        profile.update(driver="GTiff", compress="deflate")
    with writing(out, "Choose a writable folder."), \
            staged_folder(out.parent, overwrite=False, hint="Choose a writable folder.") as stage:
        staged = stage / out.name
        with rasterio.open(staged, "w", **profile) as dst:
            dst.write(target * 255, 1)
        if suffix == ".png":  # GDAL names PNG world files .wld; the paper's tools look for .pgw
            os.replace(staged.with_suffix(".wld"), staged.with_suffix(".pgw"))
    return out


def summary(store: LabelStore) -> dict[str, Any]:
    """Labels per class and reviewed km2 per scene, and whether each scene file is still where it was."""
    scenes = {}
    for key, entry in store.scenes.items():
        scenes[key] = {
            "slick": entry.count("slick"),
            "lookalike": entry.count("lookalike"),
            "reviewed_km2": round(_area_km2([r.geometry for r in entry.reviewed], store.crs), 3),
            "scene_found": store.scene_path(key).exists(),
        }
    return {
        "store": str(store.path),
        "crs": store.crs,
        "sha256": store.sha256,
        "labels": sum(s["slick"] + s["lookalike"] for s in scenes.values()),
        "reviewed_km2": round(sum(s["reviewed_km2"] for s in scenes.values()), 3),
        "scenes": scenes,
        "repairs": store.repairs,
    }


def _area_km2(geometries: list[BaseGeometry], crs: str) -> float:
    """Area of the union (overlaps counted once), in the UTM zone of its centre."""
    if not geometries:
        return 0.0
    union = shapely.union_all(geometries)
    lonlat = shape(to_crs([union], crs, "EPSG:4326")[0])
    utm, _ = utm_crs_for(lonlat.bounds)
    return shape(to_crs([union], crs, utm)[0]).area / 1e6


def _burn(geometries: list[dict], grid: Grid, values: Optional[list[int]] = None) -> np.ndarray:
    if not geometries:
        return np.zeros((grid.height, grid.width), dtype=np.uint8)
    shapes = zip(geometries, values or [1] * len(geometries))
    return rasterize(shapes, out_shape=(grid.height, grid.width), transform=grid.transform, fill=0, dtype="uint8")


def _require(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"Label store not found: {path}.", _STORE_HINT)


def _store_crs(path: Path, name: str) -> str:
    """The store's CRS, checking on the way that ``path`` (the store ``name`` or its snapshot) is a label
    store at all."""
    try:
        layers = fiona.listlayers(path)
        if not set(SCHEMAS) <= set(layers):
            raise InputError(f"{name} is not a label store: it has no {LABELS_LAYER} and {REVIEWED_LAYER} layers.", _STORE_HINT)
        with fiona.open(path, layer=LABELS_LAYER) as src:
            return src.crs.to_string()
    except (DriverError, FionaError) as exc:
        raise InputError(f"{name} cannot be read as a GeoPackage ({exc}).", _STORE_HINT) from exc


def _append(path: Path, layer: str, geometries: Iterable[BaseGeometry], crs: str, props: dict[str, Any]) -> int:
    """Append in one transaction (fiona's ``writerecords``): a kill or a full disk leaves the store as it was."""
    _require(path)
    store_integrity.check(path)
    store_crs = _store_crs(path, path.name)
    geometries = list(geometries)
    for geometry in geometries:
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputError(f"Labels are polygons; got a {geometry.geom_type}.", "Draw areas, not lines or points.")
    polygons: list[dict] = []
    for geometry in map(shape, to_crs(geometries, crs, store_crs)):
        # The layers hold single polygons, as QGIS draws them; multi-part shapes go in part by part.
        parts = geometry.geoms if geometry.geom_type == "MultiPolygon" else [geometry]
        polygons.extend(mapping(part) for part in parts)
    with writing(path, "Check the free space and permissions of the store's folder; close it in other programs."):
        with fiona.open(path, "a", layer=layer) as dst:
            dst.writerecords([{"geometry": g, "properties": props} for g in polygons])
    return len(polygons)



def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``labels init|summary|export|import``."""
    parser = subparsers.add_parser("labels")
    sub = parser.add_subparsers(dest="labels_command", required=True, metavar="ACTION")

    p = sub.add_parser("init", help="create an empty label store (GeoPackage)")
    p.add_argument("store", help="new .gpkg file (never overwritten)")
    p.add_argument("--crs", required=True, help="CRS of its layers, e.g. the QGIS project's (EPSG:4326, EPSG:32636...)")
    p.set_defaults(func=_init_cli)

    p = sub.add_parser("summary", help="labels and reviewed km2 per scene")
    p.add_argument("store", help="label store (.gpkg)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    p.set_defaults(func=_summary_cli)

    p = sub.add_parser("export", help="one scene's slick labels as a mask in the paper's format")
    p.add_argument("store", help="label store (.gpkg)")
    p.add_argument("--scene", required=True, help="the scene, as named in the store (or a path to the same file)")
    p.add_argument("--out", required=True, help=".png (0/255 + .pgw world file) or .tif (GeoTIFF); never overwritten")
    p.set_defaults(func=_export_cli)

    p = sub.add_parser("import", help="add a label mask (PNG + world file, GeoTIFF) as slick labels + one reviewed area")
    p.add_argument("store", help="label store (.gpkg)")
    p.add_argument("--scene", required=True, help="the scene file the mask labels")
    p.add_argument("--mask", required=True, help="label raster: non-zero (or 1) = slick")
    p.add_argument("--author", default="import", help="author recorded on the features (default: import)")
    p.set_defaults(func=_import_cli)


def _init_cli(args: argparse.Namespace, progress: Progress) -> dict:
    path = create_store(args.store, args.crs)
    return {"store": str(path), "crs": _store_crs(path, path.name)}


def _summary_cli(args: argparse.Namespace, progress: Progress) -> dict:
    result = summary(read_store(args.store))
    if args.json and not args.jsonl:  # --jsonl wins: the plugin reads the result event
        print(json.dumps(result, indent=2))
        return {}
    return result


def _export_cli(args: argparse.Namespace, progress: Progress) -> dict:
    return {"mask": str(export_mask(read_store(args.store), args.scene, args.out))}


def _import_cli(args: argparse.Namespace, progress: Progress) -> dict:
    labels, reviewed = import_mask(args.store, args.scene, args.mask, author=args.author)
    return {"store": args.store, "scene": args.scene, "slick_labels": labels, "reviewed_areas": reviewed}
