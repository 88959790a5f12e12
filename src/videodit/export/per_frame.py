"""The VAE's conv stack as an image network over every frame at once, for its ONNX graphs.

With `temporal_kernel == 1` no layer of the encoder or decoder looks across latent frames: each 1×3×3 causal conv
is a 3×3 2D conv, each per-frame GroupNorm a plain GroupNorm, the (1, 2, 2) upsample a 2D one. onnxruntime's CPU
kernels are faster on that 4-D form (blocked NCHWc convs, each GroupNorm one InstanceNormalization through
`videodit.export.translations`; measured at demo size, batch 2: decoder 35 -> 26 ms), while torch's are faster on
5-D (46 against 53 ms): so the model keeps its 5-D layers and only the exported graphs fold time into the batch.
The 2D layers hold views of the model's weights.
"""

from __future__ import annotations

import torch
from torch import nn

from videodit.models.vae import CausalConv3d, ConvBlock, FrameGroupNorm, Upsample, VideoVAE


def _image_layers(layer: nn.Module) -> list[nn.Module]:
    """The 2D layers that compute, on frames [N, C, H, W], what `layer` computes on [B, C, T, H, W]."""
    if isinstance(layer, CausalConv3d):
        if layer.time_pad:
            raise ValueError(f"a causal conv of {layer.time_pad + 1} time taps looks across frames: export it 5-D")
        conv3d = layer.conv
        conv = nn.Conv2d(conv3d.in_channels, conv3d.out_channels, 3, conv3d.stride[1:], conv3d.padding[1:])
        conv.weight, conv.bias = nn.Parameter(conv3d.weight.detach()[:, :, 0]), nn.Parameter(conv3d.bias.detach())
        return [conv]
    if isinstance(layer, FrameGroupNorm):
        group_norm = nn.GroupNorm(layer.num_groups, layer.num_channels, layer.eps)
        group_norm.weight, group_norm.bias = layer.weight, layer.bias
        return [group_norm]
    if isinstance(layer, nn.SiLU):
        return [nn.SiLU()]
    if isinstance(layer, Upsample):
        return [nn.Upsample(scale_factor=2.0, mode="nearest"), *_image_layers(layer.block)]
    if isinstance(layer, (ConvBlock, nn.Sequential)):
        return [image_layer for child in layer for image_layer in _image_layers(child)]
    raise TypeError(f"{type(layer).__name__} has no per-frame form: add it here or export the VAE 5-D")


class PerFrame(nn.Module):
    """`layers` (the VAE's encoder or decoder stack) on x [B, C, T, H, W], run as an image network on B·T frames."""

    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.layers = nn.Sequential(*_image_layers(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.layers(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.view(b, t, *y.shape[1:]).transpose(1, 2)


def per_frame_form(vae: VideoVAE, layers: nn.Sequential) -> PerFrame | None:
    """`layers` (of `vae`) as a `PerFrame` image network when none of the VAE's convs looks across frames, else None."""
    return PerFrame(layers) if vae.config.temporal_kernel == 1 else None
