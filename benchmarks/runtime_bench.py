"""Which runtime runs each model fastest on this machine, whether its masks stay PyTorch fp32's, and what the
pipeline and the land and no-data masks cost or save end to end.

    .venv/bin/python benchmarks/runtime_bench.py                  # ~15-30 min on 2 shared CPU cores
    .venv/bin/python benchmarks/runtime_bench.py --quick          # smoke run: fewer tiles, a 1024 scene
    .venv/bin/python benchmarks/runtime_bench.py --only pipeline --runtime openvino   # one figure alone

Figures, each a ratio of timings taken in this one run (round robin, so a shared machine's load falls on
every candidate alike), with the CPU named beside them:
  runtimes    per model (bundled U-Net R18; DeepLabV3-R50, random init; --models files) and runtime/precision: s per tile,
              tiles/s, km2/min, speed-up over PyTorch eager fp32, slick-mask Dice against PyTorch eager fp32
              on real tiles (the bundled Arctic scenes that no test scores on)
  efficiency  per model and runtime: achieved FLOP/s over this CPU's matmul peak in the same precision, timed
              in the same rounds (benchmarks/efficiency.py), and where OpenVINO's time goes by kind of layer
  pipeline    detect() end to end / the same tiles through the model alone, on synthetic scenes at sea (--sea:
              one row per size), in wall time and in CPU time (--compare lists other runs' pipeline rows beside it)
  process     a detection as the plugin and the command line start it (16 tiles): a new engine process, end to end, beside
              detect()'s own time in it; with --against, another checkout's engine (an earlier commit) in the
              same rounds
  skipping    share of tiles never predicted on a synthetic EW scene laid over Svalbard's real coastline
              (GSHHG) with a no-data border, and minutes end to end for it; a full 16,000^2 EW scene's
              minutes extrapolated from the measured rate and the skipped share
  extent      a map view's detection (1,536 px square) in the middle of that scene, the first time on the scene
              and again: the second answers the whole-scene questions from what the first measured
  width       peak memory of a detection in a new process on sea scenes of one height and growing widths (--widths),
              for this engine and any --against checkout in the same rounds
  first       a model's first detection on a machine that never ran it (a real Arctic tile, a new engine process, auto),
              with nothing made beforehand and after ``engine prepare`` (what the dock runs when a model is chosen)

Results: printed, and written to bench_output/runtime_bench.json; ``--markdown docs/benchmarks.md`` renders a
JSON file of an earlier run (``--from``) or of this one as the product's benchmark page.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import efficiency  # noqa: E402
import report  # noqa: E402
from engine.machine import commit_text  # noqa: E402

OVERLAP = 64
WIDTH_HEIGHT = 1536
"""Rows of the width figure's scenes: three tile rows, so the widest stays minutes long."""
SECTIONS = ("runtimes", "pipeline", "process", "skipping", "extent", "width", "first")
"""The figures, each measurable alone (``--only``): the runtimes with the model efficiency, the pipeline overhead,
a detection's own process, the tiles skipped."""
_CHILD = ("import json, sys; from engine.cli.main import main; from engine.machine import commit_text; code = main(sys.argv[1:]); "
          "peak = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')); "
          "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'commit': commit_text(), 'peak_mb': peak / 1024}))")
"""A detection in a new engine process, as ``python -m engine`` runs it, saying whether PyTorch was loaded and
its peak resident memory (VmHWM, read here rather than by ``engine.machine.memory_bytes`` so that ``--against``
can run checkouts older than it)."""
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


INT8_FILES = {"onnxruntime": "int8", "openvino": "ov-int8"}
"""Where each runtime's int8 verdict lies beside the export (engine/models/quantise.py): older runs kept ONNX Runtime's
alone, under ``int8_verdict``."""


def compare_runtimes(model_path: Path, n_tiles: int, repeats: int, log) -> dict:
    """Every candidate on the same real tiles, round robin, against PyTorch eager fp32; the matmul peak of
    each precision is timed in the same rounds, so that a share of it is a ratio within one run."""
    from engine.models import agreement, cpu_features, runtimes
    from engine.models.registry import load_model

    device = torch.device("cpu")
    model, card = load_model(model_path, device)
    factory = runtimes.Factory(model_path, card, device, model)
    tiles = agreement.calibration_tiles(card, n_tiles)
    scale = float(card.normalisation.get("input_scale", 1 / 255))
    x = [t[None, None].astype(np.float32) * scale for t in tiles]
    flops = efficiency.forward_flops(model, card.tile_size, card.in_channels)
    built, out = {}, {"model": card.name, "model_hash": factory.digest, "tiles": len(x), "tile": card.tile_size,
                      "gflop_per_tile": round(flops / 1e9, 3), "candidates": {}}
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
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if cpu_features.native_bf16() else {}),
              **({"int8": torch.int8} if any(label.endswith(" int8") for label in built) else {})}
    matmuls = {precision: efficiency.matmul_timers(device, dtype, efficiency.MATMUL_N) for precision, dtype in dtypes.items()}
    mm_timings = {precision: {path: [] for path in timers} for precision, timers in matmuls.items()}
    probs = {k: [] for k in built}
    seconds = {k: 0.0 for k in built}
    cpu_seconds = {k: 0.0 for k in built}
    for r in range(repeats):
        for t in x:
            for label, forward in built.items():
                logits = []
                timing = efficiency.timed(lambda: logits.append(forward(t)))
                seconds[label] += timing.wall
                cpu_seconds[label] += timing.cpu
                if r == 0:
                    probs[label].append(torch.sigmoid(torch.from_numpy(np.asarray(logits[0], np.float32))[:, 0]).numpy())
            for precision, timers in matmuls.items():
                for path, timer in timers.items():
                    mm_timings[precision][path] += [timer() for _ in range(efficiency.MATMUL_REPEATS)]
    peaks, cpu_peaks, out["matmul_peak"] = {}, {}, {}
    for precision, timings in mm_timings.items():
        peaks[precision] = efficiency.peak({path: [t.wall for t in ts] for path, ts in timings.items()}, efficiency.MATMUL_N, statistics.fmean)
        cpu_peaks[precision] = efficiency.peak({path: [t.cpu for t in ts] for path, ts in timings.items()}, efficiency.MATMUL_N, statistics.fmean)
        out["matmul_peak"][precision] = {
            "gflops": round(peaks[precision][0] / 1e9, 1), "path": peaks[precision][1], "n": efficiency.MATMUL_N,
            "gflops_by_path": {path: round(efficiency.matmul_flops(efficiency.MATMUL_N) / statistics.fmean([t.wall for t in ts]) / 1e9, 1)
                               for path, ts in timings.items()},
            "gflop_per_cpu_s": round(cpu_peaks[precision][0] / 1e9, 1),
        }
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
            "achieved_gflops": round(flops / s_tile / 1e9, 2),
        })
        precision = label.split()[-1]
        if precision in peaks:
            entry["share_of_peak"] = round(flops / s_tile / peaks[precision][0], 4)
            cpu_tile = cpu_seconds[label] / (repeats * len(x))
            entry["share_of_peak_cpu_time"] = round(flops / cpu_tile / cpu_peaks[precision][0], 4)
        log(f"  {card.name:40s} {label:18s} {s_tile:7.3f} s/tile  x{entry['speedup_vs_torch_fp32']:.2f}  Dice {entry['dice_vs_torch_fp32']:.4f}  "
            f"{entry['achieved_gflops']:.1f} GFLOP/s" + (f" = {entry['share_of_peak']:.2f} of the {precision} matmul peak "
                                                         f"({entry['share_of_peak_cpu_time']:.2f} in CPU time)" if precision in peaks else ""))
    out["openvino_layers"] = {label.split()[1]: efficiency.openvino_layers(factory.onnx(), label.split()[1], x[0], factory.threads)
                              for label in built if label in ("openvino fp32", "openvino bf16")}
    out["mask_threshold"] = "model's own" if trained else "median of torch fp32 output"
    verdicts = {runtime: runtimes.exports_dir() / f"{factory.digest}.{made}.json" for runtime, made in INT8_FILES.items()}
    out["int8_verdicts"] = {runtime: json.loads(path.read_text()) for runtime, path in verdicts.items() if path.is_file()}
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


PIPELINE_ROUNDS = 3
"""detect() runs of the pipeline figure, each between two model-only passes: one pair moved the ratio by 0.1
on this 2-core machine (a model-only pass 18.8 s before and 15.2 s after one detection), the median of three less."""


def pipeline(scene: Path, model_path: Path, runtime: str, work: Path, log) -> dict:
    """detect() end to end over model-only time on the same tiles, each detect() between two model-only passes
    (``PIPELINE_ROUNDS`` times); the figure is the median of the rounds' ratios.

    Wall time is the figure; CPU time (all of this process's threads) is taken beside it, because on a machine
    shared with other jobs it moves much less than wall time does from one run to the next."""
    from engine.models import runtimes
    from engine.jobs.detect import DetectOptions, detect
    from engine.scenes.landmask import Exclusion

    predictor, _ = runtimes.make_predictor(model_path, torch.device("cpu"), runtime)
    tiles = scene_tiles(scene, predictor.card, Exclusion(None), {})
    options = DetectOptions(model=str(model_path), runtime=runtime, land_mask="none", overwrite=True)
    predictor.tta = options.tta  # the model's work as detection does it, mirror averaging included
    predictor(tiles[0][None])
    timed = efficiency.timed

    def model_only() -> None:
        for t in tiles:
            predictor(t[None])

    results = []
    models = [timed(model_only)]
    rounds = []
    for _ in range(PIPELINE_ROUNDS):
        forget_scenes()  # each round reads the scene afresh, as a first detection on it does
        end_to_end = timed(lambda: results.append(detect(scene, work / "pipeline_out", options)))
        models.append(timed(model_only))
        wall, cpu = (models[-2][0] + models[-1][0]) / 2, (models[-2][1] + models[-1][1]) / 2
        rounds.append({"end_to_end_s": end_to_end[0], "model_only_s": wall, "ratio": end_to_end[0] / wall,
                       "end_to_end_cpu_s": end_to_end[1], "model_only_cpu_s": cpu, "cpu_ratio": end_to_end[1] / cpu,
                       "stages": results[-1].stage_seconds})
    middle = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    log(f"  pipeline ({runtime}): {len(tiles)} tiles, ratios " + ", ".join(f"{r['ratio']:.3f}" for r in rounds)
        + f"; median round: end to end {middle['end_to_end_s']:.1f} s, model only {middle['model_only_s']:.1f} s; CPU time x{middle['cpu_ratio']:.3f}")
    return {"runtime": runtime, "chosen": _ran(results[0].runtime, results[0].mirrored), "tiles": len(tiles),
            "end_to_end_s": round(middle["end_to_end_s"], 2), "model_only_s": round(middle["model_only_s"], 2),
            "overhead_ratio": round(middle["ratio"], 4), "ratios": [round(r["ratio"], 4) for r in rounds],
            "model_only_passes_s": [round(m[0], 2) for m in models], "end_to_end_cpu_s": round(middle["end_to_end_cpu_s"], 2),
            "model_only_cpu_s": round(middle["model_only_cpu_s"], 2), "cpu_ratio": round(middle["cpu_ratio"], 4),
            "stages": middle["stages"]}


def _detect_in_process(scene: Path, root: Path, out: Path) -> tuple[dict, dict]:
    """A detection of ``scene`` in a new process of ``root``'s engine, as the plugin starts one (``--jsonl detect``, the
    product's defaults, no land mask): (what ``_CHILD`` said of the process, the detection's result)."""
    argv = ["--jsonl", "detect", str(scene), "--out", str(out), "--land-mask", "none", "--overwrite"]
    run = subprocess.run([sys.executable, "-c", _CHILD, *argv], cwd=root, capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    return json.loads(lines[-1]), json.loads(lines[-2])["data"]


def process(scene: Path, roots: list[Path], work: Path, repeats: int, log) -> list[dict]:
    """A detection in a new process per run, as the plugin starts one (``--jsonl detect``, the product's
    defaults, no land mask), for each engine checkout in ``roots``, round robin; one warm-up run each first
    (exports, OpenVINO's compiled network and the runtime choice are cached per machine, as after an
    analyst's first detection). Wall and CPU time (the child's, from the OS) beside the result's own
    ``seconds``: the difference is the process start, imports above all."""
    import resource

    def once(root: Path) -> dict:
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        said, result = _detect_in_process(scene, root, work / "process_out")
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"commit": said["commit"], "torch_loaded": said["torch"], "peak_mb": said["peak_mb"], "wall_s": wall, "detect_s": result["seconds"],
                "cpu_s": (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
                "runtime": _ran(result["runtime"], result.get("mirrored", False)), "tiles": result["tiles"]}

    runs: dict[Path, list[dict]] = {root: [] for root in roots}
    for root in roots:
        once(root)
    for _ in range(repeats):
        for root in roots:
            runs[root].append(once(root))
    out = []
    for root, done in runs.items():
        wall, detect_s, cpu, peak = (statistics.median(r[k] for r in done) for k in ("wall_s", "detect_s", "cpu_s", "peak_mb"))
        entry = {"commit": done[0]["commit"], "runtime": done[0]["runtime"], "tiles": done[0]["tiles"], "repeats": repeats,
                 "torch_loaded": done[0]["torch_loaded"], "wall_s": round(wall, 2), "wall_s_range": [round(min(r["wall_s"] for r in done), 2),
                 round(max(r["wall_s"] for r in done), 2)], "detect_s": round(detect_s, 2), "cpu_s": round(cpu, 2), "peak_mb": round(peak)}
        log(f"  process ({entry['commit']}): {entry['tiles']} tiles, {wall:.2f} s end to end (detect {detect_s:.2f} s), "
            f"CPU {cpu:.2f} s, peak {peak:.0f} MB, PyTorch loaded: {entry['torch_loaded']}")
        out.append(entry)
    return out


def width(scenes: dict[int, Path], roots: list[Path], work: Path, log) -> dict:
    """Peak resident memory of a detection in a new process (the product's defaults, no land mask) per scene width,
    for each engine checkout in ``roots``, one after the other per width. The scenes lie on their UTM zone's central
    meridian, so the analysis grid is their own pixels: a wide scene warped into another zone would grow in height too."""
    for root in roots:  # warm-up: the runtime choice, the export and its int8 model are made once per machine
        _detect_in_process(next(iter(scenes.values())), root, work / "width_out")
    rows = []
    for side, scene in scenes.items():
        for root in roots:
            said, result = _detect_in_process(scene, root, work / "width_out")
            rows.append({"width": side, "commit": said["commit"], "peak_mb": round(said["peak_mb"]), "seconds": result["seconds"],
                         "tiles": result["tiles"], "slicks": result["n_slicks"], "grid": result["grid"]})
            log(f"  width {side}: {said['commit']} peak {said['peak_mb']:.0f} MB, {result['seconds']:.1f} s, {result['n_slicks']} slicks")
    return {"height": WIDTH_HEIGHT, "rows": rows}


def _ran(runtime: str, mirrored: bool) -> str:
    """What ran the model, as the pages name it: mirror averaging (the default since it measured better on real
    scenes) quadruples the model's work, so a time means little without it."""
    return f"{runtime}, mirror averaged" if mirrored else runtime


def skipping(scene: Path, model_path: Path, runtime: str, work: Path, size: int, log) -> dict:
    """A whole scene with land and a no-data border, as an analyst's first detection on it after the machine's
    one-time runtime choice (made here first, as ``extent`` does: before ``--only skipping`` runs it, it was timed
    inside this figure)."""
    from engine.jobs.detect import DetectOptions, detect
    from engine.models import runtimes
    from engine.scenes.tiling import count_tiles

    runtimes.make_predictor(model_path, torch.device("cpu"), runtime)
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
            "end_to_end_s": round(seconds, 1), "runtime": _ran(result.runtime, result.mirrored), "masked": result.masked,
            "full_ew_tiles": full, "full_ew_minutes_extrapolated": round(full * (1 - share) / rate / 60, 1),
            "grid": result.grid, "stages": result.stage_seconds}


def forget_scenes(land: bool = False) -> None:
    """Drop the whole-scene measurements detections keep (``engine.scenes.remembered``), and with ``land`` the
    land mask's tiles (``engine.scenes.landmask``)."""
    import shutil

    from engine.cache import cache_dir

    for kept in ("scenes", "land") if land else ("scenes",):
        shutil.rmtree(cache_dir() / kept, ignore_errors=True)


EXTENT_PX = 1536
"""A map view's side in pixels at 25 m (38.4 km): 16 tiles of 512, what the dock's Detect usually gets."""


def extent(scene: Path, model_path: Path, runtime: str, work: Path, size: int, log) -> dict:
    """A map view's detection in the middle of ``scene``, each in a new engine process as the dock starts it: once on
    a scene seen for the first time (nothing kept about it, its land mask included), then again (another extent, a
    fine-tuned model or a new threshold ask the same whole-scene questions); and once more on a scene seen for the
    first time, after the look-ups the dock makes as soon as a scene is chosen (``info``, then ``measure``)."""
    from engine.models import runtimes

    runtimes.make_predictor(model_path, torch.device("cpu"), runtime)  # the runtime's choice and export, out of all runs
    side = EXTENT_PX * 25.0
    left, top = SVALBARD["origin"][0] + (size * 25.0 - side) / 2, SVALBARD["origin"][1] - (size * 25.0 - side) / 2
    argv = ["--jsonl", "detect", str(scene), "--out", str(work / "extent_out"), "--model", str(model_path), "--runtime", runtime,
            "--bounds", *(str(v) for v in (left, top - side, left + side, top)), "--bounds-crs", SVALBARD["crs"], "--overwrite"]

    def detection() -> dict:
        started = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", _CHILD, *argv], cwd=ROOT, capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.splitlines()[-2])["data"]
        return {"process_s": round(time.perf_counter() - started, 2), "end_to_end_s": result["seconds"],
                "stages": result["stage_seconds"], "tiles": result["tiles"], "tiles_skipped": result["tiles_skipped"],
                "runtime": _ran(result["runtime"], result["mirrored"])}

    forget_scenes(land=True)
    first, again = detection(), detection()
    forget_scenes(land=True)
    started = time.perf_counter()
    for look_up in (["info", str(scene), "--model", str(model_path)], ["measure", str(scene)]):
        subprocess.run([sys.executable, "-m", "engine", "--jsonl", *look_up], cwd=ROOT, capture_output=True, text=True, check=True)
    chosen_s = round(time.perf_counter() - started, 2)
    after_choosing = detection()
    log(f"  extent: {first['tiles']} tiles predicted, first {first['process_s']:.1f} s, again {again['process_s']:.1f} s "
        f"(before the first tile {first['stages']['before_tiles']:.1f} s, then {again['stages']['before_tiles']:.1f} s); "
        f"after the dock's look-ups ({chosen_s:.1f} s) {after_choosing['process_s']:.1f} s")
    return {"scene_px": size, "extent_px": EXTENT_PX, "tiles": first["tiles"], "tiles_skipped": first["tiles_skipped"],
            "runtime": first["runtime"], "first": first, "again": again, "chosen_s": chosen_s, "after_choosing": after_choosing}


def first_detection(scene: Path, model_path: Path, work: Path, repeats: int, log) -> dict:
    """A model's first detection on a machine that has never run it (an empty cache and models folder, a new engine
    process as the dock starts one, runtime auto), with nothing made beforehand and after ``engine prepare`` (what the
    dock runs as soon as the model is chosen); each round in fresh folders, the two arms alternating."""
    from engine.models.runtimes import model_hash

    def timed(argv: list[str], env: dict) -> tuple[float, dict]:
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "engine", "--jsonl", *argv], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        return round(time.perf_counter() - started, 2), json.loads(run.stdout.splitlines()[-1])["data"]

    detect = ["detect", str(scene), "--model", str(model_path), "--runtime", "auto", "--out", str(work / "first_out"), "--overwrite"]
    rows = []
    for r in range(repeats):
        for arm in ("nothing prepared", "after engine prepare"):
            folder = work / f"first_{r}_{arm.split()[0]}"
            env = {**os.environ, "SLICK_MAPPER_MODELS": str(folder / "models"), "XDG_CACHE_HOME": str(folder / "cache")}
            prepare_s, prepared = (timed(["prepare", "--model", str(model_path), "--runtime", "auto"], env)
                                   if arm.startswith("after") else (None, {}))
            (first_s, result), (again_s, _) = timed(detect, env), timed(detect, env)
            rows.append({"arm": arm, "round": r + 1, "prepare_s": prepare_s, "made": prepared.get("made", ""),
                         "first_s": first_s, "again_s": again_s, "runtime": result["runtime"]})
            log(f"  first detection, {arm}: prepare {prepare_s} s, first {first_s} s, again {again_s} s ({result['runtime']})")
    return {"scene": f"{scene.parent.name}/{scene.name}", "model": model_path.name, "model_hash": model_hash(model_path), "runs": rows}


def kept_runs(runs: list[dict], measured: list[str]) -> list[dict]:
    """The earlier runs whose figures a page keeps, each cut to the sections it is the source of: every figure not in
    ``measured`` from the last of ``runs`` (or of the runs they kept themselves) that has it, named as that run's."""
    flat: list[dict] = []
    for run in runs:
        kept = run.get("earlier", [])
        flat += [kept] if isinstance(kept, dict) else kept  # a run from before --keep took several files holds one
        flat.append(run)
    source = {section: run for run in flat for section in SECTIONS if section in run and section not in measured}
    return [{**{k: run[k] for k in ("command", "commit", "machine")}, **{s: run[s] for s, r in source.items() if r is run}}
            for run in flat if any(r is run for r in source.values())]


def markdown(results: dict) -> str:
    """The benchmark page: every figure with the CPU, the command, the commit and the model hashes beside it."""
    m = results["machine"]
    cpu = f"{m['cores']}-core {m['cpu']} CPU"
    lines = [
        "# Detection speed: runtimes, model efficiency, pipeline, skipped tiles",
        "",
        f"Made by `{results['command']}` at commit `{results['commit']}` on a {cpu} (torch {m['torch']}, "
        f"{m['torch_threads']} threads; native bf16: {m['native_bf16']}, native int8 (VNNI): {m['native_int8']}; "
        f"flags {', '.join(m['flags'])}). Load average {m['loadavg_start'][0]} at the start, {m['loadavg_end'][0]} at the "
        f"end on {m['cores']} cores: on a machine shared with other jobs absolute times are slow and noisy, and ratios "
        "taken within one run (round robin over candidates) are what count. "
        f"Total {results['total_s'] / 60:.0f} min."
        + (f" This page was rendered from that run's JSON by `{results['rendered_by']}`." if "rendered_by" in results else ""),
        "",
    ]
    earlier = results.get("earlier", [])
    earlier = [earlier] if isinstance(earlier, dict) else earlier
    for section, render in (("runtimes", lambda r: runtimes_section(r["runtimes"], cpu) + efficiency_section(r["runtimes"], cpu, r["machine"])),
                            ("pipeline", lambda r: pipeline_section(r, cpu)),
                            ("process", lambda r: process_section(r["process"], cpu, [run for run in r.get("compared", []) if run.get("process")])),
                            ("skipping", lambda r: skipping_section(r["skipping"], cpu, r.get("compared", []))),
                            ("extent", lambda r: extent_section(r["extent"], cpu)),
                            ("width", lambda r: width_section(r["width"], cpu)),
                            ("first", lambda r: first_section(r["first"], cpu))):
        if section in results:
            lines += render(results)
        elif any(section in run for run in earlier):
            run = next(run for run in earlier if section in run)
            page = render({**run, "compared": results.get("compared", [])})
            load = run["machine"]["loadavg_start"][0], run["machine"]["loadavg_end"][0]
            lines += page[:2] + [f"From an earlier run on the same machine, which this one did not repeat: `{run['command']}` at "
                                 f"commit `{run['commit']}` (load average {load[0]} at the start, {load[1]} at the end).", ""] + page[2:]
    return "\n".join(lines)


def runtimes_section(models: list[dict], cpu: str) -> list[str]:
    lines = [
        "## Runtimes per model",
        "",
        f"Real tiles: the bundled Arctic EW/HH scenes sample_70 and sample_0 (never scored by tests or the demo); "
        f"km2/min counts the new ground a tile adds in a scene (tile less the {OVERLAP}-px overlap, at 25 m). "
        "Dice: slick masks against PyTorch eager fp32 on the same tiles.",
        "",
        f"| model (hash) | runtime | s/tile on the {cpu} | tiles/s | km2/min | speed-up over torch fp32 | Dice vs torch fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in models:
        for label, e in model["candidates"].items():
            name = f"{model['model']} (`{model['model_hash']}`)"
            if "s_per_tile" in e:
                lines.append(f"| {name} | {label} | {e['s_per_tile']:.3f} | {e['tiles_per_s']:.3f} | {e['km2_per_min']:.0f} | "
                             f"{e['speedup_vs_torch_fp32']:.2f}x | {e['dice_vs_torch_fp32']:.4f} |")
            else:
                lines.append(f"| {name} | {label} | not run: {e['status']} | | | | |")
    lines.append("")
    if len(models) == 1:
        lines += ["DeepLabV3-R50 was not measured in this run (`--no-deeplab`): about ten times the bundled model's "
                  "work per tile, it did not fit the time this shared machine left. The same command without "
                  "`--no-deeplab` adds it.", ""]
    for model in models:
        lines.append(f"- {model['model']}: {model['tiles']} tiles of {model['tile']} px; masks cut at the {model['mask_threshold']}.")
        verdicts = model.get("int8_verdicts") or ({"onnxruntime": model["int8_verdict"]} if "int8_verdict" in model else {})
        for runtime, verdict in verdicts.items():
            lines.append(f"  {runtime}'s int8 check when its quantised model was made: {verdict['message']}.")
    return lines + [""]


def efficiency_section(models: list[dict], cpu: str, machine: dict) -> list[str]:
    """Achieved FLOP/s of every runtime over the matmul peak of its precision, and where OpenVINO's time goes."""
    lines = [
        "## Model efficiency",
        "",
        "Achieved FLOP/s: the model's FLOPs per tile (PyTorch's `FlopCounterMode`: 2 per multiply-add of its convolutions, "
        "at the tile size) over the s/tile above. Peak: an n x n by n x n matmul in the same precision on all "
        f"{machine['torch_threads']} torch threads, timed between the same tiles in the same rounds, the faster of "
        "`torch.mm` and oneDNN's linear (both rates are listed below the table): a rate measured on this machine, not a "
        "datasheet figure. The last column sets FLOPs per CPU-second (all of the process's threads) against the "
        "matmul's: on a machine shared with other jobs it moves much less than wall time, which falls on the matmul's "
        "few timings and the tiles' unevenly. An int8 runtime's work is counted as the same FLOPs and set against the "
        "int8 matmul (`torch._int_mm`, and oneDNN's quantised linear, uint8 by int8, the form of the quantised "
        "convolutions the runtimes run).",
        "",
        f"| model | GFLOP/tile | runtime | s/tile | achieved GFLOP/s | matmul peak, same precision (GFLOP/s) | share of peak | share of peak, CPU time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        peaks = model["matmul_peak"]
        for label, e in model["candidates"].items():
            if "s_per_tile" not in e:
                continue
            precision = label.split()[-1]
            peak = f"{peaks[precision]['gflops']:.0f} ({precision})" if precision in peaks else "-"
            share = f"**{e['share_of_peak']:.2f}**" if "share_of_peak" in e else "-"
            share_cpu = f"{e['share_of_peak_cpu_time']:.2f}" if "share_of_peak_cpu_time" in e else "-"
            lines.append(f"| {model['model']} | {model['gflop_per_tile']:.1f} | {label} | {e['s_per_tile']:.3f} | "
                         f"{e['achieved_gflops']:.1f} | {peak} | {share} | {share_cpu} |")
    lines.append("")
    for model in models:
        measured = "; ".join(f"{precision} {p['gflops']:.0f} GFLOP/s ({p['path']}; "
                             + ", ".join(f"{path} {rate:.0f}" for path, rate in p["gflops_by_path"].items()) + ")"
                             for precision, p in model["matmul_peak"].items())
        lines.append(f"- {model['model']}: {model['matmul_peak']['fp32']['n']}^2 matmul peaks measured in its rounds: {measured}.")
        fastest = min(((label, e) for label, e in model["candidates"].items() if "share_of_peak" in e and e["dice_vs_torch_fp32"] >= 0.98),
                      key=lambda item: item[1]["s_per_tile"], default=None)
        if fastest:
            lines.append(f"  Fastest runtime whose masks agree with PyTorch fp32: {fastest[0]}, at {fastest[1]['share_of_peak']:.2f} of "
                         f"the {fastest[0].split()[-1]} matmul peak ({fastest[1]['share_of_peak_cpu_time']:.2f} in CPU time).")
    lines += ["", "What limits the share: a segmentation network is not all wide convolutions. The U-Net's decoder "
              "upsamples and concatenates at every stage, its last stages and its one-class head work on few channels "
              "at full resolution, and its stem reads a one-band tile: layers that move more memory than they compute. "
              "OpenVINO's own per-layer counters on one tile, by kind of layer (share of the time; share of the FLOPs; rate):", ""]
    for model in models:
        for precision, kinds in model.get("openvino_layers", {}).items():
            parts = [f"{kind} {k['share_of_time']:.0%}; {k['share_of_flops']:.0%}" + (f"; {k['gflops']:.0f} GFLOP/s" if k["gflops"] else "")
                     for kind, k in kinds.items()]
            lines.append(f"- {model['model']}, OpenVINO {precision}: {' | '.join(parts)}.")
    lines += ["", "bf16 speeds up the arithmetic of the wide convolutions, not the memory traffic of the other layers. "
              "All figures are for one tile at a time (batch 1), as detection runs on a CPU."]
    if any(e.get("share_of_peak", 0) > 1 for model in models for e in model["candidates"].values()):
        lines.append(f"A share above 1 means the model did more FLOPs per second than the {efficiency.MATMUL_N}^2 matmul in the "
                     "same rounds: the matmul's rate is measured, not a ceiling, and on a loaded machine its few timings can "
                     "also fall on busier moments than the tiles'.")
    return lines + [""]


def pipeline_section(results: dict, cpu: str) -> list[str]:
    lines = ["## Pipeline overhead", "",
             f"detect() end to end over the same tiles through the model alone (the mean of the passes before and after), on "
             f"the {cpu}, the median of {PIPELINE_ROUNDS} such rounds where a row lists its rounds' ratios (earlier rows: one "
             "round); CPU time (all of the process's threads) beside wall time, as it moves much less with other jobs' load:", "",
             "| commit | load average | runtime | tiles | end to end (s) | model only (s) | ratio | CPU-time ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for run in [*results.get("compared", []), results]:
        for e in run.get("pipeline", []):
            rounds = f" ({', '.join(f'{r:.3f}' for r in e['ratios'])})" if "ratios" in e else ""
            cpu_ratio = f"{e['cpu_ratio']:.3f}" if "cpu_ratio" in e else ""
            lines.append(f"| `{run['commit']}` | {run['machine']['loadavg_start'][0]} | {e['chosen']} | {e['tiles']} | "
                         f"{e['end_to_end_s']} | {e['model_only_s']} | **{e['overhead_ratio']:.3f}**{rounds} | {cpu_ratio} |")
    lines += stages_table(results)
    if results.get("compared"):
        commands = sorted({re.sub(r" --json \S+", "", run["command"]) for run in results["compared"]})
        lines += ["", f"The rows above this run's come from other runs on the same machine, in the order they ran: "
                  f"{' and '.join(f'`{c}`' for c in commands)}, at the commits named."]
    lines += ["", "End to end includes what a run does once whatever the scene's size (reading the model's card, "
              "compiling it for the tile shape, the scene statistics, tracing the slicks and weighing their evidence, "
              "writing the COGs), which weighs most on a small scene.", ""]
    return lines


STAGES = {"before_tiles": "before the first tile", "tiles_outside_model": "beside the model while the tiles ran",
          "tracing": "tracing slicks", "evidence": "weighing evidence", "writing": "writing (GeoPackage, COGs)",
          "finishing": "finishing"}
"""detect()'s stages outside the model (``DetectResult.stage_seconds``), in the order they run."""


def stages_table(results: dict) -> list[str]:
    """Where the median round's seconds beyond the model went, for this run's rows (older runs did not time them)."""
    entries = [e for e in results.get("pipeline", []) if "stages" in e]
    if not entries:
        return []
    lines = ["", "Where end to end went beyond the model, in the median round (seconds; `model` is the time inside the "
             "runtime during detect(), beside the model-only pass it is compared with):", "",
             "| tiles | model | model-only pass | " + " | ".join(STAGES.values()) + " |",
             "|---" * (3 + len(STAGES)) + "|"]
    for e in entries:
        st = e["stages"]
        lines.append(f"| {e['tiles']} | {st['model']:.2f} | {e['model_only_s']:.2f} | " + " | ".join(f"{st[k]:.2f}" for k in STAGES) + " |")
    return lines


def process_section(entries: list[dict], cpu: str, compared: list[dict]) -> list[str]:
    lines = ["## A detection's own process", "",
             "The plugin and the command line run each detection in a new engine process. Median of "
             f"{entries[0]['repeats']} runs per engine (round robin, after one warm-up each), on the {cpu}: the process end "
             "to end, the time `detect` itself reports, the child's CPU time and peak memory (resident), and whether PyTorch "
             "was loaded:", "",
             "| engine at commit | runtime | tiles | process end to end (s) | range (s) | detect's own (s) | CPU (s) | peak memory (MB) | PyTorch loaded |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in [*(e for run in compared for e in run["process"]), *entries]:
        lines.append(f"| `{e['commit']}` | {e['runtime']} | {e['tiles']} | **{e['wall_s']}** | {e['wall_s_range'][0]}-{e['wall_s_range'][1]} | "
                     f"{e['detect_s']} | {e['cpu_s']} | {e.get('peak_mb', '')} | {'yes' if e['torch_loaded'] else 'no'} |")
    if compared:
        commands = [re.sub(r" --json \S+", "", run["command"]) for run in compared]
        lines += ["", f"The rows above this run's come from other runs on the same machine: {' and '.join(f'`{c}`' for c in commands)}."]
    return lines + [""]


def skipping_section(k: dict, cpu: str, compared: list[dict]) -> list[str]:
    earlier = [f"`{run['commit']}`: {run['skipping']['end_to_end_s']:.0f} s ({run['skipping']['runtime']})"
               for run in compared if "skipping" in run]
    return ["## Tiles never predicted", "",
            f"{k['scene']}, default land mask ({k['masked']}), {k['runtime']} on the {cpu}: {k['skipped']} of {k['tiles']} tiles "
            f"skipped ({k['share_skipped']:.1%}; by reason {k['skipped_by']}), {k['end_to_end_s']:.0f} s end to end. "
            + (f"That is a full EW scene, measured: {k['end_to_end_s'] / 60:.1f} min end to end."
               if int(k["scene"].split("x")[0]) >= 16000 else
               f"A full 16,000 x 16,000 px EW scene ({k['full_ew_tiles']} tiles of 512) with the same share of land and "
               f"border would take about {k['full_ew_minutes_extrapolated']:.0f} min at this run's rate (extrapolated, not measured).")
            + (f" The same scene at earlier commits, in the runs listed under Pipeline overhead: {', '.join(earlier)}." if earlier else ""),
            "", *_scene_stages(k), 
            "A tile is skipped only when all of it is land, no data or outside the extent: a fjord coast crosses most "
            "512-px tiles (12.8 km), so a scene a third of which is land can have no tile to skip, while the land and "
            "border pixels themselves are still masked. Skipping pays on the large no-data collars of rotated GRD "
            "swaths, on inland areas and on map-view extents.",
            "", "## Land mask data", "",
            "The default land mask is GSHHG, the Global Self-consistent, Hierarchical, High-resolution Geography "
            "Database (Wessel, P., and W. H. F. Smith, J. Geophys. Res., 101, 8741-8743, 1996; LGPL), full resolution, "
            "as compiled into the roaring-landmask package (G. Hope, MIT licence).", ""]


def _scene_stages(k: dict) -> list[str]:
    """Where the whole scene's seconds went (runs before detect() reported its stages have none)."""
    if "stages" not in k:
        return []
    st = k["stages"]
    return [f"Where they went (seconds; analysis grid {k['grid']}): inside the model {st['model']:.1f}, before the first tile "
            f"{st['before_tiles']:.1f} (the preview and the eq. 1 statistics, each a read of the whole scene), beside the model "
            f"while the tiles ran {st['tiles_outside_model']:.1f} (reading and warping the scene onto the grid, the land mask, "
            f"stretching, blending, staging), tracing the slicks {st['tracing']:.1f}, weighing their evidence {st['evidence']:.1f}, "
            f"writing the COGs after that {st['writing']:.1f}, finishing {st['finishing']:.1f}.", ""]


def extent_section(k: dict, cpu: str) -> list[str]:
    runs = [("first on this scene", k["first"]), ("again", k["again"])]
    if "after_choosing" in k:  # runs before the dock measured a chosen scene have no such row
        runs.append((f"first, after the dock's look-ups when the scene was chosen ({k['chosen_s']:.2f} s)", k["after_choosing"]))
    return ["## A map view on a whole scene, the first time and again", "",
            f"A {k['extent_px']} x {k['extent_px']}-px extent (as the dock's map view sends it) in the middle of the "
            f"{k['scene_px']} x {k['scene_px']}-px synthetic EW/HH scene over Svalbard's coast (as under *Tiles never predicted*), "
            f"{k['runtime']} on the {cpu}: {k['tiles']} tiles predicted, {k['tiles_skipped']} skipped. Each run is a new engine "
            "process, as the dock starts one. The eq. 1 statistics come from the whole scene whatever the extent, so that an "
            "extent is stretched as the whole scene is; the second run answers them, and the preview that says how the "
            "scene's values are encoded, from what the first measured (before the first tile). The land mask of the "
            "extent's tiles is kept too, by its own cache: the first run's time beside the model is mostly its queries."
            + (" The last row starts again with nothing kept and first runs what the dock runs when the analyst chooses the "
               "scene (`info`, then `measure`, each its own process; their time in the row's name), then the detection."
               if "after_choosing" in k else ""), "",
            "| run | process (s) | detect's own (s) | before the first tile (s) | beside the model (s) | model (s) | after the last tile (s) |",
            "|---|---|---|---|---|---|---|"] + [
            f"| {name} | {run['process_s']:.2f} | {run['end_to_end_s']:.2f} | {run['stages']['before_tiles']:.2f} | "
            f"{run['stages']['tiles_outside_model']:.2f} | {run['stages']['model']:.2f} | "
            f"{sum(run['stages'][k] for k in ('tracing', 'evidence', 'writing', 'finishing')):.2f} |"
            for name, run in runs] + [""]


def first_section(k: dict, cpu: str) -> list[str]:
    return ["## A model's first detection on a new machine", "",
            f"{k['model']} (sha256 `{k['model_hash']}`) on the real Arctic tile {k['scene']}, runtime auto, on the {cpu}; "
            "every command a new engine process, as the dock starts one, each round with an empty cache and models "
            "folder. Nothing prepared, the first detection measures which runtime is fastest here, exports the model and "
            "makes its int8 model before its first tile; the dock has `engine prepare` make them in the background as "
            "soon as a model is chosen, while the analyst looks at the scene.", "",
            "| round | arm | engine prepare (s) | first detection (s) | second detection (s) | runtime |", "|---|---|---|---|---|---|"] + [
            f"| {r['round']} | {r['arm']} | {'' if r['prepare_s'] is None else round(r['prepare_s'], 1)} | "
            f"{r['first_s']:.1f} | {r['again_s']:.1f} | {r['runtime']} |" for r in k["runs"]] + [""]


def width_section(k: dict, cpu: str) -> list[str]:
    commits = list(dict.fromkeys(r["commit"] for r in k["rows"]))
    peaks = {(r["width"], r["commit"]): r for r in k["rows"]}
    widths = sorted({r["width"] for r in k["rows"]})
    return ["## Peak memory in a scene's width", "",
            f"A detection in a new engine process (the product's defaults, no land mask) on synthetic EW/HH sea scenes "
            f"{k['height']} px high, as wide as each row says, on their UTM zone's central meridian (the analysis grid is "
            f"their own pixels), on the {cpu}: peak resident memory (VmHWM) and detect()'s own seconds, per engine commit.", "",
            "| width (px) | " + " | ".join(f"`{c}` peak (MB) | `{c}` s | `{c}` slicks" for c in commits) + " |",
            "|---|" + "---|---|---|" * len(commits)] + [
            f"| {w} | " + " | ".join(f"{peaks[w, c]['peak_mb']} | {peaks[w, c]['seconds']:.1f} | {peaks[w, c]['slicks']}"
                                     if (w, c) in peaks else " | | " for c in commits) + " |"
            for w in widths] + [""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tiles", type=int, default=4, help="real tiles per model (DeepLabV3 gets half)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--scene", type=int, default=4096, help="side of the synthetic Svalbard scene (16000 = a full EW scene)")
    p.add_argument("--sea", type=int, nargs="+", default=[1536],
                   help="sides of the synthetic open-sea scenes of the pipeline figure, one row each: a run's fixed costs weigh less on a larger scene")
    p.add_argument("--no-deeplab", action="store_true", help="bundled model only (DeepLabV3-R50 takes ~10x as long)")
    p.add_argument("--models", type=Path, nargs="+", default=[], metavar="FILE",
                   help="also time these model files in every runtime (a candidate of the quality benchmark, say)")
    p.add_argument("--pipeline-torch", action="store_true", help="also measure the pipeline overhead with PyTorch eager")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="measure these figures only (all by default)")
    p.add_argument("--runtime", help="runtime of the pipeline and skipping figures (default: auto, the product's own choice: the "
                   "fastest runtime and precision whose masks agree with PyTorch fp32, measured on this machine)")
    p.add_argument("--against", type=Path, nargs="+", default=[],
                   help="other checkouts of this repository (e.g. a worktree at an earlier commit) whose engine the process and width figures run in the same rounds")
    p.add_argument("--widths", type=int, nargs="+", default=[2048, 8192, 16384, 32768], help="scene widths of the width figure")
    p.add_argument("--json", type=Path, default=ROOT / "bench_output" / "runtime_bench.json")
    p.add_argument("--markdown", type=Path, help="also write the figures as a page, e.g. docs/benchmarks.md")
    p.add_argument("--from", dest="source", type=Path, help="with --markdown: render this earlier run's JSON, run nothing (--keep and --compare apply)")
    p.add_argument("--keep", type=Path, nargs="+", default=[], help="JSON files of earlier runs: the figures this run does not "
                   "measure (--only) stay on the page, each named as the run's that measured it (a later file's over an earlier one's)")
    p.add_argument("--compare", type=Path, nargs="+", default=[],
                   help="JSON files of other runs (e.g. --only pipeline at earlier commits) whose pipeline and process rows the page lists above this run's")
    args = p.parse_args()
    compared = [{k: run[k] for k in ("command", "commit", "machine", "pipeline", "process", "skipping") if k in run}
                for run in (json.loads(path.read_text()) for path in args.compare)]
    kept = [json.loads(path.read_text()) for path in args.keep]
    if args.source:
        rendered = shlex.join(["python", *sys.argv])
        source = json.loads(args.source.read_text())
        earlier = kept_runs([{"earlier": source.get("earlier", [])}, *kept], [section for section in SECTIONS if section in source])
        args.markdown.write_text(markdown({**source, **({"compared": compared} if compared else {}),
                                           **({"earlier": earlier} if earlier else {}), "rendered_by": rendered}))
        return 0
    earlier = kept_runs(kept, args.only)
    if args.quick:
        args.tiles, args.repeats, args.scene, args.sea = 2, 1, 1024, [1024]
    from engine.models import cpu_features
    from engine.models.registry import DEFAULT_MODEL
    from engine.models.runtimes import AUTO
    from engine.data.synth import SceneSpec, write_scene

    started = time.perf_counter()
    results = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "commit": commit_text(),
               "machine": {**report.machine(torch.device("cpu")), **cpu_features.summary()}, "compared": compared,
               **({"earlier": earlier} if earlier else {})}
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"CPU: {results['machine']['cpu']} ({os.cpu_count()} cores), native bf16 {results['machine']['native_bf16']}, int8 {results['machine']['native_int8']}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SLICK_MAPPER_MODELS"] = str(work / "models")  # fresh exports and int8 checks, timed here
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        runtime = args.runtime or AUTO
        if "runtimes" in args.only:
            results["runtimes"] = [compare_runtimes(Path(DEFAULT_MODEL), args.tiles, args.repeats, log)]
            if not args.no_deeplab:
                results["runtimes"].append(compare_runtimes(deeplab_file(work), max(1, args.tiles // 2), args.repeats, log))
            results["runtimes"] += [compare_runtimes(model, args.tiles, args.repeats, log) for model in args.models]
        if "pipeline" in args.only:
            results["pipeline"] = []
            for side in args.sea:
                sea = work / f"sea_{side}.tif"
                write_scene(SceneSpec(height=side, width=side, seed=5), sea)
                results["pipeline"].append(pipeline(sea, Path(DEFAULT_MODEL), runtime, work, log))
                if args.pipeline_torch and runtime != "torch":
                    results["pipeline"].append(pipeline(sea, Path(DEFAULT_MODEL), "torch", work, log))
        if "process" in args.only:
            view = work / "extent.tif"  # 16 tiles: a map view's worth, what the dock's Detect usually gets
            write_scene(SceneSpec(height=1536, width=1536, seed=5), view)
            results["process"] = process(view, [*args.against, ROOT], work, args.repeats + 1, log)
        if "width" in args.only:
            scenes = {}
            for side in args.widths:  # centred on zone 36's central meridian: the grid is the scene's own pixels
                scenes[side] = write_scene(SceneSpec(height=WIDTH_HEIGHT, width=side, seed=5, origin=(500000.0 - side * 12.5, 8360000.0)),
                                           work / f"wide_{side}.tif")
            results["width"] = width(scenes, [*args.against, ROOT], work, log)
        if "skipping" in args.only or "extent" in args.only:
            svalbard = work / "svalbard.tif"
            write_scene(SceneSpec(height=args.scene, width=args.scene, seed=6, nodata_border=True, **SVALBARD), svalbard)
            if "skipping" in args.only:
                results["skipping"] = skipping(svalbard, Path(DEFAULT_MODEL), runtime, work, args.scene, log)
            if "extent" in args.only:
                results["extent"] = extent(svalbard, Path(DEFAULT_MODEL), runtime, work, args.scene, log)
        if "first" in args.only:
            results["first"] = first_detection(ROOT / "resources" / "samples" / "arctic_s1" / "sample_1" / "raw_mosaic.tif",
                                               Path(DEFAULT_MODEL), work, args.repeats, log)
    results["total_s"] = round(time.perf_counter() - started, 1)
    report.finish(results, args.json)
    rows = []
    for model in results.get("runtimes", []):
        for label, e in model["candidates"].items():
            rows.append((model["model"], label, *(
                (f"{e['s_per_tile']:.3f}", f"{e['tiles_per_s']:.2f}", f"{e['km2_per_min']:.0f}", f"{e['speedup_vs_torch_fp32']:.2f}x",
                 f"{e['dice_vs_torch_fp32']:.4f}", f"{e['achieved_gflops']:.1f}", f"{e['share_of_peak']:.2f}" if "share_of_peak" in e else "")
                if "s_per_tile" in e else (e["status"][:40], "", "", "", "", "", ""))))
    if rows:
        report.print_table(("model", "runtime", "s/tile", "tiles/s", "km2/min", "speed-up", "Dice vs fp32", "GFLOP/s", "share of peak"), rows)
    print(f"\nCPU {results['machine']['cpu']}; written {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
