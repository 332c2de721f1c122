"""The classical dark-spot detector, as a model like every other, and its fitting on labelled scenes.

Before deep learning, slicks were found by adaptive thresholding (Solberg et al. 1999 and successors): a
pixel is dark when it lies ``k`` local standard deviations below its neighbourhood's mean; the response is
smoothed and specks are removed. ``DarkSpot`` is that detector as a ``torch.nn.Module`` of the model
registry (architecture ``darkspot``): detection, the dock and Processing run it tile by tile like a
network, and its few parameters live in its card's ``arch_kwargs``; it has no weights.

It works on the eq. 1 stretched values every model is fed, not on dB. Within the stretch's range the
stretch is affine in dB, and a z-score ``(mean - x) / std`` does not change under an affine map, so the
response is the dB one except where eq. 1 clips (beyond 2 sigma of the scene). There the clip helps: a
ship's bright return cannot inflate the local standard deviation and hide a slick beside it. No data
(stretched 0: outside the scene, land masked by detection) is left out of the local statistics, and so
is whatever lies beyond the tile: the padding is zeros, i.e. no data, rather than a reflection of the
tile. A reflection would invent sea beyond the scene's edge; with zeros, a pixel by the scene's edge gets
the same response in any tile, and in the whole-scene maps the fit uses.

Speck removal is in the module, as a morphological opening of the response (a min-width of ``opening``
pixels), rather than through the minimum area of the polygon outlines: the opening acts on the
probability map itself, so what is scored (the probability raster) and what the analyst sees are one
output, and the module stays plain tensor ops (average and max pooling, zero padding) that export to
ONNX. An opening commutes with the monotone map from response to logit, so the threshold ``k`` can be
swept on one response map per (window, smoothing, opening), which makes an exhaustive fit cheap.

``fit_darkspot`` chooses the parameters that maximise the pooled slick Dice (eq. 4, counted on each
label's own grid as ``jobs.evaluate.slick_dice`` does) over the training scenes only, computing the response
on each whole scene on detection's analysis grid. Detection's tiles give the same response except within
the receptive radius of a tile edge inside the scene; tiles are large and the radius is kept to half
detection's default overlap, so blending leaves no seam (docs/darkspot.md measures what remains).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.crs import CRS

from ..data.bundled import LabelledScene
from ..data.real_scenes import read_stretched
from ..errors import InputError, ModelError
from ..jobs.detect import DEFAULT_OVERLAP
from ..jobs.evaluate import align_to_grid, dice_from_counts, read_label_mask
from ..progress import Progress
from .registry import ModelCard, read_card, save_model

ARCHITECTURE = "darkspot"
NAME = "Dark-spot baseline"
PIXEL_SIZE = 25.0
TILE = 1024
"""Large tiles: a box filter costs little per pixel, and every tile edge inside a scene is a place where the
response differs from the whole-scene one (a 768 x 1024 scene is a single tile)."""
GAIN = 4.0
"""Logit per local standard deviation beyond ``k``: probability 0.5 at ``k``, 0.98 one sigma darker."""
_STD_FLOOR = 1.0 / 255
"""One stretched level: keeps flat (clipped or constant) neighbourhoods from dividing by zero."""
_NODATA_LOGIT = -20.0

WINDOWS = (21, 31, 41, 51)
SMOOTHINGS = (1, 3, 5)
OPENINGS = (1, 3, 5, 7)
KS = tuple(float(k) for k in np.round(np.arange(0.0, 4.001, 0.05), 2))
"""The grid ``fit_darkspot`` searches. The largest receptive radius (25 + 2 + 2 * 3 = 33 pixels) is about half
detection's default overlap of 64 pixels, so every pixel of an overlap is far enough from the edge of at
least one of the tiles blended there."""
DEFAULT_PARAMETERS = {"window": 31, "smoothing": 1, "opening": 1, "k": 1.0}
"""Textbook values before any fit: one standard deviation darker than a 775 m neighbourhood."""


class DarkSpot(torch.nn.Module):
    """Slick logit of a stretched tile: ``GAIN * (opened smoothed z - k)``, z the local darkness in sigmas.

    Built by ``registry.build_model`` like smp's networks, hence the unused ``encoder_*`` arguments.
    """

    def __init__(
        self,
        encoder_name: str = "none",
        encoder_weights: Optional[str] = None,
        in_channels: int = 1,
        classes: int = 1,
        window: int = DEFAULT_PARAMETERS["window"],
        smoothing: int = DEFAULT_PARAMETERS["smoothing"],
        opening: int = DEFAULT_PARAMETERS["opening"],
        k: float = DEFAULT_PARAMETERS["k"],
    ) -> None:
        super().__init__()
        if in_channels != 1 or classes != 1:
            raise ModelError("The dark-spot detector reads one band and predicts one slick logit.", "Use in_channels 1 and two classes.")
        for name, size in (("window", window), ("smoothing", smoothing), ("opening", opening)):
            if size < 1 or size % 2 == 0:
                raise ModelError(f"The dark-spot {name} must be an odd number of pixels, not {size}.", "Fit the model again.")
        self.window, self.smoothing, self.opening, self.k = int(window), int(smoothing), int(opening), float(k)

    def response(self, x: torch.Tensor) -> torch.Tensor:
        """Opened, smoothed local darkness in standard deviations; 0 on no data."""
        valid = (x > 0).float()
        return opened(smoothed(darkness(x.float(), valid, self.window), valid, self.smoothing), self.opening)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        valid = (x > 0).float()
        return GAIN * (self.response(x) - self.k) * valid + _NODATA_LOGIT * (1 - valid)


def darkness(x: torch.Tensor, valid: torch.Tensor, window: int) -> torch.Tensor:
    """(local mean - x) / local std over a window x window square of valid pixels; 0 on no data.

    Moments are taken about mid-grey, which keeps E[x^2] - E[x]^2 from cancelling in float32 where the sea
    is flat."""
    centred = (x - 0.5) * valid
    count = _box(valid, window).clamp_min(1e-6)
    mean = _box(centred, window) / count
    variance = (_box(centred * centred, window) / count - mean * mean).clamp_min(0)
    return (mean - centred) / (variance.sqrt() + _STD_FLOOR) * valid


def smoothed(z: torch.Tensor, valid: torch.Tensor, size: int) -> torch.Tensor:
    if size == 1:
        return z
    return _box(z, size) / _box(valid, size).clamp_min(1e-6) * valid


def opened(z: torch.Tensor, size: int) -> torch.Tensor:
    """Grey opening: dark areas narrower than ``size`` pixels in some direction fall to their surroundings."""
    if size == 1:
        return z
    return _dilate(-_dilate(-z, size), size)


def _box(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a size x size square, separable; zero-padded, i.e. beyond the tile is no data."""
    r = size // 2
    return F.avg_pool2d(F.avg_pool2d(F.pad(x, (r, r, r, r)), (size, 1), stride=1), (1, size), stride=1)


def _dilate(x: torch.Tensor, size: int) -> torch.Tensor:
    """Grey dilation; the zero padding is the darkness of no data."""
    r = size // 2
    return F.max_pool2d(F.pad(x, (r, r, r, r)), size, stride=1)


def darkspot_card(parameters: dict, **fields) -> ModelCard:
    return ModelCard(
        name=NAME, architecture=ARCHITECTURE, encoder="none", tile_size=TILE, pixel_size=PIXEL_SIZE,
        polarisation="HH", mode="EW", threshold=0.5, arch_kwargs=dict(parameters), **fields,
    )


@dataclass
class _Prepared:
    """One training scene on detection's analysis grid, with the map from its label grid into that grid."""

    name: str
    stretched: torch.Tensor
    """(1, 1, H, W) stretched values scaled to 0..1, as ``Predictor`` feeds models."""
    lookup: np.ndarray
    """Flat analysis-grid index of each label-grid pixel that falls on a valid scene pixel."""
    inside: np.ndarray
    """Label-grid pixels that do (the others are never slick, as in ``slick_dice``)."""
    label: np.ndarray


def prepare(scene: LabelledScene, progress: Progress) -> _Prepared:
    """Read and stretch as ``detect`` does, and align as ``slick_dice`` does (nearest, on the label grid)."""
    for role, path in (("image", scene.image), ("labels", scene.labels)):
        if not Path(path).is_file():
            raise InputError(f"The {role} of training scene {scene.name} is missing: {path}.", "Check the scene list.")
    stretched, grid, _ = read_stretched(scene.image, PIXEL_SIZE, progress)
    label, transform, crs = read_label_mask(scene.labels)
    grid_crs = CRS.from_user_input(grid.crs)
    index = np.arange(1, grid.width * grid.height + 1, dtype=np.int32).reshape(grid.height, grid.width)
    lookup = align_to_grid(index, transform, crs or grid_crs, label.shape, src_transform=grid.transform, src_crs=grid_crs)
    if not lookup.any():
        raise InputError(f"The labels of {scene.name} do not overlap its image.", "Check that both are of the same scene.")
    lookup = lookup.ravel().astype(np.int64) - 1
    inside = lookup >= 0
    inside[inside] = stretched.ravel()[lookup[inside]] > 0
    tensor = torch.from_numpy(stretched / np.float32(255)).float()[None, None]
    return _Prepared(scene.name, tensor, lookup[inside], inside, label.ravel())


def _counts(scene: _Prepared, response: torch.Tensor, ks: np.ndarray) -> np.ndarray:
    """(len(ks), 3): true positive, predicted and labelled pixels on the label grid, slick where response > k."""
    flat = response.reshape(-1).numpy()
    above = np.zeros(scene.label.shape, dtype=np.int64)
    above[scene.inside] = np.searchsorted(ks, flat[scene.lookup], side="left")  # how many ks lie below

    def exceeding(values: np.ndarray) -> np.ndarray:
        return np.bincount(values, minlength=len(ks) + 1)[::-1].cumsum()[::-1][1:]

    return np.stack([exceeding(above[scene.label]), exceeding(above), np.full(len(ks), scene.label.sum())], axis=1)


def _dice(counts: np.ndarray) -> np.ndarray:
    return np.array([dice_from_counts(int(tp), int(p - tp), int(n - tp)) for tp, p, n in counts])


def search(prepared: list[_Prepared], progress: Progress) -> tuple[dict, float, dict[str, float]]:
    """Best parameters by pooled Dice, their pooled Dice and each scene's Dice at them.

    The darkness map is computed once per window and scene, its smoothing once per smoothing size; only
    the opening is redone for each combination, and every k is one pass of counting."""
    ks = np.asarray(KS)
    best: tuple[float, dict, dict[str, float]] = (-1.0, {}, {})
    total, done = len(WINDOWS) * len(SMOOTHINGS) * len(OPENINGS), 0
    with torch.inference_mode():
        for window in WINDOWS:
            valids = [(s.stretched > 0).float() for s in prepared]
            darks = [darkness(s.stretched, v, window) for s, v in zip(prepared, valids)]
            for smoothing in SMOOTHINGS:
                smooth = [smoothed(z, v, smoothing) for z, v in zip(darks, valids)]
                for opening in OPENINGS:
                    progress.update("fit", done, total, f"window {window}, smoothing {smoothing}, opening {opening}")
                    per_scene = [_counts(s, opened(z, opening), ks) for s, z in zip(prepared, smooth)]
                    dice = _dice(np.sum(per_scene, axis=0))
                    i = int(np.argmax(dice))
                    if dice[i] > best[0]:
                        scores = {s.name: round(float(_dice(c[i : i + 1])[0]), 4) for s, c in zip(prepared, per_scene)}
                        params = {"window": window, "smoothing": smoothing, "opening": opening, "k": float(ks[i])}
                        best = (float(dice[i]), params, scores)
                    done += 1
    progress.update("fit", total, total, "grid searched")
    return best[1], round(best[0], 4), best[2]


def fit_darkspot(train: list[LabelledScene], out: Path, progress: Progress) -> Path:
    """Fit the detector's parameters on ``train`` by exhaustive search and write the model file ``out``."""
    if not train:
        raise InputError("No training scenes were given: the dark-spot detector is fitted on labelled scenes.",
                         "Give at least one scene with its label raster.")
    names = [scene.name for scene in train]
    if len(set(names)) != len(names):
        raise InputError(f"Training scene names repeat ({', '.join(names)}).", "Give each scene once, under its own name.")
    prepared = []
    for i, scene in enumerate(train):
        progress.update("scenes", i, len(train), f"Reading {scene.name}")
        prepared.append(prepare(scene, progress))
    parameters, dice, per_scene = search(prepared, progress)
    progress.log(f"fitted {parameters}: pooled training Dice {dice:.3f}")
    card = darkspot_card(
        parameters,
        provenance={
            "method": "adaptive-threshold dark-spot detection, parameters by exhaustive search maximising pooled slick Dice",
            "data": f"fitted on {len(names)} labelled scenes: {', '.join(names)}",
            "fitted_on": names,
            "search": {"window": list(WINDOWS), "smoothing": list(SMOOTHINGS), "opening": list(OPENINGS),
                       "k": [float(KS[0]), float(KS[-1]), 0.05]},
            "detect_overlap_assumed": DEFAULT_OVERLAP,
        },
        metrics={"dice": dice, "train_dice_pooled": dice, "train_dice_per_scene": per_scene},
    )
    return save_model(DarkSpot(**parameters), card, out)


def scenes_from_folders(folders: list[Path]) -> list[LabelledScene]:
    """A scene per folder holding ``raw_mosaic.tif`` and ``labels_mosaic.png`` (the paper's layout)."""
    scenes = []
    for folder in folders:
        folder = Path(folder)
        scene = LabelledScene(folder.name, folder / "raw_mosaic.tif", folder / "labels_mosaic.png", folder.resolve().parent.name)
        if not scene.image.is_file() or not scene.labels.is_file():
            raise InputError(f"{folder} does not hold raw_mosaic.tif and labels_mosaic.png.", "Give folders in the paper's layout.")
        scenes.append(scene)
    return scenes


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("darkspot")
    sub = p.add_subparsers(dest="darkspot", required=True, metavar="ACTION")
    q = sub.add_parser("fit", help="fit its parameters on labelled scenes and write a model file")
    q.add_argument("--scenes", type=Path, nargs="+", required=True,
                   help="folders with raw_mosaic.tif and labels_mosaic.png (the paper's layout)")
    q.add_argument("--out", type=Path, required=True, help="model file to write (.safetensors)")
    q.set_defaults(func=_run_fit)


def _run_fit(args: argparse.Namespace, progress: Progress) -> dict:
    path = fit_darkspot(scenes_from_folders(args.scenes), args.out, progress)
    card = read_card(path)
    return {"model": str(path), "parameters": card.arch_kwargs, "fitted_on": card.provenance["fitted_on"],
            "train_dice_pooled": card.metrics["train_dice_pooled"]}
