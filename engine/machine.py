"""The machine a figure or a model came from, named as a reader can look it up (CPU model, GPU name)."""

from __future__ import annotations

import os
import platform
from typing import Optional

import torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: Optional[torch.device] = None) -> str:
    """E.g. "AMD EPYC 7B13, 2 cores (cpu), torch 2.14.1" or the GPU's name for a CUDA device."""
    where = f"{cpu_name()}, {os.cpu_count()} cores"
    if device is not None and device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} GPU; host {where}"
    return f"{where}, torch {torch.__version__}"
