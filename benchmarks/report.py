"""What every benchmark reports the same way: the machine it ran on, its figures as a table, its JSON file.

A figure is only comparable with the machine and its load beside it, so each benchmark starts from
``machine()`` (``host()`` on the QGIS side, without torch) and ends with ``finish()``. The CPU is named by
``engine.machine``, as the engine's own reports name it.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from engine.machine import cpu_info, cpu_name

if TYPE_CHECKING:
    import torch

BF16_FLAGS = {"avx512_bf16", "amx_bf16", "amx_tile"}
"""CPU flags of native bf16 matrix work; without them oneDNN emulates bf16, slower than fp32."""


def host() -> dict[str, Any]:
    """The machine as the QGIS side's benchmarks report it, without loading torch."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def machine(device: Optional["torch.device"] = None) -> dict[str, Any]:
    import torch  # here, so that benchmarks of the QGIS side do not load it

    flags = set(cpu_info().get("flags", "").split())
    info: dict[str, Any] = {
        **host(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_cpu_flags": sorted(flags & BF16_FLAGS),
        "onednn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print("\n" + line + "\n" + "-" * len(line))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def finish(results: dict[str, Any], path: Path) -> None:
    """Stamp the end load average and write ``results`` to ``path`` (folders made as needed)."""
    if "machine" in results:
        results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
