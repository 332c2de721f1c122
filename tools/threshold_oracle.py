"""How much of a leave-one-scene-out score a better threshold could buy: an upper bound, never a method.

``.venv/bin/python tools/threshold_oracle.py RUN_DIR --candidate NAME [--markdown PAGE]``

``RUN_DIR`` is the output of ``python -m engine experiment benchmark`` (its ``benchmark.csv`` and the held-out
scenes' probability rasters under ``detections/``). Each scene's probability is scored at the threshold its fold
model chose on the other scenes, and at every threshold from 0.05 to 0.95: the best of those looks at the
held-out scene's own labels, so it is what no detection can know; it says whether the gap to a target is
calibration (a threshold per scene would close it) or what the model sees (no threshold would). Scored on the
probability cut, before detection drops patches under its minimum area, so a cell can differ from the benchmark's
by a few thousandths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import run_page  # beside this file: puts the project on the path

from engine.data.bundled import ARCTIC  # noqa: E402
from engine.experiments.benchmark import score  # noqa: E402

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


def oracle(run: Path, candidate: str) -> list[dict]:
    """Per held-out scene: Dice at its fold's threshold and at the threshold best for its own labels."""
    scenes = {scene.name: scene for scene in ARCTIC}
    found = []
    for row in run_page.candidate_rows(run, candidate):
        probability = run_page.detection(run, row, "probability")
        scene = scenes[row["scene"]]
        dice = [score(probability, scene, float(t)).dice for t in THRESHOLDS]
        best = int(np.argmax(dice))
        found.append({"scene": row["scene"], "fold_threshold": float(row["threshold"]),
                      "fold_dice": score(probability, scene, float(row["threshold"])).dice,
                      "best_threshold": float(THRESHOLDS[best]), "best_dice": dice[best]})
    return found


def page(found: list[dict], command: str) -> str:
    lines = ["| scene | fold's threshold | Dice there | best threshold for the scene's own labels | Dice there |",
             "|---|---|---|---|---|"]
    lines += [f"| {f['scene']} | {f['fold_threshold']:g} | {f['fold_dice']:.3f} | {f['best_threshold']:g} | {f['best_dice']:.3f} |"
              for f in found]
    lines.append(f"| mean | | **{np.mean([f['fold_dice'] for f in found]):.3f}** | | **{np.mean([f['best_dice'] for f in found]):.3f}** |")
    return f"Made by `{command}`.\n\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(run_page.main(__doc__, oracle, page))
