"""Which runtime runs each model fastest on this machine, whether its masks stay PyTorch fp32's, and what the
pipeline and the land and no-data masks cost or save end to end.

    .venv/bin/python benchmarks/runtime_bench.py                  # ~15-30 min on 2 shared CPU cores
    .venv/bin/python benchmarks/runtime_bench.py --quick          # smoke run: fewer tiles, a 1024 scene

Figures, each a ratio of timings taken in this one run (round robin, so a shared machine's load falls on
every candidate alike), with the CPU named beside them:
  runtimes    per model (bundled U-Net R18; DeepLabV3-R50, random init) and runtime/precision: s per tile,
              tiles/s, km2/min, speed-up over PyTorch eager fp32, slick-mask Dice against PyTorch eager fp32
              on real tiles (the bundled Arctic scenes that no test scores on)
  pipeline    detect() end to end / the same tiles through the model alone, on a synthetic scene at sea
  skipping    share of tiles never predicted on a synthetic EW scene laid over Svalbard's real coastline
              (GSHHG) with a no-data border, and minutes end to end for it; a full 16,000^2 EW scene's
              minutes extrapolated from the measured rate and the skipped share

Results: printed, and written to bench_output/runtime_bench.json; ``--markdown docs/benchmarks.md`` renders a
JSON file of an earlier run (``--from``) or of this one as the product's benchmark page.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import report  # noqa: E402
from engine.machine import commit_text  # noqa: E402

OVERLAP = 64
SVALBARD = {"crs": "EPSG:32633", "origin": (440000.0, 8700000.0)}
"""Forlandsundet and the mouth of Isfjorden, Svalbard: about a third land at 2048 px (GSHHG)."""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2 * int(np.logical_and(a, b).sum()) / total


def deeplab_file(work: Path) -> Path:
    from engine.models.registry import ModelCard, build_model, save_model

    torch.manual_seed(0)
    card = ModelCard(name="bench DeepLabV3-R50 (random init)", architecture="deeplabv3", encoder="resnet50", tile_size=512)
    return save_model(build_model(card), card, work / "deeplabv3_r50_random.safetensors")


def compare_runtimes(model_path: Path, n_tiles: int, repeats: int, log) -> dict:
    """Every candidate on the same real tiles, round robin, against PyTorch eager fp32."""
    from engine.models import runtimes
    from engine.models.registry import load_model

    device = torch.device("cpu")
    model, card = load_model(model_path, device)
    factory = runtimes.Factory(model_path, model, card, device)
    tiles = runtimes.calibration_tiles(card, n_tiles)
    scale = float(card.normalisation.get("input_scale", 1 / 255))
    x = [t[None, None].astype(np.float32) * scale for t in tiles]
    built, out = {}, {"model": card.name, "model_hash": factory.digest, "tiles": len(x), "tile": card.tile_size, "candidates": {}}
    for candidate in runtimes.candidates(device):
        started = time.perf_counter()
        try:
            forward = factory.build(candidate)
            forward(x[0])
            built[candidate.label] = forward
            out["candidates"][candidate.label] = {"prep_s": round(time.perf_counter() - started, 1)}
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run is a figure too
            out["candidates"][candidate.label] = {"status": f"{type(exc).__name__}: {str(exc)[:200]}"}
        log(f"  {card.name}: prepared {candidate.label}")
    probs = {k: [] for k in built}
    seconds = {k: 0.0 for k in built}
    for r in range(repeats):
        for t in x:
            for label, forward in built.items():
                started = time.perf_counter()
                logits = forward(t)
                seconds[label] += time.perf_counter() - started
                if r == 0:
                    probs[label].append(torch.sigmoid(torch.from_numpy(np.asarray(logits, np.float32))[:, 0]).numpy())
    reference = np.concatenate(probs["torch fp32"])
    # A trained model is cut at its own threshold; a random one at the median of its output, so that
    # both masks are non-trivial (a random network's probabilities all sit near its bias).
    trained = "random init" not in card.name
    threshold = card.threshold if trained else float(np.median(reference))
    area_km2 = ((card.tile_size - OVERLAP) * card.pixel_size / 1000) ** 2  # new ground per tile in a scene
    base = seconds["torch fp32"]
    for label in built:
        s_tile = seconds[label] / (repeats * len(x))
        entry = out["candidates"][label]
        entry.update({
            "s_per_tile": round(s_tile, 4),
            "tiles_per_s": round(1 / s_tile, 3),
            "km2_per_min": round(60 * area_km2 / s_tile, 1),
            "speedup_vs_torch_fp32": round(base / seconds[label], 3),
            "dice_vs_torch_fp32": round(dice(reference > threshold, np.concatenate(probs[label]) > threshold), 5),
        })
        log(f"  {card.name:40s} {label:18s} {s_tile:7.3f} s/tile  x{entry['speedup_vs_torch_fp32']:.2f}  Dice {entry['dice_vs_torch_fp32']:.4f}")
    out["mask_threshold"] = "model's own" if trained else "median of torch fp32 output"
    int8 = runtimes.exports_dir() / f"{factory.digest}.int8.json"
    if int8.is_file():
        out["int8_verdict"] = json.loads(int8.read_text())
    return out


def scene_tiles(scene: Path, card, exclusion, grid_kwargs: dict) -> list[np.ndarray]:
    """The tiles detect() predicts on ``scene`` (same cut, same skipping), in memory."""
    from affine import Affine
    from rasterio.windows import Window

    from engine.scenes.grid import analysis_grid, open_on_grid
    from engine.scenes.normalise import scene_stretch
    from engine.progress import silent
    from engine.scenes.raster import inspect, open_raster
    from engine.scenes.tiling import tile_rows

    info = inspect(scene)
    tile, m = card.tile_size, exclusion.margin
    tiles = []
    with open_raster(scene) as ds:
        grid = analysis_grid(ds, info.utm_crs, card.pixel_size)
        stretch = scene_stretch(ds, info.band, info.value_scale, silent())
        with open_on_grid(ds, info.band, grid) as reader:
            for row in tile_rows(grid.height, grid.width, tile, OVERLAP):
                raw = reader.read(Window(0, row.row - m, max(grid.width, tile), tile + 2 * m))
                inside = np.ones(raw.shape, bool)
                land, near = exclusion.excluded(grid.crs, grid.transform @ Affine.translation(0, row.row - m), ~np.isfinite(raw), inside)
                stretched = stretch.apply(raw[m : m + tile])
                usable = (stretched > 0) & ~land & ~near
                tiles += [stretched[:, c : c + tile] for c in row.cols if usable[:, c : c + tile].any()]
    return tiles


def pipeline(scene: Path, model_path: Path, runtime: str, work: Path, log) -> dict:
    """detect() end to end over model-only time on the same tiles, model-only timed before and after."""
    from engine.models import runtimes
    from engine.jobs.detect import DetectOptions, detect
    from engine.scenes.landmask import Exclusion

    predictor, _ = runtimes.make_predictor(model_path, torch.device("cpu"), runtime)
    tiles = scene_tiles(scene, predictor.card, Exclusion(None), {})
    predictor(tiles[0][None])

    def model_only() -> float:
        started = time.perf_counter()
        for t in tiles:
            predictor(t[None])
        return time.perf_counter() - started

    before = model_only()
    started = time.perf_counter()
    result = detect(scene, work / "pipeline_out", DetectOptions(model=str(model_path), runtime=runtime, land_mask="none", overwrite=True))
    end_to_end = time.perf_counter() - started
    after = model_only()
    model_s = (before + after) / 2
    log(f"  pipeline ({runtime}): {len(tiles)} tiles, end to end {end_to_end:.1f} s, model only {model_s:.1f} s "
        f"(before {before:.1f}, after {after:.1f}): x{end_to_end / model_s:.3f}")
    return {"runtime": runtime, "chosen": result.runtime, "tiles": len(tiles), "end_to_end_s": round(end_to_end, 2),
            "model_only_s": round(model_s, 2), "model_only_before_after_s": [round(before, 2), round(after, 2)],
            "overhead_ratio": round(end_to_end / model_s, 4)}


def skipping(scene: Path, model_path: Path, runtime: str, work: Path, size: int, log) -> dict:
    from engine.jobs.detect import DetectOptions, detect
    from engine.scenes.tiling import count_tiles

    started = time.perf_counter()
    result = detect(scene, work / "skip_out", DetectOptions(model=str(model_path), runtime=runtime, overwrite=True))
    seconds = time.perf_counter() - started
    total = result.tiles + result.tiles_skipped
    share = result.tiles_skipped / total
    full = count_tiles(16000, 16000, 512, OVERLAP)
    rate = result.tiles / seconds
    log(f"  skipping: {result.tiles_skipped} of {total} tiles skipped ({share:.1%}: {result.tiles_skipped_by}), {seconds:.0f} s end to end")
    return {"scene": f"{size}x{size} px at 25 m, synthetic EW/HH over Svalbard's coast (EPSG:32633), no-data border",
            "tiles": total, "skipped": result.tiles_skipped, "skipped_by": result.tiles_skipped_by, "share_skipped": round(share, 4),
            "end_to_end_s": round(seconds, 1), "runtime": result.runtime, "masked": result.masked,
            "full_ew_tiles": full, "full_ew_minutes_extrapolated": round(full * (1 - share) / rate / 60, 1)}


def markdown(results: dict) -> str:
    """The benchmark page: every figure with the CPU, the command, the commit and the model hashes beside it."""
    m = results["machine"]
    cpu = f"{m['cores']}-core {m['cpu']} CPU"
    lines = [
        "# Detection speed: runtimes, pipeline, skipped tiles",
        "",
        f"Made by `{results['command']}` at commit `{results['commit']}` on a {cpu} (torch {m['torch']}, "
        f"{m['torch_threads']} threads; native bf16: {m['native_bf16']}, native int8 (VNNI): {m['native_int8']}; "
        f"flags {', '.join(m['flags'])}). The machine was shared with other jobs (load average "
        f"{m['loadavg_start'][0]} at the start, {m['loadavg_end'][0]} at the end on {m['cores']} cores): absolute times are "
        "slow and noisy, ratios taken within this one run (round robin over candidates) are what count. "
        f"Total {results['total_s'] / 60:.0f} min.",
        "",
        "## Runtimes per model",
        "",
        f"Real tiles: the bundled Arctic EW/HH scenes sample_70 and sample_0 (never scored by tests or the demo); "
        f"km2/min counts the new ground a tile adds in a scene (tile less the {OVERLAP}-px overlap, at 25 m). "
        "Dice: slick masks against PyTorch eager fp32 on the same tiles.",
        "",
        f"| model (hash) | runtime | s/tile on the {cpu} | tiles/s | km2/min | speed-up over torch fp32 | Dice vs torch fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in results["runtimes"]:
        for label, e in model["candidates"].items():
            name = f"{model['model']} (`{model['model_hash']}`)"
            if "s_per_tile" in e:
                lines.append(f"| {name} | {label} | {e['s_per_tile']:.3f} | {e['tiles_per_s']:.3f} | {e['km2_per_min']:.0f} | "
                             f"{e['speedup_vs_torch_fp32']:.2f}x | {e['dice_vs_torch_fp32']:.4f} |")
            else:
                lines.append(f"| {name} | {label} | not run: {e['status']} | | | | |")
    lines.append("")
    if len(results["runtimes"]) == 1:
        lines += ["DeepLabV3-R50 was not measured in this run (`--no-deeplab`): about ten times the bundled model's "
                  "work per tile, it did not fit the time this shared machine left. The same command without "
                  "`--no-deeplab` adds it.", ""]
    for model in results["runtimes"]:
        lines.append(f"- {model['model']}: {model['tiles']} tiles of {model['tile']} px; masks cut at the {model['mask_threshold']}.")
        if "int8_verdict" in model:
            lines.append(f"  int8 check when the quantised model was made: {model['int8_verdict']['message']}.")
    lines += ["", "## Pipeline overhead", "",
              f"detect() end to end over the same tiles through the model alone (mean of before and after), on the {cpu}:", "",
              "| runtime | tiles | end to end (s) | model only (s) | ratio |", "|---|---|---|---|---|"]
    notes = ["", "End to end includes what a run does once whatever the scene's size (loading the model, compiling it "
             "for the tile shape, the scene statistics, writing COGs), which weighs most on a small scene."]
    for e in results["pipeline"]:
        lines.append(f"| {e['chosen']} | {e['tiles']} | {e['end_to_end_s']} | {e['model_only_s']} | {e['overhead_ratio']:.3f} |")
    lines += notes
    k = results["skipping"]
    lines += ["", "## Tiles never predicted", "",
              f"{k['scene']}, default land mask ({k['masked']}), {k['runtime']} on the {cpu}: {k['skipped']} of {k['tiles']} tiles "
              f"skipped ({k['share_skipped']:.1%}; by reason {k['skipped_by']}), {k['end_to_end_s']:.0f} s end to end. "
              + (f"That is a full EW scene, measured: {k['end_to_end_s'] / 60:.1f} min end to end."
                 if int(k["scene"].split("x")[0]) >= 16000 else
                 f"A full 16,000 x 16,000 px EW scene ({k['full_ew_tiles']} tiles of 512) with the same share of land and "
                 f"border would take about {k['full_ew_minutes_extrapolated']:.0f} min at this run's rate (extrapolated, not measured)."),
              "",
              "A tile is skipped only when all of it is land, no data or outside the extent: a fjord coast crosses most "
              "512-px tiles (12.8 km), so a scene a third of which is land can have no tile to skip, while the land and "
              "border pixels themselves are still masked. Skipping pays on the large no-data collars of rotated GRD "
              "swaths, on inland areas and on map-view extents.",
              "", "## Land mask data", "",
              "The default land mask is GSHHG, the Global Self-consistent, Hierarchical, High-resolution Geography "
              "Database (Wessel, P., and W. H. F. Smith, J. Geophys. Res., 101, 8741-8743, 1996; LGPL), full resolution, "
              "as compiled into the roaring-landmask package (G. Hope, MIT licence).", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tiles", type=int, default=4, help="real tiles per model (DeepLabV3 gets half)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--scene", type=int, default=4096, help="side of the synthetic Svalbard scene (16000 = a full EW scene)")
    p.add_argument("--sea", type=int, default=1536, help="side of the synthetic open-sea scene of the pipeline figure")
    p.add_argument("--no-deeplab", action="store_true", help="bundled model only (DeepLabV3-R50 takes ~10x as long)")
    p.add_argument("--pipeline-torch", action="store_true", help="also measure the pipeline overhead with PyTorch eager")
    p.add_argument("--json", type=Path, default=ROOT / "bench_output" / "runtime_bench.json")
    p.add_argument("--markdown", type=Path, help="also write the figures as a page, e.g. docs/benchmarks.md")
    p.add_argument("--from", dest="source", type=Path, help="with --markdown: render this earlier run's JSON, run nothing")
    args = p.parse_args()
    if args.source:
        args.markdown.write_text(markdown(json.loads(args.source.read_text())))
        return 0
    if args.quick:
        args.tiles, args.repeats, args.scene, args.sea = 2, 1, 1024, 1024
    from engine.models import cpu_features
    from engine.models.registry import DEFAULT_MODEL
    from engine.data.synth import SceneSpec, write_scene

    started = time.perf_counter()
    results = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit_text(),
               "machine": {**report.machine(torch.device("cpu")), **cpu_features.summary()}}
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"CPU: {results['machine']['cpu']} ({os.cpu_count()} cores), native bf16 {results['machine']['native_bf16']}, int8 {results['machine']['native_int8']}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SLICK_MAPPER_MODELS"] = str(work / "models")  # fresh exports and int8 checks, timed here
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        results["runtimes"] = [compare_runtimes(Path(DEFAULT_MODEL), args.tiles, args.repeats, log)]
        if not args.no_deeplab:
            results["runtimes"].append(compare_runtimes(deeplab_file(work), max(1, args.tiles // 2), args.repeats, log))
        fastest = min((e for e in results["runtimes"][0]["candidates"].items() if "s_per_tile" in e[1] and e[1]["dice_vs_torch_fp32"] >= 0.98),
                      key=lambda e: e[1]["s_per_tile"])[0]
        best_runtime = fastest.split()[0]
        sea = work / "sea.tif"
        write_scene(SceneSpec(height=args.sea, width=args.sea, seed=5), sea)
        results["pipeline"] = [pipeline(sea, Path(DEFAULT_MODEL), best_runtime, work, log)]
        if args.pipeline_torch and best_runtime != "torch":
            results["pipeline"].append(pipeline(sea, Path(DEFAULT_MODEL), "torch", work, log))
        svalbard = work / "svalbard.tif"
        write_scene(SceneSpec(height=args.scene, width=args.scene, seed=6, nodata_border=True, **SVALBARD), svalbard)
        results["skipping"] = skipping(svalbard, Path(DEFAULT_MODEL), best_runtime, work, args.scene, log)
    results["total_s"] = round(time.perf_counter() - started, 1)
    report.finish(results, args.json)
    rows = []
    for model in results["runtimes"]:
        for label, e in model["candidates"].items():
            rows.append((model["model"], label, *(
                (f"{e['s_per_tile']:.3f}", f"{e['tiles_per_s']:.2f}", f"{e['km2_per_min']:.0f}", f"{e['speedup_vs_torch_fp32']:.2f}x",
                 f"{e['dice_vs_torch_fp32']:.4f}") if "s_per_tile" in e else (e["status"][:40], "", "", "", ""))))
    report.print_table(("model", "runtime", "s/tile", "tiles/s", "km2/min", "speed-up", "Dice vs fp32"), rows)
    print(f"\nCPU {results['machine']['cpu']}; written {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
