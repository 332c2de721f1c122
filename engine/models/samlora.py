"""SamLoRA: SAM's ViT image encoder kept frozen, LoRA adapters on its attention, and a small mask decoder.

The paper fine-tunes SAM's ViT-B and ViT-L this way: the pretrained encoder weights never change, low-rank
adapters on the attention projections adapt it to SAR, and a trainable decoder turns its features into slick
logits. The encoder is timm's SAM ViT and the adapters are peft's LoRA, so the network is built offline like the
smp models, saved and loaded through the same model files, and its encoder loads SAM's official checkpoint or
timm's own weights from a local file (``load_encoder_checkpoint``, reached through
``engine.models.registry.load_encoder_weights``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import LayerNorm2d, resample_abs_pos_embed_nhwc
from timm.models.vision_transformer_sam import checkpoint_filter_fn
from torch import nn

from ..errors import ModelError

ENCODERS = {
    "samvit_base_patch16": "sam_vit_b_01ec64.pth",
    "samvit_large_patch16": "sam_vit_l_0b3195.pth",
}
"""timm's SAM ViT names -> the official SAM checkpoint each one loads."""
LORA_TARGETS = ("qkv", "proj")
"""The attention linears LoRA may adapt: the fused query/key/value projection and the output projection."""
CHECKPOINT_HINT = (
    "Use SAM's official checkpoint ({official}) or timm's samvit safetensors for {encoder}; "
    "a ViT-B file only fits samvit_base_patch16, a ViT-L file samvit_large_patch16."
)


class MaskDecoder(nn.Sequential):
    """Encoder features at 1/16 -> full-resolution class logits.

    Each stage doubles the resolution with a 2x2 transposed convolution, as the upscaling of SAM's own mask
    decoder does, then refines with a 3x3 convolution; LayerNorm2d rather than batch norm because fine-tuning
    batches hold only a few tiles.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], classes: int) -> None:
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *channels[:-1]], channels):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2),
                LayerNorm2d(c_out),
                nn.GELU(),
                nn.Conv2d(c_out, c_out, kernel_size=3, padding=1),
                LayerNorm2d(c_out),
                nn.GELU(),
            ]
        layers.append(nn.Conv2d(channels[-1], classes, kernel_size=1))
        super().__init__(*layers)


class SamLoRA(nn.Module):
    """SAM ViT encoder with LoRA adapters + a trainable mask decoder; one logit per class (one for binary).

    Built with the smp models' signature so the model registry, model files, detection and fine-tuning treat
    it like them. ``img_size`` is the tile size the position embeddings are laid out for (the card's
    tile size): other multiples of 16 still run, timm resamples the embeddings on the fly. Further keyword
    arguments go to timm's ``VisionTransformerSAM`` (e.g. ``embed_dim``, ``depth``, ``num_heads``,
    ``global_attn_indexes``, ``window_size``, ``neck_chans`` for small configurations).
    """

    def __init__(
        self,
        encoder_name: str = "samvit_base_patch16",
        encoder_weights: Optional[str] = None,
        in_channels: int = 1,
        classes: int = 1,
        *,
        img_size: int,
        lora_rank: int = 8,
        lora_alpha: float = 8.0,
        lora_targets: Sequence[str] = ("qkv",),
        decoder_channels: Sequence[int] = (128, 64, 32, 16),
        **encoder_kwargs,
    ) -> None:
        super().__init__()
        if encoder_name not in ENCODERS:
            raise ModelError(f"Unknown encoder {encoder_name!r} for samlora.", f"Known encoders: {', '.join(ENCODERS)}.")
        if encoder_weights is not None:
            raise ModelError(
                "SamLoRA encoders are built without downloading weights.",
                "Build with encoder_weights=None, then load a local checkpoint with load_encoder_weights.",
            )
        unknown = set(lora_targets) - set(LORA_TARGETS)
        if not lora_targets or unknown:
            raise ModelError(f"Unknown LoRA targets {sorted(unknown) or '(none)'}.", f"Adapt some of: {', '.join(LORA_TARGETS)}.")
        self.encoder = timm.create_model(
            encoder_name, pretrained=False, img_size=img_size, in_chans=in_channels, num_classes=0, **encoder_kwargs
        )
        stages = math.log2(self.encoder.patch_embed.patch_size[0])
        if len(decoder_channels) != stages:
            raise ModelError(
                f"The decoder needs {stages:g} stages to upsample {self.encoder.patch_embed.patch_size[0]}-pixel patches, "
                f"got decoder_channels {list(decoder_channels)}.",
                "Give one channel count per stage, e.g. [128, 64, 32, 16].",
            )
        # peft imports transformers (seconds): imported here so that engine commands using smp models never pay it.
        from peft import LoraConfig, inject_adapter_in_model

        targets = rf"blocks\.\d+\.attn\.({'|'.join(lora_targets)})"
        inject_adapter_in_model(LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules=targets), self.encoder)
        self.encoder_name = encoder_name
        self.decoder = MaskDecoder(self.encoder.num_features, decoder_channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.forward_features(x))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The groups ``engine.models.training`` trains: the ViT weights never, the LoRA adapters with
        ``train_layers='all'``, the decoder always."""
        encoder = list(self.encoder.named_parameters())
        return {
            "encoder": [p for name, p in encoder if _is_adapter(name)],
            "decoder": list(self.decoder.parameters()),
            "frozen": [p for name, p in encoder if not _is_adapter(name)],
        }

    def load_encoder_checkpoint(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load SAM's official checkpoint (``image_encoder.*`` keys; the prompt encoder and mask decoder are
        left out) or timm's samvit weights into the encoder, fitted to this model; the adapters keep their
        initialisation (LoRA's B = 0, so the loaded encoder computes exactly what SAM's does).

        Position embeddings are resampled to the tile size, and so are the relative position tables of
        the global-attention blocks. SAM normalises RGB input with ImageNet's mean and std inside the model,
        not in its encoder; that normalisation is folded into the patch embedding and its three channels
        summed, so a one-band tile in 0..1 gives the features SAM gives for the same grey image.
        """
        hint = CHECKPOINT_HINT.format(official=ENCODERS[self.encoder_name], encoder=self.encoder_name)
        state = _fold_normalisation(checkpoint_filter_fn(state, self.encoder), self.encoder.in_chans, source, hint)
        own = self.encoder.state_dict()
        plain = {name.replace(".base_layer", ""): name for name in own if not _is_adapter(name)}
        missing = [key for key in plain if key not in state]
        if missing:
            raise ModelError(
                f"{source} is not a {self.encoder_name} checkpoint: {len(missing)} of its {len(plain)} encoder weights "
                f"are missing (e.g. {missing[0]}).",
                hint,
            )
        fitted = {}
        for key, name in plain.items():
            value = _fit(key, state[key], own[name].shape)
            if value.shape != own[name].shape:
                raise ModelError(
                    f"{source} holds an encoder of another size than {self.encoder_name}: {key} is "
                    f"{tuple(state[key].shape)}, this model's {tuple(own[name].shape)}.",
                    hint,
                )
            fitted[name] = value.to(own[name].dtype)
        self.encoder.load_state_dict(fitted, strict=False)


def _is_adapter(name: str) -> bool:
    return "lora_" in name


def _fit(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A checkpoint tensor resampled to this model's token grid where it is laid out on one."""
    if key == "pos_embed" and value.ndim == 4 and value.shape[-1] == shape[-1]:
        return resample_abs_pos_embed_nhwc(value, list(shape[1:3]))
    if key.endswith(("rel_pos_h", "rel_pos_w")) and value.ndim == 2 and value.shape[1] == shape[1] and value.shape[0] != shape[0]:
        # Linear along the relative distance, as SAM itself interpolates these tables at run time.
        return F.interpolate(value.T[None].float(), size=shape[0], mode="linear")[0].T
    return value


def _fold_normalisation(state: dict[str, torch.Tensor], in_channels: int, source: str, hint: str) -> dict[str, torch.Tensor]:
    """Fold (x - mean) / std of RGB input into a three-channel patch embedding, then sum it to one channel."""
    weight, bias = state.get("patch_embed.proj.weight"), state.get("patch_embed.proj.bias")
    if weight is None or bias is None or weight.ndim != 4 or weight.shape[1] != 3:
        return state
    if in_channels not in (1, 3):
        raise ModelError(f"{source} has a 3-channel patch embedding; it cannot be fitted to {in_channels} input bands.", hint)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    weight = weight.float() / std
    bias = bias.float() - (weight * mean).sum(dim=(1, 2, 3))
    if in_channels == 1:
        weight = weight.sum(dim=1, keepdim=True)
    return {**state, "patch_embed.proj.weight": weight, "patch_embed.proj.bias": bias}
