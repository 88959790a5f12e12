"""Training with PyTorch Lightning: configs and presets, data modules, VAE and DiT modules, latent caching, the Trainer.

Entry points for the pipeline live in `videodit.training.trainer`: `train_vae`, `train_dit`; latents are cached with
`videodit.training.latents.encode_latents`, and `DiTModule.generate` makes videos.
"""
