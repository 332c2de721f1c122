"""Running a network in PyTorch itself: the device, the fast dtype for it, and the forward call on tiles.

The fast path is chosen per device: channels-last memory layout everywhere, bf16 autocast on CUDA and on
CPUs with native bf16 (AVX-512 BF16 / AMX), fp16 on older GPUs, plain fp32 on other CPUs, where emulated
bf16 is slower than fp32: several times on this project's 2-core AVX2 machine, and training at half fp32's rate on
a 2-core AVX-512 Xeon without bf16 units, for which oneDNN still reports bf16 as supported
(docs/benchmarks_icelake_training.md). The CPU's own flags decide (``cpu_features``), as they do for the runtimes.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator, Optional, Sequence

import numpy as np
import torch

from ..errors import ResourceError
from . import cpu_features
from .registry import ModelCard
from .views import View


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
    if device.type == "cpu" and cpu_features.native_bf16():
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
        with self._running():
            return self.model(self._to_device(x).to(memory_format=self.memory_format)).float().cpu().numpy()

    def mean_probability(self, tiles: np.ndarray, scale: float, card: ModelCard, views: Sequence[View],
                         images_per_call: int) -> np.ndarray:
        """(B, H, W) stretched tiles -> (B, H, W) slick probability averaged over ``views``, all on the device.

        The views go through the network in batches of ``images_per_call`` (a GPU's full batch, one image on a
        CPU, whose memory then stays that of one tile), and mirroring, the sigmoid and the mean stay on the
        device: done on the host, they left an H200 idle most of a detection (11 % busy on an 8,000-px scene)."""
        with self._running():
            x = self._to_device(np.ascontiguousarray(tiles, dtype=np.float32))[:, None] * scale
            batch = torch.cat([_seen(x, view) for view in views])
            parts = batch.split(max(1, images_per_call))
            logits = torch.cat([self.model(part.contiguous(memory_format=self.memory_format)).float() for part in parts])
            prob = torch.sigmoid(logits[:, 0]) if card.out_channels == 1 else torch.softmax(logits, 1)[:, card.slick_index]
            per_view = prob.unflatten(0, (len(views), len(tiles)))
            total = sum(_seen(p, view, undo=True) for p, view in zip(per_view, views))
            return (total / len(views)).cpu().numpy()

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x)
        if self.device.type == "cuda":
            t = t.pin_memory()  # page-locked: the copy to the GPU runs asynchronously
        return t.to(self.device, non_blocking=True)

    @contextmanager
    def _running(self) -> Iterator[None]:
        try:
            with torch.inference_mode(), autocast(self.device, self.dtype):
                yield
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise ResourceError("The GPU ran out of memory.", "Use a smaller tile size or --device cpu.") from exc


def _seen(x: torch.Tensor, view: View, undo: bool = False) -> torch.Tensor:
    """``x`` (rows and columns last) as ``view`` shows it, or, with ``undo``, back from that view."""
    transposed, axes = view
    if transposed and not undo:
        x = x.transpose(-2, -1)
    if axes:
        x = x.flip(axes)
    return x.transpose(-2, -1) if transposed and undo else x


def cuda_batch_size(model: torch.nn.Module, card: ModelCard, device: torch.device, dtype: Optional[torch.dtype],
                    most: int = 128) -> int:
    """Images per forward from the GPU's free memory: one probe tile's peak, and half of what is free (a tile
    with mirror averaging is four images)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    probe = torch.zeros(1, card.in_channels, card.tile_size, card.tile_size, device=device).to(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, dtype):
        model(probe)
    per_tile = max(1, torch.cuda.max_memory_allocated(device) - before)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(most, 0.5 * free // per_tile)))
