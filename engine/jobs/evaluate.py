"""Slick Dice of a prediction against an analyst's label, the two aligned by georeference.

Dice follows eq. 4 of the paper: ``2 TP / (2 TP + FP + FN)`` for the slick class only, counted over
every pixel of the label's grid. Labels and predictions often come from different tools (a PNG with a
world file from the labelling tool, a GeoTIFF from the model), so their grids may differ in origin,
pixel size or CRS; the prediction is therefore resampled onto the label grid (nearest neighbour, so
a mask stays a mask) rather than compared pixel index by pixel index. Label-grid pixels that fall
outside the prediction's extent count as "not slick": a prediction that misses part of the label's
slicks is penalised for it instead of having those pixels left out.

Reading is whole-band: a Sentinel-1 EW scene at 25 m is a few hundred MB at most as booleans.
"""

from __future__ import annotations

import argparse
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import Resampling, reproject

from ..errors import InputError
from ..progress import Progress

PathLike = Union[str, Path]

SLICK_CLASS = 1
"""Value of the slick class in class-coded labels (the paper's labels: 1 = slick, 0 = water)."""

_UNKNOWN_CRS = CRS.from_wkt(
    'LOCAL_CS["unknown",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)
"""Stand-in when neither raster has a CRS: both are taken to share one, and GDAL needs some CRS."""

_UNIT_ABBREVIATIONS = {"metre": "m", "meter": "m", "degree": "deg", "foot": "ft", "US survey foot": "ftUS"}

_WORLD_FILE_HINT = (
    "Give it a world file (.tfw next to a .tif, .pgw next to a .png) or a CRS and geotransform "
    "inside the file (e.g. gdal_translate -a_srs EPSG:32636 -a_ullr ...)."
)


@dataclass(frozen=True)
class DiceResult:
    """Slick Dice and the counts behind it, all counted on the label's grid.

    ``dice`` is never NaN: when neither the label nor the prediction has a slick pixel the
    prediction is perfect for the slick class, so ``dice`` is 1.0 (see ``dice_from_counts``).
    ``predicted_pixels`` counts slick pixels of the prediction after alignment to the label grid, so
    ``tp + fp == predicted_pixels`` and ``tp + fn == label_pixels``.
    """

    dice: float
    tp: int
    fp: int
    fn: int
    label_pixels: int
    predicted_pixels: int
    grid: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "dice": self.dice,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "label_pixels": self.label_pixels,
            "predicted_pixels": self.predicted_pixels,
            "grid": self.grid,
        }


@dataclass(frozen=True)
class _Band:
    """One band as read, with whatever georeference the file has (geotransform or GCPs)."""

    path: Path
    values: np.ndarray
    valid: np.ndarray  # False where the file marks nodata (nodata value, internal mask, alpha)
    nodata: Optional[float]
    transform: Optional[Affine]  # None when the file is georeferenced by GCPs only
    crs: Optional[CRS]
    gcps: list[GroundControlPoint]

    def extent(self) -> str:
        """Extent in the raster's own CRS, for messages."""
        if self.transform is not None:
            left, bottom, right, top = array_bounds(*self.values.shape, self.transform)
        else:
            xs = [g.x for g in self.gcps]
            ys = [g.y for g in self.gcps]
            left, bottom, right, top = min(xs), min(ys), max(xs), max(ys)
        return f"x {left:.6g}..{right:.6g}, y {bottom:.6g}..{top:.6g} ({_crs_name(self.crs)})"


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """Dice = 2TP / (2TP + FP + FN); 1.0 when there is nothing to find and nothing was found."""
    if min(tp, fp, fn) < 0:
        raise ValueError(f"Pixel counts cannot be negative (tp={tp}, fp={fp}, fn={fn}).")
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2 * tp / denominator


def slick_dice_arrays(prediction: np.ndarray, label: np.ndarray, grid: str) -> DiceResult:
    """Dice of two boolean slick masks already on the same grid (``grid`` describes it).

    Separate from the file readers so that a prediction made in memory (a model run) is scored
    exactly as a prediction read from disk.
    """
    if prediction.shape != label.shape:
        raise ValueError(
            f"Prediction {prediction.shape} and label {label.shape} must be on the same grid; "
            "align them first (align_to_grid)."
        )
    prediction = prediction.astype(bool, copy=False)
    label = label.astype(bool, copy=False)
    tp = int(np.count_nonzero(prediction & label))
    predicted = int(np.count_nonzero(prediction))
    labelled = int(np.count_nonzero(label))
    fp, fn = predicted - tp, labelled - tp
    return DiceResult(
        dice=dice_from_counts(tp, fp, fn),
        tp=tp,
        fp=fp,
        fn=fn,
        label_pixels=labelled,
        predicted_pixels=predicted,
        grid=grid,
    )


def describe_grid(transform: Affine, crs: Optional[CRS], shape: tuple[int, int]) -> str:
    """Short grid description for reports, e.g. ``"768x768 @ 25.0 m EPSG:32636"`` (width x height)."""
    height, width = shape
    xres, yres = abs(transform.a), abs(transform.e)
    unit = _UNIT_ABBREVIATIONS.get(crs.units_factor[0], crs.units_factor[0]) if crs else "units"
    size = f"{round(xres, 6)}" if np.isclose(xres, yres) else f"{round(xres, 6)}x{round(yres, 6)}"
    rotated = " (rotated)" if transform.b or transform.d else ""
    return f"{width}x{height} @ {size} {unit}{rotated} {_crs_name(crs)}"


def read_label_mask(path: PathLike) -> tuple[np.ndarray, Affine, Optional[CRS]]:
    """Read a label raster as a boolean slick mask with its grid.

    Reads anything GDAL reads with its georeference: a PNG with its ``.pgw`` world file and the CRS
    from its ``.png.aux.xml`` (as the paper's labels come), or a GeoTIFF. The slick class is:

    * the single non-zero value when the label is a binary mask (0/1, 0/255, ...), and
    * value 1 otherwise, as in the paper's class-coded labels (other classes are not slick).

    Pixels the file marks as nodata are "not slick", like the rest of the grid. The CRS is None
    when the file has a geotransform but no CRS; ``slick_dice`` then borrows the prediction's.
    """
    band = _read_band(path, 1, "label")
    if band.transform is None:
        raise InputError(
            f"The label {band.path} is georeferenced by GCPs only, so it has no pixel grid to count on.",
            "Warp it to a map grid first (gdalwarp), or give it a world file.",
        )
    values = band.values[band.valid]
    nonzero = values[values != 0]
    if nonzero.size and np.all(nonzero == nonzero[0]):
        slick_value = nonzero[0]
    else:
        slick_value = SLICK_CLASS
    return (band.values == slick_value) & band.valid, band.transform, band.crs


def align_to_grid(
    source: Union[PathLike, np.ndarray],
    dst_transform: Affine,
    dst_crs: CRS,
    dst_shape: tuple[int, int],
    *,
    src_transform: Optional[Affine] = None,
    src_crs: Optional[CRS] = None,
    gcps: Optional[list[GroundControlPoint]] = None,
    band: int = 1,
    fill: Union[int, float] = 0,
    resampling: str = "nearest",
) -> np.ndarray:
    """Resample a raster onto a target grid by georeference; pixels it does not cover get ``fill``.

    ``source`` is a file (band ``band``; its geotransform or GCPs, CRS and nodata value are used:
    nodata pixels leave ``fill`` too; a missing CRS is taken to be ``dst_crs``) or an array with
    ``src_transform`` or ``gcps`` and ``src_crs`` (None means ``dst_crs``). Use ``"nearest"`` for
    masks and class labels: any other resampling invents values
    that are neither slick nor water.
    """
    src_nodata = None
    if isinstance(source, np.ndarray):
        if (src_transform is None) == (gcps is None):
            raise ValueError("Give an array source exactly one of src_transform or gcps.")
        values = source
    else:
        read = _read_band(source, band, "raster")
        values, src_transform, src_crs, gcps = read.values, read.transform, read.crs, read.gcps or None
        src_nodata = read.nodata
    try:
        method = Resampling[resampling]
    except KeyError:
        names = [r.name for r in Resampling]
        raise ValueError(f"Unknown resampling {resampling!r}; use one of {names}.") from None
    destination = np.full(dst_shape, fill, dtype=values.dtype)
    reproject(
        values,
        destination,
        src_transform=src_transform,
        gcps=gcps,
        src_crs=src_crs or dst_crs,
        src_nodata=src_nodata,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
        resampling=method,
        init_dest_nodata=False,
    )
    return destination


def slick_dice(
    prediction_path: PathLike,
    label_path: PathLike,
    *,
    threshold: float = 0.5,
    band: int = 1,
) -> DiceResult:
    """Slick Dice of a prediction raster against a label raster, aligned on the label's grid.

    The prediction is binarised on its own grid, then resampled (nearest) onto the label's grid:

    * float rasters are probabilities: slick where ``value > threshold`` (NaN is not slick);
    * integer rasters are masks: slick where ``value > 0`` and ``threshold`` is ignored. A uint8
      probability scaled to 0..255 would thus count every non-zero pixel as slick; a warning says
      so when an integer prediction has more than one non-zero value. Convert such a raster to
      float 0..1 first.

    Prediction nodata pixels and label-grid pixels outside the prediction count as not slick. A
    raster without a CRS is taken to be in the other's CRS, with a ``UserWarning`` saying so.
    """
    if not 0.0 <= threshold < 1.0:
        raise InputError(
            f"Threshold {threshold} is not in [0, 1).",
            "Give the probability above which a pixel is slick, e.g. 0.5.",
        )
    label, label_transform, label_crs = read_label_mask(label_path)
    prediction = _read_band(prediction_path, band, "prediction")
    pred_crs = prediction.crs
    pred_name, label_name = prediction.path.name, Path(label_path).name
    if label_crs is None and pred_crs is None:
        _warn(f"Neither {pred_name} nor {label_name} has a CRS; assuming they share one.")
        label_crs = pred_crs = _UNKNOWN_CRS
    elif pred_crs is None:
        _warn(f"The prediction {pred_name} has no CRS; assuming the label's ({_crs_name(label_crs)}).")
        pred_crs = label_crs
    elif label_crs is None:
        _warn(f"The label {label_name} has no CRS; assuming the prediction's ({_crs_name(pred_crs)}).")
        label_crs = pred_crs

    # One warp gives both coverage and class: 0 = outside the prediction, 1 = not slick, 2 = slick.
    coded = np.where(_binarise(prediction, threshold), np.uint8(2), np.uint8(1))
    aligned = align_to_grid(
        coded,
        label_transform,
        label_crs,
        label.shape,
        src_transform=prediction.transform,
        src_crs=pred_crs,
        gcps=prediction.gcps or None,
    )
    if not aligned.any():
        label_extent = array_bounds(*label.shape, label_transform)
        raise InputError(
            f"The prediction {prediction.path} ({prediction.extent()}) does not overlap the label "
            f"{Path(label_path)} (x {label_extent[0]:.6g}..{label_extent[2]:.6g}, "
            f"y {label_extent[1]:.6g}..{label_extent[3]:.6g} ({_crs_name(label_crs)})).",
            "Check that both are of the same scene and that their CRSs are right.",
        )
    return slick_dice_arrays(aligned == 2, label, describe_grid(label_transform, label_crs, label.shape))


def add_cli(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``evaluate PRED --labels LABELS [--threshold 0.5] [--band 1]``."""
    parser = subparsers.add_parser(
        "evaluate",
        description=(
            "Dice = 2TP/(2TP+FP+FN) of the slick class over the label's grid. The prediction is "
            "resampled (nearest) onto the label's grid; pixels it does not cover count as not slick."
        ),
    )
    parser.add_argument(
        "prediction", metavar="PRED", help="prediction raster: binary mask or float probabilities"
    )
    parser.add_argument(
        "--labels", required=True, metavar="LABELS", help="label raster (1 or non-zero = slick)"
    )
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="probability above which a float prediction is slick"
    )
    parser.add_argument("--band", type=int, default=1, help="prediction band to read (1-based)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Run ``evaluate`` for the CLI; georeference assumptions go to the progress log."""
    progress.update("evaluate", 0, 1, "Aligning the prediction on the label grid")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = slick_dice(args.prediction, args.labels, threshold=args.threshold, band=args.band)
    for warning in caught:
        progress.log(str(warning.message))
    progress.update("evaluate", 1, 1, f"Dice {result.dice:.4f}")
    return result.as_dict()


def _read_band(path: PathLike, band: int, role: str) -> _Band:
    """Read one band and its georeference, or raise ``InputError`` saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {role} file {path} does not exist.", "Check the path.")
    try:
        with warnings.catch_warnings():
            # A raster without georeference is reported below as an InputError, not as a warning.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                if not 1 <= band <= dataset.count:
                    raise InputError(
                        f"The {role} {path} has {dataset.count} band(s); band {band} does not exist.",
                        f"Choose a band from 1 to {dataset.count}.",
                    )
                values = dataset.read(band)
                valid = dataset.read_masks(band) != 0
                nodata = dataset.nodatavals[band - 1]
                gcps, gcp_crs = dataset.gcps
                transform = None if dataset.transform.is_identity else dataset.transform
                crs = dataset.crs or gcp_crs
    except RasterioError as error:
        raise InputError(
            f"The {role} {path} cannot be read as a raster ({error}).",
            "Give a GeoTIFF, or an image GDAL reads (e.g. PNG) with its world file.",
        ) from error
    if transform is None and not gcps:
        raise InputError(
            f"The {role} {path} has no georeference (no CRS, world file or GCPs).", _WORLD_FILE_HINT
        )
    return _Band(path, values, valid, nodata, transform, crs or None, list(gcps) if transform is None else [])


def _binarise(band: _Band, threshold: float) -> np.ndarray:
    """Slick mask of a prediction on its own grid; nodata pixels are not slick."""
    if np.issubdtype(band.values.dtype, np.floating):
        return (band.values > threshold) & band.valid
    slick = (band.values > 0) & band.valid
    nonzero = band.values[slick]
    if nonzero.size and not np.all(nonzero == nonzero[0]):
        _warn(
            f"The prediction {band.path.name} is an integer raster with several non-zero values; "
            "every non-zero pixel counts as slick. If it is a probability scaled to 0..255, convert "
            "it to float 0..1 to apply a threshold."
        )
    return slick


def _crs_name(crs: Optional[CRS]) -> str:
    if crs is None:
        return "no CRS"
    if crs == _UNKNOWN_CRS:
        return "unknown CRS"
    epsg = crs.to_epsg()
    if epsg is not None:
        return f"EPSG:{epsg}"
    name = re.match(r'^\w+\["([^"]*)"', crs.to_wkt())
    return name.group(1) if name else "custom CRS"


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)
