"""Causal 3D-convolutional video VAE (CausalVAE / CogVideoX style) plus PSNR and SSIM.

Layout is [B, C, T, H, W] in [-1, 1]. Every temporal operation is causal, so latent frame 0 depends on
video frame 0 alone: an image is a 1-frame video and encodes exactly like the first frame of a clip.

Frame rule: with temporal compression r, T frames are padded by repeating the last frame up to 1 + r*k
(k = ceil((T-1)/r)), encoded to 1 + k latent frames, and `decode(z, num_frames=T)` trims the output back to T.
H and W must be multiples of the spatial compression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videodit.training.config import VAEConfig


class CausalConv3d(nn.Module):
    """3D convolution whose output at frame t sees frames <= t: the past is padded by repeating the first frame."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, spatial_stride: int = 1):
        super().__init__()
        self.time_pad = kernel_size - 1
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, stride=(1, spatial_stride, spatial_stride),
            padding=(0, kernel_size // 2, kernel_size // 2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        return self.conv(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame: normalising across time would leak future frames into the past."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        grouped = x.view(b, self.num_groups, c // self.num_groups, t, h, w)
        var, mean = torch.var_mean(grouped, dim=(2, 4, 5), keepdim=True, correction=0)
        x = ((grouped - mean) * torch.rsqrt(var + self.eps)).view(b, c, t, h, w)
        return x * self.weight.view(1, c, 1, 1, 1) + self.bias.view(1, c, 1, 1, 1)


def norm(channels: int) -> FrameGroupNorm:
    return FrameGroupNorm(min(32, channels // 4), channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1, self.conv1 = norm(in_channels), CausalConv3d(in_channels, out_channels)
        self.norm2, self.conv2 = norm(out_channels), CausalConv3d(out_channels, out_channels)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halves H and W with a strided conv; optionally maps 1 + 2m frames to 1 + m (frame 0 kept on its own)."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, spatial_stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal and x.shape[2] > 1:
            rest = F.avg_pool3d(x[:, :, 1:], kernel_size=(2, 1, 1))
            x = torch.cat([x[:, :, :1], rest], dim=2)
        return self.conv(x)


class Upsample(nn.Module):
    """Doubles H and W; optionally maps 1 + m frames to 1 + 2m (the inverse of Downsample)."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal and x.shape[2] > 1:
            x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(2, dim=2)], dim=2)
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


@dataclass
class DiagonalGaussian:
    """The encoder's posterior q(z | x): a mean and log-variance per latent element."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self) -> torch.Tensor:
        return self.mean + torch.exp(0.5 * self.logvar) * torch.randn_like(self.mean)

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), averaged over latent elements."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).mean()


def levels(config: VAEConfig) -> tuple[int, int]:
    """(number of spatial 2x steps, number of temporal 2x steps) the config asks for."""
    return int(math.log2(config.spatial_compression)), int(math.log2(config.temporal_compression))


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        n_spatial, n_temporal = levels(config)
        ch = config.channels
        self.conv_in = CausalConv3d(config.in_channels, ch[0])
        blocks: list[nn.Module] = []
        for level, width in enumerate(ch):
            prev = ch[max(level - 1, 0)]
            blocks += [ResBlock(prev if i == 0 else width, width) for i in range(config.blocks_per_level)]
            if level < n_spatial:
                # Temporal compression happens in the first (high-resolution) levels: the later convs see fewer frames.
                blocks.append(Downsample(width, temporal=level < n_temporal))
        self.blocks = nn.Sequential(*blocks, ResBlock(ch[-1], ch[-1]))
        self.norm_out = norm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * config.latent_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(x)))))


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        n_spatial, n_temporal = levels(config)
        ch = config.channels
        self.conv_in = CausalConv3d(config.latent_channels, ch[-1])
        blocks: list[nn.Module] = [ResBlock(ch[-1], ch[-1])]
        for level in reversed(range(len(ch))):
            width, prev = ch[level], ch[min(level + 1, len(ch) - 1)]
            blocks += [ResBlock(prev if i == 0 else width, width) for i in range(config.blocks_per_level)]
            if level > 0:
                blocks.append(Upsample(width, temporal=level - 1 < n_temporal))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = norm(ch[0])
        self.conv_out = CausalConv3d(ch[0], config.in_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z)))))


class VideoVAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def latent_frames(self, num_frames: int) -> int:
        return 1 + math.ceil((num_frames - 1) / self.config.temporal_compression)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        s = self.config.spatial_compression
        return (self.config.latent_channels, self.latent_frames(num_frames), height // s, width // s)

    def pad_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Repeat the last frame until T = 1 + r*k, the lengths the causal downsampling maps exactly."""
        b, c, t, h, w = x.shape
        s = self.config.spatial_compression
        if h % s or w % s:
            raise ValueError(f"video of {h}x{w} pixels: height and width must be multiples of {s} (spatial compression)")
        missing = 1 + (self.latent_frames(t) - 1) * self.config.temporal_compression - t
        return torch.cat([x, x[:, :, -1:].expand(-1, -1, missing, -1, -1)], dim=2) if missing else x

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected video [B, {self.config.in_channels}, T, H, W], got {tuple(x.shape)}")
        mean, logvar = self.encoder(self.pad_frames(x)).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0))

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Latents [B, C, t, h, w] -> video [B, 3, num_frames, H, W]; num_frames defaults to 1 + r*(t-1)."""
        return self.decoder(z)[:, :, :num_frames]

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(x)
        z = posterior.sample() if sample else posterior.mean
        return self.decode(z, num_frames=x.shape[2]), posterior
