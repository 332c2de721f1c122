"""What the engine and the QGIS plugin must agree on, defined once.

The plugin runs in QGIS's own Python, without torch, rasterio or the engine's other requirements, and
loads this file by path (``slick_plugin/contract.py``). So it holds only the standard library: names,
choices and the one rule the dock needs before the engine has looked at a scene (which rasters are SAR
scenes at all). Everything else about a scene (band, pixel size, model fit) comes from the engine's
``info``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

STAGING_PREFIX = ".slickmapper-tmp-"
"""Name start of every file or folder being written; only a killed engine leaves one behind."""

OUTPUT_SUFFIXES = {"probability": "_probability.tif", "mask": "_mask.tif", "slicks": "_slicks.gpkg"}
"""A detection's files are ``<prefix><suffix>``."""
PARENT_TAG, CHANGES_SUFFIX = "_parent", "_changes.gpkg"
"""A comparison with the parent (``changes``) also writes the parent's detection as ``<prefix>_parent<suffix>`` and
the slicks that differ as ``<prefix>_changes.gpkg``."""


def detection_files(prefix: str, against_parent: bool = False) -> dict[str, str]:
    """The files a detection (or a comparison with the parent) writes under ``prefix``, by kind: ``probability``,
    ``mask``, ``slicks``, and for a comparison the parent's as ``probability_parent``... and ``changes``."""
    tags = ("", PARENT_TAG) if against_parent else ("",)
    names = {f"{kind}{tag}": f"{prefix}{tag}{suffix}" for tag in tags for kind, suffix in OUTPUT_SUFFIXES.items()}
    return {**names, "changes": f"{prefix}{CHANGES_SUFFIX}"} if against_parent else names


SLICKS_LAYER = "slicks"
"""The layer inside a detection's GeoPackage."""
SLICK_FIELDS = {"area_km2": "float", "length_km": "float", "mean_prob": "float", "scene": "str", "model": "str",
                "created": "str"}
"""The attributes of each detected slick polygon."""

LABEL_CLASSES = ("slick", "lookalike")
LABEL_ORIGINS = ("drawn", "accepted", "edited")
"""How a label came to be: drawn by hand, a detection accepted as it was, or accepted and then reshaped."""
LABELS_LAYER, REVIEWED_LAYER = "labels", "reviewed"
"""The two layers of a label store: the polygons, and the areas an analyst has looked through."""

DEFAULT_OVERLAP = 64
"""Pixels neighbouring detection tiles share, to hide seams."""
DEFAULT_MIN_AREA_KM2 = 0.05
"""Slicks detection keeps are at least this large (80 pixels at 25 m) unless a model's card says otherwise
(``ModelCard.min_area_km2``): smaller dark specks are speckle, not slicks."""
GENERATOR_STEPS, GENERATOR_LOW_RES_STEPS = 300, 600
"""A new generator's full-size and half-size training steps: minutes on a CPU with the small network."""

SOLVER_STEPS = {"dpm++": 20, "ddim": 200}
"""The generator's sampling solvers and the steps each takes by default (DDIM with 200 is the paper's)."""
SOLVER_TITLES = {"dpm++": "DPM-Solver++ (fast)", "ddim": "DDIM (the paper's)"}
GENERATOR_KINDS = {"dakter": "DAKTer (one joint U-Net)", "sar-jointnet": "SAR-JointNet (two joined U-Nets, three stages)"}
"""The sample generators ``generator train --kind`` makes, the default first, with the titles the dock shows."""
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "resources" / "models"
"""The bundled model files: beside ``engine/`` in a checkout and inside the installed plugin folder alike."""
BUNDLED_GENERATORS = {
    ("dakter", 64): BUNDLED_DIR / "generator_dakter_64.safetensors",
    ("sar-jointnet", 64): BUNDLED_DIR / "generator_sarjointnet_64.safetensors",
}
"""(kind, tile size) -> the pretrained generator (``generator pretrain``) a new generator of that kind and size
is fine-tuned from (``generator train --init``), where that file is bundled."""


def bundled_generator(kind: str, tile: int) -> Optional[Path]:
    """The pretrained generator a new ``kind`` generator of ``tile``-pixel tiles starts from; None: it trains
    from scratch."""
    path = BUNDLED_GENERATORS.get((kind, tile))
    return path if path is not None and path.is_file() else None


TRAIN_LAYERS = ("decoder", "all")
"""What fine-tuning may train: the decoder only (quick, CPU), or the whole network."""

PARENT_WEIGHT = 0.1
"""Fine-tuning's L2-SP strength toward the parent's weights (``--parent-weight``): on the bundled model's decoder
(0.8 M weights of RMS 0.045, loss gradients of RMS 4e-4 to 3e-3 per weight on Arctic batches) the pull matches the
labels' push once a weight has moved by about a tenth of its typical size."""

CLOSE_PARENT_WEIGHT = 1.0
"""The pull an analyst asks for to stay close to the parent: over eight runs of ten half-scenes each (two sets of parents
never trained on their tile, four fine-tuning seeds, one run each; docs/within_scene.md) it left 1 held half of 80 worse
against 5 for the default pull, at a mean held Dice of 0.471 against 0.473. The default stays the weaker pull: its
confirmation asked for a mean at most 0.005 lower on fresh seeds and got 0.007. Not measured with two runs averaged
(``finetune.AVERAGE_SEEDS``), which the default pull left at 1 half of 40 worse. Given to a parent of one network when an
analyst asks to stay close (``--stay-close``)."""

CLOSE_PARENT_SHARE = 0.75
"""The parent's share in the saved weights when an analyst asks to stay close (``--stay-close``) and the parent is a
pairing (the bundled U-Net + DeepLabV3-R18), whose U-Net alone learns: over eight runs of ten real half-scenes (two
sets of fold pairings never trained on their tile, four fine-tuning seeds) it left none of 80 worse, against 2 of 20
for the default share, at a mean held Dice of 0.49-0.50 against 0.54 (docs/within_scene.md). The stronger L2-SP pull
(``CLOSE_PARENT_WEIGHT``) had not spared the one half the default made worse."""

METRICS_EVENT = "metrics"
"""The JSON-lines event a training run sends after each epoch: ``{"event": "metrics", "epoch": ...}``."""

POLARISATIONS = ("HH", "VV", "HV", "VH")
"""Co-polarised first: slicks show best in HH and VV, so a scene's band is picked in this order."""
_POLARISATION = re.compile(r"(?<![A-Z])(HH|VV|HV|VH)(?![A-Z])")


def polarisation_of(band_name: str) -> Optional[str]:
    """The polarisation a band's name carries: ``VV``, ``Sigma0_VV``, ``Amplitude_VH`` or ``sigma0_vv_db``."""
    match = _POLARISATION.search(band_name.upper())
    return match.group(1) if match else None


def not_sar_reason(name: str, dtypes: Sequence[str], band_names: Sequence[str]) -> Optional[str]:
    """Why a raster is not a SAR scene (three unnamed 8-bit bands: a picture), or None when it may be one."""
    named = [band for band in band_names if band]
    if len(dtypes) == 3 and all(dtype == "uint8" for dtype in dtypes) and not named:
        return f"{name} has three 8-bit bands and no SAR band names: it looks like an RGB picture."
    return None
