"""Running a segmentation network on batches of tiles, as fast as the hardware allows.

The fast path is chosen per device: channels-last memory layout everywhere, bf16 autocast on CUDA and on
CPUs with native bf16 (AVX-512 BF16 / AMX), fp16 on older GPUs, plain fp32 on other CPUs, where emulated
bf16 is several times slower than fp32 (measured on this project's 2-core AVX2 machine).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Optional

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


def fast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype that is faster than fp32 on this device, or None when none is."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (1,), (1, 2))
"""Test-time views of a (B, H, W) batch: as is, mirrored left-right, top-bottom, and both."""


class Predictor:
    """Slick probability for batches of stretched tiles (0..255), on one device and one runtime.

    ``forward`` swaps the network's own call for another runtime's (``runtimes``: TorchScript, ONNX Runtime,
    OpenVINO), which takes and returns numpy arrays; scaling and the probability stay here, so every runtime
    is fed and read the same way. With ``forward`` the PyTorch network is not needed (``model`` None): a run
    on an exported model never builds it.
    """

    def __init__(self, model: Optional[torch.nn.Module], card: ModelCard, device: torch.device, *, fast: bool = True,
                 forward: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> None:
        if model is None and forward is None:
            raise TypeError("Predictor needs a model or a forward function")
        self.card = card
        self.device = device
        self.dtype = fast_dtype(device) if fast else None
        self.memory_format = torch.channels_last if fast else torch.contiguous_format
        self.model = None if model is None else model.to(device).to(memory_format=self.memory_format).eval()
        self.forward = forward
        self.runtime = "torch " + (str(self.dtype).replace("torch.", "") if self.dtype else "fp32")
        self.scale = float(card.normalisation.get("input_scale", 1 / 255))
        self._batch_size = cuda_batch_size(self.model, card, device, self.dtype) if device.type == "cuda" and self.model is not None else 1
        self.tta = False
        """Average over mirror images (4x the model's work); see ``__call__``."""

    @property
    def batch_size(self) -> int:
        """GPUs want full batches (as many as half the free memory holds); on a CPU one tile at a time keeps
        Cancel within a tile's time, and larger batches were not faster there (measured)."""
        return self._batch_size

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, H, W) float32 stretched tiles -> (B, H, W) float32 slick probability.

        With ``tta`` the probability is the mean over the tile and its three mirror images (horizontal,
        vertical, both): the flips the models were trained with, so each view is one the model knows.
        """
        if not self.tta:
            return self._once(tiles)
        total = np.zeros(tiles.shape, dtype=np.float32)
        for axes in FLIPS:
            total += np.flip(self._once(np.flip(tiles, axes)), axes)
        return total / len(FLIPS)

    def _once(self, tiles: np.ndarray) -> np.ndarray:
        if self.forward is not None:
            x = np.ascontiguousarray(tiles, dtype=np.float32)[:, None] * np.float32(self.scale)
            return self.probability(torch.from_numpy(np.asarray(self.forward(x), dtype=np.float32))).numpy()
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32)).unsqueeze(1)
        if self.device.type == "cuda":
            x = x.pin_memory()  # page-locked: the copy to the GPU runs asynchronously
        x = (x.to(self.device, non_blocking=True) * self.scale).to(memory_format=self.memory_format)
        try:
            with torch.inference_mode(), autocast(self.device, self.dtype):
                logits = self.model(x)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise ResourceError("The GPU ran out of memory.", "Use a smaller tile size or --device cpu.") from exc
        return self.probability(logits).cpu().numpy()

    def probability(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.card.out_channels == 1:
            return torch.sigmoid(logits[:, 0])
        return torch.softmax(logits, dim=1)[:, self.card.slick_index]


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
