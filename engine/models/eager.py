"""Running a network in PyTorch itself: the device, the fast dtype for it, and the forward call on tiles.

The fast path is chosen per device: channels-last memory layout everywhere, bf16 autocast on CUDA and on
CPUs with native bf16 (AVX-512 BF16 / AMX), fp16 on older GPUs, plain fp32 on other CPUs, where emulated
bf16 is several times slower than fp32 (measured on this project's 2-core AVX2 machine).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Optional

import numpy as np
import torch

from ..errors import ResourceError
from .registry import ModelCard


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU; an unavailable device is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ResourceError("CUDA was asked for but no usable GPU is visible to PyTorch.", "Use --device cpu or auto.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ResourceError("MPS was asked for but is not available.", "Use --device cpu or auto.")
    return torch.device(name)


def fast_dtype(device: torch.device | str) -> Optional[torch.dtype]:
    """The autocast dtype that is faster than fp32 on this device, or None when none is."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


class EagerForward:
    """(B, C, H, W) float32 model input -> (B, K, H, W) float32 logits, with the network in PyTorch.

    ``dtype`` None runs fp32; ``channels_last`` False keeps the layout the network was trained in, which,
    with fp32, is what every faster path is checked against."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str, dtype: Optional[torch.dtype], *,
                 channels_last: bool = True) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device).to(memory_format=self.memory_format).eval()
        self.label = "torch " + (str(dtype).replace("torch.", "") if dtype else "fp32")

    @classmethod
    def fastest(cls, model: torch.nn.Module, device: torch.device | str) -> "EagerForward":
        """The device's fast path: channels-last and ``fast_dtype``."""
        return cls(model, device, fast_dtype(device))

    def batch_size(self, card: ModelCard) -> int:
        """GPUs want full batches (as many as half the free memory holds); on a CPU one tile at a time keeps
        Cancel within a tile's time, and larger batches were not faster there (measured)."""
        return cuda_batch_size(self.model, card, self.device, self.dtype) if self.device.type == "cuda" else 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        if self.device.type == "cuda":
            t = t.pin_memory()  # page-locked: the copy to the GPU runs asynchronously
        t = t.to(self.device, non_blocking=True).to(memory_format=self.memory_format)
        try:
            with torch.inference_mode(), autocast(self.device, self.dtype):
                return self.model(t).float().cpu().numpy()
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise ResourceError("The GPU ran out of memory.", "Use a smaller tile size or --device cpu.") from exc


def cuda_batch_size(model: torch.nn.Module, card: ModelCard, device: torch.device, dtype: Optional[torch.dtype],
                    most: int = 32) -> int:
    """Tiles per batch from the GPU's free memory: one probe tile's peak, and half of what is free."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    probe = torch.zeros(1, card.in_channels, card.tile_size, card.tile_size, device=device).to(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, dtype):
        model(probe)
    per_tile = max(1, torch.cuda.max_memory_allocated(device) - before)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(most, 0.5 * free // per_tile)))
