"""The text-to-video model: frozen text encoder, causal video VAE, spacetime DiT and the rectified-flow objective."""

from videodit.models.dit import DiTConfig, SpacetimeDiT
from videodit.models.rectified_flow import (
    GuidedCondition, GuidedEulerStep, generate_videos, rectified_flow_loss, sample_euler, sample_timesteps,
)  # fmt: skip
from videodit.models.text_encoder import MiniLMTextEncoder, TextEncoder
from videodit.models.vae import VAEConfig, VideoVAE

__all__ = [
    "DiTConfig",
    "GuidedCondition",
    "GuidedEulerStep",
    "MiniLMTextEncoder",
    "SpacetimeDiT",
    "TextEncoder",
    "VAEConfig",
    "VideoVAE",
    "generate_videos",
    "rectified_flow_loss",
    "sample_euler",
    "sample_timesteps",
]
