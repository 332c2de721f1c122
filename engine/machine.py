"""Where a figure, a model or a file came from, said so that a reader can look it up: the machine (CPU model,
GPU name), the commit of the checkout, a file's SHA-256 and the time (UTC).

Standard library only at import (torch is imported by ``describe`` when it runs), so the benchmarks of
the QGIS side and the label store's writers can stamp what they make without loading a model's stack.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
"""The checkout (or installed plugin folder) the engine runs from."""


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (``model name``, ``flags``...); empty where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if k.strip()}


def cpu_name() -> str:
    """The CPU's name with its model number where /proc/cpuinfo gives one: a virtual machine may show only
    "Intel(R) Xeon(R) Processor", a name two CPUs with different vector units (one with AMX, one without) have shared."""
    info = cpu_info()
    name = info.get("model name") or platform.processor() or platform.machine()
    return f"{name} (model {info['model']})" if info.get("model", "").isdigit() else name


def describe(device: Optional["torch.device"] = None) -> str:
    """E.g. "AMD EPYC, 2 cores (AVX2), torch 2.14.1" or the GPU's name for a CUDA device.

    The vector units are named because one machine type comes with CPUs that differ in them, and they change the
    figures: the same seeded training gave other fold models on an AVX2-only EPYC than on one with AVX-512 BF16."""
    import torch

    units = torch.backends.cpu.get_cpu_capability()
    if {"avx512_bf16", "amx_bf16"} & set(cpu_info().get("flags", "").split()):
        units += " with bf16 units"
    where = f"{cpu_name()}, {os.cpu_count()} cores ({units})"
    if device is not None and device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} GPU; host {where}"
    return f"{where}, torch {torch.__version__}"


def _git(*args: str) -> Optional[str]:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def commit(short: bool = False) -> Optional[str]:
    """The checkout's commit; None outside a git checkout (an installed plugin)."""
    return _git("rev-parse", *(["--short"] if short else []), "HEAD")


def uncommitted_changes() -> Optional[bool]:
    """Whether tracked files differ from the commit; None outside a git checkout."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def commit_text() -> str:
    """The short commit for a report, e.g. ``3d9046f (with uncommitted changes)``."""
    head = commit(short=True)
    if head is None:
        return "unknown (not a git checkout)"
    return head + (" (with uncommitted changes)" if uncommitted_changes() else "")


def made_by(command: str, device: Optional["torch.device"] = None) -> dict:
    """What a report says made it: the command that remakes it, the commit, the machine and when it started."""
    return {"command": command, "commit": commit_text(), "machine": describe(device), "started": utc_now()}


def memory_bytes(field: str = "VmHWM") -> Optional[int]:
    """This process's resident memory now (``VmRSS``) or at its peak (``VmHWM``), from Linux's /proc; None
    elsewhere. The peak belongs to the process image, so it starts afresh at exec, where getrusage's maxrss
    keeps the peak of the process this one was forked from (a Dask worker, a benchmark's child)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def utc_now() -> str:
    """The time now in UTC, to the second, as ISO 8601: when a label, a sample, a model or a figure was made."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
