"""A scene's footprint: the outline of its valid data, so "observed but no slick" can be told apart.

Traced from the detection mask (nodata = outside the swath or the scene), read decimated to at most
``_MAX_SIDE`` pixels a side: an outline good to a few hundred metres is all that counting which scenes saw
a site needs, and it stays instant on a full scene.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import rasterio
from fiona.transform import transform_geom
from rasterio.enums import Resampling
from rasterio.features import shapes
from shapely.geometry import mapping, shape
from shapely.ops import unary_union

from ..atomic import write_text
from ..jobs.outputs import MASK_NODATA

_MAX_SIDE = 512


def valid_outline(mask_path: Path):
    """The valid-data area of a detection mask as a shapely (Multi)Polygon in the mask's CRS."""
    with rasterio.open(mask_path) as ds:
        factor = max(1, math.ceil(max(ds.width, ds.height) / _MAX_SIDE))
        out_shape = (max(1, ds.height // factor), max(1, ds.width // factor))
        data = ds.read(1, out_shape=out_shape, resampling=Resampling.nearest)
        transform = ds.transform * ds.transform.scale(ds.width / out_shape[1], ds.height / out_shape[0])
        crs = ds.crs.to_string()
    valid = (data != MASK_NODATA).astype(np.uint8)
    parts = [shape(geom) for geom, value in shapes(valid, mask=valid.astype(bool), transform=transform) if value == 1]
    outline = unary_union(parts).simplify(abs(transform.a), preserve_topology=True) if parts else None
    return outline, crs


def write_footprint(mask_path: Path, dest: Path) -> None:
    """The outline in EPSG:4326 as GeoJSON (RFC 7946 requires WGS 84), written atomically."""
    outline, crs = valid_outline(mask_path)
    features = []
    if outline is not None and not outline.is_empty:
        geometry = mapping(shape(transform_geom(crs, "EPSG:4326", mapping(outline))))
        features.append({"type": "Feature", "geometry": geometry, "properties": {"analysis_crs": crs}})
    write_text(dest, json.dumps({"type": "FeatureCollection", "features": features}))
