"""The North Sea tiles on a map grid: their files carry no georeference, and whatever reads scenes as a product does
(detection, label stores, fine-tuning) needs one.

They are staged as GeoTIFFs at their assumed pixel size (``bundled.NORTH_SEA_PIXEL_M``) on a UTM 31N grid in the
open North Sea, where no coastline is near, so detection's default land mask leaves them whole; their own place is
not recorded, and the slick-free tile's coast then counts as sea.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from .bundled import NORTH_SEA_PIXEL_M, LabelledScene

CRS = "EPSG:32631"
ORIGIN = (500_000.0, 6_250_000.0)
"""UTM 31N at 3° E, 56.4° N: open North Sea."""


def georeferenced(scene: LabelledScene, folder: Path) -> LabelledScene:
    """``scene``'s image and label as GeoTIFFs on the assumed grid in ``folder`` (0: no data, as in the image)."""
    folder.mkdir(parents=True, exist_ok=True)
    transform = Affine(NORTH_SEA_PIXEL_M, 0, ORIGIN[0], 0, -NORTH_SEA_PIXEL_M, ORIGIN[1])
    paths = []
    for kind, source, nodata in (("image", scene.image, 0), ("label", scene.labels, None)):
        with rasterio.open(source) as ds:
            values = ds.read(1).astype(np.uint8) if kind == "image" else (ds.read(1) > 0).astype(np.uint8)
        path = folder / f"{scene.name}_{kind}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1, dtype="uint8",
                           crs=CRS, transform=transform, nodata=nodata) as ds:
            ds.write(values, 1)
        paths.append(path)
    return LabelledScene(scene.name, paths[0], paths[1], scene.region)
