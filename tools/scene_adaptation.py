"""Two label-free ways to fit a fold model to the scene it detects on, scored by leave one scene out.

``.venv/bin/python tools/scene_adaptation.py RUN_DIR --candidate NAME [--markdown PAGE]``

``RUN_DIR`` is the output of ``python -m engine experiment benchmark`` (``benchmark.csv``, the fold models under
``models/``, the held-out scenes' probability rasters under ``detections/``), for every seed it ran. Neither way
reads a label of the held-out scene; both are scored against them, beside the fold model as the benchmark scored it:

- **Batch-norm statistics of the scene** (AdaBN, Li et al. 2018): every batch-norm layer's mean and variance
  measured again on the held-out scene's own 256-px tiles (half overlapping, at least half valid), mixed with the
  fold model's as ``m`` x the scene's + (1 - ``m``) x the fold's; the model then detects as the benchmark does
  (PyTorch, mirror averaged) at its own threshold. Scenes differ in wind and sea state more than in anything the
  network's statistics were measured over.
- **Hysteresis**: a slick is a connected region (8 neighbours) of probability above a lower cut that holds a pixel
  above the fold's threshold ``t``, then regions under 80 pixels (the product's 0.05 km²) dropped: strands the model
  sees in pieces are kept whole, without new isolated patches. Lower cuts ``t / 2`` and ``t - 0.1`` (at least 0.05),
  on the benchmark's own probability rasters; ``p > t`` with the same area filter is scored beside them.
"""

from __future__ import annotations

import copy
import csv
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from scipy import ndimage

import run_page  # beside this file: puts the project on the path

from engine.data.bundled import ARCTIC  # noqa: E402
from engine.experiments.benchmark import score  # noqa: E402
from engine.contract import DEFAULT_MIN_AREA_KM2  # noqa: E402
from engine.jobs.detect import DetectOptions, detect  # noqa: E402
from engine.machine import commit_text, describe  # noqa: E402
from engine.models.registry import load_model, save_model  # noqa: E402
from engine.scenes.analysis import open_for_analysis  # noqa: E402

MIXES = (0.5, 1.0)
"""Shares of the scene's own batch-norm statistics: fixed before any run."""
ADAPT_TILE = 256
NEIGHBOURS = np.ones((3, 3), dtype=bool)


def scene_tiles(scene: Path, card) -> np.ndarray:
    """The held-out scene's stretched tiles, as detection reads them."""
    with open_for_analysis(scene, card) as opened:
        grid, reader, stretch = opened.grid, opened.reader, opened.stretch
        found = []
        for row in range(0, max(1, grid.height - ADAPT_TILE + 1), ADAPT_TILE // 2):
            for col in range(0, max(1, grid.width - ADAPT_TILE + 1), ADAPT_TILE // 2):
                x = stretch.apply(reader.read(Window(col, row, ADAPT_TILE, ADAPT_TILE)))
                if (x > 0).mean() > 0.5:
                    found.append(x)
    return np.stack(found).astype(np.float32)


def adapted(model: torch.nn.Module, scale: float, tiles: np.ndarray, mix: float) -> torch.nn.Module:
    """``model`` with its batch-norm statistics ``mix`` of the way to the ones of ``tiles`` (cumulative over batches of 4)."""
    model = copy.deepcopy(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        x = torch.from_numpy(tiles)[:, None] * scale
        for i in range(0, len(x), 4):
            model(x[i : i + 4])
    model.eval()
    for m, (mean, var, momentum) in zip(norms, before):
        m.running_mean.lerp_(mean, 1 - mix)
        m.running_var.lerp_(var, 1 - mix)
        m.momentum = momentum
    return model


def hysteresis(probability: np.ndarray, threshold: float, low: float | None, min_pixels: int) -> np.ndarray:
    seeds = probability > threshold
    labels, n = ndimage.label(probability > low if low is not None else seeds, structure=NEIGHBOURS)
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(labels[seeds])] = True
    keep[0] = False
    labels, _ = ndimage.label(keep[labels], structure=NEIGHBOURS)
    large = np.bincount(labels.ravel()) >= min_pixels
    large[0] = False
    return large[labels]


def run(folder: Path, candidate: str) -> list[dict]:
    with open(folder / "benchmark.csv", newline="") as rows:
        chosen = [row for row in csv.DictReader(rows) if row["candidate"] == candidate]
    if not chosen:
        raise SystemExit(f"{folder / 'benchmark.csv'} has no rows of {candidate}.")
    scenes = {scene.name: scene for scene in ARCTIC}
    found = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for row in chosen:
            scene, seed, t = scenes[row["scene"]], int(row["seed"]), float(row["threshold"])
            named = "" if seed == 0 else f"_seed{seed}"
            model_path = folder / "models" / row["model"]
            entry = {"scene": scene.name, "seed": seed, "threshold": t, "benchmark": float(row["dice"]),
                     "sha256": row["sha256"]}
            model, card = load_model(model_path)
            tiles = scene_tiles(scene.image, card)
            for mix in MIXES:
                path = scratch / f"adabn_{mix}{named}_without_{scene.name}.safetensors"
                save_model(adapted(model, card.normalisation.get("input_scale", 1 / 255), tiles, mix), card, path)
                result = detect(scene.image, scratch / "detections", DetectOptions(
                    model=str(path), prefix=f"{scene.name}_{mix}", overwrite=True, runtime="torch", device="cpu"))
                s = score(Path(result.mask), scene, result.threshold)
                entry[f"adabn_{mix:g}"], entry[f"adabn_{mix:g}_false"] = s.dice, s.false_km2_per_1000
            with rasterio.open(folder / "detections" / f"{scene.name}_{candidate}{named}_probability.tif") as ds:
                probability, profile = np.nan_to_num(ds.read(1), nan=0.0), ds.profile
                min_pixels = round(DEFAULT_MIN_AREA_KM2 * 1e6 / abs(ds.transform.a * ds.transform.e))
            for name, low in (("cut", None), ("half", t / 2), ("minus", max(t - 0.1, 0.05))):
                mask = scratch / f"{name}.tif"
                with rasterio.open(mask, "w", **{**profile, "dtype": "uint8", "nodata": None}) as dst:
                    dst.write(hysteresis(probability, t, low, min_pixels).astype(np.uint8), 1)
                s = score(mask, scene, 0.5)
                entry[f"hyst_{name}"], entry[f"hyst_{name}_false"] = s.dice, s.false_km2_per_1000
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}, flush=True)
            found.append(entry)
    return found


COLUMNS = (("benchmark", "the benchmark's own", None), ("adabn_0.5", "AdaBN, m 0.5", "adabn_0.5_false"),
           ("adabn_1", "AdaBN, m 1", "adabn_1_false"), ("hyst_cut", "p > t, area filter", "hyst_cut_false"),
           ("hyst_half", "hysteresis t / 2", "hyst_half_false"), ("hyst_minus", "hysteresis t - 0.1", "hyst_minus_false"))


def page(found: list[dict], command: str) -> str:
    seeds = sorted({f["seed"] for f in found})
    lines = [f"Made by `{command}` at commit `{commit_text()}` on {describe(torch.device('cpu'))}.", "",
             "Leave-one-scene-out slick Dice per held-out scene and seed (false slicks, km² per 1,000 km² of clear sea):", "",
             "| scene | seed | fold model (sha256) | t | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---|---|---|" + "---|" * len(COLUMNS)]
    for f in found:
        cells = [f"{f[key]:.3f}" + (f" ({f[false]:.1f})" if false else "") for key, _, false in COLUMNS]
        lines.append(f"| {f['scene']} | {f['seed']} | `{f['sha256']}` | {f['threshold']:g} | " + " | ".join(cells) + " |")
    for seed in seeds:
        rows = [f for f in found if f["seed"] == seed]
        cells = [f"{np.mean([f[key] for f in rows]):.3f}" + (f" ({np.mean([f[false] for f in rows]):.2f})" if false else "")
                 for key, _, false in COLUMNS]
        lines.append(f"| mean | {seed} | | | " + " | ".join(cells) + " |")
    cells = [f"**{np.mean([f[key] for f in found]):.3f}**" + (f" ({np.mean([f[false] for f in found]):.2f})" if false else "")
             for key, _, false in COLUMNS]
    lines.append("| mean | all | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(run_page.main(__doc__, run, page))
