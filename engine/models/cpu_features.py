"""What this CPU can do natively: the instruction sets that decide whether bf16 or int8 inference pays.

Without native bf16 units (AVX-512 BF16, AMX-BF16) oneDNN emulates bf16 and it runs slower than fp32; with
AMX it runs several times faster. int8 pays with VNNI (AVX-512 or AVX) and AMX-INT8. The same cloud machine
type comes with different CPUs, so this is asked at run time, never assumed.
"""

from __future__ import annotations

from ..machine import cpu_info, cpu_name

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def flags() -> set[str]:
    return set(cpu_info().get("flags", "").split())


def native_bf16() -> bool:
    """The CPU's flags where Linux shows them; elsewhere oneDNN's own check. Asking oneDNN loads PyTorch, two seconds
    of every detection forced to a precision (``--runtime 'openvino int8'``) that would otherwise never load it."""
    known = flags()
    if known:
        return bool(known & set(BF16_FLAGS))
    import torch

    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def native_int8() -> bool:
    return bool(flags() & set(INT8_FLAGS))


def summary() -> dict:
    import torch

    return {
        "cpu": cpu_name(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(),
        "native_int8": native_int8(),
        "flags": sorted(flags() & {*BF16_FLAGS, *INT8_FLAGS, "amx_tile", "avx512f", "avx2"}),
    }
