"""Lightning module that trains the SpacetimeDiT with rectified flow on cached latents, keeps an EMA copy,
and generates videos (EMA weights + VAE decoder); `train_dit` is the pipeline's entry point."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import lightning as L
import torch
from safetensors import safe_open

from videodit.conditioning import FrameCondition
from videodit.models.dit import DiTBlock, DiTConfig, SpacetimeDiT
from videodit.models.rectified_flow import generate_videos, rectified_flow_loss
from videodit.models.text_encoder import TextEncoder, default_text_encoder
from videodit.models.vae import VAEConfig, VideoVAE
from videodit.sampling import SamplerConfig, prompt_seeds
from videodit.config import DiTTrainConfig, ProjectConfig
from videodit.training.datamodule import LatentDataModule
from videodit.training.ema import ema_decay_at, update_ema
from videodit.training.latents import latent_files, latent_stats, verified_latents
from videodit.files import write_text_atomically
from videodit.training.trainer import PrecisionChoice, build_trainer, grad_norm, resolve_precision, warmup_cosine_adamw


PRECISION_FILE = "precision.json"  # in a run's folder: the precision `resolved_precision` chose for it


class DiTModule(L.LightningModule):
    """Holds the trained DiT, its EMA and a frozen VAE, so one checkpoint is everything `generate` needs.

    `video_shape` (frames, height, width) is the default size of generated videos and `sampler` (the preset's,
    recorded with the weights) their default sampler; `latent_shift/scale` undo the normalisation `encode_latents`
    recorded.
    """

    def __init__(
        self,
        dit_config: DiTConfig | dict,
        train_config: DiTTrainConfig | dict,
        vae_config: VAEConfig | dict,
        video_shape: tuple[int, int, int] = (16, 64, 64),
        latent_shift: float = 0.0,
        latent_scale: float = 1.0,
        sampler: SamplerConfig | dict | None = None,
    ):
        super().__init__()
        # Configs arrive as dicts when Lightning rebuilds the module from a checkpoint's hyperparameters.
        self.dit_config = dit_config if isinstance(dit_config, DiTConfig) else DiTConfig(**dit_config)
        self.train_config = train_config if isinstance(train_config, DiTTrainConfig) else DiTTrainConfig.from_saved(train_config)
        self.sampler = sampler if isinstance(sampler, SamplerConfig) else SamplerConfig(**(sampler or {}))
        self.vae_config = vae_config if isinstance(vae_config, VAEConfig) else VAEConfig(**vae_config)
        self.video_shape = tuple(video_shape)
        self.latent_shift, self.latent_scale = latent_shift, latent_scale
        self.save_hyperparameters({
            "dit_config": asdict(self.dit_config), "train_config": asdict(self.train_config),
            "vae_config": asdict(self.vae_config), "video_shape": list(self.video_shape),
            "latent_shift": latent_shift, "latent_scale": latent_scale, "sampler": asdict(self.sampler),
        })  # fmt: skip
        self.dit = SpacetimeDiT(self.dit_config)
        self.ema = copy.deepcopy(self.dit).requires_grad_(False).eval()
        self.vae = VideoVAE(self.vae_config).requires_grad_(False).eval()

    def configure_model(self) -> None:
        if self.train_config.compile:
            self.dit.compile()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cfg = self.train_config
        loss = rectified_flow_loss(
            self.dit, batch["latents"], batch["text"], batch["text_mask"], cfg.timestep_mean, cfg.timestep_std,
            condition_fraction=cfg.condition_fraction,
        )  # fmt: skip
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0])
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self.log("train/grad_norm", grad_norm(self.dit))

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end, which runs after ModelCheckpoint has already saved the step.
        update_ema(self.ema, self.dit, ema_decay_at(self.global_step, self.train_config.ema_decay))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # Fixed draws per batch index, so val/loss moves only when the EMA weights do; t from the training
        # distribution, so it measures what train/loss does. An own (CPU) generator leaves every global RNG, CUDA's
        # included, as training left it, and draws the same on any device.
        cfg = self.train_config
        loss = rectified_flow_loss(
            self.ema, batch["latents"], batch["text"], batch["text_mask"], cfg.timestep_mean, cfg.timestep_std,
            generator=torch.Generator().manual_seed(batch_idx),
        )  # fmt: skip
        self.log("val/loss", loss, sync_dist=True)

    def configure_optimizers(self) -> dict:
        return warmup_cosine_adamw(self.dit.parameters(), self.train_config)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        seeds: int | list[int] = 0,
        sampler: SamplerConfig | None = None,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        text_encoder: TextEncoder | None = None,
        conditions: list[FrameCondition | None] | None = None,
    ) -> np.ndarray:
        """uint8 videos [B, T, H, W, 3] for `prompts`, sampled with the EMA weights: one seed per prompt (an int s
        means s, s + 1, ...), and a (prompt, seed) gives the video the ONNX bundle gives, alone or in a batch.
        conditions: per prompt, frames its clip begins/ends with (`videodit.conditioning.FrameCondition`)."""
        video_shape = tuple(v or d for v, d in zip((frames, height, width), self.video_shape))
        sampler = sampler or self.sampler
        return generate_videos(
            self.vae, self.ema, text_encoder or default_text_encoder(), prompts, prompt_seeds(seeds, len(prompts)),
            sampler.timesteps(), sampler.guidance, video_shape, self.latent_shift, self.latent_scale, conditions,
        )  # fmt: skip


def resolved_precision(preset: ProjectConfig, latents_dir: Path, out_dir: Path) -> PrecisionChoice:
    """The precision this DiT run trains in, kept in `out_dir/precision.json` so that every attempt of the run (a
    retry, a resume) trains in the same one. "auto" on one device is timed on steps of a fresh DiT at the shapes of
    the default bucket's cached latents and captions and the run's batch size; several processes would each time
    their own and could disagree, so there it is not timed."""
    saved = Path(out_dir) / PRECISION_FILE
    if saved.is_file():
        return PrecisionChoice(**json.loads(saved.read_text()))
    cfg = preset.dit_train

    def make_step() -> Callable[[bool], None]:
        model = SpacetimeDiT(preset.dit)
        optimizers = {bf16: torch.optim.AdamW(model.parameters(), fused=not bf16 or None) for bf16 in (False, True)}
        generator = torch.Generator().manual_seed(cfg.seed)
        with safe_open(str(verified_latents(latent_files(latents_dir, "train")[0])), framework="pt") as f:
            (_, *latent_shape), (_, tokens, width) = f.get_slice("latents").get_shape(), f.get_slice("text").get_shape()
        latents = torch.randn(cfg.batch_size, *latent_shape, generator=generator)
        text = torch.randn(cfg.batch_size, tokens, width, generator=generator)
        text_mask = torch.ones(cfg.batch_size, tokens, dtype=torch.bool)

        def step(bf16: bool) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = rectified_flow_loss(model, latents, text, text_mask, cfg.timestep_mean, cfg.timestep_std,
                                           generator=generator, condition_fraction=cfg.condition_fraction)  # fmt: skip
            loss.backward()
            optimizers[bf16].step()
            optimizers[bf16].zero_grad(set_to_none=True)

        return step

    choice = resolve_precision(cfg, make_step if cfg.devices == 1 else None)
    saved.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(saved, json.dumps(asdict(choice), indent=2))
    return choice


def train_dit(
    latents_dir: Path, vae: VideoVAE, preset: ProjectConfig, out_dir: Path, logger=None, resume_from: Path | None = None,
    callbacks: list[L.Callback] | tuple = (),
) -> DiTModule:
    """Train the preset's DiT on latents written by `encode_latents` with `vae`; checkpoints in `out_dir/checkpoints`."""
    video_shape = (preset.frames, preset.height, preset.width)
    choice = resolved_precision(preset, latents_dir, out_dir)
    cfg = replace(preset.dit_train, precision=choice.precision)  # the checkpoint records it too
    if logger is not None:
        logger.log_hyperparams(choice.as_params())
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    shift, scale = latent_stats(latents_dir)
    module = DiTModule(preset.dit, cfg, vae.config, video_shape, shift, scale, preset.sampler)
    module.vae.load_state_dict(vae.state_dict())
    data = LatentDataModule(latents_dir, cfg.batch_size, cfg.seed, preset.buckets, cfg.caption_dropout, cfg.num_workers)
    trainer = build_trainer(cfg, out_dir, logger, callbacks, block_type=DiTBlock)
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    return module
