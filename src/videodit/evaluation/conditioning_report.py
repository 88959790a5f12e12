"""Evaluate the frame-conditioned modes of a trained pipeline (#16): image-to-video, extension, long videos and
interpolation, on clips the caller draws of the unseen split's combinations. Used by `model_evaluation`.

Each mode is scored on what it promises: a given frame comes back (PSNR against the given frame through the VAE,
which is all the model can keep), the clip still follows its prompt (the attribute accuracies of text-to-video),
a continuation does not jump at its seam (`continuity.seam_continuity`), a long video's adherence does not decay
window by window, and an interpolation travels monotonically between its two frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from videodit.conditioning import FrameCondition, context_frames, long_video, long_video_seams, window_seed
from videodit.domain import Domain
from videodit.evaluation.continuity import (
    path_metrics, path_monotonicity, seam_continuity, seam_metrics, window_adherence, window_adherence_metrics,
)  # fmt: skip
from videodit.evaluation.image_quality import PSNR_CAP_DB, psnr
from videodit.domain import ATTRIBUTES
from videodit.evaluation.prompt_adherence import attributes_from_caption, prompt_adherence
from videodit.models.vae import to_video_tensor
from videodit.sampling import SamplerConfig, to_uint8_videos

MODES = ("image_to_video", "extension", "long_video", "interpolation")


@dataclass(frozen=True)
class ConditionedSample:
    """A prompt and a clip that shows it (uint8 [T, H, W, 3] at the pipeline's clip size): its frames are given."""

    prompt: str
    clip: np.ndarray


@torch.no_grad()
def through_vae(vae, frames: np.ndarray) -> np.ndarray:
    """uint8 frames [1 + r·k, H, W, 3] (an image: a still clip of 1 + r) encoded and decoded: what conditioning on
    them can at best give back."""
    r = vae.config.temporal_compression
    clip = np.repeat(frames, 1 + r, axis=0) if len(frames) == 1 else frames
    decoded = vae.decode(vae.encode(to_video_tensor(clip)[None]).mean)
    return to_uint8_videos(decoded.float().clamp(-1, 1).numpy())[0]


def _capped_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return min(psnr(a, b), PSNR_CAP_DB)


def _adherence(videos: list[np.ndarray], prompts: list[str], domain: Domain, prefix: str) -> tuple[dict, list]:
    found = prompt_adherence(videos, [attributes_from_caption(p, domain) for p in prompts], domain)
    return {f"{prefix}{name}": float(found[name]) for name in ("overall", *ATTRIBUTES)}, found["per_clip"]


def evaluate_conditioning(
    pipeline, samples: list[ConditionedSample], sampler: SamplerConfig, domain: Domain, seed: int = 0,
    long_windows: int = 3,
) -> tuple[dict[str, float], dict]:  # fmt: skip
    """(metrics, videos per mode): flat `<mode>/<measure>` floats, and each mode's generated videos and given frames
    for contact sheets. `pipeline` has `generate(prompts, seeds, sampler, frames, height, width, conditions=...)`
    and a `.vae`; sample i is generated from seed + i."""
    vae = pipeline.vae.float().eval()
    r = vae.config.temporal_compression
    prompts = [s.prompt for s in samples]
    seeds = [seed + i for i in range(len(samples))]
    frames = samples[0].clip.shape[0]

    def generate(conditions: list[FrameCondition]) -> list[np.ndarray]:
        return list(pipeline.generate(prompts, seeds, sampler, conditions=conditions))

    metrics: dict[str, float] = {}
    shown: dict[str, dict] = {}

    # Image-to-video: the first frame given. Each clip's first frame through the VAE serves interpolation too.
    images = [s.clip[:1] for s in samples]
    first_back = [through_vae(vae, image)[:1] for image in images]
    videos = generate([FrameCondition(first=image) for image in images])
    metrics["image_to_video/first_frame_psnr"] = float(np.mean([_capped_psnr(v[:1], b) for v, b in zip(videos, first_back)]))
    found, _ = _adherence(videos, prompts, domain, "image_to_video/")
    metrics.update(found)
    shown["image_to_video"] = {"videos": videos, "given_frames": [[0]] * len(videos)}

    # Extension: the clip's first frames given, as many as a window of a long video continues from; the seam is
    # where the new frames start. It is measured in the window as generated, the given frames through the VAE (as
    # image-to-video's PSNR): against the crisp originals even the true continuation through the demo's VAE
    # changes colour by 13% there, which is the VAE's fidelity (its PSNR), not the seam's. Seams fall between
    # latent frames, so each is compared with the steps between latent frames (`seam_continuity`'s period).
    context = context_frames(frames, r)
    windows = generate([FrameCondition(first=s.clip[:context]) for s in samples])
    extended = [np.concatenate([s.clip[:context], w[context:]]) for s, w in zip(samples, windows)]
    seams = [seam_continuity(w, context, period=r) for w in windows]
    metrics.update({f"extension/{k}": v for k, v in seam_metrics(seams).items()})
    found, _ = _adherence(extended, prompts, domain, "extension/")
    metrics.update(found)
    shown["extension"] = {"videos": extended, "given_frames": [list(range(context))] * len(extended)}

    # Long videos: `long_windows` windows from the text, adherence per window, continuity at every seam.
    def window_generator(i: int):
        def window(n: int, condition: FrameCondition | None, index: int) -> np.ndarray:
            conditions = [condition] if condition else None
            return pipeline.generate([prompts[i]], [window_seed(seeds[i], index)], sampler, frames=n,
                                     conditions=conditions)[0]  # fmt: skip

        return window

    stride = frames - context
    long_frames = frames + stride * (long_windows - 1)
    longs = [long_video(window_generator(i), long_frames, frames, r) for i in range(len(samples))]
    per_window = window_adherence(longs, [attributes_from_caption(p, domain) for p in prompts], domain, frames, context)
    metrics.update({f"long_video/{k}": v for k, v in window_adherence_metrics(per_window).items()})
    long_seams = [seam_continuity(v, seam, period=r) for v in longs for seam in long_video_seams(long_frames, frames, r)]
    metrics.update({f"long_video/{k}": v for k, v in seam_metrics(long_seams).items()})
    shown["long_video"] = {"videos": longs, "given_frames": [[]] * len(longs)}

    # Interpolation: first and last frames given.
    conditions = [FrameCondition(first=s.clip[:1], last=s.clip[-1:]) for s in samples]
    videos = generate(conditions)
    metrics["interpolation/first_frame_psnr"] = float(np.mean([_capped_psnr(v[:1], b) for v, b in zip(videos, first_back)]))
    metrics["interpolation/last_frame_psnr"] = float(np.mean(
        [_capped_psnr(v[-1:], through_vae(vae, s.clip[-1:])[-1:]) for v, s in zip(videos, samples)]))  # fmt: skip
    metrics.update({f"interpolation/{k}": v for k, v in path_metrics([path_monotonicity(v) for v in videos]).items()})
    shown["interpolation"] = {"videos": videos, "given_frames": [c.given_video_frames(frames) for c in conditions]}
    for mode in shown:
        shown[mode]["prompts"] = prompts
    return metrics, shown
