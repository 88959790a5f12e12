"""Rectified flow (flow matching): x_t = (1 - t) * x_0 + t * noise, the model predicts the velocity noise - x_0.

t = 0 is data and t = 1 is noise; sampling integrates the velocity from t = 1 down to t = 0 with Euler steps
(`videodit.sampling` owns the schedule, the noise and the loop; `GuidedEulerStep` is the torch step, the same
module that is exported to ONNX).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videodit.models.text_encoder import TextEncoder, encode_with_null_caption
from videodit.models.vae import VideoVAE
from videodit.sampling import euler, initial_noise, to_uint8_videos


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
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean squared error between predicted and true velocity at a random point of each straight noise path.

    With a `generator` (on any device) the noise and timesteps come from it, and no global RNG is touched.
    """
    device = latents.device if generator is None else generator.device
    noise = torch.randn(latents.shape, device=device, generator=generator).to(latents)
    t = sample_timesteps(latents.shape[0], timestep_mean, timestep_std, device, generator).to(latents.device)
    t_ = t.view(-1, *([1] * (latents.ndim - 1)))
    x_t = (1 - t_) * latents + t_ * noise
    velocity = model(x_t, t, text, text_mask)
    return F.mse_loss(velocity.float(), (noise - latents).float())


class GuidedCondition(nn.Module):
    """What every guided step takes from the captions, computed once per video: the CFG batch (the prompts, then
    the empty caption once per prompt) as the DiT's `caption_condition` (pooled embedding [2B, dim], cross-attention
    K/V [depth, 2B, L, 2*dim]) and its mask [2B, L]. null_text/null_mask is the encoded empty caption [1, L, D].
    `export_bundle` exports it as condition.onnx."""

    def __init__(self, dit: nn.Module):
        super().__init__()
        self.dit = dit

    def forward(
        self, text: torch.Tensor, text_mask: torch.Tensor, null_text: torch.Tensor, null_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = text.shape[0]
        cfg_mask = torch.cat([text_mask, null_mask.expand(b, -1)])
        pooled, text_kv = self.dit.caption_condition(torch.cat([text, null_text.expand(b, -1, -1)]), cfg_mask)
        return pooled, text_kv, cfg_mask


class GuidedEulerStep(nn.Module):
    """One Euler step with classifier-free guidance: the CFG-batched DiT call, the guidance mix and the update.

    Conditional and unconditional passes run as one batch, conditioned by `GuidedCondition`'s outputs.
    `sample_euler` steps with it and `export_bundle` exports it as dit.onnx.
    """

    def __init__(self, dit: nn.Module):
        super().__init__()
        self.dit = dit

    def forward(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        guidance: torch.Tensor,
        pooled: torch.Tensor,
        text_kv: torch.Tensor,
        cfg_mask: torch.Tensor,
    ) -> torch.Tensor:
        b = latents.shape[0]
        x_in = torch.cat([latents, latents])
        velocity = self.dit.conditioned_velocity(x_in, t.expand(2 * b), pooled, text_kv, cfg_mask).float()
        # Slices, not chunk(2): chunk's ceil-division guard would pin the batch size during export.
        cond, uncond = velocity[:b], velocity[b:]
        return latents + (t_next - t) * (uncond + guidance * (cond - uncond))


@torch.no_grad()
def sample_euler(
    dit: nn.Module,
    noise: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    timesteps: np.ndarray,
    guidance: float,
) -> torch.Tensor:
    """Latents at t = timesteps[-1] from `noise` at timesteps[0]: the captions' `GuidedCondition` once, then one
    `GuidedEulerStep` per pair of the schedule."""
    step, device = GuidedEulerStep(dit), noise.device
    conditioning = (torch.tensor(guidance, device=device), *GuidedCondition(dit)(text, text_mask, null_text, null_mask))

    def guided_step(latents: torch.Tensor, t: np.float32, t_next: np.float32) -> torch.Tensor:
        return step(latents, torch.tensor(t, device=device), torch.tensor(t_next, device=device), *conditioning)

    return euler(guided_step, noise, timesteps)


@torch.no_grad()
def generate_videos(
    vae: VideoVAE,
    dit: nn.Module,
    text_encoder: TextEncoder,
    prompts: list[str],
    seeds: list[int],
    timesteps: np.ndarray,
    guidance: float,
    video_shape: tuple[int, int, int],
    latent_shift: float = 0.0,
    latent_scale: float = 1.0,
) -> np.ndarray:
    """uint8 videos [B, T, H, W, 3] of `video_shape` (frames, height, width), as `OnnxVideoGenerator` makes them.

    The noise comes from `videodit.sampling` (prompt i from seeds[i], on the CPU), so a (prompt, seed) gives the
    same video alone or in a batch and on any device; `latent_shift/scale` undo the DiT's latent normalisation.
    """
    frames, height, width = video_shape
    device = next(dit.parameters()).device
    conditioning = [v.to(device) for v in encode_with_null_caption(text_encoder, prompts)]
    noise = torch.from_numpy(initial_noise(seeds, vae.latent_shape(frames, height, width))).to(device)
    latents = sample_euler(dit, noise, *conditioning, timesteps, guidance)
    video = vae.decode(latents / latent_scale + latent_shift, num_frames=frames)
    return to_uint8_videos(video.float().cpu().numpy())
