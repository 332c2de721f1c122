"""What CAFT blocks cost: SAROSS-Net with CAFT skips, the same network with plain UNet++ skips, and the bundled
U-Net R18, on one 256-pixel tile on the CPU.

    nice -n 10 .venv/bin/python benchmarks/saross_bench.py            # 15-20 min on 2 shared CPU cores
    nice -n 10 .venv/bin/python benchmarks/saross_bench.py --repeats 3  # smoke run

Per network: parameters, FLOPs of one forward pass (``torch.utils.flop_counter.FlopCounterMode``: convolutions
and matrix products, 2 per multiply-add), seconds per tile (PyTorch eager fp32, inference mode, batch 1, the
median over ``--repeats`` passes taken round robin over the networks so that a shared machine's load falls on
all of them alike), the CPU time of a pass on one thread (what the pass computes, which other processes on a
shared machine change far less than its wall time), and the peak memory of a forward pass above what the built
network holds (each network in a fresh process: the median rise of the resident set's peak during a pass,
``forward_peak``).

SAROSS-Net is measured twice: as the paper's comparison network (ResNet-34, five levels, decoder channels
256-128-64-32-16) and at the bundled U-Net's size (ResNet-18, four levels, decoder channels 128-64-32-16), each
with and without CAFT. Networks are randomly initialised: cost does not depend on the weights. Results: printed,
and written to bench_output/saross_bench.json with the machine and the commit.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import report  # noqa: E402
from engine.machine import commit_text, memory_bytes  # noqa: E402
from engine.models.registry import LIGHT_MODEL, ModelCard, build_model, load_model  # noqa: E402

TILE = 256
PAPER = {"encoder_depth": 5, "decoder_channels": [256, 128, 64, 32, 16]}
BUNDLED_SIZE = {"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}
NETWORKS = {
    "SAROSS-Net R34, CAFT": ("resnet34", {**PAPER, "caft": True}),
    "SAROSS-Net R34, plain UNet++ skips": ("resnet34", {**PAPER, "caft": False}),
    "SAROSS-Net R18 (U-Net R18 size), CAFT": ("resnet18", {**BUNDLED_SIZE, "caft": True}),
    "SAROSS-Net R18 (U-Net R18 size), plain UNet++ skips": ("resnet18", {**BUNDLED_SIZE, "caft": False}),
    "bundled U-Net R18": None,
}


def network(name: str) -> torch.nn.Module:
    spec = NETWORKS[name]
    if spec is None:
        return load_model(LIGHT_MODEL)[0]
    encoder, arch_kwargs = spec
    torch.manual_seed(0)
    return build_model(ModelCard(name=name, architecture="saross", encoder=encoder, tile_size=TILE, arch_kwargs=arch_kwargs)).eval()


def forward_peak(name: str, passes: int = 5) -> None:
    """In a fresh process: print the median over ``passes`` of the rise of the resident set's peak during a
    forward pass, in bytes.

    A first pass sets up what only a first pass allocates (oneDNN's kernels, the thread pool). Before each
    measured pass the freed memory goes back to the system and the peak is reset (``clear_refs``;
    ``ru_maxrss`` would keep the peak of the process this one was forked from)."""
    model = network(name)
    x = torch.rand(1, 1, TILE, TILE)
    rises = []
    with torch.inference_mode():
        model(x)
        for _ in range(passes):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = memory_bytes("VmRSS")
            model(x)
            rises.append(memory_bytes("VmHWM") - before)
    print(statistics.median(rises))


def measure(repeats: int) -> dict[str, dict]:
    models = {name: network(name) for name in NETWORKS}
    x = torch.rand(1, 1, TILE, TILE)
    found: dict[str, dict] = {}
    for name, model in models.items():
        with FlopCounterMode(display=False) as flops, torch.inference_mode():
            model(x)  # also the warm-up
        found[name] = {"parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                       "gflops": round(flops.get_total_flops() / 1e9, 2)}
    threads = torch.get_num_threads()
    for key, clock, count in (("s_per_tile", time.perf_counter, threads), ("cpu_s_per_tile_1_thread", time.thread_time, 1)):
        torch.set_num_threads(count)
        seconds: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for _ in range(repeats):
                for name, model in models.items():
                    started = clock()
                    model(x)
                    seconds[name].append(clock() - started)
        for name in models:
            found[name][key] = round(statistics.median(seconds[name]), 4)
    torch.set_num_threads(threads)
    for name in models:
        out = subprocess.run([sys.executable, __file__, "--peak-of", name], capture_output=True, text=True, check=True)
        found[name]["forward_peak_mb"] = round(float(out.stdout.split()[-1]) / 2**20)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed passes per network")
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_of:
        forward_peak(args.peak_of)
        return
    results = {"machine": report.machine(torch.device("cpu")), "command": " ".join(["benchmarks/saross_bench.py", *sys.argv[1:]]),
               "commit": commit_text(), "tile": TILE, "networks": measure(args.repeats)}
    headers = ["network", "parameters (M)", "GFLOPs", "s per tile", "CPU-s per tile, 1 thread", "forward peak (MB)"]
    rows = [[name, f"{r['parameters_m']:.2f}", f"{r['gflops']:.2f}", f"{r['s_per_tile']:.3f}", f"{r['cpu_s_per_tile_1_thread']:.3f}",
             str(r["forward_peak_mb"])]
            for name, r in results["networks"].items()]
    report.print_table(headers, rows)
    report.finish(results, ROOT / "bench_output" / "saross_bench.json")
    print(json.dumps(results["machine"]))


if __name__ == "__main__":
    main()
