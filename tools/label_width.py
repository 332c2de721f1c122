"""How wide the analysts drew each scene's slicks, how wide the model maps them, and what widening the map could buy.

``.venv/bin/python tools/label_width.py RUN_DIR --candidate NAME [--markdown PAGE]``

``RUN_DIR`` is the output of ``python -m engine experiment benchmark`` (its ``benchmark.csv`` and the held-out scenes'
slick masks under ``detections/``). A slick's mean width is twice its area over its boundary pixels (a strand of length
L and width w has about 2L of them), for the labels and for the detected mask of each held-out scene. Each mask is then
widened by 1 to 8 pixels (binary dilation with the 4-connected cross, repeated) and scored again on the scene's labels:
the best widening looks at the held-out scene's own labels, so like the best threshold of ``threshold_oracle.py`` it is
an upper bound, never a method. It says how much of a scene's Dice hangs on the width its analyst drew. Beside them, the
width of the paper's ``pred_base`` slicks (its probability cut at 0.5) on the tiles it predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation, binary_erosion

import run_page  # beside this file: puts the project on the path

from engine.data.bundled import ARCTIC  # noqa: E402
from engine.jobs.evaluate import align_to_grid, read_label_mask, slick_dice_arrays  # noqa: E402

WIDENINGS = range(9)
"""Pixels by which the detected mask is widened on each side, 0 (as detected) to 8."""


def mean_width(mask: np.ndarray) -> float:
    """Twice the area over the boundary pixels: a strand's width in pixels, whatever its length."""
    boundary = mask & ~binary_erosion(mask)
    return 2.0 * float(mask.sum()) / max(1, int(boundary.sum()))


def _on_labels(path: Path, label: np.ndarray, transform, crs) -> np.ndarray:
    """A slick mask's 1s, or a probability above 0.5 (as the benchmark cuts the paper's predictions), on the labels' grid."""
    values = align_to_grid(path, transform, crs, label.shape)
    return values > 0.5 if values.dtype.kind == "f" else values == 1


def widths(run: Path, candidate: str) -> list[dict]:
    """Per held-out scene: the labels', the mask's and ``pred_base``'s mean width (None where the paper has no prediction),
    and the Dice of the mask widened by each of ``WIDENINGS``."""
    scenes = {scene.name: scene for scene in ARCTIC}
    found = []
    for row in run_page.candidate_rows(run, candidate):
        scene = scenes[row["scene"]]
        label, transform, crs = read_label_mask(scene.labels)
        mask = _on_labels(run_page.detection(run, row, "mask"), label, transform, crs)
        paper = scene.image.parent / "pred_base.tif"
        dice = [slick_dice_arrays(binary_dilation(mask, iterations=r) if r else mask, label, "").dice for r in WIDENINGS]
        best = int(np.argmax(dice))
        found.append({"scene": row["scene"], "label_width": mean_width(label), "mask_width": mean_width(mask),
                      "pred_base_width": mean_width(_on_labels(paper, label, transform, crs)) if paper.exists() else None,
                      "dice": dice[0], "best_widening": WIDENINGS[best], "best_dice": dice[best], "dice_by_widening": dice})
    return found


def page(found: list[dict], command: str) -> str:
    lines = ["| scene | labels' mean width (px) | detected mask's (px) | `pred_base`'s (px) | Dice as detected | best widening for the "
             "scene's own labels (px) | Dice there |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {f['scene']} | {f['label_width']:.1f} | {f['mask_width']:.1f} | "
              f"{'' if f['pred_base_width'] is None else format(f['pred_base_width'], '.1f')} | {f['dice']:.3f} | {f['best_widening']} | "
              f"{f['best_dice']:.3f} |" for f in found]
    lines.append(f"| mean | | | | **{np.mean([f['dice'] for f in found]):.3f}** | | **{np.mean([f['best_dice'] for f in found]):.3f}** |")
    alike = np.mean([f["dice_by_widening"] for f in found], axis=0)
    lines += ["", "Every scene's mask widened alike, mean Dice by pixels of widening: "
              + ", ".join(f"{r} px {d:.3f}" for r, d in zip(WIDENINGS, alike)) + "."]
    return f"Made by `{command}`.\n\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(run_page.main(__doc__, widths, page))
