"""The text-to-video model: frozen text encoder, causal video VAE, spacetime DiT and the rectified-flow objective."""

from videodit.models.dit import DiTConfig, SpacetimeDiT
from videodit.models.rectified_flow import rectified_flow_loss, sample_euler, sample_timesteps
from videodit.models.text_encoder import MiniLMTextEncoder, TextEncoder
from videodit.models.vae import VAEConfig, VideoVAE

__all__ = [
    "DiTConfig",
    "MiniLMTextEncoder",
    "SpacetimeDiT",
    "TextEncoder",
    "VAEConfig",
    "VideoVAE",
    "rectified_flow_loss",
    "sample_euler",
    "sample_timesteps",
]
