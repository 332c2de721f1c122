"""Speed and memory figures of the detection engine, measured as ratios within one run.

    .venv/bin/python benchmarks/detect_bench.py            # full run (make bench), ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/detect_bench.py --quick    # smoke run on small scenes

Each figure is a ratio of two timings taken in the same process and, where it matters, interleaved
(round robin, or one timing bracketing the other), so that a machine shared with other jobs biases
both sides alike. The load average and the share of the CPU this process actually got are recorded
with the results, because absolute numbers on a shared machine are only as good as that share.

Figures (targets from the product issue):
  1 pipeline overhead   detect() wall time / model-forward-only time on the same tiles        <= 1.10
  2 fast-path speed-up  DeepLabV3-R50: naive fp32 per-tile / default Predictor, masks agree   >= 2.5
  3 model efficiency    achieved FLOP/s of the default model / this machine's matmul peak     >= 0.75
  4 overlap cost        tiles computed / tiles without overlap; seam ratio across tile edges  <= 1.3
  5 peak memory         detect() peak RSS, small vs large scene, each in a fresh process,     < 1.5 GB
                        and the large one written back on the scene's own pixels
  6 throughput          tiles/s and km2/min, end to end and model only, on the chosen device

Results are printed as a table and written to bench_output/detect_bench.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import efficiency  # noqa: E402
import report  # noqa: E402
from engine.machine import commit_text, file_sha256  # noqa: E402

GB = 1e9
RANDOM_HEAD_BIAS = -4.0


# --- helpers ------------------------------------------------------------------------------------


def proc_status_kb(field: str) -> Optional[int]:
    """A field of /proc/self/status in kB (VmHWM = peak RSS, VmRSS = current), None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    hwm = proc_status_kb("VmHWM")
    if hwm is not None:
        return hwm * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StageClock:
    """A progress callback that remembers when each stage of detect() was first reported."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int, message: str) -> None:
        self.first.setdefault(stage, time.perf_counter())

    def stages(self, end: float) -> dict[str, float]:
        """Seconds per stage: setup (inspect, model load) until the first reported stage, then each stage."""
        marks = [("setup", self.start)] + sorted(self.first.items(), key=lambda kv: kv[1])
        out = {}
        for (name, t0), (_, t1) in zip(marks, marks[1:] + [("end", end)]):
            if name != "done":  # "tiles" is first reported after the first tile, which lands in "statistics"
                out[name if name != "statistics" else "statistics+first_tile"] = round(t1 - t0, 3)
        return out


def land_option(spec: Optional[str]) -> dict:
    """DetectOptions' land mask as asked on the command line; none asked, the product's default."""
    return {} if spec is None else {"land_mask": spec}


class GpuLoad:
    """The GPU's utilisation, sampled every 50 ms while in a ``with`` block (NVML); empty off NVIDIA GPUs.

    NVML's figure is the share of time a kernel was running, so a GPU waiting on reading and stretching
    shows as low utilisation even when each kernel is fast."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[int] = []
        self.handle = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
                self.nvml = pynvml
            except Exception:  # noqa: BLE001 - nvidia-ml-py missing or no NVML: no utilisation figure
                self.handle = None

    def __enter__(self) -> "GpuLoad":
        import threading

        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.handle is not None and not self.stop.wait(0.05):
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def mean_percent(self) -> Optional[float]:
        return GpuLoad.pooled(self)

    @staticmethod
    def pooled(*loads: "GpuLoad") -> Optional[float]:
        samples = [x for load in loads for x in load.samples]
        return round(statistics.mean(samples), 1) if samples else None


def dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * inter / total)


# --- model and scenes ---------------------------------------------------------------------------


def resolve_model(arg: Optional[str], work: Path) -> tuple[Path, str]:
    """The model file to benchmark and a sentence saying where it came from."""
    from engine.models.pretrain import DEFAULT_CARD
    from engine.models.registry import DEFAULT_MODEL, ModelCard, build_model, save_model

    if arg:
        return Path(arg), f"--model {arg}"
    if Path(DEFAULT_MODEL).is_file():
        return Path(DEFAULT_MODEL), f"bundled default model {Path(DEFAULT_MODEL).name}"
    torch.manual_seed(0)
    card = ModelCard(**{**DEFAULT_CARD, "name": "benchmark random-init default card"})
    model = build_model(card)
    # Random weights put every pixel near p = 0.5, so the 0.5 mask is salt and pepper and polygonising
    # its ~10^5 specks takes minutes (a cost no trained model causes). A -4 output bias (p ~ 0.02) keeps
    # the mask as sparse as a real scene's; the speed of the network itself does not depend on weights.
    head = [m for m in model.segmentation_head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.bias.fill_(RANDOM_HEAD_BIAS)
    path = save_model(model, card, work / "random_default.safetensors")
    return path, (
        f"random-init model of the default card ({card.architecture}/{card.encoder}, output bias {RANDOM_HEAD_BIAS:g}), "
        f"{Path(DEFAULT_MODEL).name} not found"
    )


def generate_scenes(specs: list[tuple[int, Path, int]]) -> float:
    """Write the synthetic scenes in a separate process, so generation memory is not counted anywhere."""
    started = time.perf_counter()
    payload = json.dumps([(size, str(path), seed) for size, path, seed in specs])
    subprocess.run([sys.executable, __file__, "--_generate", payload], check=True)
    return time.perf_counter() - started


def _generate_main(payload: str) -> None:
    from engine.data.synth import SceneSpec, write_scene

    for size, path, seed in json.loads(payload):
        if not Path(path).exists():
            write_scene(SceneSpec(height=size, width=size, mode="EW_HH", seed=seed), path, encoding="float32_linear")


def scene_tiles(scene: Path, model_path: Path, overlap: int) -> tuple[list[tuple[int, int]], list[np.ndarray], tuple[int, int]]:
    """The stretched tiles detect() feeds the model, cut the way its strip loop cuts them, in memory."""
    from rasterio.windows import Window

    from engine.models.registry import read_card
    from engine.progress import silent
    from engine.scenes.analysis import open_for_analysis
    from engine.scenes.tiling import tile_rows

    card = read_card(model_path)
    tile = card.tile_size
    with open_for_analysis(scene, card, progress=silent()) as opened:
        grid = opened.grid
        positions, tiles = [], []
        for row in tile_rows(grid.height, grid.width, tile, overlap):
            stretched = opened.stretch.apply(opened.reader.read(Window(0, row.row, max(grid.width, tile), tile)))
            for col in row.cols:
                cut = stretched[:, col : col + tile]
                if cut.any():
                    positions.append((row.row, col))
                    tiles.append(np.ascontiguousarray(cut))
    return positions, tiles, (grid.height, grid.width)


# --- fast-path variants (benchmark only: the engine is not changed here) --------------------------


def variant_predictors(model, card, device, example: np.ndarray, want_compile: bool, log) -> dict:
    """Predictors whose model is swapped for a frozen or compiled one; each entry: (predictor, prep seconds) or error."""
    from engine.models.inference import Predictor

    out: dict[str, object] = {}
    x = torch.from_numpy(example[None, None] * (1 / 255)).to(device).to(memory_format=torch.channels_last)

    # (a) TorchScript trace + freeze: folds conv-BN and constant weights; works without a compiler.
    t = time.perf_counter()
    try:
        pred = Predictor(copy.deepcopy(model), card, device, fast=True)
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(pred.forward.model, x, check_trace=False))
            with torch.inference_mode():
                traced(x)
                traced(x)  # the profiling executor optimises on the second call
        pred.forward.model = traced
        out["jit.freeze"] = (pred, time.perf_counter() - t)
    except Exception as exc:  # noqa: BLE001 - a variant that cannot run is reported, not fatal
        out["jit.freeze"] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"

    # (b) torch.compile (Inductor) with weight freezing; needs a C/C++ compiler on CPU.
    if not want_compile:
        out["compile"] = "skipped (--no-compile)"
    elif device.type == "cpu" and not (shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")):
        out["compile"] = "skipped: no C compiler on PATH"
    else:
        t = time.perf_counter()
        try:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            pred = Predictor(copy.deepcopy(model), card, device, fast=True)
            pred.forward.model = torch.compile(pred.forward.model, dynamic=False)
            log(f"    compiling {card.architecture}/{card.encoder} with torch.compile (freezing=True)...")
            pred(example[None])
            pred(example[None])
            out["compile"] = (pred, time.perf_counter() - t)
        except Exception as exc:  # noqa: BLE001
            out["compile"] = f"failed: {type(exc).__name__}: {str(exc)[:160]}"
    return out


# --- figure 4: seams ----------------------------------------------------------------------------


def seam_ratio(prob: np.ndarray, row_edges: list[int], col_edges: list[int]) -> dict:
    """Mean |p(x) - p(x-1)| across the given tile edges vs across all other pixel boundaries."""
    dy = np.abs(np.diff(prob, axis=0))  # dy[i] = |p[i+1] - p[i]|: the boundary before row i+1
    dx = np.abs(np.diff(prob, axis=1))
    r = np.zeros(dy.shape[0], bool)
    r[[e - 1 for e in row_edges if 0 < e < prob.shape[0]]] = True
    c = np.zeros(dx.shape[1], bool)
    c[[e - 1 for e in col_edges if 0 < e < prob.shape[1]]] = True
    edge = np.concatenate([dy[r].ravel(), dx[:, c].ravel()])
    inner = np.concatenate([dy[~r].ravel(), dx[:, ~c].ravel()])
    edge_mean, inner_mean = float(np.nanmean(edge)), float(np.nanmean(inner))
    return {
        "edge_mean_abs_diff": round(edge_mean, 6),
        "inside_mean_abs_diff": round(inner_mean, 6),
        "ratio": round(edge_mean / inner_mean, 4) if inner_mean > 0 else float("nan"),
    }


# --- figure 5: detect() in a fresh process --------------------------------------------------------


def _child_main(payload: str) -> None:
    args = json.loads(payload)
    import engine.jobs.detect  # noqa: F401 - imports first, so the baseline includes torch/GDAL
    from engine.jobs.detect import DetectOptions, detect

    baseline = proc_status_kb("VmRSS")
    options = DetectOptions(model=args["model"], device=args["device"], overwrite=True, source_grid=args["source_grid"],
                            **land_option(args["land_mask"]))
    t = time.perf_counter()
    result = detect(args["scene"], args["out"], options)
    seconds = time.perf_counter() - t
    figures = {
        "peak_rss_bytes": peak_rss_bytes(),
        "baseline_rss_bytes": (baseline or 0) * 1024,
        "seconds": seconds,
        "tiles": result.tiles,
        "n_slicks": result.n_slicks,
        "grid": result.grid,
        "device": result.device,
    }
    if torch.cuda.is_available() and result.device.startswith("cuda"):
        figures["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    print("CHILD_RESULT " + json.dumps(figures), flush=True)


def detect_in_child(scene: Path, out: Path, model: Path, device: str, land_mask: Optional[str], source_grid: bool = False) -> dict:
    payload = json.dumps({"scene": str(scene), "out": str(out), "model": str(model), "device": device, "land_mask": land_mask,
                          "source_grid": source_grid})
    proc = subprocess.run([sys.executable, __file__, "--_child", payload], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("CHILD_RESULT "):
            return json.loads(line[len("CHILD_RESULT ") :])
    raise RuntimeError(f"detect child failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")


# --- the benchmark ------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4000, help="side of the synthetic scene for figures 1, 4 and 6 (>= 4000 for the headline figure)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1024 scene, 2000/3000 memory pair, 2 DeepLab tiles, no compile")
    p.add_argument("--model", help="model file (default: the bundled default model, else a random-init model of its card)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--land-mask", default=None, help="detect()'s land mask (default: the product's own, GSHHG); none where roaring-landmask is not installed")
    p.add_argument("--dl-tiles", type=int, help="512 tiles for the DeepLabV3-R50 comparison (default 6, --quick 2)")
    p.add_argument("--mem-sizes", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="memory pair (default 2000 8000, --quick 2000 3000)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants (they take ~30-90 s to compile on CPU)")
    p.add_argument("--no-variants", action="store_true", help="skip all variants (jit.freeze, compile, batching)")
    p.add_argument("--work-dir", type=Path, help="keep scenes and outputs here (default: a temporary folder, removed)")
    p.add_argument("--json", type=Path, default=ROOT / "bench_output" / "detect_bench.json")
    p.add_argument("--markdown", type=Path, help="also write the figures as a page, e.g. docs/benchmarks_gpu.md")
    p.add_argument("--commit", help="the commit of this tree, where it is a copy without git (a GPU machine's)")
    p.add_argument("--_generate", help=argparse.SUPPRESS)
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._generate:
        _generate_main(args._generate)
        return 0
    if args._child:
        _child_main(args._child)
        return 0

    size = 1024 if args.quick and args.size == 4000 else args.size
    mem_small, mem_large = args.mem_sizes or ((2000, 3000) if args.quick else (2000, 8000))
    dl_tiles = args.dl_tiles or (2 if args.quick else 6)
    want_compile = not (args.no_compile or args.quick)
    variants_on = not args.no_variants

    from engine.jobs.detect import DEFAULT_OVERLAP, DetectOptions, detect
    from engine.models.eager import pick_device
    from engine.models import runtimes
    from engine.models.inference import Predictor
    from engine.models.registry import ModelCard, build_model, load_model
    from engine.progress import Progress
    from engine.scenes.tiling import count_tiles, tile_starts

    device = pick_device(args.device)
    started = time.perf_counter()
    results: dict = {"machine": report.machine(device), "command": " ".join(["benchmarks/detect_bench.py", *sys.argv[1:]]),
                     "commit": args.commit or commit_text(), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}}
    figures: list[tuple[str, str, str, str]] = []  # (figure, value, target, met)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {msg}", flush=True)

    def yes(ok: bool) -> str:
        return "yes" if ok else "NO"

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="detect_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model_path, model_source = resolve_model(args.model, work)
        model, card = load_model(model_path, "cpu")
        tile, overlap = card.tile_size, DEFAULT_OVERLAP
        results["model"] = {"path": str(model_path), "source": model_source, "sha256": file_sha256(model_path), "architecture": card.architecture,
                            "encoder": card.encoder, "tile": tile, "pixel_size_m": card.pixel_size}
        log(f"model: {model_source}")
        log(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")

        scene = work / f"bench_{size}.tif"
        mem_scenes = {n: work / f"bench_{n}.tif" for n in (mem_small, mem_large)}
        specs = [(size, scene, 1)] + [(n, path, 2) for n, path in mem_scenes.items() if n != size or path != scene]
        log(f"generating synthetic EW_HH 25 m float32_linear scenes {sorted({s for s, _, _ in specs})} in a separate process")
        results["scene_generation_s"] = round(generate_scenes(specs), 1)

        # ---- figure 3: FLOPs of one tile, matmul peak and the model's per-tile time, interleaved ----
        predictor = Predictor(model, card, device, fast=True)
        peak_dtype = predictor.forward.dtype or torch.float32
        positions, tiles, (grid_h, grid_w) = scene_tiles(scene, model_path, overlap)
        flops = efficiency.forward_flops(model, tile, card.in_channels)
        mm_n = efficiency.MATMUL_N if device.type == "cpu" else 8192
        mm = efficiency.matmul_timers(device, peak_dtype, mm_n)
        probe_tiles = tiles[: max(1, min(len(tiles), predictor.batch_size))]
        batch = np.stack(probe_tiles)
        predictor(batch)  # warm-up: oneDNN / cuDNN pick their kernels on the first call
        mm_times: dict[str, list[float]] = {name: [] for name in mm}
        tile_times = []
        reps = 3 if args.quick else 7
        for _ in range(reps):
            for name, timer in mm.items():
                mm_times[name].append(timer().wall)
            t = time.perf_counter()
            predictor(batch)
            tile_times.append((time.perf_counter() - t) / len(probe_tiles))
        peak, mm_path = efficiency.peak(mm_times, mm_n, statistics.median)
        per_tile = statistics.median(tile_times)
        achieved = flops / per_tile
        efficiency_ratio = achieved / peak
        results["efficiency"] = {
            "flops_per_tile": flops, "gflop_per_tile": round(flops / 1e9, 2),
            "seconds_per_tile": round(per_tile, 4), "achieved_gflops": round(achieved / 1e9, 2),
            "matmul_n": mm_n, "matmul_dtype": str(peak_dtype).replace("torch.", ""), "matmul_path": mm_path,
            "matmul_peak_gflops": round(peak / 1e9, 2), "ratio": round(efficiency_ratio, 4),
            "autocast_dtype": str(predictor.forward.dtype).replace("torch.", "") if predictor.forward.dtype else "none (fp32)",
        }
        log(f"fig 3: {flops / 1e9:.1f} GFLOP/tile in {per_tile:.3f} s = {achieved / 1e9:.1f} GFLOP/s; "
            f"{mm_n}^2 matmul peak ({mm_path}) {peak / 1e9:.1f} GFLOP/s; efficiency {efficiency_ratio:.2f}")
        figures.append(("3 model efficiency (FLOP/s / mm peak)", f"{efficiency_ratio:.2f}", ">= 0.75", yes(efficiency_ratio >= 0.75)))

        # ---- figure 1: detect() vs forward-only on the same tiles; the forward pass brackets detect ----
        half = len(tiles) // 2
        mosaic = np.full((grid_h, grid_w), np.nan, np.float32)  # tiles pasted without blending, for fig 4

        detect_options = DetectOptions(model=str(model_path), device=args.device, overwrite=True, **land_option(args.land_mask))
        # The model side runs in the runtime detection picks; picking it (a calibration the first time on a
        # machine, cached) happens here, untimed, so the timed detect() finds the choice made.
        chosen, _ = runtimes.make_predictor(model_path, device, detect_options.runtime)
        chosen.tta = detect_options.tta  # the model's work as detection does it: with its default mirror averaging
        results["detect_runtime"] = chosen.runtime

        def forward_only(lo: int, hi: int) -> float:
            t = time.perf_counter()
            for i in range(lo, hi, chosen.batch_size):
                probs = chosen(np.stack(tiles[i : min(hi, i + chosen.batch_size)]))
                for (r, c), prob in zip(positions[i:hi], probs):
                    mosaic[r : r + tile, c : c + tile] = prob[: grid_h - r, : grid_w - c]
            return time.perf_counter() - t

        log(f"fig 1: forward-only ({chosen.runtime}, batch {chosen.batch_size}) on {half} of {len(tiles)} tiles, "
            f"then detect() on the {size}x{size} scene, then the other {len(tiles) - half}")
        chosen(np.stack(tiles[: chosen.batch_size]))  # warm-up at the batch size both sides use
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        with GpuLoad(device) as load_forward_a:
            fwd_a = forward_only(0, half)
        clock = StageClock()
        out_dir = work / "detect_out"
        t = time.perf_counter()
        with GpuLoad(device) as load_detect:
            result = detect(scene, out_dir, detect_options, Progress(clock))
        detect_s = time.perf_counter() - t
        stages = clock.stages(time.perf_counter())
        with GpuLoad(device) as load_forward_b:
            fwd_b = forward_only(half, len(tiles))
        cpu_share = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0) / max(1, torch.get_num_threads())
        forward_s = fwd_a + fwd_b
        overhead = detect_s / forward_s
        results["pipeline"] = {
            "scene": f"{size}x{size} EW_HH 25 m float32_linear", "grid": result.grid, "tiles": result.tiles,
            "tiles_skipped": result.tiles_skipped, "n_slicks": result.n_slicks, "forward_tiles": len(tiles), "detect_s": round(detect_s, 2),
            "forward_only_s": round(forward_s, 2), "forward_halves_s": [round(fwd_a, 2), round(fwd_b, 2)],
            "ratio": round(overhead, 4), "detect_stages_s": stages,
            "cpu_share_of_threads": round(cpu_share, 3) if device.type == "cpu" else None,
            "gpu_utilisation_percent": {"detect": load_detect.mean_percent(),
                                        "forward_only": GpuLoad.pooled(load_forward_a, load_forward_b)},
        }
        log(f"fig 1: detect {detect_s:.1f} s / forward-only {forward_s:.1f} s = {overhead:.3f}; stages {stages}")
        if device.type == "cpu":
            log(f"       this process got {cpu_share:.0%} of its {torch.get_num_threads()} threads' CPU time (100% = no contention)")
        gpu_load = results["pipeline"]["gpu_utilisation_percent"]
        if gpu_load["detect"] is not None:
            log(f"       GPU utilisation {gpu_load['detect']}% during detect(), {gpu_load['forward_only']}% forward-only")
            figures.append(("6 GPU utilisation (detect / forward-only)", f"{gpu_load['detect']:.0f}% / {gpu_load['forward_only']:.0f}%", "-", "-"))
        figures.append(("1 pipeline overhead (detect / forward)", f"{overhead:.3f}", "<= 1.10", yes(overhead <= 1.10)))

        # ---- figure 4: overlap cost and seams ----
        import rasterio

        computed = count_tiles(grid_h, grid_w, tile, overlap)
        needed = count_tiles(grid_h, grid_w, tile, 0)
        with rasterio.open(result.probability) as ds:
            blended = ds.read(1).astype(np.float32)
        rows, cols = tile_starts(grid_h, tile, overlap), tile_starts(grid_w, tile, overlap)
        row_edges = sorted({s for s in rows if s > 0} | {s + tile for s in rows if s + tile < grid_h})
        col_edges = sorted({s for s in cols if s > 0} | {s + tile for s in cols if s + tile < grid_w})
        seam_blended = seam_ratio(blended, row_edges, col_edges)
        # Pasting tiles in order without blending: each tile's top/left edge is a hard cut.
        seam_pasted = seam_ratio(mosaic, [s for s in rows if s > 0], [s for s in cols if s > 0])
        gap = float(np.nanmean(np.abs(blended - mosaic)))
        results["overlap"] = {
            "tile": tile, "overlap": overlap, "tiles_computed": computed, "tiles_without_overlap": needed,
            "ratio": round(computed / needed, 4), "seam_blended": seam_blended, "seam_pasted_no_blend": seam_pasted,
            "probability_range": [float(np.nanmin(blended)), float(np.nanmax(blended))],
            "probability_std": round(float(np.nanstd(blended)), 5),
            "mean_abs_blended_minus_pasted": round(gap, 6),
        }
        log(f"fig 4: {computed} tiles / {needed} without overlap = {computed / needed:.3f}; seam ratio blended "
            f"{seam_blended['ratio']} (pasted without blending {seam_pasted['ratio']})")
        figures.append(("4 overlap cost (tiles / no-overlap tiles)", f"{computed / needed:.3f}", "<= 1.3", yes(computed / needed <= 1.3)))
        figures.append(("4 seam: |dp| at tile edges / inside", f"{seam_blended['ratio']:.3f}", "<= 1.10 (no seam)", yes(seam_blended["ratio"] <= 1.10)))
        del blended, mosaic

        # ---- figure 6: throughput, end to end and model only ----
        area_km2 = grid_h * grid_w * (card.pixel_size / 1000) ** 2
        results["throughput"] = {
            "device": str(device),
            "end_to_end_tiles_per_s": round(result.tiles / detect_s, 3),
            "end_to_end_km2_per_min": round(area_km2 / (detect_s / 60), 1),
            "model_only_tiles_per_s": round(len(tiles) / forward_s, 3),
            "model_only_km2_per_min": round(area_km2 / (forward_s / 60), 1),
            "scene_km2": round(area_km2, 1),
        }
        tp = results["throughput"]
        log(f"fig 6: {tp['end_to_end_tiles_per_s']} tiles/s, {tp['end_to_end_km2_per_min']} km2/min end to end on {device}")
        figures.append((f"6 throughput on {device} (end to end)", f"{tp['end_to_end_tiles_per_s']:.2f} tiles/s, {tp['end_to_end_km2_per_min']:.0f} km2/min", "-", "-"))

        # ---- variants of the default model (what the fast path could still gain) ----
        if variants_on:
            default_variants = {"default": (predictor, 0.0)}
            default_variants.update(variant_predictors(model, card, device, probe_tiles[0], want_compile, log))
            results["default_model_variants"] = compare_paths(default_variants, probe_tiles * (2 if args.quick else 4), "default", log)
            if device.type == "cpu":
                results["default_model_variants"]["batching"] = batching(predictor, tiles, log)

        # ---- figure 2: DeepLabV3-R50, naive fp32 vs the default fast path ----
        dl_card = ModelCard(name="bench DeepLabV3-R50 (random init)", architecture="deeplabv3", encoder="resnet50", tile_size=512)
        torch.manual_seed(0)
        dl_model = build_model(dl_card).eval()
        idx = np.linspace(0, len(tiles) - 1, dl_tiles).round().astype(int)
        dl_tiles_list = [tiles[i] for i in idx]
        paths = {
            "naive": (Predictor(copy.deepcopy(dl_model), dl_card, device, fast=False), 0.0),
            "default": (Predictor(copy.deepcopy(dl_model), dl_card, device, fast=True), 0.0),
        }
        if variants_on:
            paths.update(variant_predictors(dl_model, dl_card, device, dl_tiles_list[0], want_compile, log))
        log(f"fig 2: DeepLabV3-R50 on {dl_tiles} tiles of 512, paths {list(paths)} round robin")
        dl = compare_paths(paths, dl_tiles_list, "naive", log, naive_batch=1)
        speedup = dl["paths"]["default"]["speedup"]
        agree = dl["paths"]["default"]["dice"]
        results["deeplab"] = dl
        figures.append(("2 DeepLabV3-R50 speed-up (naive / default)", f"{speedup:.2f}x", ">= 2.5x", yes(speedup >= 2.5)))
        figures.append(("2 masks agree (Dice default vs naive)", f"{agree:.4f}", ">= 0.99", yes(agree >= 0.99)))
        for name, entry in dl["paths"].items():
            if name not in ("naive", "default") and "speedup" in entry:
                figures.append((f"2 variant: default + {name}", f"{entry['speedup']:.2f}x (Dice {entry['dice']:.4f})", "(info)", "-"))
        del dl_model, paths

        # ---- figure 5: peak memory of detect() in fresh processes ----
        mem = {}
        for n in (mem_small, mem_large):
            log(f"fig 5: detect() on {n}x{n} in a fresh process ({count_tiles(n, n, tile, overlap)} tiles)")
            mem[n] = detect_in_child(mem_scenes[n], work / f"mem_out_{n}", model_path, args.device, args.land_mask)
            log(f"       peak RSS {mem[n]['peak_rss_bytes'] / GB:.3f} GB (after imports {mem[n]['baseline_rss_bytes'] / GB:.3f} GB), "
                f"{mem[n]['seconds']:.1f} s, {mem[n]['tiles'] / mem[n]['seconds']:.2f} tiles/s")
        log(f"fig 5: the same on {mem_large}x{mem_large}, its rasters written back on the scene's own pixels (--source-grid)")
        back = detect_in_child(mem_scenes[mem_large], work / "mem_out_source_grid", model_path, args.device, args.land_mask, source_grid=True)
        log(f"       peak RSS {back['peak_rss_bytes'] / GB:.3f} GB")
        growth = mem[mem_large]["peak_rss_bytes"] / mem[mem_small]["peak_rss_bytes"]
        large_peak = mem[mem_large]["peak_rss_bytes"] / GB
        results["memory"] = {"runs": {str(k): v for k, v in mem.items()}, "source_grid": back, "growth_ratio": round(growth, 4),
                             "pixels_ratio": round((mem_large / mem_small) ** 2, 2)}
        figures.append((f"5 peak RSS {mem_large}^2 scene", f"{large_peak:.2f} GB", "< 1.5 GB", yes(large_peak < 1.5)))
        figures.append((f"5 peak RSS {mem_large}^2 scene, written back on its own pixels", f"{back['peak_rss_bytes'] / GB:.2f} GB", "< 1.5 GB",
                        yes(back["peak_rss_bytes"] / GB < 1.5)))
        figures.append((f"5 peak RSS growth {mem_small}^2 -> {mem_large}^2", f"{growth:.2f}x ({(mem_large / mem_small) ** 2:.0f}x pixels)", "flat (<= 1.5x)", yes(growth <= 1.5)))
        big = mem[mem_large]
        results["throughput"]["large_scene_tiles_per_s"] = round(big["tiles"] / big["seconds"], 3)
        results["throughput"]["large_scene_km2_per_min"] = round(mem_large**2 * (card.pixel_size / 1000) ** 2 / (big["seconds"] / 60), 1)
        figures.append((f"6 throughput {mem_large}^2 (fresh process)", f"{results['throughput']['large_scene_tiles_per_s']:.2f} tiles/s, "
                        f"{results['throughput']['large_scene_km2_per_min']:.0f} km2/min", "-", "-"))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    results["total_s"] = round(time.perf_counter() - started, 1)
    results["table"] = [dict(zip(("figure", "value", "target", "met"), row)) for row in figures]
    report.finish(results, args.json)
    print_table(results, figures)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(page(results))
        print(f"written {args.markdown}")
    print(f"\nwritten {args.json}")
    return 0


def compare_paths(paths: dict, tiles: list[np.ndarray], reference: str, log, naive_batch: int = 1) -> dict:
    """Time each predictor on the same tiles, one tile at a time, round robin; compare masks with the reference's.

    Each path is warmed up on the first tile first. Masks: thresholded at the median of the reference's
    output, so a random-weight network still gives two non-trivial masks to compare.
    """
    ready = {k: v for k, v in paths.items() if isinstance(v, tuple)}
    out: dict = {"tiles": len(tiles), "reference": reference, "paths": {}}
    for name, pred_prep in paths.items():
        if not isinstance(pred_prep, tuple):
            out["paths"][name] = {"status": pred_prep}
    for name, (pred, _) in ready.items():
        pred(tiles[0][None])
    seconds = {k: 0.0 for k in ready}
    probs: dict[str, list[np.ndarray]] = {k: [] for k in ready}
    for tile_ in tiles:
        for name, (pred, _) in ready.items():
            t = time.perf_counter()
            probs[name].append(pred(tile_[None])[0])
            seconds[name] += time.perf_counter() - t
    ref = np.stack(probs[reference])
    threshold = float(np.median(ref))
    for name, (pred, prep) in ready.items():
        got = np.stack(probs[name])
        out["paths"][name] = {
            "seconds": round(seconds[name], 3),
            "s_per_tile": round(seconds[name] / len(tiles), 4),
            "speedup": round(seconds[reference] / seconds[name], 3),
            "dice": round(dice(ref > threshold, got > threshold), 5),
            "max_abs_prob_diff": float(np.abs(got - ref).max()),
            "prep_s": round(prep, 1),
            "autocast": str(pred.forward.dtype).replace("torch.", "") if pred.forward.dtype else "none",
            "memory_format": "channels_last" if pred.forward.memory_format == torch.channels_last else "contiguous",
        }
        log(f"    {name:12s} {seconds[name] / len(tiles):.3f} s/tile  x{seconds[reference] / seconds[name]:.2f} vs {reference}  "
            f"Dice {out['paths'][name]['dice']:.4f}" + (f"  (prep {prep:.0f} s)" if prep else ""))
    out["threshold"] = threshold
    return out


def batching(predictor, tiles: list[np.ndarray], log) -> dict:
    """Per-tile time at batch 1 vs batch 4 on the CPU (the engine uses batch 1 there to keep Cancel responsive)."""
    four = np.stack((tiles * 4)[:4])
    predictor(four)
    t1, t4 = [], []
    for _ in range(2):
        t = time.perf_counter()
        for x in four:
            predictor(x[None])
        t1.append(time.perf_counter() - t)
        t = time.perf_counter()
        predictor(four)
        t4.append(time.perf_counter() - t)
    b1, b4 = min(t1) / 4, min(t4) / 4
    log(f"    batch 1 {b1:.3f} s/tile, batch 4 {b4:.3f} s/tile (x{b1 / b4:.2f})")
    return {"batch1_s_per_tile": round(b1, 4), "batch4_s_per_tile": round(b4, 4), "speedup": round(b1 / b4, 3)}


def page(results: dict) -> str:
    """The run as a page: every figure with the machine, the command, the commit and the model's hash beside it."""
    m, model, pipe = results["machine"], results["model"], results["pipeline"]
    where = f"{m['gpu']} GPU, host CPU {m['cpu']} ({m['cores']} cores)" if "gpu" in m else f"{m['cores']}-core {m['cpu']} CPU"
    lines = [
        f"# Detection speed on {m.get('gpu', m['cpu'])}",
        "",
        f"Made by `python {results['command']}` at commit `{results['commit']}` on a {where}, torch {m['torch']}; "
        f"model `{Path(model['path']).name}` (sha256 `{model['sha256'][:12]}`, {model['architecture']}/{model['encoder']}, "
        f"{model['tile']}-px tiles at {model['pixel_size_m']:g} m). Synthetic EW/HH scenes (the project's seeded generator); "
        f"the model runs in `{results.get('detect_runtime')}`, the runtime detection's `auto` chose"
        + (", with no land mask (`--land-mask none`: tiles on land are predicted too)" if results["args"].get("land_mask") == "none" else "")
        + f". Total {results['total_s']:.0f} s.",
        "",
        "| figure | value | target (CPU) | met |",
        "|---|---|---|---|",
        *(f"| {row['figure']} | {row['value']} | {row['target']} | {row['met']} |" for row in results["table"]),
        "",
        f"Pipeline on the {pipe['scene']} scene ({pipe['tiles']} tiles, {pipe['n_slicks']} slicks): detect() {pipe['detect_s']} s "
        f"against {pipe['forward_only_s']} s for the model alone on the same tiles (mirror averaging as detection runs it). "
        "Stages of detect() (s): " + ", ".join(f"{k} {v}" for k, v in pipe["detect_stages_s"].items()) + ".",
    ]
    load = pipe.get("gpu_utilisation_percent") or {}
    if load.get("detect") is not None:
        lines.append(f"GPU utilisation (NVML, sampled every 50 ms): {load['detect']} % during detect(), {load['forward_only']} % "
                     "while the model alone ran.")
    return "\n".join(lines) + "\n"


def print_table(results: dict, figures: list[tuple[str, str, str, str]]) -> None:
    m = results["machine"]
    print("\nSlick Mapper detection benchmark")
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), torch {m['torch']}, device {m['device']}"
          + (f" ({m['gpu']})" if "gpu" in m else ""))
    print(f"model:   {results['model']['source']}")
    print(f"load average start {m['loadavg_start'][0]}, end {m['loadavg_end'][0]}; "
          f"CPU share during fig 1: {results.get('pipeline', {}).get('cpu_share_of_threads')}; total {results['total_s']:.0f} s")
    report.print_table(("figure", "value", "target", "met"), figures)

if __name__ == "__main__":
    sys.exit(main())
