"""SAROSS-Net (Moon et al., DAKD): UNet++ nested skip connections whose nodes are Context-Aware Feature
Transfer (CAFT) blocks, a convolutional decoder, and one slick logit per pixel.

SAR scenes are full of speckle, high-frequency noise the encoder passes on to the skips with the slick edges.
A CAFT block lets the lower-resolution, more semantic features choose which high-resolution channels go on:
it is cross-attention with the upsampled lower-resolution node as Query and the higher-resolution node as Key
and Value, in Restormer's transposed form (the attention map is channels x channels per head, from
L2-normalised queries and keys and a learnt temperature), so it costs O(C^2) per pixel rather than O(H^2 W^2),
followed by Restormer's gated depthwise feed-forward. Each UNet++ node X^{i,j} on a skip pathway is a CAFT
block fed by X^{i+1,j-1} (Query) and X^{i,j-1} (Key, Value); the node ending each pathway is a convolutional
decoder block on the last CAFT output and the upsampled decoder features. With ``caft=False`` every node is a
plain UNet++ node (its row's earlier nodes and the upsampled one below, concatenated and convolved): the
ablation without CAFT.

The encoder is any timm CNN taken with ``features_only`` (ResNet-34 by default, the paper's comparison
encoder), or MambaVision (the paper's own, ``mamba_vision_B``) when its package is installed on a CUDA
machine. Built like the smp models (``encoder_name``, ``encoder_weights=None``, ``in_channels``, ``classes``),
so model files, detection, fine-tuning, students and pretraining treat it like them; never downloads weights.
"""

from __future__ import annotations

from typing import Sequence

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from ..errors import ModelError

FALLBACK_ENCODER = "resnet34"
"""The paper's comparison encoder, and the one to use where MambaVision cannot run."""
MAMBAVISION_PREFIX = "mamba_vision_"


def transposed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """(B, heads, c, N) queries, keys, values -> (B, heads, c, N): each head's c x c attention over channels.

    Queries and keys are L2-normalised along the pixels, so their products are cosine similarities and
    ``temperature`` (heads, 1, 1) alone sets how sharp the softmax is. Each output pixel mixes the values'
    channels at that same pixel only; which channels, the whole tile decides."""
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    attention = (q @ k.transpose(-2, -1)) * temperature
    return attention.softmax(dim=-1) @ v


class GatedFeedForward(nn.Module):
    """Restormer's gated depthwise feed-forward: one half of an expanded projection, through GELU, gates the
    other, after a 3x3 depthwise convolution that gives it local context."""

    def __init__(self, channels: int, expansion: float) -> None:
        super().__init__()
        hidden = max(1, int(channels * expansion))
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.depthwise(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class CAFT(nn.Module):
    """Context-Aware Feature Transfer: the lower-resolution node (upsampled) queries the higher-resolution one.

    The Query stream carries the residual: what comes out is the semantic features plus the high-resolution
    details their attention picked, then the feed-forward."""

    def __init__(self, lr_channels: int, hr_channels: int, channels: int, heads: int, expansion: float) -> None:
        super().__init__()
        self.heads = heads
        self.query_in = nn.Conv2d(lr_channels, channels, 1, bias=False)
        self.norm_q = LayerNorm2d(channels)
        self.norm_kv = LayerNorm2d(hr_channels)
        self.q = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False),
                               nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False))
        self.kv = nn.Sequential(nn.Conv2d(hr_channels, 2 * channels, 1, bias=False),
                                nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels, bias=False))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm_ffn = LayerNorm2d(channels)
        self.ffn = GatedFeedForward(channels, expansion)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """``lr``: the lower-resolution node already upsampled to ``hr``'s size (Query); ``hr``: Key and Value."""
        x = self.query_in(lr)
        b, c, h, w = x.shape
        q = self.q(self.norm_q(x)).reshape(b, self.heads, c // self.heads, -1)
        k, v = self.kv(self.norm_kv(hr)).reshape(b, 2, self.heads, c // self.heads, -1).unbind(1)
        x = x + self.project_out(transposed_attention(q, k, v, self.temperature).reshape(b, c, h, w))
        return x + self.ffn(self.norm_ffn(x))


def conv_block(in_channels: int, out_channels: int, convs: int = 2) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU, ``convs`` times: a UNet++ node and the decoder's blocks."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class MambaVisionFeatures(nn.Module):
    """A MambaVision classifier as a five-level encoder (strides 2, 4, 8, 16, 32): the two halves of its
    convolutional stem, then the output of each level (its downsampling included), the last two levels
    together since only three of them downsample. timm's ``features_only`` does not know the package's models;
    the module names stay the package's, so its checkpoints load with ``load_encoder_weights``."""

    def __init__(self, model: nn.Module, depth: int) -> None:
        super().__init__()
        self.patch_embed = model.patch_embed
        self.levels = model.levels
        self.depth = depth
        stem = [m for m in self.patch_embed.conv_down if isinstance(m, nn.Conv2d)]
        dim = stem[1].out_channels  # each level that downsamples doubles it
        self.channels = [stem[0].out_channels, dim, 2 * dim, 4 * dim, 8 * dim][:depth]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        half = len(self.patch_embed.conv_down) // 2
        features = [self.patch_embed.conv_down[:half](x)]
        features.append(self.patch_embed.conv_down[half:](features[-1]))
        x = features[-1]
        for i, level in enumerate(self.levels):
            x = level(x)
            if i != 2:  # level 2 downsamples to the stride of level 3, which keeps it
                features.append(x)
        return features[: self.depth]


def make_encoder(name: str, in_channels: int, depth: int) -> tuple[nn.Module, list[int]]:
    """The encoder and its features' channel counts, shallowest first; never downloads weights."""
    name = name.removeprefix("tu-")  # smp's name for a timm encoder
    if name.startswith(MAMBAVISION_PREFIX):
        return _mambavision(name, in_channels, depth)
    try:
        encoder = timm.create_model(name, features_only=True, pretrained=False, in_chans=in_channels, out_indices=tuple(range(depth)))
    except RuntimeError as exc:
        raise ModelError(f"Unknown encoder {name!r} for saross ({exc}).",
                         f"Use a timm CNN, e.g. {FALLBACK_ENCODER} (the default) or resnet18.") from exc
    except IndexError:
        raise ModelError(f"The encoder {name} has fewer than {depth} feature levels.", "Give a smaller encoder_depth, e.g. 4.") from None
    return encoder, list(encoder.feature_info.channels())


def _mambavision(name: str, in_channels: int, depth: int) -> tuple[nn.Module, list[int]]:
    hint = f"Use the paper's comparison encoder {FALLBACK_ENCODER} (--encoder {FALLBACK_ENCODER}), or install mambavision on a CUDA machine."
    try:
        import mambavision  # noqa: F401 - registers the MambaVision models with timm
    except ImportError as exc:
        raise ModelError(f"The encoder {name} needs the mambavision package, which is not installed in the engine's Python ({exc}).", hint) from None
    if not torch.cuda.is_available():
        raise ModelError(f"The encoder {name} runs on CUDA only (MambaVision's selective scan), and no GPU is visible.", hint)
    if depth > 5:
        raise ModelError(f"MambaVision has 5 feature levels, not {depth}.", "Give encoder_depth 5 or less.")
    try:
        model = timm.create_model(name, pretrained=False, in_chans=in_channels)
    except RuntimeError as exc:
        raise ModelError(f"Unknown MambaVision encoder {name!r} ({exc}).", "E.g. mamba_vision_B, the paper's.") from exc
    encoder = MambaVisionFeatures(model, depth)
    return encoder, encoder.channels


class SarossNet(nn.Module):
    """SAROSS-Net with one logit per class (one for binary), at the input's full resolution.

    ``decoder_channels`` follows smp's convention: one entry per encoder level, deepest first; the first
    ``encoder_depth - 1`` are the widths of the nested nodes of each level, the last the width of the head
    that brings the shallowest node to full resolution. Any input size runs (upsampling goes to the size of
    the node above, not by a factor of 2), so tiles that are an odd number of 32-pixel blocks work too.
    ``heads`` must divide the width of every level that has CAFT blocks (all but the deepest two).
    """

    def __init__(
        self,
        encoder_name: str = FALLBACK_ENCODER,
        encoder_weights: str | None = None,
        in_channels: int = 1,
        classes: int = 1,
        *,
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        caft: bool = True,
        heads: int = 4,
        ffn_expansion: float = 2.0,
    ) -> None:
        super().__init__()
        if encoder_weights is not None:
            raise ModelError("SAROSS-Net encoders are built without downloading weights.",
                             "Build with encoder_weights=None, then load a local checkpoint with load_encoder_weights.")
        if encoder_depth < 3:
            raise ModelError(f"encoder_depth {encoder_depth} leaves no nested skip node.", "Give encoder_depth 3 or more (5 by default).")
        if len(decoder_channels) != encoder_depth:
            raise ModelError(f"decoder_channels {list(decoder_channels)} should have one entry per encoder level ({encoder_depth}).",
                             "E.g. encoder_depth 5 with decoder_channels [256, 128, 64, 32, 16].")
        width = list(decoder_channels[-2::-1])  # nested nodes' width per level, shallowest first
        if caft and (heads < 1 or any(w % heads for w in width[: encoder_depth - 2])):
            raise ModelError(f"{heads} attention heads do not divide the CAFT levels' channels {width[: encoder_depth - 2]}.",
                             "Give heads that divides them, e.g. 4 with decoder_channels [256, 128, 64, 32, 16].")
        self.encoder, encoded = make_encoder(encoder_name, in_channels, encoder_depth)
        self.caft = caft
        levels = len(encoded)

        def channels(i: int, j: int) -> int:
            return encoded[i] if j == 0 else width[i]

        self.nodes = nn.ModuleDict()
        for j in range(1, levels):
            for i in range(levels - j):
                below = channels(i + 1, j - 1)
                row = channels(i, j - 1) if caft else encoded[i] + (j - 1) * width[i]
                if caft and i + j < levels - 1:
                    self.nodes[f"x{i}_{j}"] = CAFT(below, row, width[i], heads, ffn_expansion)
                else:
                    self.nodes[f"x{i}_{j}"] = conv_block(row + below, width[i])
        self.head = nn.Sequential(conv_block(width[0], decoder_channels[-1], convs=1), nn.Conv2d(decoder_channels[-1], classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        rows = [[feature] for feature in self.encoder(x)]  # rows[i][j] is X^{i,j}
        for j in range(1, len(rows)):
            for i in range(len(rows) - j):
                below = F.interpolate(rows[i + 1][j - 1], size=rows[i][0].shape[-2:], mode="bilinear", align_corners=False)
                node = self.nodes[f"x{i}_{j}"]
                if isinstance(node, CAFT):
                    rows[i].append(node(below, rows[i][-1]))
                else:
                    rows[i].append(node(torch.cat([*(rows[i][-1:] if self.caft else rows[i]), below], dim=1)))
        top = F.interpolate(rows[0][-1], size=size, mode="bilinear", align_corners=False)
        return self.head(top)
