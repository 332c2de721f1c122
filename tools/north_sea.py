"""The bundled recipe on IW/VV tiles of another sea that it never learnt from: the four North Sea tiles.

``.venv/bin/python tools/north_sea.py --out FOLDER [--seeds 0 1 2 3] [--fold-seeds 0 1] [--partner MODEL] [--markdown PAGE]``

Every labelled Arctic scene is EW/HH from one Barents Sea seep area, so leaving one out never asks how the model does
on another sea, sensor mode and polarisation. The North Sea tiles (IW/VV, one of them slick-free and coastal) can,
when the model did not learn from them. Scored here, each detecting as the product does (nets on PyTorch, mirror
averaged) on its own slicks (the mask):

* the bundled model's command on all five Arctic scenes with ``--north-sea`` (none), once per ``--seeds``;
* the bundled synthetic model, which never saw a real pixel (what the real-texture recipe started from);
* the dark-spot baseline, fitted on the five Arctic scenes;
* with ``--fold-seeds``: each North Sea tile held out from the same command trained with the other three, to say
  whether IW/VV labels help on an IW/VV tile;
* with ``--partner MODEL``: each of those U-Nets also beside ``MODEL`` as one model (``engine ensemble``, their mean
  logit, the bundled model's smallest slick), as the bundled model pairs its U-Net with a DeepLabV3-R18.

The tiles carry no georeference: they are staged on an assumed grid (``engine.data.north_sea``) and detected without
a land mask (their real place is not known), so the slick-free tile's coast counts as sea. Models already in ``FOLDER/models`` are reused; the CSV names each hash.

With ``--grey-as-db`` each tile whose grey levels spread less than ``EQ1_GREY_STD_FLOOR`` is detected from a float32 copy
whose values are its grey levels less 256, read as dB: detection stretches it by eq. 1 over its own valid pixels, exactly
as training re-stretches these tiles (a stretch is the same for any offset), where the 8-bit files themselves are used
as they are. With ``--train-as-is`` the fold models learn the other three tiles as their 8-bit levels are instead.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.atomic import write_csv  # noqa: E402
from engine.cli.main import main as engine_main  # noqa: E402
from engine.data.bundled import NORTH_SEA, NORTH_SEA_PIXEL_M, LabelledScene  # noqa: E402
from engine.data.north_sea import georeferenced  # noqa: E402
from engine.experiments.benchmark import CLEAR_M, Scores, score  # noqa: E402
from engine.jobs.detect import DetectOptions, detect  # noqa: E402
from engine.machine import commit_text, describe, file_sha256  # noqa: E402
from engine.models.registry import BUNDLED_DIR, DEFAULT_MODEL, read_card  # noqa: E402
from engine.progress import Progress  # noqa: E402
from engine.scenes.raster import EQ1_GREY_STD_FLOOR  # noqa: E402
from training_scenes import RECIPE, published  # noqa: E402  (the bundled model's command but its scenes, here the default five, and seed)

SYNTHETIC = BUNDLED_DIR / "slick_unet_r18_25m_synthetic.safetensors"
DARKSPOT = BUNDLED_DIR / "darkspot_baseline_25m.safetensors"
PAIRED = ", with the partner"


def grey_as_db(scene: LabelledScene, folder: Path) -> LabelledScene:
    """``scene`` with its staged 8-bit image copied as float32 "dB" (grey level - 256; 0 stays no data) if its levels
    spread narrower than eq. 1's, else as it is."""
    with rasterio.open(scene.image) as ds:
        grey = ds.read(1).astype(np.float32)
        profile = {**ds.profile, "dtype": "float32", "nodata": 0.0}
    if grey[grey > 0].std() >= EQ1_GREY_STD_FLOOR:
        return scene
    path = folder / f"{scene.name}_image_db.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.where(grey > 0, grey - 256.0, 0.0).astype(np.float32), 1)
    return LabelledScene(scene.name, path, scene.labels, scene.region)


def trained(out: Path, stem: str, north_sea: list[str], seed: int, extra: tuple[str, ...] = ()) -> Path:
    model = out / "models" / f"{stem}_seed{seed}.safetensors"
    if not model.exists():
        args = ["pretrain", *RECIPE, "--north-sea", *north_sea, *extra, "--seed", str(seed), "--device", "cpu", "--out", str(model)]
        if engine_main(args) != 0:
            raise SystemExit(f"python -m engine {shlex.join(args)} failed")
    return model


def paired(model: Path, partner: Path) -> Path:
    """``model`` beside ``partner`` as the bundled model is made."""
    out = model.with_name(f"{model.stem}_with_{partner.stem}.safetensors")
    if not out.exists():
        args = ["ensemble", str(model), str(partner), "--min-area-km2", f"{read_card(DEFAULT_MODEL).min_area_km2:g}", "--device", "cpu",
                "--out", str(out)]
        if engine_main(args) != 0:
            raise SystemExit(f"python -m engine {shlex.join(args)} failed")
    return out


def scored(model: Path, group: str, seed: Optional[int], scenes: list[LabelledScene], out: Path, progress: Progress) -> list[dict]:
    rows = []
    net = model != DARKSPOT
    for scene in scenes:
        options = DetectOptions(model=str(model), prefix=f"{scene.name}_{model.stem}", overwrite=True, land_mask="none",
                                **({"runtime": "torch", "tta": True} if net else {}))
        result = detect(scene.image, out / "detections", options, progress)
        s = score(result.mask, scene, result.threshold)
        rows.append({"group": group, "seed": "" if seed is None else seed, "scene": scene.name, "dice": round(s.dice, 4),
                     "tp": s.tp, "fp": s.fp, "fn": s.fn, "false_pixels": s.false_pixels, "clear_pixels": s.clear_pixels,
                     "pixel_km2": s.pixel_km2, "false_km2_per_1000km2": round(s.false_km2_per_1000, 2), "slicks": result.n_slicks,
                     "threshold": result.threshold, "model": model.name, "sha256": file_sha256(model)[:16], "runtime": result.runtime})
        progress.log(f"{scene.name} {group} seed {seed}: Dice {s.dice:.3f}, false {s.false_km2_per_1000:.1f} km² per 1,000 km²")
    return rows


def summed(rows: list[dict]) -> Scores:
    """The rows' counts pooled (pixel areas are one grid's)."""
    return Scores(*(sum(r[k] for r in rows) for k in ("tp", "fp", "fn", "false_pixels", "clear_pixels")), rows[0]["pixel_km2"])


def page(rows: list[dict], command: str, commit: str, partner: Optional[Path] = None, as_db: bool = False, as_is: bool = False) -> str:
    slick = [s.name for s in NORTH_SEA if _has_slicks(rows, s.name)]
    clean = [s.name for s in NORTH_SEA if s.name not in slick]

    def line(group: str, seed: object, label: str) -> str:
        mine = [r for r in rows if r["group"] == group and (seed is None or r["seed"] == seed)]
        seeds = sorted({r["seed"] for r in mine})

        def dice(scene: str) -> float:
            return float(np.mean([r["dice"] for r in mine if r["scene"] == scene]))

        pooled = np.mean([summed([r for r in mine if r["seed"] == s and r["scene"] in slick]).dice for s in seeds])
        clean_false = np.mean([summed([r for r in mine if r["seed"] == s and r["scene"] in clean]).false_km2_per_1000 for s in seeds])
        all_false = np.mean([summed([r for r in mine if r["seed"] == s]).false_km2_per_1000 for s in seeds])
        marked = np.mean([sum(r["slicks"] for r in mine if r["seed"] == s and r["scene"] in clean) for s in seeds])
        return (f"| {label} | " + " | ".join(f"{dice(s):.3f}" for s in slick) + f" | {np.mean([dice(s) for s in slick]):.3f} | {pooled:.3f} | "
                f"{clean_false:.1f} ({marked:g} slicks) | {all_false:.1f} |")

    seeds = sorted({r["seed"] for r in rows if r["group"] == "no North Sea tile"})
    header = (f"| model | {' | '.join(slick)} | mean | pooled | false slicks on {', '.join(clean)} (slick-free) | false slicks, all "
              "tiles' clear sea |\n|---|" + "---|" * (len(slick) + 4))
    lines = [
        "# On IW/VV tiles of another sea: the North Sea tiles",
        "",
        f"Made by `{command}` at commit `{commit}` on {describe()}, reusing the models already in the folder (each trained by "
        "the command line in the CSV's group: the bundled model's command, `python -m engine pretrain "
        f"{shlex.join(RECIPE)}`, with the `--north-sea` tiles and `--seed` named below). Every figure is scored on tiles the "
        "model never learnt from and nothing was tuned on them; they are four 448 x 448 tiles (about 80 km² each at the "
        "assumed 20 m), so read them as anecdotes, not as a benchmark.",
        "",
        "The Arctic scenes every Slick Mapper model learns from are EW/HH, from one Barents Sea seep area; these tiles are "
        "IW/VV from the North Sea, already contrast-stretched by their authors, with no georeference: staged here on a "
        f"{NORTH_SEA_PIXEL_M:g} m UTM 31N grid in the open sea and detected without a land mask, so the slick-free tile's "
        "coast counts as sea. Slick Dice per tile on the slicks detection keeps, pooled over the tiles with slicks; false "
        f"slick area in km² per 1,000 km² of sea more than {CLEAR_M:g} m from any labelled slick.",
        *(["", f"The tiles whose grey levels spread less than {EQ1_GREY_STD_FLOOR:g} (standard deviation) were detected from "
               "float32 copies whose values are their grey levels less 256, read as dB (`--grey-as-db`): detection stretches "
               "each by eq. 1 over its own valid pixels, as training re-stretches these tiles, instead of using the 8-bit "
               "levels as they are."] if as_db else []),
        *(["", "The fold models (each tile held out) learnt the other three North Sea tiles as their 8-bit levels are "
               "(`--train-as-is`, `pretrain --north-sea-as-is`), as detection shows the held-out tile, not re-stretched by eq. 1."]
          if as_is else []),
        *(["", f"The partner network: `{partner.name}` (sha256 `{file_sha256(partner)[:16]}`), beside each U-Net as one model by "
               "`python -m engine ensemble`, which places the pair's threshold on the U-Net's validation bands."] if partner else []),
        "",
        header,
        line("no North Sea tile", None, f"the bundled command on the five Arctic scenes, no North Sea tile (mean of seeds "
                                        f"{', '.join(map(str, seeds))})"),
        *(line("no North Sea tile", s, f"  seed {s}") for s in seeds),
        *([line(f"no North Sea tile{PAIRED}", None, "the same U-Nets, each beside the partner network as one model (mean of seeds "
                                                     f"{', '.join(map(str, seeds))})")] if any(r["group"].endswith(PAIRED) for r in rows) else []),
        line("synthetic", None, "the synthetic model (never saw a real pixel)"),
        line("dark-spot", None, "the dark-spot baseline (fitted on the five Arctic scenes)"),
    ]
    folds = [r for r in rows if r["group"].startswith("three North Sea tiles")]
    if folds:
        fold_seeds = sorted({r["seed"] for r in folds})
        lines += [
            "",
            "## Do IW/VV labels help on an IW/VV tile?",
            "",
            f"Each tile held out from the same command trained with the other three North Sea tiles (seeds "
            f"{', '.join(map(str, fold_seeds))}), beside the models above that learnt from no North Sea tile, at the same seeds:",
            "",
            "| tile | no North Sea tile: Dice | false slicks | the other three: Dice | false slicks |",
            "|---|---|---|---|---|",
        ]
        groups = [("", "")] + ([(PAIRED, " (with the partner)")] if any(r["group"].endswith(PAIRED) for r in folds) else [])
        for scene in NORTH_SEA:
            def mean(group: str, key: str) -> str:
                if key == "dice" and scene.name in clean:
                    return "(no slick)"
                value = np.mean([r[key] for r in rows if r["group"] == group and r["scene"] == scene.name and r["seed"] in fold_seeds])
                return f"{value:.3f}" if key == "dice" else f"{value:.1f}"
            for suffix, label in groups:
                lines.append(f"| {scene.name}{label} | {mean('no North Sea tile' + suffix, 'dice')} | "
                             f"{mean('no North Sea tile' + suffix, 'false_km2_per_1000km2')} | {mean('three North Sea tiles' + suffix, 'dice')} | "
                             f"{mean('three North Sea tiles' + suffix, 'false_km2_per_1000km2')} |")
    lines += ["", "Each model's file and sha256 are in the CSV beside this page."]
    return "\n".join(lines) + "\n"


def _has_slicks(rows: list[dict], scene: str) -> bool:
    return any(r["tp"] + r["fn"] for r in rows if r["scene"] == scene)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--fold-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--partner", type=Path, help="a network to pair each trained U-Net with, as the bundled model does")
    parser.add_argument("--grey-as-db", action="store_true", help="detect the tiles spread narrower than eq. 1 from float32 copies read as dB, which eq. 1 re-stretches")
    parser.add_argument("--train-as-is", action="store_true",
                        help="the fold models learn the other three tiles as their 8-bit levels are (pretrain --north-sea-as-is)")
    args = parser.parse_args()
    if not set(args.fold_seeds) <= set(args.seeds):
        parser.error("--fold-seeds are compared with the models of the same seeds: give them in --seeds too")
    command = "python tools/north_sea.py " + shlex.join(sys.argv[1:])
    commit = commit_text()
    progress = Progress(log=print)
    scenes = [georeferenced(scene, args.out / "staged") for scene in NORTH_SEA]
    if args.grey_as_db:
        scenes = [grey_as_db(scene, args.out / "staged") for scene in scenes]
    rows = []
    for seed in args.seeds:
        model = trained(args.out, "no_north_sea", [], seed)
        rows += scored(model, "no North Sea tile", seed, scenes, args.out, progress)
        if args.partner:
            rows += scored(paired(model, args.partner), f"no North Sea tile{PAIRED}", seed, scenes, args.out, progress)
    rows += scored(SYNTHETIC, "synthetic", None, scenes, args.out, progress)
    rows += scored(DARKSPOT, "dark-spot", None, scenes, args.out, progress)
    for seed in args.fold_seeds:
        for held in scenes:
            others = [s.name for s in scenes if s is not held]
            model = trained(args.out, f"without_{held.name}" + ("_asis" if args.train_as_is else ""), others, seed,
                            ("--north-sea-as-is",) if args.train_as_is else ())
            rows += scored(model, "three North Sea tiles", seed, [held], args.out, progress)
            if args.partner:
                rows += scored(paired(model, args.partner), f"three North Sea tiles{PAIRED}", seed, [held], args.out, progress)
    write_csv(args.out / "north_sea.csv", rows)
    published(page(rows, command, commit, args.partner, args.grey_as_db, args.train_as_is), rows, args.markdown)


if __name__ == "__main__":
    main()
