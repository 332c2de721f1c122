"""What the engine reads off the machine it runs on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import machine
from engine.machine import cpu_name, memory_bytes

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="read from Linux's /proc")
def test_a_child_process_peak_memory_is_its_own_not_its_parents() -> None:
    """Batch workers and the benchmarks' detections report their own peak: getrusage's maxrss would carry over
    the peak of the process they were started from."""
    held = np.ones(400 * 2**20, dtype=np.uint8)  # 400 MiB resident in this process
    parent = memory_bytes()
    code = "from engine.machine import memory_bytes; print(memory_bytes(), memory_bytes('VmRSS'))"
    child_peak, child_now = map(int, subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                                    check=True).stdout.split())
    assert held.sum() == held.size and parent >= 400 * 2**20
    assert 0 < child_now <= child_peak < parent - 300 * 2**20


def test_the_cpu_is_named_with_its_model_number_where_the_machine_gives_one(monkeypatch) -> None:
    """Figures name the CPU they were made on; a hypervisor's generic name alone does not tell two CPUs apart."""
    monkeypatch.setattr(machine, "cpu_info", lambda: {"model name": "Intel(R) Xeon(R) Processor", "model": "207"})
    assert cpu_name() == "Intel(R) Xeon(R) Processor (model 207)"
    monkeypatch.setattr(machine, "cpu_info", lambda: {"model name": "Apple M2"})
    assert cpu_name() == "Apple M2"
