"""From a scene file to stretched pixels on a model's analysis grid, the one way every reader gets there.

Detection, the tiles fine-tuning learns from, and the benchmarks must see exactly the same pixels, and
``info`` must give the same verdict as the detection that follows it; so inspecting the scene, checking it
against the model, opening it, placing it on the grid and stretching it (eq. 1) happen here only.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import rasterio

from ..errors import ModelError
from ..progress import Progress, silent
from .grid import Grid, GridReader, analysis_grid, open_on_grid
from .normalise import Stretch, scene_stretch
from .raster import SceneInfo, inspect, open_raster

if TYPE_CHECKING:
    from ..models.registry import ModelCard

MAX_RESAMPLING = 5.0
"""Scenes whose pixels differ from the model's by more than this factor are refused: slicks would look
unlike anything the model has seen."""
RESAMPLING_NOTICE = 1.05
"""Pixel-size ratios beyond this are worth a warning that the scene is resampled."""


def check_scene(card: "ModelCard", band_count: int, pixel_size: Optional[float],
                polarisation: Optional[str] = None) -> list[str]:
    """Raise ``ModelError`` when the model cannot run on the scene; return warnings when it can."""
    warnings: list[str] = []
    if card.in_channels > band_count:
        raise ModelError(
            f"The model {card.name} needs {card.in_channels} input bands; the scene has {band_count}.",
            "Pick a single-band model, or a scene with all of the model's polarisations.",
        )
    if pixel_size:
        ratio = pixel_size / card.pixel_size
        if not 1 / MAX_RESAMPLING <= ratio <= MAX_RESAMPLING:
            raise ModelError(
                f"The model {card.name} works at {card.pixel_size:g} m; the scene's pixels are {pixel_size:.1f} m. "
                "Resampling by more than 5x would change how slicks look beyond what the model has seen.",
                "Pick a model made for this pixel size.",
            )
        if not 1 / RESAMPLING_NOTICE <= ratio <= RESAMPLING_NOTICE:
            warnings.append(f"The scene ({pixel_size:.1f} m) is resampled to the model's {card.pixel_size:g} m pixels.")
    if polarisation and card.polarisation and polarisation.upper() not in card.polarisation.upper():
        warnings.append(f"The model {card.name} was trained on {card.polarisation} but the scene band is {polarisation}.")
    return warnings


def assess(scene: str | Path, card: "ModelCard", band: str | int | None = None) -> SceneInfo:
    """The engine's verdict on running ``card``'s model on ``scene``: what it will do, and its warnings.

    Raises ``InputError`` for a scene nothing can use and ``ModelError`` for one this model cannot; both
    ``info`` and ``detect`` call this, so the dock refuses exactly what detection would.
    """
    info = inspect(scene, band, card.pixel_size)
    info.warnings += check_scene(card, info.count, info.pixel_size, info.polarisation)
    return info


@dataclass
class AnalysisScene:
    """A scene opened on its analysis grid; the stretch is measured on first use (it reads the whole scene)."""

    info: SceneInfo
    dataset: rasterio.DatasetReader
    grid: Grid
    reader: GridReader
    progress: Progress

    @cached_property
    def stretch(self) -> Stretch:
        return scene_stretch(self.dataset, self.info.band, self.info.value_scale, self.progress)


@contextmanager
def open_for_analysis(
    scene: str | Path,
    card: Optional["ModelCard"],
    band: str | int | None = None,
    bounds: Optional[tuple[float, float, float, float]] = None,
    bounds_crs: Optional[str] = None,
    progress: Optional[Progress] = None,
    info: Optional[SceneInfo] = None,
    pixel_size: Optional[float] = None,
) -> Iterator[AnalysisScene]:
    """Open ``scene`` on ``card``'s analysis grid (optionally only ``bounds``); ``info`` skips a second assess.

    Without a ``card`` the grid is at ``pixel_size`` and no model is asked whether it can run on the scene:
    the real scenes the bundled models learn from are read before there is a model to ask.
    """
    if card is not None:
        pixel_size, info = card.pixel_size, info or assess(scene, card, band)
    elif pixel_size is None:
        raise TypeError("open_for_analysis needs a model card or a pixel size")
    info = info or inspect(scene, band, pixel_size)
    with open_raster(scene) as ds:
        grid = analysis_grid(ds, info.utm_crs, pixel_size, bounds, bounds_crs)
        with open_on_grid(ds, info.band, grid) as reader:
            yield AnalysisScene(info, ds, grid, reader, progress or silent())
