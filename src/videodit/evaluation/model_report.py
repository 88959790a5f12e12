"""Evaluate a trained text-to-video pipeline: prompt adherence on a fixed prompt set, an FVD-like score
against the validation clips, and the VAE's reconstruction quality, in the default bucket (the scores that
promote) and per video bucket (a table). Used by the `model_evaluation` asset."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from videodit.data.config import Bucket, video_buckets
from videodit.data.shards import ClipShards
from videodit.domain import ATTRIBUTES, Domain
from videodit.evaluation.continuity import stability_metrics, temporal_stability
from videodit.evaluation.frechet import frechet_video_distance
from videodit.evaluation.image_quality import PSNR_CAP_DB, psnr, ssim
from videodit.evaluation.prompt_adherence import attributes_from_caption, prompt_adherence
from videodit.models.vae import to_video_tensor
from videodit.sampling import SamplerConfig, to_uint8_videos

# What `evaluate_pipeline` reports (any of them can be the primary metric); lower is better only for LOWER_IS_BETTER.
# The plain adherence names are the unseen split (held-out phrasings of held-out combinations), the honest one that
# promotes; `seen_*` are the same measures on training phrasing and trained combinations.
ADHERENCE = ("overall", *ATTRIBUTES)
SPLITS = {"unseen": "", "seen": "seen_"}  # split -> the prefix of its metric names
METRICS = (*ADHERENCE, *(f"seen_{name}" for name in ADHERENCE), "frechet_distance", "vae_psnr", "vae_ssim")
LOWER_IS_BETTER = frozenset({"frechet_distance"})
# What the per-bucket table reports for every video bucket: the unseen split's adherence, Fréchet distance, VAE PSNR.
BUCKET_METRICS = (*ADHERENCE, "frechet_distance", "vae_psnr")


@dataclass(frozen=True)
class EvaluationConfig:
    n_prompts: int = 84  # of the seen prompt set (trained combinations in the training template), at most
    seeds_per_prompt: int = 2  # every prompt of both splits is sampled this many times, seeds seed, seed + 1, …
    seed: int = 0
    batch_size: int = 16
    max_val_clips: int = 64
    # Each video bucket besides the default one is scored on this many unseen prompts (at every seed) and at most
    # this many of its validation clips: a bounded cost per bucket, enough to see a bucket fall behind.
    prompts_per_other_bucket: int = 8
    primary_metric: str = "overall"
    min_overall: float = 0.0  # the quality floor of the `evaluation_meets_minimum` check
    # Unseen-split clips whose frames the conditioned modes are scored on (`conditioning_report`); 0: not scored.
    conditioned_prompts: int = 8
    long_video_windows: int = 3  # windows of each long video scored


def evaluation_prompts(n: int, domain: Domain) -> list[str]:
    """The seen split's prompts: trained combinations in the domain's prompt template, spread over every attribute
    (sizes alternate) so that a prefix of the list is balanced too."""
    sizes = list(domain.sizes)
    spread = [
        (shape, colour, sizes[i % len(sizes)], direction)
        for i, (direction, colour, shape) in enumerate(itertools.product(domain.directions, domain.colours, domain.shapes))
    ]
    trained = set(domain.trained_combinations())
    prompts = [
        domain.prompt_template.format(shape=shape, colour=colour, size=size, direction=direction)
        for shape, colour, size, direction in spread
        if (shape, colour, size, direction) in trained
    ]
    return prompts[:n]


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion hits/n (sound at 0, 1 and small n, unlike p ± z·se)."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def _split_metrics(adherence: dict) -> dict[str, float]:
    """A split's accuracies with their 95% intervals (`<name>_ci_low`, `<name>_ci_high`) from its per-clip hits."""
    metrics = {name: float(adherence[name]) for name in ADHERENCE}
    for attribute in ATTRIBUTES:
        asked = [row for row in adherence["per_clip"] if row[f"expected_{attribute}"] is not None]
        hits = sum(row[f"expected_{attribute}"] == row[f"read_{attribute}"] for row in asked)
        metrics[f"{attribute}_ci_low"], metrics[f"{attribute}_ci_high"] = wilson_interval(hits, len(asked))
    return metrics


def _generate(
    pipeline, prompts: list[str], config: EvaluationConfig, sampler: SamplerConfig, bucket: Bucket | None = None
) -> list[np.ndarray]:
    """Prompt i of `prompts` with seed config.seed + i, in batches, at the size of `bucket` (default: the pipeline's)."""
    size = {"frames": bucket.frames, "height": bucket.height, "width": bucket.width} if bucket else {}
    videos = []
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start : start + config.batch_size]
        videos += list(pipeline.generate(batch, config.seed + start, sampler, **size))
    return videos


def split_adherence(
    pipeline, prompts: list[str], config: EvaluationConfig, sampler: SamplerConfig, domain: Domain, bucket: Bucket | None = None
) -> tuple[dict[str, float], dict]:
    """(scores, sample) of one prompt split: every prompt sampled at `config.seeds_per_prompt` seeds (each its own
    sample), read back against `domain`. Scores are the ADHERENCE accuracies with each attribute's 95% interval;
    the sample holds the prompts as asked, the videos and the per-clip readings.

    `pipeline` is what `evaluate_pipeline` takes: a trained pipeline, or an exported bundle behind the same
    `generate` (`videodit.export.score_bundle`), so both are scored alike."""
    asked = [p for p in prompts for _ in range(config.seeds_per_prompt)]
    generated = _generate(pipeline, asked, config, sampler, bucket)
    adherence = prompt_adherence(generated, [attributes_from_caption(p, domain) for p in asked], domain)
    return _split_metrics(adherence), {"prompts": asked, "generated": generated, "per_clip": adherence["per_clip"]}


@torch.no_grad()
def reconstruct_clips(vae, clips: list[np.ndarray]) -> list[np.ndarray]:
    """uint8 clips [T, H, W, 3] through the VAE (posterior means) and back to uint8."""
    recon, _ = vae(torch.stack([to_video_tensor(c) for c in clips]), sample=False)
    return list(to_uint8_videos(recon.float().numpy()))


def validation_clips(shards_root, n: int, bucket: str | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The first `n` validation clips (uint8 [T, H, W, 3]) of `bucket` (default: the default bucket) under
    `shards_root`, and their captions."""
    shards = ClipShards(shards_root)
    val = shards.split("val", bucket).head(n)
    return [shards.frames(r.shard, int(r.row)) for r in val.itertuples()], val["caption"].tolist()


def reconstruction_preview(vae, shards_root, n: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """(videos, labels): each of the first `n` validation clips followed by its reconstruction, for a contact sheet."""
    clips, captions = validation_clips(shards_root, n)
    videos = [video for pair in zip(clips, reconstruct_clips(vae, clips)) for video in pair]
    return videos, [label for caption in captions for label in (f"real: {caption}", "reconstruction")]


def evaluate_pipeline(
    pipeline, shards_root, config: EvaluationConfig, sampler: SamplerConfig, domain: Domain
) -> tuple[dict, dict]:
    """(metrics, samples): metrics is flat name → float (METRICS, and each split's 95% intervals); samples holds
    each split's prompts, videos and per-clip readings, and the validation clips, for reports.

    `pipeline` has `generate(prompts, seeds, sampler)` → uint8 [B, T, H, W, 3] and a `.vae`; `sampler` is the
    preset's, the one the bundle serves with. Prompts and readings use the vocabulary of `domain`, the domain of
    the clips under `shards_root`.
    """
    splits = {"unseen": domain.unseen_prompts(), "seen": evaluation_prompts(config.n_prompts, domain)}
    metrics, samples = {}, {"splits": {}}
    for split, prompts in splits.items():
        scores, samples["splits"][split] = split_adherence(pipeline, prompts, config, sampler, domain)
        metrics.update({f"{SPLITS[split]}{name}": value for name, value in scores.items()})
    # Does the object hold its colour and area frame to frame (the flicker goal of #15)? On the unseen split.
    metrics.update(stability_metrics([temporal_stability(v) for v in samples["splits"]["unseen"]["generated"]]))
    real, captions = validation_clips(shards_root, config.max_val_clips)
    val_generated = _generate(pipeline, captions, config, sampler)
    recon = reconstruct_clips(pipeline.vae.float().eval(), real)

    metrics.update(_reconstruction_metrics(real, val_generated, recon))
    metrics["vae_ssim"] = float(np.mean([ssim(a, b) for a, b in zip(real, recon)]))
    samples.update(val_captions=captions, val_real=real, val_generated=val_generated, val_recon=recon)
    return metrics, samples


def _bucket_row(bucket: Bucket, prompts: int, val_clips: int, metrics: dict) -> dict:
    return {"bucket": bucket.name, "orientation": bucket.orientation, "frames": bucket.frames, "prompts": prompts,
            "val_clips": val_clips, **{name: float(metrics[name]) for name in BUCKET_METRICS}}  # fmt: skip


def _reconstruction_metrics(real: list[np.ndarray], generated: list[np.ndarray], recon: list[np.ndarray]) -> dict:
    """Fréchet distance (two clips at least) and capped mean PSNR (one at least) of a bucket's validation clips."""
    return {
        "frechet_distance": frechet_video_distance(real, generated) if len(real) >= 2 else float("nan"),
        "vae_psnr": float(np.mean([min(psnr(a, b), PSNR_CAP_DB) for a, b in zip(real, recon)])) if real else float("nan"),
    }


def evaluate_buckets(
    pipeline, shards_root, buckets: tuple[Bucket, ...], config: EvaluationConfig, sampler: SamplerConfig,
    domain: Domain, default: tuple[dict, dict],
) -> list[dict]:
    """One row per video bucket of `buckets`: the unseen split's adherence per attribute, Fréchet distance and VAE
    PSNR (BUCKET_METRICS), with how many samples and validation clips they came from.

    The default bucket's row is `default`, what `evaluate_pipeline` returned (metrics, samples): the scores that
    promote, not sampled again. Every other bucket samples the first `config.prompts_per_other_bucket` unseen
    prompts at each seed and reads at most as many of its validation clips; NaN where it has too few of them.
    """
    shards = ClipShards(shards_root)
    vae = pipeline.vae.float().eval()
    unseen = domain.unseen_prompts()[: config.prompts_per_other_bucket]
    rows = []
    for bucket in video_buckets(buckets):
        if bucket.name == shards.default_bucket:
            metrics, samples = default
            rows.append(_bucket_row(bucket, len(samples["splits"]["unseen"]["prompts"]), len(samples["val_real"]), metrics))
            continue
        adherence, sample = split_adherence(pipeline, unseen, config, sampler, domain, bucket)
        real, captions = validation_clips(shards_root, config.prompts_per_other_bucket, bucket.name)
        val_generated = _generate(pipeline, captions, config, sampler, bucket)
        recon = reconstruct_clips(vae, real) if real else []
        rows.append(_bucket_row(bucket, len(sample["prompts"]), len(real), adherence | _reconstruction_metrics(real, val_generated, recon)))
    return rows


def bucket_metrics(rows: list[dict]) -> dict[str, float]:
    """The per-bucket table as flat metric names, `bucket/<bucket>/<metric>`, for a tracking store."""
    return {f"bucket/{row['bucket']}/{name}": row[name] for row in rows for name in BUCKET_METRICS}


def bucket_table(rows: list[dict]) -> str:
    """The per-bucket table in Markdown, three decimals; a bucket without validation clips shows NaN there."""
    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f")
