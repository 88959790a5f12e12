"""Causal 3D-convolutional video VAE (CausalVAE / CogVideoX style).

Layout is [B, C, T, H, W] in [-1, 1]. Time is compressed first, by stacking r consecutive frames into the
channels of one latent frame (`frames_to_channels`); causal 3D convs then work on latent frames and strided
convs compress space. Every temporal operation is causal, so latent frame 0 depends on video frame 0 alone:
an image is a 1-frame video and encodes exactly like the first frame of a clip.

Frame rule: with temporal compression r, T frames are padded by repeating the last frame up to 1 + r*k
(k = ceil((T-1)/r)), encoded to 1 + k latent frames, and `decode(z, num_frames=T)` trims the output back to T.
H and W must be multiples of the spatial compression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INITIAL_LOGVAR = -6.0


def _power_of_two(name: str, value: int) -> None:
    if value < 1 or value & (value - 1):
        raise ValueError(f"{name}={value} must be a power of two")


@dataclass
class VAEConfig:
    in_channels: int = 3
    latent_channels: int = 4
    # Width of each resolution level; there are log2(spatial_compression) + 1 levels.
    channels: tuple[int, ...] = (64, 128, 256, 256)
    blocks_per_level: int = 1  # conv blocks at each level besides the ones that change resolution
    temporal_compression: int = 4
    spatial_compression: int = 8
    # Time taps of every causal conv, counted in latent frames (each already holds temporal_compression frames);
    # 1 codes every latent frame on its own.
    temporal_kernel: int = 3

    def __post_init__(self):
        self.channels = tuple(self.channels)
        _power_of_two("spatial_compression", self.spatial_compression)
        if self.temporal_compression < 1:
            raise ValueError(f"temporal_compression={self.temporal_compression} must be at least 1")
        n_levels = int(math.log2(self.spatial_compression)) + 1
        if len(self.channels) != n_levels:
            raise ValueError(
                f"channels={self.channels} has {len(self.channels)} levels; "
                f"spatial_compression={self.spatial_compression} needs {n_levels}"
            )
        if self.temporal_kernel < 1:
            raise ValueError(f"temporal_kernel={self.temporal_kernel} must be at least 1")


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [3, T, H, W] in [-1, 1], the pixel range the VAE codes; the inverse of
    `videodit.sampling.to_uint8_videos`."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0


class CausalConv3d(nn.Module):
    """3D convolution whose output at frame t sees frames <= t: the past is padded by repeating the first frame.

    The taps on past frames start at zero, so a fresh network codes every frame on its own and learns what to
    take from the past (the 2D-to-3D "inflation" init of MAGVIT and CogVideoX; random past taps train slower).
    """

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int, spatial_stride: int = 1):
        super().__init__()
        self.time_pad = temporal_kernel - 1
        self.conv = nn.Conv3d(
            in_channels, out_channels, (temporal_kernel, 3, 3), stride=(1, spatial_stride, spatial_stride),
            padding=(0, 1, 1),
        )  # fmt: skip
        with torch.no_grad():
            self.conv.weight[:, :, :-1].zero_()

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


class ConvBlock(nn.Sequential):
    """Causal conv, per-frame GroupNorm, SiLU; a stride of 2 halves H and W."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int, spatial_stride: int = 1):
        super().__init__(
            CausalConv3d(in_channels, out_channels, temporal_kernel, spatial_stride), norm(out_channels), nn.SiLU()
        )


class Upsample(nn.Module):
    """Doubles H and W: nearest-neighbour, then a conv block."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int):
        super().__init__()
        self.block = ConvBlock(in_channels, out_channels, temporal_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


def frames_to_channels(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, C, 1 + r*k, H, W] -> [B, C*r, 1 + k, H, W]: each latent frame holds r consecutive frames as channels.

    r - 1 copies of frame 0 go in front, so latent frame 0 holds frame 0 alone (the causal layout) and latent
    frame j >= 1 holds frames r(j-1)+1 .. rj. Compressing time by a reshape, not by pooling, hands the network
    every frame's pixels: pooled frames must be told apart by learned temporal filters first, which trains slowly.
    """
    b, c, t, h, w = x.shape
    n = (t - 1) // r + 1  # latent frames
    x = torch.cat([x[:, :, :1].expand(-1, -1, r - 1, -1, -1), x], dim=2)
    return x.view(b, c, n, r, h, w).transpose(2, 3).reshape(b, c * r, n, h, w)


def channels_to_frames(x: torch.Tensor, r: int) -> torch.Tensor:
    """The inverse of `frames_to_channels`: [B, C*r, 1 + k, H, W] -> [B, C, 1 + r*k, H, W]."""
    b, cr, n, h, w = x.shape
    x = x.view(b, cr // r, r, n, h, w).transpose(2, 3).reshape(b, cr // r, n * r, h, w)
    return x[:, :, r - 1 :]


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


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        ch, kt = config.channels, config.temporal_kernel
        self.temporal_compression = config.temporal_compression
        layers: list[nn.Module] = [ConvBlock(config.in_channels * config.temporal_compression, ch[0], kt)]
        for level, width in enumerate(ch):
            layers += [ConvBlock(width, width, kt) for _ in range(config.blocks_per_level)]
            if level < len(ch) - 1:
                layers.append(ConvBlock(width, ch[level + 1], kt, spatial_stride=2))
        layers.append(CausalConv3d(ch[-1], 2 * config.latent_channels, kt))
        self.layers = nn.Sequential(*layers)
        with torch.no_grad():
            # Posterior std starts at exp(-3) = 0.05: at std 1 the sampling noise drowns the small latent
            # differences (a shape's colour) that a fresh encoder produces, and they take far longer to learn.
            layers[-1].conv.bias[config.latent_channels :] = INITIAL_LOGVAR

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(frames_to_channels(x, self.temporal_compression))


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        ch, kt = config.channels, config.temporal_kernel
        self.temporal_compression = config.temporal_compression
        layers: list[nn.Module] = [ConvBlock(config.latent_channels, ch[-1], kt)]
        for level in reversed(range(len(ch))):
            layers += [ConvBlock(ch[level], ch[level], kt) for _ in range(config.blocks_per_level)]
            if level > 0:
                layers.append(Upsample(ch[level], ch[level - 1], kt))
        layers.append(CausalConv3d(ch[0], config.in_channels * config.temporal_compression, kt))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return channels_to_frames(self.layers(z), self.temporal_compression)


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
