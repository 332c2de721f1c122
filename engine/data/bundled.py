"""The real Sentinel-1 EW/HH tiles bundled with the product, with their analysts' labels and the paper's
own predictions (resources/samples/arctic_s1, attribution in its ATTRIBUTION.md).

The demo, the experiments and product training all name these tiles and their CRS from here, so that one
list says which tiles ship.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "resources" / "samples" / "arctic_s1"
SAMPLES = ("sample_1", "sample_2", "sample_123")
ARCTIC_CRS = "EPSG:32636"
"""The tiles' CRS (UTM 36N, the paper's Barents Sea zone)."""
LABELLED_SAMPLES = ("sample_0", "sample_1", "sample_2", "sample_70", "sample_123")
"""Every bundled tile with an analyst's label; the paper's predictions exist for ``SAMPLES`` only."""


@dataclass(frozen=True)
class LabelledScene:
    """A scene and the analyst's label raster of it (slick = 1 or the single non-zero value, georeferenced)."""

    name: str
    image: Path
    labels: Path


def labelled_scene(name: str) -> LabelledScene:
    """A bundled tile, in the paper's layout (``raw_mosaic.tif``, ``labels_mosaic.png`` with world file)."""
    return LabelledScene(name, SAMPLES_DIR / name / "raw_mosaic.tif", SAMPLES_DIR / name / "labels_mosaic.png")
