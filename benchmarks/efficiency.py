"""How much of the machine a model uses: the FLOPs of one tile, and the measured matmul peak to set them against.

A runtime's seconds per tile turn into achieved FLOP/s with the network's FLOPs (2 per multiply-add of its
convolutions and matmuls, counted by PyTorch's ``FlopCounterMode`` at the tile size; element-wise work such as
batch norm and activations is not counted, as is usual). The peak is what the same machine reaches on a large
matmul in the same dtype, on all of torch's threads: the best a dense kernel does here, timed beside the model
so that both see the same share of a loaded machine.

On the CPU the peak is the faster of two torch paths, both timed: ``torch.mm``, which goes through MKL for
fp32, and oneDNN's linear, the library PyTorch's and OpenVINO's convolutions run on. MKL takes a slower
code path on AMD CPUs (less than half of oneDNN's fp32 rate on an AMD EPYC), so ``torch.mm`` alone would
understate the peak and flatter every share.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

MATMUL_N = 2048
"""n of the n x n by n x n matmul on a CPU: large enough to reach the peak (4096 gave the same rate), short enough
to time between tiles."""
MATMUL_REPEATS = 3
"""Timings of each matmul path in each round of tiles."""


def forward_flops(model: torch.nn.Module, tile: int, in_channels: int) -> int:
    """FLOPs of one forward pass on one tile (fp32 model; the count does not depend on the dtype)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).float().cpu().eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        probe(torch.rand(1, in_channels, tile, tile))
    return int(counter.get_total_flops())


def matmul_flops(n: int) -> int:
    return 2 * n**3


class Timing(NamedTuple):
    wall: float
    cpu: float
    """CPU time of all of the process's threads: on a machine shared with other jobs it moves much less than wall
    time, so a ratio of CPU times is the steadier estimate of what the same work takes on a machine of its own."""


def timed(run: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def matmul_timers(device: torch.device, dtype: torch.dtype, n: int) -> dict[str, Callable[[], Timing]]:
    """Timings of one n x n matmul in ``dtype``, per torch path (each warmed up once)."""
    if dtype == torch.int8:
        return _timers(_int8_paths(n), device)
    a = torch.rand(n, n, device=device).to(dtype)
    b = torch.rand(n, n, device=device).to(dtype)
    paths: dict[str, Callable[[], object]] = {"torch.mm": lambda: torch.mm(a, b)}
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        a_dnn, b_dnn = a.to_mkldnn(), b.to_mkldnn()
        paths["oneDNN linear"] = lambda: torch._C._nn.mkldnn_linear(a_dnn, b_dnn, None)
    return _timers(paths, device)


def _int8_paths(n: int) -> dict[str, Callable[[], object]]:
    """The CPU's int8 matmul in the two forms its kernels take: ``torch._int_mm`` (int8 by int8 into int32), and
    oneDNN's quantised linear (uint8 activations by int8 weights, requantised to uint8), the form of the
    quantised convolutions OpenVINO and ONNX Runtime run, on VNNI or AMX where the CPU has them. An int8 model's
    work is counted as its fp32 FLOPs (2 per multiply-add), so its share of this peak is a like-for-like ratio."""
    a = torch.randint(-100, 100, (n, n), dtype=torch.int8)
    b = torch.randint(-100, 100, (n, n), dtype=torch.int8)
    paths: dict[str, Callable[[], object]] = {"torch._int_mm": lambda: torch._int_mm(a, b)}
    if "onednn" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "onednn"  # this process's torch quantised ops: the benchmark's only ones
        x = torch.quantize_per_tensor(torch.rand(n, n), 1 / 255, 0, torch.quint8)
        packed = torch.ops.quantized.linear_prepack(torch.quantize_per_tensor(torch.rand(n, n) - 0.5, 1 / 127, 0, torch.qint8), None)
        paths["oneDNN quantised linear"] = lambda: torch.ops.quantized.linear(x, packed, 0.05, 0)
    return paths


def _timers(paths: dict[str, Callable[[], object]], device: torch.device) -> dict[str, Callable[[], Timing]]:
    """Each path warmed up once, so its first timing is no library's start-up."""

    def timer(run: Callable[[], object]) -> Callable[[], Timing]:
        def once() -> None:
            with torch.inference_mode():
                run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        once()
        return lambda: timed(once)

    return {name: timer(run) for name, run in paths.items()}


def peak(seconds: dict[str, list[float]], n: int, average: Callable[[list[float]], float]) -> tuple[float, str]:
    """(FLOP/s, path) of the fastest path, each path's time averaged with ``average`` (as the model's time is)."""
    path = min(seconds, key=lambda k: average(seconds[k]))
    return matmul_flops(n) / average(seconds[path]), path


THIN = 32
"""Convolutions with fewer channels than this on either side (the stem on a one-band input, full-resolution decoder
stages, a one-class head) move more memory per FLOP than a CPU's caches hide."""
LAYER_KINDS = (f"convolutions, >= {THIN} channels in and out", f"convolutions, < {THIN} channels in or out",
               "layers without FLOPs (resize, concat, pooling, reorders)")


def openvino_layers(onnx_path: Path, precision: str, tile: np.ndarray, threads: int, repeats: int = 3) -> dict[str, dict]:
    """Where OpenVINO spends one tile, from its own per-layer counters: per kind of layer, its share of the time and
    of the FLOPs and its FLOP rate, compiled as detection compiles it."""
    import openvino as ov

    from engine.models.runtimes import openvino_config

    core = ov.Core()
    model = core.read_model(str(onnx_path))
    model.reshape({"x": list(tile.shape)})
    convolutions = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Convolution":
            c_out, c_in, *kernel = (int(d) for d in op.input(1).get_shape())
            flops = 2 * c_in * math.prod(kernel) * math.prod(int(d) for d in op.get_output_shape(0))
            convolutions[op.get_friendly_name()] = (flops, LAYER_KINDS[min(c_in, c_out) < THIN])
    request = core.compile_model(model, "CPU", {**openvino_config(precision, threads), "PERF_COUNT": True}).create_infer_request()
    request.infer({0: tile})
    seconds = {kind: 0.0 for kind in LAYER_KINDS}
    flops = {kind: 0 for kind in LAYER_KINDS}
    for _ in range(repeats):
        request.infer({0: tile})
        for layer in request.profiling_info:
            if layer.status == ov.ProfilingInfo.Status.EXECUTED:
                layer_flops, kind = convolutions.get(layer.node_name, (0, LAYER_KINDS[2]))
                seconds[kind] += layer.real_time.total_seconds()
                flops[kind] += layer_flops  # both summed over the repeats: the shares and rates are per tile
    total_s, total_flops = sum(seconds.values()), sum(flops.values())
    return {kind: {"share_of_time": round(seconds[kind] / total_s, 4), "share_of_flops": round(flops[kind] / total_flops, 4),
                   "gflops": round(flops[kind] / seconds[kind] / 1e9, 1) if flops[kind] and seconds[kind] else None}
            for kind in LAYER_KINDS}
