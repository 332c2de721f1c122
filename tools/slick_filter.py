"""Whether a second stage that weighs each detected slick as a whole could drop the false ones: measured, leave one scene out.

``.venv/bin/python tools/slick_filter.py RUN_DIR [RUN_DIR ...] --candidate NAME [NAME ...] [--stage STAGE ...] [--markdown PAGE]``

Each ``RUN_DIR`` is the output of ``python -m engine experiment benchmark`` (one seed's fold models: its ``benchmark.csv``
and the held-out scenes' probability and slick masks under ``detections/``). On every held-out scene the mask, on the
scene's label grid as the benchmark scores it, falls into slicks (8-connected, as tracing joins them), each described by
what detection already knows or can read beside it: its mean and highest probability, its area, its mean width, and how
much darker it is than the sea in a ring around it (in standard deviations of that sea, so the same in dB or in
stretched levels). A slick is true when it touches a labelled one.

The classic pipeline before deep learning weighed dark spots so (Solberg et al. 1999). Second stages measured
(``--stage``), each deciding for a held-out scene from the other scenes' held-out slicks of the same run, which their
own fold models found without having learnt those scenes:

- ``regression-by-area`` and ``regression-by-scene``: a logistic regression (scikit-learn's defaults on standardised
  features, classes balanced) keeps a slick it gives a probability of at least 0.5; each training slick weighs its area
  (Dice counts pixels), or its share of its scene's slick area (every scene alike, where one scene holds most of the
  false slicks);
- ``mean-cut``: a slick is kept when its mean probability reaches the cut (of ``MEAN_CUTS``) that scores best on the
  other scenes.

The other scenes' fold models did learn the held-out scene: a stage never sees it, but the slicks it learns from were
found by models that had.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import run_page  # beside this file: puts the project on the path
from label_width import mean_width

from engine.atomic import write_text  # noqa: E402
from engine.data.bundled import ARCTIC  # noqa: E402
from engine.experiments.benchmark import Scores, score, seed_scores  # noqa: E402
from engine.jobs.evaluate import align_to_grid, read_label_mask  # noqa: E402
from engine.machine import commit_text  # noqa: E402

FEATURES = ("mean_prob", "max_prob", "log_area", "contrast_sd", "width_px")
RING_PX = 6
"""The sea ring a slick's darkness is measured against: this many pixels around it, other slicks left out."""
KEEP_AT = 0.5
"""A held-out slick is kept when the regression gives it at least this probability of being true."""
MEAN_CUTS = (0.0, 0.55, 0.6, 0.65, 0.7, 0.75)
"""The cuts on a slick's mean probability that ``mean-cut`` chooses among (0: every slick kept)."""


def slicks(mask: np.ndarray, probability: np.ndarray, image: np.ndarray, label: np.ndarray) -> list[dict]:
    """Every 8-connected slick of ``mask`` with its ``FEATURES``, its pixels and whether it touches ``label``."""
    ids, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    near_any = ndimage.binary_dilation(mask)
    found = []
    for i, where in enumerate(ndimage.find_objects(ids), start=1):
        pad = tuple(slice(max(0, s.start - RING_PX - 1), s.stop + RING_PX + 1) for s in where)
        own = ids[pad] == i
        ring = ndimage.binary_dilation(own, iterations=RING_PX) & ~near_any[pad] & (image[pad] > 0)
        inside = own & (image[pad] > 0)
        sea = image[pad][ring]
        darker = (sea.mean() - image[pad][inside].mean()) / max(float(sea.std()), 1e-6) if ring.any() and inside.any() else 0.0
        values = probability[pad][own]
        found.append({
            "mean_prob": float(np.nanmean(values)), "max_prob": float(np.nanmax(values)), "log_area": float(np.log(own.sum())),
            "contrast_sd": float(darker), "width_px": mean_width(own), "area": int(own.sum()),
            "true": bool((own & label[pad]).any()), "pixels": (pad, own),
        })
    return found


def held_out(run: Path, candidate: str) -> list[dict]:
    """Per held-out scene of one run: its slicks, the scene, and the grid its labels are on."""
    scenes = {scene.name: scene for scene in ARCTIC}
    found = []
    for row in run_page.candidate_rows(run, candidate):
        scene = scenes[row["scene"]]
        label, transform, crs = read_label_mask(scene.labels)
        label = label > 0
        mask = align_to_grid(run_page.detection(run, row, "mask"), transform, crs, label.shape) == 1
        probability = align_to_grid(run_page.detection(run, row, "probability"), transform, crs, label.shape, fill=np.nan)
        image = align_to_grid(scene.image, transform, crs, label.shape).astype(np.float32)
        found.append({"scene": scene, "grid": (label.shape, transform, crs), "sha256": row["sha256"],
                      "slicks": slicks(mask, probability, image, label)})
    return found


def _features(found: list[dict]) -> np.ndarray:
    return np.array([[s[f] for f in FEATURES] for s in found]).reshape(-1, len(FEATURES))


def _scored(scene_slicks: list[dict], keep: list[bool], scene, grid) -> Scores:
    """The benchmark's own score of the kept slicks, written as a mask on the label grid."""
    shape, transform, crs = grid
    mask = np.zeros(shape, np.uint8)
    for s, kept in zip(scene_slicks, keep):
        if kept:
            pad, own = s["pixels"]
            mask[pad][own] = 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kept.tif"
        with rasterio.open(path, "w", driver="GTiff", height=shape[0], width=shape[1], count=1, dtype="uint8",
                           crs=crs, transform=transform) as dst:
            dst.write(mask, 1)
        return score(path, scene, 0.5)


def _weights(scenes: list[list[dict]], weigh: str) -> np.ndarray:
    """Each training slick's weight: its area, or with ``weigh="scene"`` its share of its scene's slick area, so that one
    scene with many slicks (sample_70) does not decide for the others."""
    return np.concatenate([np.array([s["area"] for s in found], float) / (sum(s["area"] for s in found) if weigh == "scene" else 1.0)
                           for found in scenes if found])


def _regression(scenes: list[dict], weigh: str) -> list[tuple[list[bool], str]]:
    """Per held-out scene, the slicks that a logistic regression learnt on the other scenes' slicks keeps, and how."""
    chosen = []
    for k, held in enumerate(scenes):
        others = [other["slicks"] for j, other in enumerate(scenes) if j != k]
        train = [s for found in others for s in found]
        truth = np.array([s["true"] for s in train])
        keep = [True] * len(held["slicks"])
        if held["slicks"] and len(set(truth.tolist())) == 2:
            model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
            model.fit(_features(train), truth, logisticregression__sample_weight=_weights(others, weigh))
            keep = (model.predict_proba(_features(held["slicks"]))[:, 1] >= KEEP_AT).tolist()
        chosen.append((keep, f"regression, slicks weighed by {weigh}"))
    return chosen


def _mean_cut(scenes: list[dict]) -> list[tuple[list[bool], str]]:
    """Per held-out scene, the slicks whose mean probability reaches the one of ``MEAN_CUTS`` that scores best on the
    other scenes (their mean Dice; the lower cut where two tie)."""
    def kept(held: dict, cut: float) -> list[bool]:
        return [s["mean_prob"] >= cut for s in held["slicks"]]

    dice = np.array([[_scored(held["slicks"], kept(held, cut), held["scene"], held["grid"]).dice for cut in MEAN_CUTS] for held in scenes])
    chosen = []
    for k, held in enumerate(scenes):
        cut = MEAN_CUTS[int(np.argmax(np.delete(dice, k, axis=0).mean(axis=0)))]
        chosen.append((kept(held, cut), f"mean probability >= {cut:.2f}"))
    return chosen


STAGES = {"regression-by-area": lambda scenes: _regression(scenes, "area"),
          "regression-by-scene": lambda scenes: _regression(scenes, "scene"), "mean-cut": _mean_cut}
"""The second stages measured: the regression with each slick weighing its area or its scene's share, and one cut on a
slick's mean probability."""


def filtered(run: Path, candidate: str, stage: str = "regression-by-area") -> list[dict]:
    """Per held-out scene: the benchmark's scores of its mask as detected and of the slicks ``stage`` keeps."""
    scenes = held_out(run, candidate)
    rows = []
    for held, (keep, how) in zip(scenes, STAGES[stage](scenes)):
        everything = _scored(held["slicks"], [True] * len(keep), held["scene"], held["grid"])
        kept = _scored(held["slicks"], keep, held["scene"], held["grid"])
        only_true = _scored(held["slicks"], [s["true"] for s in held["slicks"]], held["scene"], held["grid"])
        rows.append({"run": run.name, "candidate": candidate, "stage": stage, "how": how, "scene": held["scene"].name,
                     "sha256": held["sha256"], "slicks": len(keep), "false_slicks": sum(not s["true"] for s in held["slicks"]),
                     "dropped": keep.count(False), "dropped_true": sum(not kept_ and s["true"] for s, kept_ in zip(held["slicks"], keep)),
                     "as_detected": everything, "kept": kept, "only_true": only_true})
    return rows


def _figures(scores: list[Scores]) -> dict:
    """Mean and pooled Dice and false slick area of one run's scenes, as the benchmark's page computes them."""
    return seed_scores([{"dice": s.dice, "tp": s.tp, "fp": s.fp, "fn": s.fn, "false_km2_per_1000km2": s.false_km2_per_1000,
                         "clear_sea_km2": s.clear_pixels * s.pixel_km2} for s in scores])


def page(rows: list[dict], command: str) -> str:
    lines = ["| run | candidate | stage | scene (fold model's sha256): what it kept | slicks (false) | dropped (of them true) | Dice as detected | Dice, slicks kept "
             "| false slicks as detected (km² per 1,000 km²) | kept | Dice, every false slick dropped (a bound) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, k = r["as_detected"], r["kept"]
        lines.append(f"| {r['run']} | {r['candidate']} | {r['stage']} | {r['scene']} (`{r['sha256']}`): {r['how']} | {r['slicks']} ({r['false_slicks']}) | "
                     f"{r['dropped']} ({r['dropped_true']}) | {a.dice:.3f} | {k.dice:.3f} | {a.false_km2_per_1000:.1f} | {k.false_km2_per_1000:.1f} | {r['only_true'].dice:.3f} |")
    for run, candidate, stage in dict.fromkeys((r["run"], r["candidate"], r["stage"]) for r in rows):
        mine = [r for r in rows if (r["run"], r["candidate"], r["stage"]) == (run, candidate, stage)]
        a, k, t = (_figures([r[key] for r in mine]) for key in ("as_detected", "kept", "only_true"))
        lines.append(f"| {run} | {candidate} | {stage} | mean (pooled) | | | **{a['mean_dice']:.3f}** ({a['pooled_dice']:.3f}) | "
                     f"**{k['mean_dice']:.3f}** ({k['pooled_dice']:.3f}) | {a['false_km2_per_1000km2']:.1f} | "
                     f"{k['false_km2_per_1000km2']:.1f} | {t['mean_dice']:.3f} ({t['pooled_dice']:.3f}) |")
    return f"Made by `{command}` at commit {commit_text()}.\n\n" + "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="`engine experiment benchmark` output folders, one seed's fold models each")
    p.add_argument("--candidate", required=True, nargs="+", help="candidates of the runs, each measured alone")
    p.add_argument("--stage", nargs="+", choices=tuple(STAGES), default=["regression-by-area"],
                   help="the regression with each training slick weighing its area or its share of its scene's slick area "
                        "(every scene alike), or one cut on a slick's mean probability")
    p.add_argument("--markdown", type=Path, help="write the table here too")
    args = p.parse_args()
    rows = [row for run in args.runs for candidate in args.candidate for stage in args.stage for row in filtered(run, candidate, stage)]
    text = page(rows, " ".join(["python", *sys.argv]))
    print(text)
    if args.markdown:
        write_text(args.markdown, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
