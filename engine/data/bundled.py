"""The real Sentinel-1 data bundled with the product (resources/samples, each folder with its attribution):
five Barents Sea EW/HH tiles with analysts' labels and, for three, the paper's own predictions; four North
Sea tiles with slick masks; one decimated IW GRD scene without labels.

The demo, the experiments and product training all name these tiles and their CRS from here, so that one
list says which tiles ship.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "samples"
SAMPLES_DIR = RESOURCES / "arctic_s1"
SAMPLES = ("sample_1", "sample_2", "sample_123")
"""The demo's and the paper's test tiles (the paper's own predictions ship for these three only)."""
POOL = ("sample_0", "sample_70")
"""The labelled Arctic scenes a model may learn from when its figures are scored on ``SAMPLES``: the held-out model
(``models.registry.HELD_OUT_MODEL``), the generators, and every experiment that scores those tiles."""
ARCTIC_CRS = "EPSG:32636"
"""The tiles' CRS (UTM 36N, the paper's Barents Sea zone)."""
NORTH_SEA_PIXEL_M = 20.0
"""Not stated by the North Sea tiles; the same author's other North Sea tiles are 20 m."""


@dataclass(frozen=True)
class LabelledScene:
    """A real scene with an analyst's slick mask."""

    name: str
    image: Path
    labels: Path
    region: str
    pixel_size: Optional[float] = None
    """Metres per pixel for files without georeference; None: the file's own grid."""


ARCTIC = tuple(
    LabelledScene(sample, SAMPLES_DIR / sample / "raw_mosaic.tif", SAMPLES_DIR / sample / "labels_mosaic.png",
                  "Barents Sea, EW HH")
    for sample in ("sample_0", "sample_1", "sample_2", "sample_123", "sample_70")
)
"""The labelled real scenes a leave-one-scene-out protocol rotates over (all georeferenced, same seep area,
different acquisitions)."""
NORTH_SEA = tuple(
    LabelledScene(f"north_sea_{i}", RESOURCES / "north_sea" / f"image_{i}.tif", RESOURCES / "north_sea" / f"label_{i}.tif",
                  "North Sea", NORTH_SEA_PIXEL_M)
    for i in range(1, 5)
)
GRD_SCENE = RESOURCES / "s1_grd_crop" / "iw-vv.tiff"


def scenes_named(record: Any) -> set[str]:
    """The bundled scenes a card's training record names, wherever in it (a model or generator it started from
    included, as far as the record holds theirs): ``scenes`` lists of a label store's scene files, by their sample
    folder's name so that a run in another checkout counts, ``arctic_scenes`` of a pretraining on real SAR
    (``models.pretrain.real_sets``), by name, and ``learnt_from``, the names a fine-tuned model's parent had learnt
    from when it was fine-tuned. Plain data only, so a check on a card imports no network code."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "scenes" and isinstance(item, list):
                    found.update(Path(str(s)).parent.name for s in item)
                elif key == "arctic_scenes" and isinstance(item, dict) or key == "learnt_from" and isinstance(item, list):
                    found.update(map(str, item))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(record)
    return found
