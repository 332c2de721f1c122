"""How close a generator's samples come to real tiles, as the generator experiments (``experiment dakter``,
``experiment dakd``) measure it.

Every set of tiles is compared with the held-out real tiles (``Yardstick``):

* the SAR statistics of engine/experiments/sar_stats.py (grey-level histogram, speckle ENL, power spectrum);
* a Fréchet distance on the segmentation model's own features, the FID recipe with the model's encoder in
  place of Inception (which has never seen SAR and cannot be downloaded here): its deepest encoder level,
  global-average-pooled, one vector per tile; a Gaussian fitted to each set's vectors; the distance
  ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. Like FID it depends on the number of tiles (fewer
  tiles, larger distance), so sets are compared at similar counts, and the pool's real tiles give the
  value of "as close as real data gets";
* how far segmenters agree with each tile's label (slick Dice between a prediction and the label).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import scipy.linalg
import torch

from ..atomic import staged
from ..generation.joint_ddpm import JointSet, read_generator_card
from ..generation.samples import load_samples
from ..jobs.evaluate import dice_from_counts
from ..models.eager import pick_device
from ..models.inference import Predictor
from ..models.registry import load_model, slick_index
from ..progress import Progress
from .sar_stats import DB_SPAN, ENL_WINDOW, enl, histogram_distance, psd_distance

PANEL_COLUMNS = 8
FEATURE_BATCH = 32


@dataclass
class TileStack:
    """Tiles as statistics read them: stretched values, slick and known pixels, all (N, H, W)."""

    x: np.ndarray
    slick: np.ndarray
    known: np.ndarray

    @classmethod
    def from_joint(cls, data: JointSet) -> "TileStack":
        return cls(((data.x0[:, 0] + 1) * 127.5).numpy(), data.target[:, 1].numpy() > 0.5, data.known[:, 0].numpy() > 0)

    @classmethod
    def from_samples(cls, folder: Path, n: Optional[int] = None) -> "TileStack":
        data = load_samples(folder, n)
        slick = (data.hard_labels() == slick_index(data.classes)).numpy()
        return cls(data.tiles[:, 0].numpy(), slick, np.ones_like(slick))

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: Any) -> "TileStack":
        return TileStack(self.x[idx], self.slick[idx], self.known[idx])


class Yardstick:
    """The held-out real tiles, and the quality figures of any set of tiles against them."""

    def __init__(self, held: TileStack, model: Path, segmenters: dict[str, Path], threshold: Optional[float], device: str,
                 enl_window: int = ENL_WINDOW, db_span: float = DB_SPAN) -> None:
        """``model``'s encoder gives the Fréchet distance's features; each of ``segmenters`` an agreement column,
        at ``threshold`` (None: each model's own)."""
        self.held, self.model, self.segmenters, self.threshold, self.device = held, model, segmenters, threshold, device
        self.enl_window, self.db_span = enl_window, db_span
        self.held_enl = enl(held.x, held.slick | ~held.known, enl_window, db_span)
        self.held_features = encoder_features(model, held.x, device)

    def row(self, label: str, tiles: TileStack, progress: Progress) -> dict[str, Any]:
        progress.update("quality", 0, 1, label)
        value = enl(tiles.x, tiles.slick | ~tiles.known, self.enl_window, self.db_span)
        row = {
            "set": label, "tiles": len(tiles),
            "frechet": float(f"{frechet_distance(encoder_features(self.model, tiles.x, self.device), self.held_features):.4g}")
            if len(tiles) > 1 else None,
            "histogram_w1": round(histogram_distance(tiles.x, self.held.x), 3),
            "enl": round(value, 2), "enl_ratio": round(value / self.held_enl, 3),
            "psd_db": round(psd_distance(tiles.x, self.held.x), 3),
            "mean": round(float(tiles.x.mean()), 2), "std": round(float(tiles.x.std()), 2),
            "slick_tile_share": round(float(tiles.slick.any(axis=(1, 2)).mean()), 4),
            "slick_pixel_share": round(float(tiles.slick[tiles.known].mean()), 5),
        }
        for name, model in self.segmenters.items():
            row[f"agreement_{name}"] = round(agreement(model, tiles, self.threshold, self.device), 4)
        return row


def encoder_features(model: Path, tiles: np.ndarray, device: str) -> np.ndarray:
    """(N, C) float64: ``model``'s deepest encoder features of stretched tiles (N, H, W), global-average-pooled.

    The tiles are scaled as detection scales them (the card's ``input_scale``)."""
    torch_device = pick_device(device)
    net, card = load_model(model, torch_device)
    scale = float(card.normalisation.get("input_scale", 1 / 255))
    features = []
    with torch.inference_mode():
        for i in range(0, len(tiles), FEATURE_BATCH):
            x = torch.from_numpy(np.asarray(tiles[i : i + FEATURE_BATCH], dtype=np.float32) * scale).unsqueeze(1).to(torch_device)
            features.append(net.encoder(x)[-1].float().mean(dim=(2, 3)).cpu().numpy())
    return np.concatenate(features).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (N, C), at least two each.

    With fewer vectors than features the covariances are singular and their product's square root may not
    be finite; then, as in the reference FID code, a 1e-6 ridge is added to both."""
    if min(len(a), len(b)) < 2:
        raise ValueError(f"a Fréchet distance needs at least two vectors per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        ridge = np.eye(len(cov_a)) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    distance = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(root)))
    return max(distance, 0.0)  # rounding in the square root can take identical sets a hair below 0


def agreement(model: Path, tiles: TileStack, threshold: Optional[float], device: str) -> float:
    """Slick Dice between ``model``'s prediction on each tile and the tile's label, pooled over known pixels
    (``threshold`` None: the model's own)."""
    torch_device = pick_device(device)
    net, card = load_model(model, torch_device)
    predictor = Predictor(net, card, torch_device)
    threshold = card.threshold if threshold is None else threshold
    tp = fp = fn = 0
    for i in range(0, len(tiles), 16):
        part = tiles.take(slice(i, i + 16))
        predicted = predictor(part.x) > threshold
        tp += int((predicted & part.slick & part.known).sum())
        fp += int((predicted & ~part.slick & part.known).sum())
        fn += int((~predicted & part.slick & part.known).sum())
    return dice_from_counts(tp, fp, fn)


def generator_facts(path: Path) -> dict[str, Any]:
    """What a generator's card says about its training, for the results."""
    card = read_generator_card(path)
    t = card.training
    history = t.get("history") or [{}]
    return {"path": str(path), "kind": card.kind, "b": round(card.b, 4), "b_from": t.get("b_from"), "net": t.get("net"),
            "train_tiles": t.get("train_tiles"), "low_res_steps": t.get("low_res_steps"), "steps": t.get("steps"),
            "batch_size": t.get("batch_size"), "lr": t.get("lr"), "seed": t.get("seed"), "train_seconds": t.get("seconds"),
            "final_loss": history[-1].get("loss"), "final_l2": history[-1].get("l2"), "final_ce": history[-1].get("ce")}


def panel(path: Path, rows: list[tuple[str, TileStack]], tile: int) -> None:
    """One row per set: its first four tiles holding a slick, then its first four tiles of any kind (real
    tiles in a seeded random order, samples in seed order), each with its slick label outlined in red."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(PANEL_COLUMNS * 1.2 + 1.6, len(rows) * 1.25 + 0.4), dpi=150)
    axes = figure.subplots(len(rows), PANEL_COLUMNS, squeeze=False)
    for r, (label, tiles) in enumerate(rows):
        order = np.random.default_rng(0).permutation(len(tiles)) if label.endswith("real") else np.arange(len(tiles))
        with_slick = [int(i) for i in order if tiles.slick[i].any()][: PANEL_COLUMNS // 2]
        rest = [int(i) for i in order if int(i) not in with_slick]
        chosen = (with_slick + rest)[:PANEL_COLUMNS]
        for c in range(PANEL_COLUMNS):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(chosen):
                ax.axis("off")
                continue
            i = chosen[c]
            ax.imshow(tiles.x[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if tiles.slick[i].any():
                ax.contour(tiles.slick[i].astype(float), levels=[0.5], colors="red", linewidths=0.7)
        axes[r, 0].set_ylabel(label.replace("generated ", "generated\n"), fontsize=7)
    figure.suptitle(f"Real and generated {tile}-px tiles, slick labels in red (generated: hard label)", fontsize=9)
    figure.tight_layout()
    with staged(path) as tmp:
        figure.savefig(tmp, format="png")
