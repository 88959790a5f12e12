"""Lightning module that trains the VideoVAE (L1 and/or MSE, foreground-weighted, + KL), and `train_vae`,
the pipeline's entry point.

No perceptual or adversarial term: LPIPS needs pretrained VGG weights we cannot download, and on the
synthetic shapes set the pixel losses already reconstruct colour, shape and motion.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import lightning as L
import torch

from videodit.evaluation.image_quality import PSNR_CAP_DB, psnr, ssim
from videodit.models.vae import VAEConfig, VideoVAE
from videodit.sampling import to_uint8_videos
from videodit.config import ProjectConfig, VAETrainConfig
from videodit.training.datamodule import ClipDataModule
from videodit.training.trainer import build_trainer, grad_norm, warmup_cosine_adamw

# Pixels in [-1, 1]: 0.1 is 13 of 255 levels, above codec noise on a flat background.
FOREGROUND_THRESHOLD = 0.1


def reconstruction_loss(recon: torch.Tensor, video: torch.Tensor, config: VAETrainConfig) -> dict[str, torch.Tensor]:
    """Per-pixel L1 and MSE of [B, 3, T, H, W] videos, each weighted 1 + foreground_weight on pixels that differ
    from their clip's median colour by more than FOREGROUND_THRESHOLD in some channel."""
    background = video.flatten(2).median(dim=2).values[:, :, None, None, None]
    foreground = ((video - background).abs() > FOREGROUND_THRESHOLD).any(dim=1, keepdim=True)
    weight = 1.0 + config.foreground_weight * foreground.float()
    error = recon.float() - video
    l1, mse = (weight * error.abs()).mean(), (weight * error.pow(2)).mean()
    return {"l1": l1, "mse": mse, "reconstruction": config.l1_weight * l1 + config.mse_weight * mse}


class VAEModule(L.LightningModule):
    def __init__(self, vae_config: VAEConfig | dict, train_config: VAETrainConfig | dict):
        super().__init__()
        # Configs arrive as dicts when Lightning rebuilds the module from a checkpoint's hyperparameters.
        self.vae_config = vae_config if isinstance(vae_config, VAEConfig) else VAEConfig(**vae_config)
        self.train_config = train_config if isinstance(train_config, VAETrainConfig) else VAETrainConfig.from_saved(train_config)
        self.save_hyperparameters({"vae_config": asdict(self.vae_config), "train_config": asdict(self.train_config)})
        self.vae = VideoVAE(self.vae_config)

    def configure_model(self) -> None:
        if self.train_config.compile:
            self.vae.compile()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        video = batch["video"]
        recon, posterior = self.vae(video)
        terms = reconstruction_loss(recon, video, self.train_config)
        kl = posterior.kl().float()
        loss = terms["reconstruction"] + self.train_config.kl_weight * kl
        metrics = {"train/loss": loss, "train/l1": terms["l1"], "train/mse": terms["mse"], "train/kl": kl}
        self.log_dict(metrics, prog_bar=True)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0])
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self.log("train/grad_norm", grad_norm(self.vae))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        recon, _ = self.vae(batch["video"], sample=False)
        pairs = list(zip(*(to_uint8_videos(v.float().cpu().numpy()) for v in (batch["video"], recon))))
        self.log_dict({
            "val/psnr": float(np.mean([min(psnr(a, b), PSNR_CAP_DB) for a, b in pairs])),
            "val/ssim": float(np.mean([ssim(a, b) for a, b in pairs])),
        }, sync_dist=True)  # fmt: skip

    def configure_optimizers(self) -> dict:
        return warmup_cosine_adamw(self.vae.parameters(), self.train_config)


def train_vae(
    shards_root: Path, preset: ProjectConfig, out_dir: Path, logger=None, resume_from: Path | None = None,
    callbacks: list[L.Callback] | tuple = (),
) -> VAEModule:
    """Train the preset's VAE on the curated clips under `shards_root`; checkpoints go to `out_dir/checkpoints`."""
    cfg = preset.vae_train
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = VAEModule(preset.vae, cfg)
    data = ClipDataModule(
        shards_root, cfg.batch_size, cfg.seed, preset.buckets, cfg.clip_frames, cfg.crop_size, cfg.num_workers
    )
    trainer = build_trainer(cfg, out_dir, logger, callbacks)
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    return module
