"""Spacetime diffusion transformer over video latents, after facebookresearch/DiT models.py.

Latents [B, C, T, H, W] are cut into spacetime patches (default 1x2x2), each a token. Every block does full
self-attention over all tokens, cross-attention to the caption tokens, and an MLP; the timestep (plus the pooled
caption) modulates each block through adaLN-Zero. Positions are factorised sin-cos computed for the input's own
T x H x W grid, so one model serves several durations, resolutions and aspect ratios.

The timestep may differ per latent frame ([B, T] instead of [B]): frames given as conditioning (an image to
animate, a clip to extend) are clean, t = 0, while the others are noisy, as in Wan2.2's TI2V and LTX-Video. Tokens
are kept grouped by frame, [B, frames, tokens per frame, dim], so each frame's modulation broadcasts over its own
tokens without copying it to every token.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class DiTConfig:
    latent_channels: int = 4
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (time, height, width) over latents
    mlp_ratio: float = 4.0
    text_dim: int = 384
    gradient_checkpointing: bool = False  # recompute each block in backward: less memory, ~30% more compute

    def __post_init__(self):
        self.patch_size = tuple(self.patch_size)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[N] positions -> [N, dim] embedding (half sines, half cosines), as in the original Transformer."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=positions.device) / (dim // 2))
    angles = positions.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def spacetime_pos_embed(dim: int, t: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """[t*h*w, dim] embedding of a token grid in (t, h, w) order: a quarter of the channels for time, the rest
    split between rows and columns."""
    d_t = 2 * (dim // 8)
    d_h = 2 * ((dim - d_t) // 4)
    d_w = dim - d_t - d_h
    grid = torch.meshgrid(*(torch.arange(n, device=device) for n in (t, h, w)), indexing="ij")
    parts = [sincos_1d(d, g.reshape(-1)) for d, g in zip((d_t, d_h, d_w), grid)]
    return torch.cat(parts, dim=1)


class TimestepEmbedder(nn.Module):
    """Scalar t in [0, 1] -> vector, via a sinusoidal code of 1000*t and an MLP."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sincos_1d(self.frequency_size, 1000 * t).to(self.mlp[0].weight.dtype))


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, dim] -> [B, heads, N, dim / heads]. Queries, keys and values are each split from a [B, N, dim]
    projection of their own: a fused attention kernel that takes [B, N, dim] (onnxruntime's MultiHeadAttention)
    then needs no transposes around it."""
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, dim / heads] -> [B, N, dim]."""
    b, h, n, hd = x.shape
    return x.transpose(1, 2).reshape(b, n, h * hd)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: tokens [B, frames, S, dim], attending over all frames' tokens at once."""
        b, f, s, d = x.shape
        q, k, v = (split_heads(p, self.num_heads) for p in self.qkv(x).view(b, f * s, 3 * d).chunk(3, dim=2))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)).view(b, f, s, d))


class CrossAttention(nn.Module):
    """Video tokens attend to caption tokens; padding tokens of the caption are masked out."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.attend(x, self.kv(text), text_mask)

    def attend(self, x: torch.Tensor, text_kv: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """`forward` given the caption's keys and values `self.kv(text)` [B, L, 2*dim]: they depend on the caption
        alone, so a sampler computes them once per video instead of once per step. x: [B, frames, S, dim]."""
        b, f, s, d = x.shape
        n, length = f * s, text_kv.shape[1]
        q = split_heads(self.q(x).view(b, n, d), self.num_heads)
        k, v = (split_heads(p, self.num_heads) for p in text_kv.chunk(2, dim=2))
        # The mask spelled out per query, not broadcast: onnxruntime's MultiHeadAttention takes a bias per query.
        mask = text_mask[:, None, None, :].expand(b, 1, n, length)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(merge_heads(out).view(b, f, s, d))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.conditioned(x, c, self.cross_attn.kv(text), text_mask)

    def conditioned(self, x: torch.Tensor, c: torch.Tensor, text_kv: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """`forward` given this block's cross-attention keys and values of the caption (`CrossAttention.attend`).
        x: tokens [B, frames, S, dim]; c: [B, frames, dim], each frame's timestep + pooled caption."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, :, None].chunk(6, dim=3)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.cross_attn.attend(self.norm2(x), text_kv, text_mask)
        return x + gate_mlp * self.mlp(modulate(self.norm3(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, :, None].chunk(2, dim=3)
        return self.linear(modulate(self.norm(x), shift, scale))


class SpacetimeDiT(nn.Module):
    """Predicts the rectified-flow velocity of noisy latents given the timestep and caption tokens."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        dim, (pt, ph, pw) = config.hidden_size, config.patch_size
        self.patch_dim = config.latent_channels * pt * ph * pw
        self.x_embedder = nn.Linear(self.patch_dim, dim)
        self.t_embedder = TimestepEmbedder(dim)
        self.text_embedder = nn.Sequential(
            nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        # The pooled caption joins the timestep in adaLN, a global signal that makes prompt following learn fast.
        self.text_pooled_embedder = nn.Linear(config.text_dim, dim)
        self.blocks = nn.ModuleList(DiTBlock(dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth))
        self.final_layer = FinalLayer(dim, self.patch_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(basic_init)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # adaLN-Zero: every block starts as the identity, and the output starts at zero velocity.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, (T/pt)(H/ph)(W/pw), C*pt*ph*pw]."""
        b, c, t, h, w = x.shape
        pt, ph, pw = self.config.patch_size
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latents of T x H x W = {t}x{h}x{w} are not divisible by patch_size {self.config.patch_size}")
        x = x.view(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, -1, self.patch_dim)

    def unpatchify(self, x: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
        b, c = x.shape[0], self.config.latent_channels
        pt, ph, pw = self.config.patch_size
        x = x.view(b, t // pt, h // ph, w // pw, c, pt, ph, pw)
        return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, c, t, h, w)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """x: latents [B, C, T, H, W]; t: [B] or per latent frame [B, T], in [0, 1] (1 = pure noise, 0 = a given
        frame); text: [B, L, text_dim]; text_mask: bool [B, L]."""
        pooled, text_tokens = self.embed_caption(text, text_mask)

        # Each block projects the caption to its K/V inside its own forward: FSDP shards per DiTBlock
        # (training/trainer.py), so a block's weights may only be read there.
        def run(block: DiTBlock):
            if self.config.gradient_checkpointing and self.training:
                return lambda tokens, c: checkpoint(block, tokens, c, text_tokens, text_mask, use_reentrant=False)
            return lambda tokens, c: block(tokens, c, text_tokens, text_mask)

        return self._velocity(x, t, pooled, [run(block) for block in self.blocks])

    def embed_caption(self, text: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The caption's share of the conditioning: the pooled-caption embedding [B, dim] (added to the timestep's
        in adaLN) and the projected caption tokens [B, L, dim] the blocks cross-attend to."""
        mask = text_mask.to(text.dtype)[..., None]
        pooled = (text * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.text_pooled_embedder(pooled), self.text_embedder(text)

    def caption_condition(self, text: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything the caption contributes, for `conditioned_velocity`: the pooled embedding [B, dim] and every
        block's cross-attention K/V [depth, B, L, 2*dim]. It does not depend on the latents or t: once per video."""
        pooled, text_tokens = self.embed_caption(text, text_mask)
        return pooled, torch.stack([block.cross_attn.kv(text_tokens) for block in self.blocks])

    def conditioned_velocity(
        self, x: torch.Tensor, t: torch.Tensor, pooled: torch.Tensor, text_kv: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """`forward` from `caption_condition`'s outputs instead of the caption tokens (inference only)."""
        blocks = [functools.partial(block.conditioned, text_kv=kv, text_mask=text_mask)
                  for block, kv in zip(self.blocks, text_kv)]  # fmt: skip
        return self._velocity(x, t, pooled, blocks)

    def frame_timesteps(self, t: torch.Tensor, frames: int) -> torch.Tensor:
        """[B] or [B, frames] timesteps -> [B, frames // pt], one per token frame; a token frame spanning several
        latent frames takes the noisiest of them."""
        pt = self.config.patch_size[0]
        if t.ndim == 1:
            return t[:, None].expand(-1, frames // pt)
        if t.shape[1] != frames:
            raise ValueError(f"got timesteps for {t.shape[1]} latent frames, the latents have {frames}")
        return t.view(t.shape[0], frames // pt, pt).amax(dim=2) if pt > 1 else t

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, pooled: torch.Tensor, blocks: list) -> torch.Tensor:
        """Patch, embed and unpatch around `blocks`, each a (tokens, c) -> tokens call of one DiTBlock."""
        b, _, frames, height, width = x.shape
        pt, ph, pw = self.config.patch_size
        pos = spacetime_pos_embed(self.config.hidden_size, frames // pt, height // ph, width // pw, x.device)
        tokens = self.x_embedder(self.patchify(x)) + pos.to(x.dtype)  # [B, N, dim], N in (t, h, w) order
        tokens = tokens.view(b, frames // pt, -1, tokens.shape[-1])  # [B, frames, S, dim]: grouped by token frame
        t = self.frame_timesteps(t, frames)
        c = self.t_embedder(t.reshape(-1)).view(*t.shape, -1) + pooled[:, None]  # [B, frames, dim]
        for block in blocks:
            tokens = block(tokens, c)
        return self.unpatchify(self.final_layer(tokens, c).flatten(1, 2), frames, height, width)
