"""Rectified flow (flow matching): x_t = (1 - t) * x_0 + t * noise, the model predicts the velocity noise - x_0.

t = 0 is data and t = 1 is noise; sampling integrates the velocity from t = 1 down to t = 0 with Euler steps
(`videodit.sampling` owns the schedule, the noise and the loop; `GuidedEulerStep` is the torch step, the same
module that is exported to ONNX).

Frame conditioning (`videodit.conditioning`): some latent frames may be given. They sit clean in x_t at t = 0,
the loss ignores them, and the sampler keeps them exactly; training draws them with `conditioning_frames`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videodit.models.text_encoder import TextEncoder, encode_with_null_caption
from videodit.conditioning import Encode, FrameCondition, context_latent_frames, given_latents, start_latents
from videodit.models.vae import VideoVAE, to_video_tensor
from videodit.sampling import euler, initial_noise, to_uint8_videos


def sample_timesteps(
    n: int, mean: float = 0.0, std: float = 1.0, device: torch.device | None = None, generator=None
) -> torch.Tensor:
    """Logit-normal t in (0, 1) (SD3): most samples land mid-way, where the velocity is hardest to predict."""
    return torch.sigmoid(mean + std * torch.randn(n, device=device, generator=generator))


def conditioning_frames(
    n: int, frames: int, fraction: float, device: torch.device | None = None, generator=None
) -> torch.Tensor:
    """bool [n, frames]: the latent frames given to each sample. A `fraction` of the samples get one of the
    generator's modes, drawn evenly: the first frame (animate an image), the first k (continue a clip), the last k
    (lead into one) or the first and last (interpolate); the rest are text-only. Half the k are the context the
    generator's windows are given when they extend a video (`context_latent_frames`), half uniform from 1 to
    frames - 1 (shorter clips to extend): a uniform k alone trained that mask in 1 of 8 such samples at 9 latent
    frames. One frame is always left noisy."""
    index = torch.arange(frames, device=device)
    conditioned = torch.rand(n, device=device, generator=generator) < fraction
    mode = torch.randint(0, 4, (n, 1), device=device, generator=generator)
    uniform_k = torch.randint(1, max(frames, 2), (n, 1), device=device, generator=generator)
    as_context = torch.rand(n, 1, device=device, generator=generator) < 0.5
    context_k = torch.where(mode == 2, max(1, context_latent_frames(frames, backward=True)),
                            max(1, context_latent_frames(frames)))  # fmt: skip
    k = torch.where(as_context, context_k, uniform_k)
    first, last = index == 0, index == frames - 1
    given = torch.where(mode == 0, first, torch.where(mode == 1, index < k, torch.where(mode == 2, index >= frames - k, first | last)))
    given = given & conditioned[:, None]
    return given & ~given.all(dim=1, keepdim=True)  # a 1- or 2-frame clip fully given keeps no condition


def rectified_flow_loss(
    model: nn.Module,
    latents: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    timestep_mean: float = 0.0,
    timestep_std: float = 1.0,
    generator: torch.Generator | None = None,
    condition_fraction: float = 0.0,
) -> torch.Tensor:
    """Mean squared error between predicted and true velocity at a random point of each straight noise path, over
    the frames not given: a `condition_fraction` of the samples have `conditioning_frames` clean, at t = 0.

    With a `generator` (on any device) the noise, timesteps and given frames come from it, and no global RNG is
    touched.
    """
    device = latents.device if generator is None else generator.device
    b, frames = latents.shape[0], latents.shape[2]
    noise = torch.randn(latents.shape, device=device, generator=generator).to(latents)
    t = sample_timesteps(b, timestep_mean, timestep_std, device, generator).to(latents.device)
    if condition_fraction <= 0:
        t_ = t.view(-1, *([1] * (latents.ndim - 1)))
        velocity = model((1 - t_) * latents + t_ * noise, t, text, text_mask)
        return F.mse_loss(velocity.float(), (noise - latents).float())
    given = conditioning_frames(b, frames, condition_fraction, device, generator).to(latents.device)
    t_frames = torch.where(given, 0.0, t[:, None])  # [B, T]: a given frame sits at t = 0, i.e. clean
    t_ = t_frames[:, None, :, None, None]
    velocity = model((1 - t_) * latents + t_ * noise, t_frames, text, text_mask)
    error = (velocity.float() - (noise - latents).float()).square()
    noisy = (~given)[:, None, :, None, None].expand_as(error)
    return error[noisy].mean()


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

    Conditional and unconditional passes run as one batch, conditioned by `GuidedCondition`'s outputs. The latent
    frames marked in `given_frames` [B, T] are `given_latents`: at t = 0 for the DiT, and returned unchanged.
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
        given_latents: torch.Tensor,
        given_frames: torch.Tensor,
    ) -> torch.Tensor:
        b = latents.shape[0]
        x_in = torch.cat([latents, latents])
        t_frames = torch.where(given_frames, torch.zeros_like(t), t)  # [B, T]
        velocity = self.dit.conditioned_velocity(x_in, torch.cat([t_frames, t_frames]), pooled, text_kv, cfg_mask).float()
        # Slices, not chunk(2): chunk's ceil-division guard would pin the batch size during export.
        cond, uncond = velocity[:b], velocity[b:]
        stepped = latents + (t_next - t) * (uncond + guidance * (cond - uncond))
        return torch.where(given_frames[:, None, :, None, None], given_latents, stepped)


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
    given_latents: torch.Tensor | None = None,
    given_frames: torch.Tensor | None = None,
) -> torch.Tensor:
    """Latents at t = timesteps[-1] from `noise` at timesteps[0]: the captions' `GuidedCondition` once, then one
    `GuidedEulerStep` per pair of the schedule. `noise` already holds the given latent frames (`start_latents`);
    none given: text to video."""
    step, device = GuidedEulerStep(dit), noise.device
    if given_frames is None:
        given_latents, given_frames = torch.zeros_like(noise), torch.zeros(noise.shape[0], noise.shape[2], dtype=torch.bool, device=device)
    conditioning = (torch.tensor(guidance, device=device), *GuidedCondition(dit)(text, text_mask, null_text, null_mask),
                    given_latents, given_frames)  # fmt: skip

    def guided_step(latents: torch.Tensor, t: np.float32, t_next: np.float32) -> torch.Tensor:
        return step(latents, torch.tensor(t, device=device), torch.tensor(t_next, device=device), *conditioning)

    return euler(guided_step, noise, timesteps)


def vae_encoder(vae: VideoVAE, latent_shift: float = 0.0, latent_scale: float = 1.0) -> Encode:
    """The `Encode` of `videodit.conditioning` in torch: uint8 frames -> the DiT's normalised latents (posterior
    mean), as `encode_latents` caches them for training."""
    device = next(vae.parameters()).device

    @torch.no_grad()
    def encode(frames: np.ndarray) -> np.ndarray:
        mean = vae.encode(to_video_tensor(frames)[None].to(device)).mean
        return ((mean[0] - latent_shift) * latent_scale).float().cpu().numpy()

    return encode


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
    conditions: list[FrameCondition | None] | None = None,
) -> np.ndarray:
    """uint8 videos [B, T, H, W, 3] of `video_shape` (frames, height, width), as `OnnxVideoGenerator` makes them.

    The noise comes from `videodit.sampling` (prompt i from seeds[i], on the CPU), so a (prompt, seed) gives the
    same video alone or in a batch and on any device; `latent_shift/scale` undo the DiT's latent normalisation.
    conditions: per prompt, the frames its clip begins/ends with (`videodit.conditioning`), or None.
    """
    frames, height, width = video_shape
    device = next(dit.parameters()).device
    conditioning = [v.to(device) for v in encode_with_null_caption(text_encoder, prompts)]
    latent_shape = vae.latent_shape(frames, height, width)
    noise = initial_noise(seeds, latent_shape)
    given = given_latents(conditions or [None] * len(prompts), latent_shape, vae.config.temporal_compression,
                          (height, width), vae_encoder(vae, latent_shift, latent_scale))  # fmt: skip
    start = torch.from_numpy(start_latents(noise, *given)).to(device)
    given_z, given_frames = (torch.from_numpy(v).to(device) for v in given)
    latents = sample_euler(dit, start, *conditioning, timesteps, guidance, given_z, given_frames)
    video = vae.decode(latents / latent_scale + latent_shift, num_frames=frames)
    return to_uint8_videos(video.float().cpu().numpy())
