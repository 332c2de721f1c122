"""The few-shot fine-tuning loop as an analyst meets it, and training throughput (issue 5, "Measured").

    .venv/bin/python benchmarks/finetune_bench.py            # make bench; ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/finetune_bench.py --quick    # smoke run: 1024^2 scene, few throughput steps

Figures:
  1 loop        pressing Fine-tune with a labelled block of 512 x 1024 px (32 of the panel's 128-px tiles), to the
                refreshed prediction on the 2000 x 2000 scene with the new model; target <= 60 s. The engine
                commands run exactly as the dock runs them (slick_plugin.engine_runner.EngineRunner: a child process
                speaking JSON lines, the panel's defaults), and the split comes from the engine itself: the
                fine-tuning report's timings, and detection's progress stages as they arrive.
  2 Dice        of the bundled and of the fine-tuned model on the scene outside the labelled tiles,
                against the synthetic ground truth (engine.jobs.evaluate).
  3 throughput  training tiles/s (forward, backward, optimiser step; 256 px, batch 4, no augmentation)
                of the bundled U-Net and of DeepLabV3-R50 (random init), fp32 and bf16 autocast, the
                variants interleaved round robin so a shared machine slows them alike; plus the cost of
                the paper's augmentation per batch. Whether this CPU runs bf16 natively is printed; where it
                does not, bf16 is emulated (about 8x slower than fp32, so training never uses it there) and
                is timed only with --bf16: one DeepLabV3-R50 step then takes minutes.

The scene is a seeded synthetic EW/HH scene at 25 m (engine.data.synth) with its class truth; the label store
holds the true slicks of a 2 x 4 block of tiles, chosen as the block with the most slick, and that block
as its one reviewed area (engine.jobs.labels.import_mask). Every figure is from this one run, printed with the
machine and its load; results go to bench_output/finetune_bench.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import torch  # noqa: E402

import report  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from engine.data.synth import OIL, SceneSpec, write_scene  # noqa: E402
from engine.jobs.evaluate import align_to_grid, read_label_mask, slick_dice_arrays  # noqa: E402
from engine.jobs.labels import create_store, import_mask  # noqa: E402
from engine.models.eager import autocast  # noqa: E402
from engine.models.losses import slick_loss  # noqa: E402
from engine.models.registry import DEFAULT_MODEL, LIGHT_MODEL, ModelCard, build_model, load_model, read_card  # noqa: E402
from engine.models.training import paper_augment, train_mode, trainable_parameters  # noqa: E402
from slick_plugin import settings  # noqa: E402
from slick_plugin.commands import DetectParameters, FinetuneParameters  # noqa: E402
from slick_plugin.paths import default_engine_python, engine_root  # noqa: E402
from slick_plugin.progress_text import ProgressEvent  # noqa: E402
from slick_plugin.engine_runner import EngineCommand, EngineRunner, RunResult  # noqa: E402

TILE = 256
BLOCK = (2, 4)
"""The labelled block in TILE-px tiles (rows, columns): 512 x 1024 px."""
TARGET_S = 60.0
SEEPS = 6
"""Twice the generator's default, so slicks remain outside the labelled block to score the models on."""
PANEL = FinetuneParameters(base="", store="", out="", device=settings.DEVICE.default)
"""What a fresh Fine-tune panel sends (its epochs, tile size, layers, label check), on the dock's device."""
DETECT_TILE = settings.TILE.default or read_card(DEFAULT_MODEL).tile_size
"""The dock's tile size; its default (0) is the model's own."""


# --- machine ----------------------------------------------------------------------------------------


# --- scene and labels -------------------------------------------------------------------------------


def make_scene(size: int, seed: int, work: Path) -> tuple[Path, Path]:
    scene, truth = work / f"scene_{size}.tif", work / f"truth_{size}.tif"
    write_scene(SceneSpec(height=size, width=size, mode="EW_HH", seed=seed, n_seeps=SEEPS), scene, label_path=truth)
    return scene, truth


def slickest_block(oil: np.ndarray) -> tuple[int, int]:
    """(row, col) of the BLOCK of tiles on the TILE lattice holding the most slick pixels.

    The lattice is the one fine-tuning cuts on (the scene's grid from its origin), so the reviewed
    block is exactly N tiles.
    """
    rows, cols = BLOCK[0] * TILE, BLOCK[1] * TILE
    best, where = -1, (0, 0)
    for r in range(0, oil.shape[0] - rows + 1, TILE):
        for c in range(0, oil.shape[1] - cols + 1, TILE):
            count = int(oil[r : r + rows, c : c + cols].sum())
            if count > best:
                best, where = count, (r, c)
    return where


def label_store(scene: Path, truth: Path, work: Path) -> tuple[Path, tuple[int, int, int, int]]:
    """A store whose reviewed area is the slickest block and whose labels are the true slicks in it.

    The block's truth goes through a 0/1 GeoTIFF and ``import_mask``, the engine's own import path.
    Returns the store and the block as (row0, col0, row1, col1) pixels.
    """
    with rasterio.open(truth) as src:
        oil = src.read(1) == OIL
        row, col = slickest_block(oil)
        window = Window(col, row, BLOCK[1] * TILE, BLOCK[0] * TILE)
        profile = dict(driver="GTiff", width=window.width, height=window.height, count=1, dtype="uint8",
                       crs=src.crs, transform=src.window_transform(window))
    mask = work / "labelled_block.tif"
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write(oil[row : row + window.height, col : col + window.width].astype(np.uint8), 1)
    store = create_store(work / "labels.gpkg", "EPSG:32636")
    import_mask(store, scene, mask, author="benchmark")
    return store, (row, col, row + window.height, col + window.width)


def dice_outside(mask_path: str, truth: Path, block: tuple[int, int, int, int]) -> dict:
    """Slick Dice of a detection's mask against the truth, on every pixel outside the labelled block."""
    label, transform, crs = read_label_mask(truth)
    predicted = align_to_grid(mask_path, transform, crs, label.shape) == 1  # nodata (MASK_NODATA) is filled 0
    outside = np.ones(label.shape, bool)
    row0, col0, row1, col1 = block
    outside[row0:row1, col0:col1] = False
    result = slick_dice_arrays(predicted[outside], label[outside], f"truth grid outside rows {row0}:{row1}, cols {col0}:{col1}")
    return {k: v for k, v in result.as_dict().items() if k != "grid"}


# --- figure 1: the loop, through the plugin's worker ------------------------------------------------


class Timeline:
    """When each engine progress stage first arrived, as the dock's worker receives them, and its last count."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: dict[str, float] = {}
        self.last_done: dict[str, int] = {}
        self.logs: list[str] = []

    def progress(self, event: ProgressEvent) -> None:
        self.first.setdefault(event.stage, time.perf_counter())
        self.last_done[event.stage] = event.done

    def stages(self, end: float) -> dict[str, float]:
        """Seconds from the start to the first stage ("startup": process, imports, model), then per stage.

        A stage's first event comes after its first step, so a step's time lands in the stage before:
        the split is as fine as the engine reports, no finer.
        """
        marks = [("startup", self.start)] + sorted(self.first.items(), key=lambda kv: kv[1])
        return {name: round(t1 - t0, 2) for (name, t0), (_, t1) in zip(marks, marks[1:] + [("end", end)]) if name != "done"}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_engine(runner: EngineRunner, command: EngineCommand) -> tuple[RunResult, float, float, Timeline]:
    """The engine's result, wall seconds, and the CPU seconds the engine process used (it has exited)."""
    timeline = Timeline()
    cpu = children_cpu_seconds()
    result = runner.run(command, on_progress=timeline.progress, on_log=timeline.logs.append)
    seconds = time.perf_counter() - timeline.start
    if not result.ok:
        raise SystemExit(f"engine {command.name} failed: {result.message}")
    return result, seconds, children_cpu_seconds() - cpu, timeline


def before_after(outcome: dict, key: str) -> str:
    """``key``'s parent -> fine-tuned Dice from the fine-tuning report; a run without such tiles has none."""
    before, after = outcome[f"{key}_before"], outcome[f"{key}_after"]
    return "none (no such tiles)" if before is None or after is None else f"{before:.3f} -> {after:.3f}"


def detect_command(scene: Path, out: Path, prefix: str, model: str) -> EngineCommand:
    """A detection with the dock's default settings on the whole scene."""
    return DetectParameters(scene=str(scene), out_dir=str(out), prefix=prefix, model=model, device=settings.DEVICE.default,
                            tile=settings.TILE.default, overlap=settings.OVERLAP.default,
                            threshold=settings.THRESHOLD.default).command()


# --- figure 3: training throughput ------------------------------------------------------------------


def training_step(model: torch.nn.Module, optimiser: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...],
                  dtype: Optional[torch.dtype]) -> None:
    """One step as engine.models.training.batch_loss takes it, minus augmentation, at a chosen autocast dtype."""
    x, y, v = batch
    with autocast(torch.device("cpu"), dtype):
        logits = model(x / 255)
    loss = slick_loss(logits.float(), y, v)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def throughput(models: dict[str, tuple[torch.nn.Module, str]], batch_size: int, rounds: int, steps: int,
               bf16: bool, log: Callable[[str], None]) -> dict:
    """tiles/s per (model, train layers, dtype), timed round robin after one warm-up step each."""
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randint(1, 256, (batch_size, 1, TILE, TILE), generator=gen).float(),
             (torch.rand((batch_size, 1, TILE, TILE), generator=gen) < 0.1).float(),
             torch.ones(batch_size, 1, TILE, TILE))
    runs = {}
    for name, (model, layers) in models.items():
        optimiser = torch.optim.AdamW(trainable_parameters(model, layers), lr=1e-5)
        train_mode(model, layers)
        for dtype_name, dtype in (("fp32", None), ("bf16", torch.bfloat16))[: 2 if bf16 else 1]:
            training_step(model, optimiser, batch, dtype)  # oneDNN picks its kernels on the first call
            runs[(name, dtype_name)] = (model, optimiser, dtype, [])
    for _ in range(rounds):
        for (name, dtype_name), (model, optimiser, dtype, times) in runs.items():
            started = time.perf_counter()
            for _ in range(steps):
                training_step(model, optimiser, batch, dtype)
            times.append((time.perf_counter() - started) / steps)
    out: dict = {}
    for (name, dtype_name), (_, _, _, times) in runs.items():
        per_step = statistics.median(times)
        out.setdefault(name, {})[dtype_name] = {"s_per_step": round(per_step, 3), "tiles_per_s": round(batch_size / per_step, 2)}
        log(f"    {name:28s} {dtype_name}: {per_step:.2f} s/step = {batch_size / per_step:.2f} tiles/s")
    for entry in out.values():
        if "bf16" in entry:
            entry["bf16_speedup"] = round(entry["fp32"]["s_per_step"] / entry["bf16"]["s_per_step"], 3)
    return out


def augmentation_seconds(batch_size: int, repeats: int) -> float:
    """Median seconds of the paper's augmentation (engine.models.training.paper_augment) on one batch."""
    torch.manual_seed(0)
    x = torch.randint(1, 256, (batch_size, 1, TILE, TILE)).float()
    y = (torch.rand(batch_size, 1, TILE, TILE) < 0.1).float()
    v = torch.ones_like(y)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        paper_augment(x, y, v, torch.Generator())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# --- the benchmark ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2000, help="side of the synthetic scene in pixels (default 2000)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1024 scene, 1 round of 1 step per variant")
    parser.add_argument("--bf16", action="store_true", help="time bf16 autocast even where this CPU only emulates it")
    parser.add_argument("--batch", type=int, default=4, help="throughput batch size (default 4, the CPU's fine-tuning batch)")
    parser.add_argument("--work-dir", type=Path, help="keep scene, store, models and detections here (default: temporary)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench_output" / "finetune_bench.json")
    args = parser.parse_args()
    size = 1024 if args.quick and args.size == 2000 else args.size
    rounds, steps = (1, 1) if args.quick else (3, 2)

    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    results: dict = {"machine": report.machine(), "scene": f"{size} x {size} synthetic EW_HH 25 m, {SEEPS} seeps, seed {args.seed}"}
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="finetune_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    runner = EngineRunner(default_engine_python(), engine_root())
    figures: list[tuple[str, str, str]] = []
    try:
        log(f"writing the {size} x {size} scene and its truth")
        scene, truth = make_scene(size, args.seed, work)
        store, block = label_store(scene, truth, work)
        log(f"label store: block rows {block[0]}:{block[2]}, cols {block[1]}:{block[3]} reviewed, its true slicks labelled")

        log("bundled model: detection on the whole scene (the Dice reference, not part of the loop)")
        base_result, base_seconds, _, _ = run_engine(runner, detect_command(scene, work / "detections", "bundled", ""))
        base_dice = dice_outside(base_result.data["mask"], truth, block)

        log("the loop: Fine-tune pressed")
        model_path = work / "models" / "finetuned.safetensors"
        model_path.parent.mkdir()
        finetune = dataclasses.replace(PANEL, base=str(DEFAULT_MODEL), store=str(store), out=str(model_path))
        ft_result, ft_seconds, ft_cpu, ft_timeline = run_engine(runner, finetune.command())
        outcome = ft_result.data
        range_steps = ft_timeline.last_done.get("lr range test", 0)
        log(f"  fine-tuned in {ft_seconds:.1f} s: {outcome['train_tiles']} + {outcome['val_tiles']} tiles, "
            f"{outcome['epochs_run']} epochs, layers {outcome['train_layers']}, lr {outcome['lr']:.2e} after {range_steps} range-test steps; "
            f"timings {outcome['timings']}")
        expected = (BLOCK[0] * TILE // PANEL.tile) * (BLOCK[1] * TILE // PANEL.tile)
        if outcome["train_tiles"] + outcome["val_tiles"] != expected:
            raise SystemExit(f"The store covers {outcome['train_tiles'] + outcome['val_tiles']} tiles, not {expected}.")
        det_result, det_seconds, det_cpu, det_timeline = run_engine(runner, detect_command(scene, work / "detections", "finetuned", str(model_path)))
        loop = ft_seconds + det_seconds
        # Each engine process runs its own torch threads; on a machine to itself it gets about that many cores.
        cpu_share = (ft_cpu + det_cpu) / (loop * torch.get_num_threads())
        tuned_dice = dice_outside(det_result.data["mask"], truth, block)
        detect_stages = det_timeline.stages(det_timeline.start + det_seconds)
        log(f"  detection in {det_seconds:.1f} s ({det_result.data['tiles']} tiles of {DETECT_TILE}); stages {detect_stages}")
        log(f"loop {loop:.1f} s; Dice outside the labels: bundled {base_dice['dice']:.3f}, fine-tuned {tuned_dice['dice']:.3f}")
        engine_ft = float(outcome["seconds"])
        results["loop"] = {
            "seconds": round(loop, 2), "target_s": TARGET_S, "engine_cpu_s": round(ft_cpu + det_cpu, 1),
            "cpu_share_of_threads": round(cpu_share, 3),
            "finetune": {"wall_s": round(ft_seconds, 2), "engine_s": engine_ft,
                         "startup_s": round(ft_seconds - engine_ft, 2), "engine_timings_s": outcome["timings"],
                         "train_tiles": outcome["train_tiles"], "val_tiles": outcome["val_tiles"],
                         "epochs_run": outcome["epochs_run"], "best_epoch": outcome["best_epoch"], "lr": outcome["lr"],
                         "lr_range_test_steps": range_steps,
                         "train_layers": outcome["train_layers"], "device": outcome["device"],
                         "val_dice_before": outcome["val_dice_before"], "val_dice_after": outcome["val_dice_after"],
                         "labels_dice_before": outcome["labels_dice_before"], "labels_dice_after": outcome["labels_dice_after"]},
            "detect": {"wall_s": round(det_seconds, 2), "engine_s": det_result.data["seconds"], "stages_s": detect_stages,
                       "tiles": det_result.data["tiles"], "tile": DETECT_TILE, "overlap": settings.OVERLAP.default},
            "bundled_detect_wall_s": round(base_seconds, 2),
        }
        results["dice_outside_labels"] = {"bundled": base_dice, "finetuned": tuned_dice, "block": block}
        t = outcome["timings"]
        figures += [
            ("1 loop: Fine-tune -> refreshed prediction", f"{loop:.1f} s", f"<= {TARGET_S:.0f} s"),
            ("    CPU the engine got / its threads' share", f"{cpu_share:.0%} ({ft_cpu + det_cpu:.0f} CPU-s)", "100% = no contention"),
            ("    fine-tune process start, imports, checks", f"{ft_seconds - engine_ft + t['checks']:.1f} s", ""),
            ("    tile cutting (statistics, labels, split)", f"{t['tiles']:.1f} s", ""),
            ("    parent model load and its validation Dice", f"{t['parent']:.1f} s", ""),
            (f"    learning-rate range test ({range_steps} steps)", f"{t['lr_range_test']:.1f} s", ""),
            (f"    epochs ({outcome['epochs_run']}, best {outcome['best_epoch']})", f"{t['epochs']:.1f} s", ""),
            ("    validation after each epoch", f"{t['validation']:.1f} s", ""),
            ("    label check (parent and new weights on the labelled tiles)", f"{t['label_check']:.1f} s", ""),
            ("    saving the model", f"{t['saving']:.1f} s", ""),
            (f"    detection {size}^2 ({det_result.data['tiles']} tiles of {DETECT_TILE})", f"{det_seconds:.1f} s", ""),
            ("      of which its runtime, made for the new model", f"{detect_stages.get('runtime', 0.0):.1f} s", ""),
            ("2 Dice outside the labels: bundled model", f"{base_dice['dice']:.3f}", ""),
            ("2 Dice outside the labels: fine-tuned model", f"{tuned_dice['dice']:.3f}", ""),
            ("  Dice on the labelled tiles themselves, parent -> fine-tuned", before_after(outcome, "labels_dice"), ""),
            ("  validation Dice parent -> fine-tuned", before_after(outcome, "val_dice"), ""),
        ]

        log(f"throughput: batch {args.batch} of {TILE} px, {rounds} rounds of {steps} steps per variant, round robin")
        light_model, _ = load_model(LIGHT_MODEL, "cpu")
        torch.manual_seed(0)
        deeplab = build_model(ModelCard(name="bench DeepLabV3-R50", architecture="deeplabv3", encoder="resnet50", tile_size=TILE))
        models = {
            "bundled U-Net R18, all layers": (light_model, "all"),
            "bundled U-Net R18, decoder": (copy.deepcopy(light_model), "decoder"),
            "DeepLabV3-R50, all layers": (deeplab, "all"),
        }
        bf16 = args.bf16 or bool(results["machine"]["bf16_cpu_flags"])
        if not bf16:
            log("    bf16: emulated on this CPU, not timed (--bf16 times it anyway)")
        speeds = throughput(models, args.batch, rounds, steps, bf16, log)
        augment_s = augmentation_seconds(args.batch, 3 if args.quick else 5)
        results["throughput"] = {"batch": args.batch, "tile": TILE, "rounds": rounds, "steps_per_round": steps,
                                 "models": speeds, "paper_augment_s_per_batch": round(augment_s, 3)}
        for name, entry in speeds.items():
            bf16_text = (f"bf16 {entry['bf16']['tiles_per_s']:.2f} tiles/s (x{entry['bf16_speedup']:.2f})" if "bf16" in entry
                         else "bf16 emulated here, not timed")
            figures.append((f"3 {name}", f"fp32 {entry['fp32']['tiles_per_s']:.2f} tiles/s / {bf16_text}", ""))
        figures.append((f"3 paper augmentation, batch of {args.batch}", f"{augment_s:.2f} s", ""))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    results["total_s"] = round(time.perf_counter() - started, 1)
    results["table"] = [dict(zip(("figure", "value", "target"), row)) for row in figures]
    report.finish(results, args.json)
    print_table(results, figures)
    print(f"\nwritten {args.json}")
    return 0


def print_table(results: dict, figures: list[tuple[str, str, str]]) -> None:
    m = results["machine"]
    print("\nSlick Mapper fine-tuning benchmark")
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), torch {m['torch']}")
    print(f"bf16: CPU flags {', '.join(m['bf16_cpu_flags']) or 'none'}; oneDNN bf16 supported: {m['onednn_bf16_supported']}")
    print(f"scene: {results['scene']}; load average start {m['loadavg_start'][0]}, end {m['loadavg_end'][0]}; total {results['total_s']:.0f} s")
    report.print_table(("figure", "value", "target"), figures)

if __name__ == "__main__":
    sys.exit(main())
