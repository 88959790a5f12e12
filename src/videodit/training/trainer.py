"""How every training run is executed: the Lightning Trainer (device, precision, strategy, checkpoints), which
checkpoint a run resumes from, and the AdamW + warmup/cosine optimiser both the VAE and the DiT use."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.trainer.connectors import checkpoint_connector

from videodit.config import TrainConfig
from videodit.cpu import cpu_flags

FUSED_ADAMW_DEVICES = ("cpu", "cuda")
CHECKPOINT_DIR = "checkpoints"
STEP_CHECKPOINT = "step{step:06d}"  # every checkpoint_every_steps; ModelCheckpoint adds FILE_EXTENSION
LAST_CHECKPOINT = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION
BROKEN_SUFFIX = ".broken"  # a checkpoint that does not load, kept for inspection but never resumed from

_log = logging.getLogger(__name__)


def ignore_broken_omegaconf() -> None:
    """Lightning imports omegaconf on every checkpoint save when it is installed. dvc installs omegaconf 2.3,
    whose grammar fails to load under the antlr4 4.13 dagster needs; then saving would crash, so tell Lightning
    omegaconf is absent (we never use it: hyperparameters are plain dicts)."""
    try:
        import omegaconf  # noqa: F401
    except Exception:
        checkpoint_connector._OMEGACONF_AVAILABLE = False
        # The `ddp` launcher imports hydra (which imports omegaconf) when hydra-core is installed: same crash.
        subprocess_script._HYDRA_AVAILABLE = False


ignore_broken_omegaconf()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmuls (AVX512-BF16 or AMX); elsewhere bf16 autocast is several times slower."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


# bf16-mixed must beat fp32 by this factor to be picked on a CPU: it also rounds every activation, and an fp32 run
# keeps the fused AdamW (see `warmup_cosine_adamw`). Measured on the demo DiT, 2-core EPYC with AVX512-BF16:
# bf16 0.078 s vs fp32 0.071 s per step, so native bf16 alone says nothing about which is faster.
MIN_BF16_SPEEDUP = 1.1
PROBE_WARMUP_STEPS, PROBE_STEPS = 2, 5


@dataclass
class PrecisionChoice:
    """The precision a run trains in and why: `seconds_per_step` holds the measured steps when it was timed."""

    precision: str
    reason: str
    seconds_per_step: dict[str, float] = field(default_factory=dict)

    def as_params(self) -> dict[str, str | float]:
        timed = {f"precision_probe_{name}_s": round(s, 5) for name, s in self.seconds_per_step.items()}
        return {"resolved_precision": self.precision, "precision_reason": self.reason, **timed}


def time_precisions(step: Callable[[bool], None]) -> dict[str, float]:
    """Median seconds of `step(bf16)` in fp32 and under bf16 autocast, steps interleaved so that other load on the
    machine slows both alike."""
    for _ in range(PROBE_WARMUP_STEPS):
        step(False), step(True)
    times = {"32-true": [], "bf16-mixed": []}
    for _ in range(PROBE_STEPS):
        for name, bf16 in (("32-true", False), ("bf16-mixed", True)):
            start = time.perf_counter()
            step(bf16)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def resolve_precision(config: TrainConfig, make_step: Callable[[], Callable[[bool], None]] | None = None) -> PrecisionChoice:
    """The Lightning precision of `config` ("auto" resolved). On CUDA "auto" is bf16-mixed. On a CPU it is fp32
    unless `cpu_bf16` is set and the CPU has native bf16; there, given `make_step` (called only then, it builds one
    training step at the run's size, bf16 autocast on or off), the faster of the two as measured, bf16 needing
    MIN_BF16_SPEEDUP; without `make_step`, bf16-mixed."""
    if config.precision != "auto":
        return PrecisionChoice(config.precision, "set in the config")
    if torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda"):
        return PrecisionChoice("bf16-mixed", "CUDA")
    if not config.cpu_bf16:
        return PrecisionChoice("32-true", "CPU, cpu_bf16 off")
    if not cpu_has_fast_bf16():
        return PrecisionChoice("32-true", "CPU without native bf16 (no AVX512-BF16 or AMX)")
    if make_step is None:
        return PrecisionChoice("bf16-mixed", "CPU with native bf16, not timed")
    seconds = time_precisions(make_step())
    speedup = seconds["32-true"] / seconds["bf16-mixed"]
    faster = "bf16-mixed" if speedup >= MIN_BF16_SPEEDUP else "32-true"
    return PrecisionChoice(faster, f"CPU with native bf16, timed: bf16 {speedup:.2f}× fp32 (needs {MIN_BF16_SPEEDUP}×)", seconds)


def resolve_strategy(config: TrainConfig, block_type: type | None):
    """`fsdp` shards at transformer-block granularity (and checkpoints those blocks when asked); others pass through."""
    if config.strategy != "fsdp":
        return config.strategy
    wrap = {block_type} if block_type else None
    # use_orig_params: the root unit mixes trainable DiT embedders with the frozen EMA copy and VAE.
    return FSDPStrategy(auto_wrap_policy=wrap, use_orig_params=True, state_dict_type="full")


def build_trainer(
    config: TrainConfig,
    out_dir: Path,
    logger=None,
    callbacks: list[L.Callback] | tuple = (),
    block_type: type | None = None,
) -> L.Trainer:
    """A Trainer that runs `config.max_steps` optimiser steps over an endless, resumable batch stream.

    Checkpoints go to `out_dir/checkpoints` every `checkpoint_every_steps` (plus `last.ckpt`); pass one to
    `trainer.fit(..., ckpt_path=...)` to resume exactly (`resumable_checkpoint` finds it). `logger` is any
    Lightning logger, e.g. MLFlowLogger.
    """
    checkpoint = ModelCheckpoint(
        dirpath=Path(out_dir) / CHECKPOINT_DIR, filename=STEP_CHECKPOINT, auto_insert_metric_name=False,
        every_n_train_steps=config.checkpoint_every_steps, save_top_k=-1, save_last=True,
    )  # fmt: skip
    return L.Trainer(
        default_root_dir=out_dir,
        max_steps=config.max_steps,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=resolve_strategy(config, block_type),
        precision=resolve_precision(config).precision,
        gradient_clip_val=config.grad_clip or None,
        # The train loader is an endless stream (see datamodule.py), so validation is scheduled in steps.
        val_check_interval=config.val_every_steps,
        check_val_every_n_epoch=None,
        limit_val_batches=config.val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=config.log_every_steps,
        logger=logger if logger is not None else False,
        callbacks=[checkpoint, *callbacks],
        # Our batch sampler shards the data across ranks itself, in a way that can be resumed.
        use_distributed_sampler=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )


def resumable_checkpoint(out_dir: Path, log: logging.Logger = _log) -> Path | None:
    """The newest checkpoint under `out_dir/checkpoints` that loads: last.ckpt, else the highest step (a kill can
    land between writing the two). One that does not load (truncated, overwritten) is logged and renamed to
    `<name>.broken`, so no later run tries it again. None: there is nothing to resume, train from the start."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    newest_first = [folder / LAST_CHECKPOINT, *sorted(folder.glob(f"step*{ModelCheckpoint.FILE_EXTENSION}"), reverse=True)]
    broken = []
    for path in filter(Path.is_file, newest_first):
        try:
            torch.load(path, map_location="cpu", mmap=True, weights_only=False)  # mmap: tensors are not read
            return path
        except Exception as error:  # RuntimeError, EOFError, UnpicklingError, ...: it depends on where the file breaks
            path.rename(path.with_name(path.name + BROKEN_SUFFIX))
            broken.append(path.name)
            log.warning(f"checkpoint {path} does not load ({error}): moved aside to {path.name}{BROKEN_SUFFIX}")
    if broken:
        log.warning(f"no checkpoint in {folder} loads ({', '.join(broken)} moved aside): training starts from step 0")
    return None


def warmup_cosine_adamw(params, config: TrainConfig) -> dict:
    """AdamW with linear warmup to `lr` over `warmup_steps`, then cosine decay to 10% of `lr` at `max_steps`."""
    params = list(params)
    # The fused kernel updates all tensors at once (demo DiT on 2 CPU cores: 1.4 vs 6.1 ms per step). Lightning
    # refuses to clip the gradients of a fused optimizer under mixed precision, so those runs keep the default.
    precision = resolve_precision(config).precision
    mixed = precision.endswith("-mixed") or precision in ("16", "bf16")
    fused = not mixed and all(p.device.type in FUSED_ADAMW_DEVICES for p in params)
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99), fused=fused or None
    )

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def grad_norm(module: torch.nn.Module) -> torch.Tensor:
    """Global L2 norm of the gradients (before clipping when called from on_before_optimizer_step)."""
    return torch.nn.utils.get_total_norm([p.grad.detach() for p in module.parameters() if p.grad is not None])
