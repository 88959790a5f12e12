"""Evaluate a trained text-to-video pipeline: prompt adherence on a fixed prompt set, an FVD-like score
against the validation clips, and the VAE's reconstruction quality. Used by the `model_evaluation` asset."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from videodit.data.shards import ClipShards
from videodit.domain import Domain
from videodit.evaluation.frechet import frechet_video_distance
from videodit.evaluation.image_quality import PSNR_CAP_DB, psnr, ssim
from videodit.evaluation.prompt_adherence import attributes_from_caption, prompt_adherence
from videodit.models.vae import to_video_tensor
from videodit.sampling import SamplerConfig, to_uint8_videos

# What `evaluate_pipeline` reports (any of them can be the primary metric); lower is better only for LOWER_IS_BETTER.
METRICS = ("overall", "colour", "shape", "size", "direction", "frechet_distance", "vae_psnr", "vae_ssim")
LOWER_IS_BETTER = frozenset({"frechet_distance"})


@dataclass(frozen=True)
class EvaluationConfig:
    n_prompts: int = 84  # of the fixed prompt set; the built-in domain's has 84: shape × colour × direction
    seed: int = 0  # prompt i of a set is sampled with seed + i
    batch_size: int = 16
    max_val_clips: int = 64
    primary_metric: str = "overall"
    min_overall: float = 0.0  # the quality floor of the `evaluation_meets_minimum` check


def evaluation_prompts(n: int, domain: Domain) -> list[str]:
    """The domain's fixed prompt set, spread over every attribute so a prefix of it is balanced too."""
    combos = itertools.product(domain.directions, domain.colours, domain.shapes)
    sizes = list(domain.sizes)
    prompts = [
        domain.prompt_template.format(size=sizes[i % len(sizes)], colour=colour, shape=shape, direction=direction)
        for i, (direction, colour, shape) in enumerate(combos)
    ]
    return prompts[:n]


def _generate(pipeline, prompts: list[str], config: EvaluationConfig, sampler: SamplerConfig) -> list[np.ndarray]:
    videos = []
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start : start + config.batch_size]
        videos += list(pipeline.generate(batch, config.seed + start, sampler))
    return videos


@torch.no_grad()
def reconstruct_clips(vae, clips: list[np.ndarray]) -> list[np.ndarray]:
    """uint8 clips [T, H, W, 3] through the VAE (posterior means) and back to uint8."""
    recon, _ = vae(torch.stack([to_video_tensor(c) for c in clips]), sample=False)
    return list(to_uint8_videos(recon.float().numpy()))


def validation_clips(shards_root, n: int) -> tuple[list[np.ndarray], list[str]]:
    """The first `n` validation clips (uint8 [T, H, W, 3]) under `shards_root`, and their captions."""
    shards = ClipShards(shards_root)
    val = shards.split("val").head(n)
    return [shards.frames(r.shard, int(r.row)) for r in val.itertuples()], val["caption"].tolist()


def reconstruction_preview(vae, shards_root, n: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """(videos, labels): each of the first `n` validation clips followed by its reconstruction, for a contact sheet."""
    clips, captions = validation_clips(shards_root, n)
    videos = [video for pair in zip(clips, reconstruct_clips(vae, clips)) for video in pair]
    return videos, [label for caption in captions for label in (f"real: {caption}", "reconstruction")]


def evaluate_pipeline(
    pipeline, shards_root, config: EvaluationConfig, sampler: SamplerConfig, domain: Domain
) -> tuple[dict, dict]:
    """(metrics, samples): metrics is flat name → float; samples holds videos and captions for reports.

    `pipeline` has `generate(prompts, seeds, sampler)` → uint8 [B, T, H, W, 3] and a `.vae`; `sampler` is the
    preset's, the one the bundle serves with. Prompts and readings use the vocabulary of `domain`, the domain of
    the clips under `shards_root`.
    """
    prompts = evaluation_prompts(config.n_prompts, domain)
    generated = _generate(pipeline, prompts, config, sampler)
    adherence = prompt_adherence(generated, [attributes_from_caption(p, domain) for p in prompts], domain)

    real, captions = validation_clips(shards_root, config.max_val_clips)
    val_generated = _generate(pipeline, captions, config, sampler)
    recon = reconstruct_clips(pipeline.vae.float().eval(), real)

    metrics = {k: float(adherence[k]) for k in ("colour", "shape", "size", "direction", "overall")}
    metrics["frechet_distance"] = frechet_video_distance(real, val_generated) if len(real) >= 2 else float("nan")
    metrics["vae_psnr"] = float(np.mean([min(psnr(a, b), PSNR_CAP_DB) for a, b in zip(real, recon)]))
    metrics["vae_ssim"] = float(np.mean([ssim(a, b) for a, b in zip(real, recon)]))
    samples = {
        "prompts": prompts, "generated": generated, "per_clip": adherence["per_clip"],
        "val_captions": captions, "val_real": real, "val_generated": val_generated, "val_recon": recon,
    }  # fmt: skip
    return metrics, samples
