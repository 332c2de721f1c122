"""The real Sentinel-1 EW/HH tiles bundled with the product, with their analysts' labels and the paper's
own predictions (resources/samples/arctic_s1, attribution in its ATTRIBUTION.md).

The demo, the experiments and product training all name these tiles and their CRS from here, so that one
list says which tiles ship.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "resources" / "samples" / "arctic_s1"
SAMPLES = ("sample_1", "sample_2", "sample_123")
ARCTIC_CRS = "EPSG:32636"
"""The tiles' CRS (UTM 36N, the paper's Barents Sea zone)."""
