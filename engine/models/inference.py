"""Slick probability for batches of tiles, from whichever runtime runs the network.

Nothing here imports PyTorch: a detection on an exported model (OpenVINO, ONNX Runtime) on a machine
without a GPU never loads it: a 16-tile detection the plugin or the command line starts took 2.9 s of CPU
and 357 MB at its peak without it, 4.6 s and 824 MB with it (docs/benchmarks_amd.md). ``eager`` runs a
network in PyTorch itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from scipy.special import softmax

from .registry import ModelCard
from .views import FLIPS, HALF_TURN, View

if TYPE_CHECKING:
    import torch

Forward = Callable[[np.ndarray], np.ndarray]
"""(B, C, H, W) float32 model input -> (B, K, H, W) float32 logits."""

_GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")
"""NVIDIA's, ROCm's and WSL's device files: without any of them a Linux machine has no GPU PyTorch can use."""
_GPU_LIBRARIES = ("nvcuda", "amdhip64")
"""NVIDIA's CUDA driver and AMD's HIP runtime, as Windows names their DLLs: PyTorch on Windows runs on nothing else."""
_MPS_MACOS = (12, 3)
"""The first macOS whose Metal Performance Shaders PyTorch runs on."""


def device_name(name: str = "auto") -> str:
    """The device ``name`` stands for here, as PyTorch spells it. PyTorch (a second of start-up and half a GB) is
    asked only where a GPU could answer: a Linux GPU's device file, a Windows GPU driver, or a Mac whose Metal
    device PyTorch can use (Apple silicon on macOS 12.3 or later; PyTorch builds no GPU path for Intel Macs)."""
    if name == "cpu" or (name == "auto" and not _may_have_gpu()):
        return "cpu"
    from .eager import pick_device

    return str(pick_device(name))


def _may_have_gpu() -> bool:
    if sys.platform.startswith("linux"):
        return any(Path(p).exists() for p in _GPU_DEVICES)
    if sys.platform == "win32":
        from ctypes.util import find_library

        return any(find_library(name) for name in _GPU_LIBRARIES)
    if sys.platform == "darwin":
        import platform

        release = tuple(int(part) for part in platform.mac_ver()[0].split(".")[:2] if part.isdigit())
        return platform.machine() == "arm64" and release >= _MPS_MACOS
    return True


def probability(logits: np.ndarray, card: ModelCard) -> np.ndarray:
    """(B, K, H, W) logits -> (B, H, W) float32 slick probability: the sigmoid of a one-class head, else
    the slick class's softmax share."""
    logits = np.asarray(logits, dtype=np.float32)
    if card.out_channels == 1:
        return sigmoid(logits[:, 0])
    return softmax(logits, axis=1)[:, card.slick_index]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in one new float32 array, in numpy's vectorised loops: a third of the time of scipy's
    ``expit`` on a 512-px tile (0.32 against 1.0 ms on a 2-core Xeon, measured), equal to it within 4 ulp, and
    0 exactly where it is (logits below -88.72). It runs between a runtime's calls, while the cores wait for it."""
    out = np.negative(logits, dtype=np.float32)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


class Predictor:
    """Slick probability for batches of stretched tiles (0..255), on one device and one runtime.

    The network runs in ``forward`` (PyTorch, TorchScript, ONNX Runtime or OpenVINO, see ``runtimes``), which
    takes and returns numpy arrays; scaling and the probability stay here, so every runtime is fed and read
    the same way. Given a PyTorch ``model`` instead, it runs in PyTorch on ``device``: on the device's fast
    path (``fast``), or as trained (fp32, contiguous memory).
    """

    def __init__(self, model: Optional["torch.nn.Module"], card: ModelCard, device: "torch.device | str" = "cpu", *,
                 fast: bool = True, forward: Optional[Forward] = None) -> None:
        if model is None and forward is None:
            raise TypeError("Predictor needs a model or a forward function")
        self.card = card
        if forward is None:
            from .eager import EagerForward

            forward = EagerForward.fastest(model, device) if fast else EagerForward(model, device, None, channels_last=False)
        self.forward = forward
        self.runtime = getattr(forward, "label", "")
        self.images_per_call = forward.batch_size(card) if hasattr(forward, "batch_size") else 1
        """Images the runtime takes at once: a GPU's full batch (``eager``), one on a CPU, so Cancel waits a tile at most."""
        self.scale = float(card.normalisation.get("input_scale", 1 / 255))
        self.tta = False
        """Average over mirror images (4x the model's work); see ``__call__``."""
        self.rotations = False
        """With ``tta``, also over the transposed tile's mirror images (8x the model's work): the rotations by 90
        degrees, which training (rotations up to 30 degrees) never showed."""
        self.half_turn = False
        """With ``tta`` (and not ``rotations``), over the tile and its half turn only (2x the model's work)."""

    @property
    def views(self) -> list[View]:
        """With ``tta``, the tile and its three mirror images (horizontal, vertical, both): the flips the models
        were trained with, so each view is one the model knows; with ``rotations`` too, the same of the
        transposed tile; with ``half_turn`` instead, the tile and its mirror image along both axes. Without, the tile as is."""
        if not self.tta:
            return [(False, ())]
        if self.half_turn and not self.rotations:
            return [(False, axes) for axes in HALF_TURN]
        return [(transposed, axes) for transposed in ((False, True) if self.rotations else (False,)) for axes in FLIPS]

    @property
    def batch_size(self) -> int:
        """Tiles per call: as many as the runtime's images per call hold with every view of each."""
        return max(1, self.images_per_call // len(self.views))

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, H, W) float32 stretched tiles -> (B, H, W) float32 slick probability, the mean over ``views``.

        A PyTorch network does it all on its device (``EagerForward.mean_probability``); the exported
        runtimes take numpy in and out, so their views are made and averaged here."""
        views = self.views
        if hasattr(self.forward, "mean_probability"):
            return self.forward.mean_probability(tiles, self.scale, self.card, views, self.images_per_call)
        total = np.zeros(tiles.shape, dtype=np.float32)
        for transposed, axes in views:
            view = tiles.swapaxes(-2, -1) if transposed else tiles
            seen = np.flip(self._once(np.flip(view, axes)), axes)
            total += seen.swapaxes(-2, -1) if transposed else seen
        total /= len(views)
        return total

    def _once(self, tiles: np.ndarray) -> np.ndarray:
        # Scaled in one pass into a new contiguous array (a mirrored view is not): the runtimes take it as it is.
        x = np.multiply(tiles, np.float32(self.scale), dtype=np.float32, order="C")[:, None]
        return probability(self.forward(x), self.card)
