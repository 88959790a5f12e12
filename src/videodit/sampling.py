"""The rectified-flow sampler, numpy only: its settings, timestep schedule, per-prompt noise and Euler loop.

One definition serves the torch evaluation (`DiTModule.generate`), the export's parity check and the torch-free
onnxruntime generator, so what evaluation scores is what is served. t = 1 is noise and t = 0 is data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

Latents = TypeVar("Latents")


@dataclass(frozen=True)
class SamplerConfig:
    """Euler steps, classifier-free guidance scale and the SD3/Wan time shift of the schedule (1: linear)."""

    steps: int = 25
    guidance: float = 4.0
    shift: float = 1.0

    def __post_init__(self):
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"steps={self.steps!r}: must be a whole number >= 1")
        if not math.isfinite(self.guidance):
            raise ValueError(f"guidance={self.guidance!r}: must be a finite number")
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise ValueError(f"shift={self.shift!r}: must be a finite number > 0")

    def timesteps(self) -> np.ndarray:
        return timestep_schedule(self.steps, self.shift)


def timestep_schedule(steps: int, shift: float = 1.0) -> np.ndarray:
    """steps + 1 float32 times from 1 down to 0: t' = shift*t / (1 + (shift - 1)*t) of an even grid t.

    The grid is torch.linspace(1, 0, steps + 1) in float32 bit for bit (a float32 step, the arithmetic in double,
    the first half counted down from 1 and the second half up to 0, as ATen's CPU kernel does); at shift = 1 the
    shift is exact in double, so the schedule is that grid. shift > 1 spends more steps at high noise.
    """
    n = steps + 1
    step = np.float64(np.float32(-1.0) / np.float32(steps))
    index = np.arange(n)
    grid = np.where(index < n // 2, 1.0 + step * index, 0.0 - step * (n - 1 - index)).astype(np.float32)
    t = grid.astype(np.float64)
    return (shift * t / (1.0 + (shift - 1.0) * t)).astype(np.float32)


def prompt_seeds(seeds: int | Sequence[int], n: int) -> list[int]:
    """One seed per prompt: an int s stands for s, s + 1, ..., s + n - 1 (prompt i of a batch gets s + i)."""
    if isinstance(seeds, (int, np.integer)):
        return [int(seeds) + i for i in range(n)]
    if len(seeds) != n:
        raise ValueError(f"got {n} prompts but {len(seeds)} seeds; give one seed per prompt")
    return [int(seed) for seed in seeds]


def initial_noise(seeds: Sequence[int], latent_shape: tuple[int, ...]) -> np.ndarray:
    """[B, *latent_shape] float32 noise, prompt i drawn from default_rng(seeds[i]) so batching never changes it."""
    return np.stack([np.random.default_rng(seed).standard_normal(latent_shape, dtype=np.float32) for seed in seeds])


def euler(step: Callable[[Latents, np.float32, np.float32], Latents], noise: Latents, timesteps: np.ndarray) -> Latents:
    """Integrate from timesteps[0] to timesteps[-1], one `step(latents, t, t_next)` per pair of the schedule.

    `step` is the guided Euler update (a torch module or an onnxruntime graph); latents are whatever it takes.
    """
    latents = noise
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        latents = step(latents, t, t_next)
    return latents


def to_uint8_videos(video: np.ndarray) -> np.ndarray:
    """Decoder output [B, 3, T, H, W] in [-1, 1] -> uint8 [B, T, H, W, 3]."""
    pixels = np.round((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 4, 1))
