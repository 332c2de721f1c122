"""The real Sentinel-1 scenes the project carries, read as the model sees them, for training and scoring.

Three sources, each with its own licence (``resources/samples/*/ATTRIBUTION.md``):

* five Barents Sea EW/HH tiles with analysts' labels (25 m, UTM 36N, already stretched to 8 bit);
* four North Sea tiles with slick masks (8 bit, no georeference; taken to be 20 m, as the same author's
  other North Sea tiles are, and resampled to the model's pixel size);
* one whole IW GRD scene off Cape Hatteras, VV, decimated to about 200 m, in radar geometry with GCPs:
  real open sea, coast and low-wind areas, no labels. It is read on its own ~200 m grid through the
  engine's geocoding and eq. 1 stretch; ``engine.data.real_texture`` upsamples its crops with speckle,
  so what it lends the model is real wind structure and coastline, not real fine texture.

Every array comes out of the same path detection takes (``scenes.analysis``): ``inspect``, the analysis
grid, eq. 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from ..jobs.evaluate import align_to_grid, read_label_mask
from ..progress import Progress
from ..scenes.analysis import open_for_analysis
from ..scenes.grid import Grid
from ..scenes.normalise import Stretch
from .bundled import ARCTIC, GRD_SCENE, NORTH_SEA, LabelledScene

@dataclass
class SceneArrays:
    """One scene on the model's analysis grid: stretched values (float32 0..255, 0 = no data), the slick
    mask, and where the mask is known (a label grid smaller than the image leaves the rest unknown)."""

    name: str
    values: np.ndarray
    slick: np.ndarray
    known: np.ndarray
    pixel_size: float

    @property
    def data(self) -> np.ndarray:
        return self.values > 0


def read_stretched(path: Path, pixel_size: float, progress: Optional[Progress] = None) -> tuple[np.ndarray, Grid, Stretch]:
    """The whole scene as detection reads it: on its UTM analysis grid at ``pixel_size``, stretched by eq. 1."""
    with open_for_analysis(path, None, progress=progress, pixel_size=pixel_size) as opened:
        grid, stretch = opened.grid, opened.stretch
        values = stretch.apply(opened.reader.read(Window(0, 0, grid.width, grid.height)))
    return values.astype(np.float32), grid, stretch


def load_labelled(scene: LabelledScene, pixel_size: float, restretch: bool = True) -> SceneArrays:
    """``scene`` on a ``pixel_size`` grid as the model input; a tile without georeference (the North Sea's) is
    re-stretched by eq. 1 unless ``restretch`` is off, which keeps its 8-bit levels as detection would read them."""
    if scene.pixel_size is None:
        values, grid, _ = read_stretched(scene.image, pixel_size)
        mask, transform, crs = read_label_mask(scene.labels)
        shape = (grid.height, grid.width)
        slick = align_to_grid(mask.astype(np.uint8), grid.transform, grid.crs, shape, src_transform=transform, src_crs=crs) > 0
        known = align_to_grid(np.ones_like(mask, np.uint8), grid.transform, grid.crs, shape, src_transform=transform, src_crs=crs) > 0
        return SceneArrays(scene.name, values, slick, known & (values > 0), pixel_size)
    with warnings.catch_warnings():  # these tiles are known to carry no georeference
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(scene.image) as ds:
            values = ds.read(1).astype(np.float32)
        with rasterio.open(scene.labels) as ds:
            slick = ds.read(1) == 1
    # Their 8-bit stretch is the authors' own and far narrower than eq. 1 on some tiles (std 9-43 levels
    # against eq. 1's ~60): re-stretch by eq. 1, reading the levels as linear in dB as any stretch is.
    valid = values > 0
    if restretch:
        values = Stretch("float32_db", float(values[valid].mean()), float(values[valid].std())).apply(np.where(valid, values, np.nan))
    scale = scene.pixel_size / pixel_size
    values = _resize(values, scale, "bilinear")
    slick = _resize(slick.astype(np.float32), scale, "nearest") > 0.5
    return SceneArrays(scene.name, values, slick, values > 0, pixel_size)


def load_grd(pixel_size: float = 200.0) -> tuple[SceneArrays, Stretch]:
    """The unlabelled IW scene on its ~200 m grid and its eq. 1 stretch; ``known`` is empty: nobody said
    where its slicks are."""
    values, _, stretch = read_stretched(GRD_SCENE, pixel_size)
    empty = np.zeros(values.shape, bool)
    return SceneArrays("cape_hatteras_iw_vv", values, empty, empty.copy(), pixel_size), stretch


def _resize(values: np.ndarray, scale: float, mode: str) -> np.ndarray:
    """Resample by ``scale``; no-data (0) stays 0 and does not bleed into valid pixels as dark values."""
    if abs(scale - 1) < 1e-6:
        return values
    t = torch.from_numpy(values)[None, None]
    size = (round(values.shape[0] * scale), round(values.shape[1] * scale))
    if mode == "nearest":
        return F.interpolate(t, size=size, mode="nearest")[0, 0].numpy()
    valid = (t > 0).float()
    num = F.interpolate(t * valid, size=size, mode="bilinear", align_corners=False)
    den = F.interpolate(valid, size=size, mode="bilinear", align_corners=False)
    out = torch.where(den > 0.5, num / den.clamp(min=1e-6), torch.zeros_like(num))
    return out[0, 0].numpy()
