"""VAE reconstruction against its compression: the preset's VAE and variants of it, each trained the same number of
steps on the same curated shards, then scored on the same validation clips (PSNR, SSIM, the share of background
pixels left black) in the same run. Not a test: prints a table, one row per variant.

The levers the quality issue names first: how time is compressed (frames stacked per latent frame, `r`), latent
channels, width. The DiT pays for a smaller `r` in tokens (one latent frame per `r` frames), so each row also says
the DiT's tokens per default-size clip.

    python bench/vae_levers.py --shards artifacts/training_clips --steps 400
    python bench/vae_levers.py --shards artifacts/training_clips --steps 400 --variants preset r2 r1
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from videodit.config import load_preset
from videodit.evaluation.image_quality import PSNR_CAP_DB, psnr, ssim
from videodit.evaluation.model_report import reconstruct_clips, validation_clips
from videodit.models.vae import VideoVAE
from videodit.training.vae_module import VAEModule, train_vae

# name -> VAEConfig fields that differ from the preset's (r: temporal compression; lc: latent channels).
VARIANTS = {
    "preset": {},
    "r2": {"temporal_compression": 2},
    "r1": {"temporal_compression": 1},
    "r2-lc8": {"temporal_compression": 2, "latent_channels": 8},
    "r4-lc16": {"latent_channels": 16},
    "wide64": {"channels": (64, 64, 64)},
}
# A pixel of the black background that the VAE lights above this (0-255) is speckle.
SPECKLE_LEVEL = 24


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.processor())
    return f"{model} ({'AVX512-BF16' if 'avx512_bf16' in info else 'no native bf16'}), {torch.get_num_threads()} threads"


def black_background_share(real: np.ndarray, recon: np.ndarray) -> float:
    """Of the pixels black in the real clip, the share that stays (near) black in the reconstruction."""
    background = real.max(axis=-1) < SPECKLE_LEVEL
    return float((recon.max(axis=-1)[background] < SPECKLE_LEVEL).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, required=True, help="a training_clips folder (curated shards)")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--val-clips", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    base = load_preset(args.preset)
    clips, _ = validation_clips(args.shards, args.val_clips)
    print(f"CPU: {cpu_name()}; preset {args.preset}, {args.steps} steps, batch {base.vae_train.batch_size}, "
          f"{len(clips)} validation clips of {clips[0].shape}\n")
    print("| variant | r | latent ch | compression | DiT tokens | train s | PSNR dB | SSIM | background black |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.variants:
        vae_config = replace(base.vae, **VARIANTS[name])
        train = replace(base.vae_train, max_steps=args.steps, val_every_steps=args.steps, checkpoint_every_steps=args.steps)
        preset = replace(base, vae=vae_config, vae_train=train)
        with tempfile.TemporaryDirectory() as out:
            started = time.monotonic()
            train_vae(args.shards, preset, Path(out))
            seconds = time.monotonic() - started
            vae = VAEModule.load_from_checkpoint(next(Path(out).rglob("last.ckpt")), map_location="cpu").vae.eval()
        recon = reconstruct_clips(vae, clips)
        latent = VideoVAE(vae_config).latent_shape(base.frames, base.height, base.width)
        _, patch_h, patch_w = base.dit.patch_size
        tokens = latent[1] * (latent[2] // patch_h) * (latent[3] // patch_w)
        compression = base.frames * base.height * base.width * 3 / np.prod(latent)
        print(f"| {name} | {vae_config.temporal_compression} | {vae_config.latent_channels} | {compression:.0f}× | {tokens} "
              f"| {seconds:.0f} | {np.mean([min(psnr(a, b), PSNR_CAP_DB) for a, b in zip(clips, recon)]):.1f} "
              f"| {np.mean([ssim(a, b) for a, b in zip(clips, recon)]):.2f} "
              f"| {np.mean([black_background_share(a, b) for a, b in zip(clips, recon)]):.1%} |", flush=True)


if __name__ == "__main__":
    main()
