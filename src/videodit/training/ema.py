"""Exponential moving average of model weights: the averaged copy samples better than the raw weights."""

from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(step: int, decay: float) -> float:
    """Ramp the decay up from 0.1 so that early averages are not dominated by the random initial weights."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, all parameters in one foreach call; buffers are copied."""
    averaged, current = list(ema.parameters()), list(model.parameters())
    if len(averaged) != len(current):
        raise ValueError(f"EMA has {len(averaged)} parameters but the model {len(current)}")
    torch._foreach_lerp_(averaged, [c.detach().to(a.dtype) for a, c in zip(averaged, current)], 1 - decay)
    for averaged, current in zip(ema.buffers(), model.buffers(), strict=True):
        averaged.copy_(current)
