"""Rectified flow (flow matching): x_t = (1 - t) * x_0 + t * noise, the model predicts the velocity noise - x_0.

t = 0 is data and t = 1 is noise; sampling integrates the velocity from t = 1 down to t = 0 with Euler steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sample_timesteps(
    n: int, mean: float = 0.0, std: float = 1.0, device: torch.device | None = None, generator=None
) -> torch.Tensor:
    """Logit-normal t in (0, 1) (SD3): most samples land mid-way, where the velocity is hardest to predict."""
    return torch.sigmoid(mean + std * torch.randn(n, device=device, generator=generator))


def rectified_flow_loss(
    model: nn.Module,
    latents: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    timestep_mean: float = 0.0,
    timestep_std: float = 1.0,
) -> torch.Tensor:
    """Mean squared error between predicted and true velocity at a random point of each straight noise path."""
    noise = torch.randn_like(latents)
    t = sample_timesteps(latents.shape[0], timestep_mean, timestep_std, device=latents.device)
    t_ = t.view(-1, *([1] * (latents.ndim - 1)))
    x_t = (1 - t_) * latents + t_ * noise
    velocity = model(x_t, t, text, text_mask)
    return F.mse_loss(velocity.float(), (noise - latents).float())


@torch.no_grad()
def sample_euler(
    model: nn.Module,
    noise: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    steps: int = 25,
    guidance_scale: float = 4.0,
) -> torch.Tensor:
    """Integrate from noise (t = 1) to latents (t = 0) with `steps` Euler steps and classifier-free guidance.

    null_text/null_mask is the encoded empty caption ([1, L, D] or [B, L, D]). Conditional and unconditional
    passes run as one batch. Deterministic for a given `noise`: draw it from a seeded torch.Generator.
    """
    b = noise.shape[0]
    use_cfg = guidance_scale != 1.0
    if use_cfg:
        text = torch.cat([text, null_text.expand(b, -1, -1)])
        text_mask = torch.cat([text_mask, null_mask.expand(b, -1)])
    timesteps = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    x = noise
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        x_in = torch.cat([x, x]) if use_cfg else x
        velocity = model(x_in, t.expand(x_in.shape[0]), text, text_mask).float()
        if use_cfg:
            cond, uncond = velocity.chunk(2)
            velocity = uncond + guidance_scale * (cond - uncond)
        x = x + (t_next - t) * velocity
    return x
